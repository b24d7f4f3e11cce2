"""The replicates the helix probe compares a layer against, as centred Gram matrices of per-pitch means.

`smooth_surrogate_grams`: surrogate means as smooth along pitch as the data, coordinate by coordinate, with no chroma
circle (the null of `p_helix`). `bootstrap_grams`: per-pitch means of clips resampled within each pitch (the interval
of ω).
"""

from __future__ import annotations

import functools

import numpy as np

from earlens.helix import pitch_step

# Smooth kernels of the surrogate null: Matérn length scales, shares of a random linear trend and of white noise
# (the tiny noise shares let noise-free smooth curves be matched: their likelihood is set by near-null directions)
KERNEL_LENGTHS = 30
TREND_SHARES = (0.0, 0.3, 0.7, 0.95)
NOISE_SHARES = (0.0, 1e-8, 1e-6, 1e-4, 0.01, 0.03, 0.1, 0.3, 0.6)


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


@functools.lru_cache(maxsize=4)
def _smoothness_kernels(t_bytes: bytes):
    """Smooth, line-free kernels over pitch, in the contrasts Q (P, P−1) orthogonal to the constant.

    Matérn ν = 1/2, 3/2, ∞ at `KERNEL_LENGTHS` length scales from half a pitch step to 4 spans, and Brownian
    motion, each mixed with a random linear trend (`TREND_SHARES`) and white noise (`NOISE_SHARES`); plus trend +
    noise and pure noise. None has a spectral line at a chroma frequency. Returns Q, the Cholesky factors (G, m, m)
    of QᵀKQ, their inverses packed as (G, m(m+1)/2) weights of the products y_i y_j (i <= j, indices given), and
    their log-determinants (G,).
    """
    t = np.frombuffer(t_bytes)
    distance = np.abs(t[:, None] - t[None, :])
    span = max(t[-1] - t[0], 1.0)
    bases = [_matern(distance, nu, length) for nu in (0.5, 1.5, np.inf)
             for length in np.geomspace(0.5 * pitch_step(t), 4 * span, KERNEL_LENGTHS)]
    origin = t - t[0]
    brownian = np.minimum(origin[:, None], origin[None, :])
    bases.append(brownian / brownian.diagonal().mean())
    standardised = (t - t.mean()) / t.std()
    trend, eye = np.outer(standardised, standardised), np.eye(len(t))
    kernels = [(1 - eta) * ((1 - rho) * base + rho * trend) + eta * eye
               for base in bases for rho in TREND_SHARES for eta in NOISE_SHARES]
    kernels += [(1 - eta) * trend + eta * eye for eta in NOISE_SHARES if eta >= 1e-4] + [eye]
    basis = np.linalg.qr(np.ones((len(t), 1)), mode="complete")[0][:, 1:]
    contrasts = basis.T @ np.array(kernels) @ basis + 1e-10 * np.eye(len(t) - 1)
    chol = np.linalg.cholesky(contrasts)
    inverse = np.linalg.inv(chol)
    precision = np.swapaxes(inverse, 1, 2) @ inverse
    rows, cols = np.triu_indices(len(t) - 1)
    packed = precision[:, rows, cols] * np.where(rows == cols, 1.0, 2.0)  # yᵀK⁻¹y = packed @ (y_i y_j), i <= j
    logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    return basis, chol, packed, (rows, cols), logdet


def smooth_surrogate_grams(means, t, n_surrogates: int, rng: np.random.Generator, chunk: int = 512,
                           n_prior: int = 512, n_em: int = 50) -> np.ndarray:
    """Centred Gram matrices (n, L, P, P) of surrogate per-pitch means that keep each coordinate's smoothness.

    Every feature coordinate of every layer gets its own Gaussian-process model along pitch: a kernel of
    `_smoothness_kernels` and its scale, by restricted likelihood (constant mean profiled out; scale-free, so
    coordinates of any size count alike). One coordinate has only P values, so its best kernel alone is noisy, and
    many noisy kernels average to a rougher curve than the data (a random walk in 256 dimensions then looks
    "helical"): the kernel is the posterior mode under a prior over kernels fitted to the layer's coordinates by EM
    (on at most `n_prior` of them). Surrogates redraw every coordinate independently from its model: as smooth as
    the data coordinate by coordinate, ramps and random walks included, with no chroma circle.
    """
    means = np.asarray(means, dtype=np.float64)
    n_layers, n_pitches, _ = means.shape
    basis, chol, packed, (rows, cols), logdet = _smoothness_kernels(
        np.ascontiguousarray(t, dtype=np.float64).tobytes())
    m = n_pitches - 1

    def loglik(columns):  # (G, c) restricted profile log-likelihood of each kernel for each column
        quad = packed @ (columns[rows] * columns[cols])  # one GEMM, no (G, m, c) intermediate
        return -0.5 * m * np.log(np.maximum(quad, 1e-300) / m) - 0.5 * logdet[:, None], quad

    grams = np.zeros((n_surrogates, n_layers, m, m))
    for layer in range(n_layers if n_surrogates else 0):  # per layer and coordinate chunk: memory, not speed
        contrasts = basis.T @ means[layer]  # (m, D)
        energy = (contrasts**2).sum(axis=0)
        contrasts = contrasts[:, energy > 1e-12 * energy.max()] if energy.max() > 0 else contrasts[:, :0]
        subset = contrasts[:, np.linspace(0, contrasts.shape[1] - 1, min(n_prior, contrasts.shape[1])).astype(int)]
        subset_loglik = loglik(subset)[0]
        likelihood = np.exp(subset_loglik - subset_loglik.max(axis=0))
        prior = np.full(len(logdet), 1.0 / len(logdet))
        for _ in range(n_em):
            posterior = prior[:, None] * likelihood
            prior = (posterior / posterior.sum(axis=0)).mean(axis=1)
        for start in range(0, contrasts.shape[1], chunk):
            ll, quad = loglik(contrasts[:, start:start + chunk])
            best = np.argmax(ll + np.log(np.maximum(prior, 1e-300))[:, None], axis=0)
            scale = np.sqrt(quad[best, np.arange(len(best))] / m)
            draws = chol[best] @ rng.standard_normal((len(best), m, n_surrogates)) * scale[:, None, None]
            draws = draws.transpose(2, 1, 0)  # (n, m, c)
            grams[:, layer] += draws @ draws.transpose(0, 2, 1)
    return basis @ grams @ basis.T


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
