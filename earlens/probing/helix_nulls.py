"""What the helix probe compares a layer against: the periodic likelihood ratio and its null, a matrix-normal model
of the layer's per-pitch means with no periodic component.

The statistic (`periodic_lr`) asks whether the per-pitch means turn at some rate ω beyond what smooth curves give:
the constant and a pitch-height line are profiled out, and every coordinate of a fixed random projection of the
layer (at most `PROJECTED_COORDINATES`) gets its best smooth Gaussian process along pitch (`smooth_kernels`) with
and without a sinusoid at ω; the likelihood ratios are summed over coordinates and maximised over ω from
`MIN_TURNS` turns across the pitch range to the grid's Nyquist rate. Coordinates, not principal components: PCA of a
layer with many independent smooth coordinates (a random walk in 256 dimensions) returns clean cosines whatever
the data, which a per-component statistic would call periodic.

The null (`SmoothSpikedNull`) keeps what real layers have: smoothness along pitch (one kernel mixture fitted by EM
to all the layer's coordinates, from a finer family than the statistic's) and the layer's rank and shape (a feature
covariance of a few spike directions, chosen by penalised likelihood, plus an isotropic rest): weak low-rank
pitch-height curves and smooth nuisance stay low-rank, random walks and place codes stay high-rank.
`bench/helix_calibration.py` measures the test's false-positive rate and power over families of generated layers.

`bootstrap_grams` resamples clips within each pitch (the interval of ω).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

PROJECTED_COORDINATES = 64  # coordinates of the layer's fixed random projection the statistic sums over
MIN_TURNS = 2.5  # slowest rate tested, in turns across the pitch range (slower turns are what smooth curves do)
MAX_SPIKES = 12
SMOOTHNESS = (0.5, 1.5, np.inf)  # Matérn ν of the smooth kernels, at `N_LENGTHS` length scales
N_LENGTHS = 5  # in the statistic: a coarse family is enough to whiten, and cheap
NOISE_SHARES = (0.02, 0.3)  # white-noise share mixed into every smooth kernel of the statistic
N_NULL_LENGTHS = 16  # in the null: its draws must match the data's spectrum closely, clean smooth curves included
NULL_NOISE_SHARES = (1e-4, 1e-2, 0.1)


def averaging_weights(index: np.ndarray, n_pitches: int, dtype=np.float64) -> np.ndarray:
    """(P, N) matrix averaging clips per pitch index."""
    weights = np.zeros((n_pitches, len(index)), dtype=dtype)
    weights[index, np.arange(len(index))] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def double_centre(gram: np.ndarray) -> np.ndarray:
    """Gram matrix of the points centred on their centroid, from any Gram matrix (..., P, P)."""
    return (gram - gram.mean(axis=-1, keepdims=True) - gram.mean(axis=-2, keepdims=True)
            + gram.mean(axis=(-2, -1), keepdims=True))


def _matern(distance: np.ndarray, nu: float, length: float) -> np.ndarray:
    scaled = distance / length
    if nu == 0.5:
        return np.exp(-scaled)
    if nu == 1.5:
        return (1 + np.sqrt(3) * scaled) * np.exp(-np.sqrt(3) * scaled)
    return np.exp(-0.5 * scaled**2)


@dataclass(frozen=True)
class SmoothKernels:
    """Smooth kernels over pitch in the contrasts orthogonal to the constant and the pitch-height line.

    basis (P, m): those contrasts (m = P − 2); line (P,): the unit pitch-height direction; lengths (G,): each
    kernel's length scale in semitones (inf for Brownian motion, 0 for white noise); kernels, chol, chol_inv
    (G, m, m) and logdet (G,): each kernel with trace m, its Cholesky factor, the factor's inverse and log |K|.
    """

    basis: np.ndarray
    line: np.ndarray
    lengths: np.ndarray
    kernels: np.ndarray
    chol: np.ndarray
    chol_inv: np.ndarray
    logdet: np.ndarray


@functools.lru_cache(maxsize=8)
def _smooth_kernels(t_bytes: bytes, n_lengths: int = N_LENGTHS, noise_shares: tuple = NOISE_SHARES) -> SmoothKernels:
    t = np.frombuffer(t_bytes)
    distance = np.abs(t[:, None] - t[None, :])
    span = max(t[-1] - t[0], 1.0)
    grid = np.geomspace(1.5 * np.diff(t).min(initial=1.0), 2 * span, n_lengths)
    bases = [_matern(distance, nu, length) for nu in SMOOTHNESS for length in grid]
    origin = t - t[0]
    bases.append(np.minimum(origin[:, None], origin[None, :]))  # Brownian motion: random walks
    base_lengths = np.concatenate([np.tile(grid, len(SMOOTHNESS)), [np.inf]])
    eye = np.eye(len(t))
    kernels = [(1 - eta) * base / base.diagonal().mean() + eta * eye for base in bases for eta in noise_shares]
    kernels.append(eye)
    lengths = np.concatenate([np.repeat(base_lengths, len(noise_shares)), [0.0]])
    fixed = np.stack([np.ones_like(t), t - t.mean()], axis=1)
    full = np.linalg.qr(fixed, mode="complete")[0]
    basis = full[:, 2:]
    contrasts = basis.T @ np.array(kernels) @ basis
    contrasts /= np.trace(contrasts, axis1=1, axis2=2)[:, None, None] / basis.shape[1]
    contrasts += 1e-9 * np.eye(basis.shape[1])
    chol = np.linalg.cholesky(contrasts)
    line = (t - t.mean()) / np.linalg.norm(t - t.mean())
    return SmoothKernels(basis, line, lengths, contrasts, chol, np.linalg.inv(chol),
                         2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1))


def smooth_kernels(t: np.ndarray, null: bool = False) -> SmoothKernels:
    """The kernel family for pitch indices t (P,), P ≥ 4: Matérn ν ∈ `SMOOTHNESS` at `N_LENGTHS` length scales from
    1.5 grid steps to twice the span, and Brownian motion, each mixed with white noise (`NOISE_SHARES`); and white
    noise. None has a spectral line. `null`: the finer family the null is fitted from (`N_NULL_LENGTHS`,
    `NULL_NOISE_SHARES`)."""
    options = (N_NULL_LENGTHS, NULL_NOISE_SHARES) if null else (N_LENGTHS, NOISE_SHARES)
    return _smooth_kernels(np.ascontiguousarray(t, dtype=np.float64).tobytes(), *options)


def periodic_omegas(t: np.ndarray, step: int) -> np.ndarray:
    """Rates tested: from `MIN_TURNS` turns across the span to π/step, one Fourier bin (π/span) apart."""
    span = float(t[-1] - t[0])
    low = 2 * np.pi * MIN_TURNS / span
    return np.arange(low, np.pi / step + 1e-9, np.pi / span)


@functools.lru_cache(maxsize=8)
def _whitened_sinusoids(t_bytes: bytes, omegas_bytes: bytes) -> np.ndarray:
    """(G, 2Ω, m): for each kernel, orthonormal bases of the whitened cos/sin pair at each ω (cos rows first)."""
    t, omegas = np.frombuffer(t_bytes), np.frombuffer(omegas_bytes)
    family = _smooth_kernels(t_bytes)
    phase = omegas[:, None] * t
    pair = family.basis.T @ np.stack([np.cos(phase), np.sin(phase)], axis=-1)  # (Ω, m, 2)
    whitened = np.linalg.qr(family.chol_inv[:, None] @ pair[None])[0]  # (G, Ω, m, 2)
    return np.ascontiguousarray(np.concatenate([whitened[..., 0], whitened[..., 1]], axis=1))


def periodic_lr(columns: np.ndarray, t: np.ndarray, omegas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periodic likelihood ratio of n sets of columns (n, m, c) in the contrasts of `smooth_kernels(t)`.

    Per column: the profile likelihood of the best kernel with a free scale (H0), and of the best kernel with a
    free sinusoid at ω (H1). Returns max over ω of 2 Σ_columns (ℓ1(ω) − ℓ0), (n,), and the index of that ω, (n,).
    """
    family = _smooth_kernels(np.ascontiguousarray(t, dtype=np.float64).tobytes())
    sinusoids = _whitened_sinusoids(np.ascontiguousarray(t, dtype=np.float64).tobytes(),
                                    np.ascontiguousarray(omegas, dtype=np.float64).tobytes())
    n, m, c = columns.shape
    n_kernels = len(family.logdet)
    flat = np.moveaxis(columns, 1, 0).reshape(m, n * c)
    whitened = (family.chol_inv.reshape(n_kernels * m, m) @ flat).reshape(n_kernels, m, n * c)
    energy = np.einsum("gmk,gmk->gk", whitened, whitened)  # (G, nc): yᵀK⁻¹y
    explained = sinusoids @ whitened  # (G, 2Ω, nc)
    np.square(explained, out=explained)
    n_omegas = len(omegas)
    residual = explained[:, :n_omegas]
    residual += explained[:, n_omegas:]
    const = (0.5 * m * np.log(m) - 0.5 * family.logdet)[:, None]
    null = (-0.5 * m * np.log(np.maximum(energy, 1e-300)) + const).max(axis=0)  # (nc,)
    np.subtract(energy[:, None], residual, out=residual)
    np.maximum(residual, 1e-300 * np.maximum(energy[:, None], 1e-300), out=residual)
    np.log(residual, out=residual)
    residual *= -0.5 * m
    residual += const[:, :, None]
    alternative = residual.max(axis=0)  # (Ω, nc)
    ratio = 2 * (alternative - null).reshape(n_omegas, n, c).sum(axis=-1)  # (Ω, n)
    return ratio.max(axis=0), ratio.argmax(axis=0)


def _fit_bulk(scatter: np.ndarray, n_columns: int, family: SmoothKernels, weights=None, n_iter: int = 200):
    """Kernel mixture K = Σ a_g K_g (a ≥ 0) by EM for n_columns iid N(0, K) columns with scatter matrix S."""
    n_kernels, m = family.kernels.shape[:2]
    flat = family.kernels.reshape(n_kernels, -1)
    level = max(np.trace(scatter), 1e-300) / max(n_columns, 1) / m
    weights = np.full(n_kernels, level / n_kernels) if weights is None else weights
    jitter = 1e-9 * level * np.eye(m)
    for _ in range(n_iter):
        precision = np.linalg.inv(np.tensordot(weights, family.kernels, 1) + jitter)
        expected = precision @ scatter @ precision / n_columns
        weights = weights * np.sqrt(np.maximum(flat @ expected.ravel(), 0) / (flat @ precision.ravel()))
    return np.tensordot(weights, family.kernels, 1) + jitter, weights


def _best_kernel_loglik(columns: np.ndarray, family: SmoothKernels) -> np.ndarray:
    """Each column's (n, r) profile log-likelihood under its best kernel of the family (free scale), (r,)."""
    n = columns.shape[0]
    energy = (np.einsum("gij,jr->gir", family.chol_inv, columns) ** 2).sum(axis=1)  # (G, r)
    loglik = (-0.5 * n * np.log(np.maximum(energy, 1e-300) / n) - 0.5 * family.logdet[:, None]
              - 0.5 * n * (1 + np.log(2 * np.pi)))
    return loglik.max(axis=0)


def _gaussian_loglik(cov: np.ndarray, scatter: np.ndarray, n_columns: int) -> float:
    m = len(cov)
    logdet = np.linalg.slogdet(cov)[1]
    return -0.5 * n_columns * (logdet + m * np.log(2 * np.pi)) - 0.5 * np.trace(np.linalg.solve(cov, scatter))


class SmoothSpikedNull:
    """Matrix-normal model of one layer's detrended per-pitch means Z (m, D) with no periodic component, and draws.

    vec(Z) ~ N(0, Σ ⊗ K): K, a smooth kernel mixture over pitch fitted by EM to the layer's columns; Σ, a feature
    covariance of r spikes (the top principal components, each with its own variance) plus an isotropic rest. r ≤
    `MAX_SPIKES` maximises the log-likelihood (each spike with its best kernel of the family, the rest iid under a
    refitted mixture) minus (D + 2) per spike (its direction and kernel). Every direction shares K's shape: a
    component's own kernel would also fit a helix's circle, and its draws would turn as often as the data.
    `directions` (D, k): the feature directions whose coordinates the draws report.
    """

    def __init__(self, contrasts: np.ndarray, family: SmoothKernels, directions: np.ndarray):
        m, width = contrasts.shape
        u, s, vt = np.linalg.svd(contrasts, full_matrices=False)
        components = u * s
        r_max = max(0, min(MAX_SPIKES, int((s > 1e-9 * s[0]).sum()) - 1, width - 1))
        spike_loglik = _best_kernel_loglik(components[:, :r_max], family)
        scatter = contrasts @ contrasts.T
        weights, best, layer_kernel = None, (-np.inf, 0), None
        for r in range(r_max + 1):
            rest = scatter - components[:, :r] @ components[:, :r].T
            bulk, weights = _fit_bulk(rest, width - r, family, weights, 200 if r == 0 else 40)
            layer_kernel = bulk if r == 0 else layer_kernel
            score = spike_loglik[:r].sum() + _gaussian_loglik(bulk, rest, width - r) - r * (width + 2)
            if score > best[0]:
                best = (score, r)
        r = self.n_spikes = best[1]
        self.width = width
        self.chol = np.linalg.cholesky(layer_kernel)
        whitened = np.linalg.solve(self.chol, components)
        energy = (whitened**2).sum(axis=0) / m  # each principal direction's variance under K
        self.spike_scale = np.sqrt(energy[:r])
        self.bulk_scale = np.sqrt(energy[r:].sum() / max(width - r, 1))
        spikes = vt[:r].T  # (D, r)
        # an orthonormal basis of span(spikes, directions): draws need only the bulk's coordinates there
        span = np.linalg.qr(np.concatenate([spikes, directions], axis=1))[0]
        self.span_spikes, self.span_directions = span.T @ spikes, span.T @ directions
        self.spikes_directions = spikes.T @ directions

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n draws: their scatter matrices ZZᵀ (n, m, m) and their coordinates along `directions` (n, m, k)."""
        m, k = self.chol.shape[0], self.span_spikes.shape[0]
        inside = rng.standard_normal((n, m, k))  # the bulk's white draw in the span's coordinates
        if self.n_spikes:
            inside = inside - (inside @ self.span_spikes) @ self.span_spikes.T  # the bulk lives off the spikes
        outside = max(self.width - k, 0)
        factor = _wishart_factor(m, outside, n, rng)
        white = inside @ np.swapaxes(inside, 1, 2) + factor @ np.swapaxes(factor, 1, 2)
        scatter = self.bulk_scale**2 * self.chol @ white @ self.chol.T
        coordinates = self.bulk_scale * self.chol @ (inside @ self.span_directions)
        if self.n_spikes:
            spikes = self.chol @ (rng.standard_normal((n, m, self.n_spikes)) * self.spike_scale)
            scatter = scatter + spikes @ np.swapaxes(spikes, 1, 2)
            coordinates = coordinates + spikes @ self.spikes_directions
        return scatter, coordinates


def _wishart_factor(m: int, dof: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, m, min(m, dof)) factors F with F Fᵀ ~ Wishart(dof, I_m) (Bartlett's decomposition when dof ≥ m)."""
    if dof < m:
        return rng.standard_normal((n, m, dof))
    factor = np.tril(rng.standard_normal((n, m, m)), -1)
    diagonal = np.arange(m)
    factor[:, diagonal, diagonal] = np.sqrt(rng.chisquare(dof - diagonal, size=(n, m)))
    return factor


def bootstrap_grams(clip_gram: np.ndarray, index: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
                    chunk: int = 16) -> np.ndarray:
    """Centred Grams (B, L, P, P) of per-pitch means of clips resampled with replacement within each pitch.

    A resampled mean m* of n clips has variance (n − 1)/n of the mean's; deviations m* − m are scaled by
    √(n/(n − 1)) so that the interval is not too narrow with a few clips per pitch (3 clips: 18 % wider).
    """
    n_clips, sizes = len(index), np.bincount(index)
    order = np.argsort(index, kind="stable")
    group = index[order]  # the pitch of each resampled slot
    starts = np.cumsum(sizes) - sizes
    picks = order[starts[group] + (rng.random((n_bootstrap, n_clips)) * sizes[group]).astype(np.int64)]
    inflation = np.sqrt(sizes / (sizes - 1.0))
    weights = np.broadcast_to((1 - inflation[:, None]) * averaging_weights(index, len(sizes)),
                              (n_bootstrap, len(sizes), n_clips)).copy()
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], group[None, :], picks), (inflation / sizes)[group])
    grams = []
    for start in range(0, n_bootstrap, chunk):  # BLAS products (numpy's broadcast matmul would not use BLAS)
        part = weights[start:start + chunk]
        left = np.tensordot(part, clip_gram, axes=([2], [1]))  # (b, P, L, N)
        grams.append(np.einsum("bpln,bqn->blpq", left, part))
    return double_centre(np.concatenate(grams))
