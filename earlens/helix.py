"""Helix probe for pitch (Yagi & Takamichi 2025): does a layer lay pitches out on a helix (height = pitch height,
angle = chroma), and is that more than a smooth curve seen through PCA?

Model, for pitch index t (semitones from the lowest pitch) in a 3-D PCA subspace:

    y(t) = h(t)·c + r(t)·(cos θ(t)·u + sin θ(t)·v),  h = h_pitch·t + h0,  r = r_slope·t + r0,  θ = ω(t − t0)

with {c, u, v} orthonormal. One turn per octave is ω = π/6.

Fitter (`fit_helix`), batched over any leading axes (layers × PC triples × replicates):
for a fixed ω the phase offset t0 is an in-plane rotation of (u, v), so with R = [c, u', v'] the model is
Z(t) R^T with Z(t) = [h(t), r(t) cos ωt, r(t) sin ωt]. Given R, the four scalars are two closed-form line fits
(h from the c-coordinate; r from the radial projection w_u cos ωt + w_v sin ωt); given them, R is an orthogonal
Procrustes (polar) step. We alternate these from an unconstrained linear fit at candidate ω's (picked on a grid by
the linear surrogate y = A·[1, t, cos, sin, t cos, t sin]), keep the best, and refine ω by a shrinking
three-point search with parabolic steps.

Frame convention (t0 and the in-plane rotation of u, v are one degree of freedom): t0 = 0 and u is the radial
direction of the lowest pitch, v the direction the circle turns to (ω > 0), h_pitch ≥ 0 and mean radius ≥ 0.
`fit_helix_optuna` (the paper's protocol) searches t0 freely instead.

Probe (`helix_probe`): per-pitch means → PCA → a fit per triple of the top PCs → the best triple, with its
significance against smooth surrogates (`smooth_surrogate_grams`), chroma diagnostics (R² over ω, octave
equivalence), a clip bootstrap for ω and ω's aliasing on gapped pitch sets.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

OMEGA_MIN = 0.05  # rad/semitone; slower turns are indistinguishable from a bent line over a few octaves
# Smooth kernels of the surrogate null: Matérn length scales, shares of a random linear trend and of white noise
# (the tiny noise shares let noise-free smooth curves be matched: their likelihood is set by near-null directions)
KERNEL_LENGTHS = 30
TREND_SHARES = (0.0, 0.3, 0.7, 0.95)
NOISE_SHARES = (0.0, 1e-8, 1e-6, 1e-4, 0.01, 0.03, 0.1, 0.3, 0.6)


@dataclass
class HelixFit:
    """Fitted helix parameters, each with the batch's leading shape; `basis` (..., 3, 3) has columns c, u, v."""

    h_pitch: np.ndarray
    h0: np.ndarray
    r_slope: np.ndarray
    r0: np.ndarray
    omega: np.ndarray
    t0: np.ndarray
    basis: np.ndarray
    mse: np.ndarray  # mean over pitches of the squared Euclidean residual
    r2: np.ndarray  # 1 − SSE/SST, SST about the centroid of the points

    @property
    def score_inv_mse(self) -> np.ndarray:
        """The paper's helicality score."""
        return 1.0 / self.mse

    def curve(self, t: np.ndarray) -> np.ndarray:
        """Points of the fitted helix at (possibly fractional) pitch indices t: (..., len(t), 3)."""
        return helix_curve(self.h_pitch, self.h0, self.r_slope, self.r0, self.omega, self.t0, self.basis, t)

    def __getitem__(self, index) -> HelixFit:
        return HelixFit(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


def helix_curve(h_pitch, h0, r_slope, r0, omega, t0, basis, t) -> np.ndarray:
    """Evaluate the helix model, broadcasting the parameters (...) over pitch indices t (P,): (..., P, 3)."""
    t = np.asarray(t, dtype=np.float64)
    expand = [np.asarray(p, dtype=np.float64)[..., None] for p in (h_pitch, h0, r_slope, r0, omega, t0)]
    h_pitch, h0, r_slope, r0, omega, t0 = expand
    height, radius, angle = h_pitch * t + h0, r_slope * t + r0, omega * (t - t0)
    coords = np.stack([height, radius * np.cos(angle), radius * np.sin(angle)], axis=-1)  # (..., P, 3)
    return coords @ np.swapaxes(np.asarray(basis, dtype=np.float64), -1, -2)


def _line_fit(t: np.ndarray) -> np.ndarray:
    """(2, P) matrix mapping values at t to the least-squares [slope, intercept]."""
    return np.linalg.pinv(np.stack([t, np.ones_like(t)], axis=1))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of 3-vectors along the last axis (np.cross is slow on large batches)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def _polar(m: np.ndarray, n_newton: int = 8) -> np.ndarray:
    """Nearest orthogonal matrices (the orthogonal Procrustes solution) to a batch of 3×3 matrices.

    Scaled Newton iteration X ← (γX + X^{-T}/γ)/2 with X^{-T} = cofactor/det in closed form (about twice as fast
    as batched SVD for 3×3); near-singular matrices, where the polar factor is ill-defined, fall back to SVD.
    """
    x = m
    for _ in range(n_newton):
        r0, r1, r2 = x[..., 0, :], x[..., 1, :], x[..., 2, :]
        cofactor = np.stack([_cross(r1, r2), _cross(r2, r0), _cross(r0, r1)], axis=-2)
        det = (r0 * cofactor[..., 0, :]).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.abs(det) ** (-1 / 3)
            step = 0.5 * (gamma[..., None, None] * x + cofactor / (gamma * det)[..., None, None])
            change = np.abs(step - x)
        x = step
        if np.where(np.isfinite(change), change, 0.0).max(initial=0.0) < 1e-14:  # quadratic convergence: done
            break
    size = np.abs(m).max(axis=(-2, -1)) + 1e-300
    det_m = (m[..., 0, :] * _cross(m[..., 1, :], m[..., 2, :])).sum(-1)
    singular = ~np.isfinite(x).all(axis=(-2, -1)) | (np.abs(det_m) < 1e-9 * size**3)
    if singular.any():
        u, _, vt = np.linalg.svd(m[singular])
        x[singular] = u @ vt
    return x


def _alternate(y, t, omega, rotation, n_iter):
    """Fit h_pitch, h0, r_slope, r0 and R = [c, u', v'] at fixed ω by alternating line fits and Procrustes.

    y (B, P, 3), omega (B,), rotation (B, 3, 3) initial R. Returns (params (B, 4), R, sse (B,)).
    """
    line = _line_fit(t)
    phase = omega[:, None] * t
    cos, sin = np.cos(phase), np.sin(phase)
    for step in range(n_iter + 1):
        w = y @ rotation  # coordinates along c, u', v'
        h_pitch, h0 = (w[..., 0] @ line.T).T
        r_slope, r0 = ((w[..., 1] * cos + w[..., 2] * sin) @ line.T).T
        radius = r_slope[:, None] * t + r0[:, None]
        z = np.stack([h_pitch[:, None] * t + h0[:, None], radius * cos, radius * sin], axis=-1)
        if step < n_iter:
            rotation = _polar(np.swapaxes(y, 1, 2) @ z)
    sse = ((y - z @ np.swapaxes(rotation, 1, 2)) ** 2).sum(axis=(1, 2))
    return np.stack([h_pitch, h0, r_slope, r0], axis=1), rotation, sse


def _linear_surrogate(y, t, omegas):
    """Unconstrained fit y ≈ A·[1, t, cos ωt, sin ωt, t cos ωt, t sin ωt] on a grid of ω, for all B at once.

    Returns the explained energy (B, G), the projections on each ω's orthonormal design basis (B, G, 6, 3) and
    the maps from projections back to coefficients A (G, 6, 6).
    """
    phase = omegas[:, None] * t  # (G, P)
    design = np.stack(
        [np.ones_like(phase), np.broadcast_to(t, phase.shape), np.cos(phase), np.sin(phase),
         t * np.cos(phase), t * np.sin(phase)], axis=-1,
    )  # (G, P, 6)
    q, r = np.linalg.qr(design)
    b, p, _ = y.shape
    projected = q.transpose(0, 2, 1).reshape(-1, p) @ y.transpose(1, 0, 2).reshape(p, -1)  # (G·6, B·3)
    projected = projected.reshape(len(omegas), 6, b, 3).transpose(2, 0, 1, 3)
    return (projected**2).sum(axis=(2, 3)), projected, np.linalg.inv(r)


def _initial_frame(coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    """R = [c, u', v'] from linear-fit coefficients (..., 6, 3): the rise and the radial cos/sin directions."""
    t_mid = t.mean()
    rise = coef[..., 1, :] * (t[-1] - t[0])
    radial_u = coef[..., 2, :] + t_mid * coef[..., 4, :]
    radial_v = coef[..., 3, :] + t_mid * coef[..., 5, :]
    return _polar(np.stack([rise, radial_u, radial_v], axis=-1))


def _local_maxima(values: np.ndarray, k: int) -> np.ndarray:
    """Indices (B, k) of the k largest local maxima along the last axis (padded with the next largest values)."""
    padded = np.pad(values, ((0, 0), (1, 1)), constant_values=-np.inf)
    is_peak = (values >= padded[:, :-2]) & (values >= padded[:, 2:])
    ranked = np.where(is_peak, values, values - np.ptp(values, axis=1, keepdims=True) - 1)
    return np.argsort(-ranked, axis=1)[:, :k]


def _fit_batch(y, t, n_grid, n_candidates, n_iter, n_refine, omega_max):
    b = len(y)
    omegas = np.linspace(OMEGA_MIN, omega_max, n_grid)
    energy, projected, to_coef = _linear_surrogate(y, t, omegas)
    picks = _local_maxima(energy, n_candidates)  # (B, K)
    coef = to_coef[picks] @ projected[np.arange(b)[:, None], picks]  # (B, K, 6, 3)
    cand_omega = omegas[picks].reshape(-1)
    cand_rotation = _initial_frame(coef, t).reshape(-1, 3, 3)
    params, rotation, sse = _alternate(np.repeat(y, n_candidates, axis=0), t, cand_omega, cand_rotation, n_iter)
    best = np.argmin(sse.reshape(b, n_candidates), axis=1) + np.arange(b) * n_candidates
    omega, params, rotation, sse = cand_omega[best], params[best], rotation[best], sse[best]

    step = omegas[1] - omegas[0]  # first probes at the neighbouring grid points: the optimum may lie past them
    warm_iter = max(n_iter // 2, 3)

    def keep_better(state, trial):
        better = trial[3] < state[3]
        return tuple(np.where(better.reshape(-1, *[1] * (a.ndim - 1)), b, a) for a, b in zip(state, trial))

    state = (omega, params, rotation, sse)
    for _ in range(n_refine):  # ω: probe ±step around the best, jump to the parabola's vertex, shrink the step
        center, center_sse = state[0], state[3]
        sides = []
        for direction in (-1.0, 1.0):
            trial_omega = np.clip(center + direction * step, OMEGA_MIN, omega_max)
            sides.append((trial_omega, *_alternate(y, t, trial_omega, state[2], warm_iter)))
        curvature = sides[0][3] + sides[1][3] - 2 * center_sse
        shift = np.where(curvature > 0, 0.5 * step * (sides[0][3] - sides[1][3]) / np.maximum(curvature, 1e-300), 0.0)
        vertex = np.clip(center + np.clip(shift, -step, step), OMEGA_MIN, omega_max)
        for trial in sides:
            state = keep_better(state, trial)
        state = keep_better(state, (vertex, *_alternate(y, t, vertex, state[2], warm_iter)))
        step /= 4
    omega, params, rotation, sse = state
    return omega, params, rotation, sse


def fit_helix(
    points,
    t=None,
    n_grid: int = 64,
    n_candidates: int = 3,
    n_iter: int = 10,
    n_refine: int = 4,
    chunk_size: int = 8192,
    omega_max: float = np.pi,
) -> HelixFit:
    """Least-squares helix through points (..., P, 3) at pitch indices t (P,) (default 0..P-1), batched.

    `n_grid` ω values in [0.05, `omega_max`] screen candidates with the linear surrogate; the best `n_candidates`
    local maxima get `n_iter` alternating steps; `n_refine` rounds of a shrinking three-point (parabolic) search
    polish ω. On pitches `step` semitones apart pass `omega_max = π/step`, the identifiable range (`fold_omega`).
    """
    y = np.asarray(points, dtype=np.float64)
    if y.ndim < 2 or y.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., P, 3), got {y.shape}")
    lead, n_points = y.shape[:-2], y.shape[-2]
    t = np.arange(n_points, dtype=np.float64) if t is None else np.asarray(t, dtype=np.float64)
    if t.shape != (n_points,) or n_points < 5:
        raise ValueError(f"need at least 5 points and one pitch index per point; got {n_points} points, t {t.shape}")
    flat = y.reshape(-1, n_points, 3)
    chunks = range(0, len(flat), chunk_size)
    results = [
        _fit_batch(flat[s:s + chunk_size], t, n_grid, n_candidates, n_iter, n_refine, omega_max)
        for s in tqdm(chunks, desc="helix fits", leave=False, disable=len(chunks) < 4)
    ]
    omega, params, rotation, sse = (np.concatenate(parts) for parts in zip(*results))
    h_pitch, h0, r_slope, r0 = params.T

    # conventions: h_pitch >= 0, mean radius >= 0 (each flips one axis of the frame)
    flip_c = np.where(h_pitch < 0, -1.0, 1.0)
    flip_r = np.where(r_slope * t.mean() + r0 < 0, -1.0, 1.0)
    basis = rotation * np.stack([flip_c, flip_r, flip_r], axis=-1)[:, None, :]
    sst = ((flat - flat.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2))
    fit = HelixFit(
        h_pitch=h_pitch * flip_c, h0=h0 * flip_c, r_slope=r_slope * flip_r, r0=r0 * flip_r, omega=omega,
        t0=np.zeros_like(omega), basis=basis, mse=sse / n_points, r2=1.0 - sse / np.maximum(sst, 1e-300),
    )
    return HelixFit(**{k: v.reshape(lead + v.shape[1:]) for k, v in vars(fit).items()})


def pitch_step(t) -> int:
    """Largest step that divides every pitch difference (1 for a chromatic set; non-integer pitches: 1)."""
    diffs = np.diff(np.unique(np.asarray(t, dtype=np.float64)))
    if len(diffs) == 0 or not np.allclose(diffs, np.round(diffs)):
        return 1
    return int(np.gcd.reduce(np.round(diffs).astype(np.int64)))


def fold_omega(omega, step: int = 1):
    """ω folded into [0, π/step]: on pitches `step` semitones apart, ±ω + 2πk/step trace the same points."""
    period = 2 * np.pi / step
    wrapped = np.mod(omega, period)
    return np.minimum(wrapped, period - wrapped)


def helix_r2_profile(points, t, omegas, n_iter: int = 10) -> np.ndarray:
    """R² of the best helix at each fixed ω: points (B, P, 3), omegas (G,) → (B, G).

    Same model and alternation as `fit_helix`, started from the linear fit at that ω, with ω held fixed.
    """
    y = np.asarray(points, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    omegas = np.asarray(omegas, dtype=np.float64)
    n_sets, n_omegas = len(y), len(omegas)
    _, projected, to_coef = _linear_surrogate(y, t, omegas)
    frames = _initial_frame(to_coef @ projected, t).reshape(-1, 3, 3)
    _, _, sse = _alternate(np.repeat(y, n_omegas, axis=0), t, np.tile(omegas, n_sets), frames, n_iter)
    sst = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2))
    return 1.0 - sse.reshape(n_sets, n_omegas) / np.maximum(sst, 1e-300)[:, None]


@dataclass
class HelixProbeResult:
    """Per-layer helicality (arrays with leading axis L); `layer_stats()` gives every per-layer number by name.

    Two triple selections: the headline one (`select_by`, R² by default) and the paper's (`paper_*`, 1/MSE).
    Significance (`p_helix`, `z`, `null_*`) is against smooth surrogates (`smooth_surrogate_grams`); the pitch
    permutation null (`perm_*`) is kept for comparison only: any curve ordered by pitch beats it.
    """

    fit: HelixFit  # headline selection, leading shape (L,)
    paper_fit: HelixFit  # selection by 1/MSE (Yagi & Takamichi), (L,)
    best_triple: np.ndarray  # (L, 3) PC indices (0-based)
    paper_triple: np.ndarray  # (L, 3)
    points: np.ndarray  # (L, P, 3) PCA coordinates of the headline triple
    t: np.ndarray  # (P,) pitch indices (semitones above the lowest pitch)
    pitches: np.ndarray  # (P,) pitch labels in the order of t
    step: int  # pitch grid step in semitones; ω is identifiable in (0, π/step]
    alpha: float  # level at which `helix_beyond_smooth` is called
    line_r2: np.ndarray  # (L,) R² of the straight pitch-height line alone (no circle) on the same points
    smooth_r2: np.ndarray  # (L,) R² of a quadratic curve in t in the same 3-D subspace (9 parameters vs 8)
    axis_pitch_corr: np.ndarray  # (L,) correlation of the projection on the axis c with pitch
    paper_axis_pitch_corr: np.ndarray  # (L,)
    null_r2: np.ndarray  # (L, n_surrogates) headline R² of smooth surrogates through the same pipeline
    perm_null_r2: np.ndarray  # (L, n_permutations) same on shuffled pitch order
    omega_boot: np.ndarray  # (L, n_bootstrap) ω of clip-resampled replicates (empty without clip features)
    omega_grid: np.ndarray  # (G,) ω of the profile
    r2_profile: np.ndarray  # (L, G) R² of the headline triple's points at fixed ω
    r2_at_pi6: np.ndarray  # (L,) R² at ω = π/6 (one turn per octave; folded when aliased)
    r2_at_pi3: np.ndarray  # (L,) R² at ω = π/3
    r2_off_harmonic: np.ndarray  # (L,) best R² at ω at least π/24 away from every k·π/6
    omega_off_harmonic: np.ndarray  # (L,)
    octave_index: np.ndarray  # (L,) mean cosine similarity 12 semitones apart minus that at 11 and 13
    null_octave_index: np.ndarray  # (L, n_surrogates)
    triple_r2: np.ndarray  # (L, n_triples) R² of every triple
    explained_variance: np.ndarray  # (L, n_components) ratio per PC

    @property
    def r2(self) -> np.ndarray:
        return self.fit.r2

    @property
    def score_inv_mse(self) -> np.ndarray:
        return self.fit.score_inv_mse

    @property
    def omega_chroma(self) -> np.ndarray:
        return self.fit.omega

    @property
    def omega_max(self) -> float:
        return np.pi / self.step

    @property
    def null_mean(self) -> np.ndarray:
        return _mean(self.null_r2)

    @property
    def null_std(self) -> np.ndarray:
        return _std(self.null_r2)

    @property
    def z(self) -> np.ndarray:
        """(r2 − null mean) / null std against the smooth surrogates."""
        return (self.r2 - self.null_mean) / np.maximum(self.null_std, 1e-12)

    @property
    def p_helix(self) -> np.ndarray:
        """One-sided surrogate p-value of R², (1 + #{null ≥ observed}) / (1 + n)."""
        return _p_value(self.r2, self.null_r2)

    @property
    def p_octave(self) -> np.ndarray:
        return _p_value(self.octave_index, self.null_octave_index)

    @property
    def perm_z(self) -> np.ndarray:
        return (self.r2 - _mean(self.perm_null_r2)) / np.maximum(_std(self.perm_null_r2), 1e-12)

    @property
    def omega_ci(self) -> np.ndarray:
        """(L, 2) 95 % interval of ω: ω ± 1.96 × its standard deviation over clip-resampled replicates, within
        (0, π/step]; NaN without replicates. (Percentile intervals covered 92–94 % on noisy helices, this 95 %.)"""
        if self.omega_boot.shape[1] < 2:
            return np.full((len(self.r2), 2), np.nan)
        half = 1.96 * self.omega_boot.std(axis=1, ddof=1)
        return np.clip(np.stack([self.omega_chroma - half, self.omega_chroma + half], axis=1), 0.0, self.omega_max)

    def layer_stats(self) -> dict[str, np.ndarray]:
        """Every per-layer statistic as a float array (L,), in table order."""
        fit, paper = self.fit, self.paper_fit
        n_layers = len(self.r2)
        stats = {
            "r2": fit.r2, "score_inv_mse": fit.score_inv_mse, "line_r2": self.line_r2,
            "p_helix": self.p_helix, "z": self.z, "null_mean": self.null_mean, "null_std": self.null_std,
            "helix_beyond_smooth": (self.p_helix <= self.alpha).astype(np.float64),
            "smooth_r2": self.smooth_r2, "delta_r2_smooth": fit.r2 - self.smooth_r2,
            "helix_beats_smooth": (fit.r2 > self.smooth_r2).astype(np.float64),
            "omega_chroma": fit.omega, "omega_ci_low": self.omega_ci[:, 0], "omega_ci_high": self.omega_ci[:, 1],
            "omega_max": np.full(n_layers, self.omega_max), "omega_aliased": np.full(n_layers, float(self.step > 1)),
            "r2_at_pi6": self.r2_at_pi6, "r2_at_pi3": self.r2_at_pi3, "r2_off_harmonic": self.r2_off_harmonic,
            "omega_off_harmonic": self.omega_off_harmonic,
            "octave_index": self.octave_index, "p_octave": self.p_octave,
            "perm_z": self.perm_z, "perm_null_mean": _mean(self.perm_null_r2), "perm_null_std": _std(self.perm_null_r2),
            "h_pitch": fit.h_pitch, "h0": fit.h0, "r_slope": fit.r_slope, "r0": fit.r0, "t0": fit.t0,
            "axis_pitch_corr": self.axis_pitch_corr,
            "paper_score_inv_mse": paper.score_inv_mse, "paper_r2": paper.r2, "paper_omega_chroma": paper.omega,
            "paper_h_pitch": paper.h_pitch, "paper_h0": paper.h0, "paper_r_slope": paper.r_slope,
            "paper_r0": paper.r0, "paper_t0": paper.t0, "paper_axis_pitch_corr": self.paper_axis_pitch_corr,
        }
        return {key: np.asarray(value, dtype=np.float64) for key, value in stats.items()}


def _mean(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=1) if values.shape[1] else np.full(len(values), np.nan)


def _std(values: np.ndarray) -> np.ndarray:
    return values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.full(len(values), np.nan)


def _p_value(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    if null.shape[1] == 0:
        return np.full(len(observed), np.nan)
    return (1.0 + (null >= observed[:, None]).sum(axis=1)) / (1.0 + null.shape[1])


def per_pitch_means(features, pitch) -> tuple[np.ndarray, np.ndarray]:
    """Average features (L, N, D) over clips of the same pitch: ((L, P, D) float64, sorted unique pitches (P,))."""
    features = np.asarray(features)
    pitch = np.asarray(pitch)
    if features.ndim != 3 or features.shape[1] != len(pitch):
        raise ValueError(f"features must be (L, N, D) with N = len(pitch) = {len(pitch)}, got {features.shape}")
    pitches, index = np.unique(pitch, return_inverse=True)
    return _averaging_weights(index.reshape(-1), len(pitches), features.dtype) @ features, pitches


def _averaging_weights(index: np.ndarray, n_pitches: int, dtype=np.float64) -> np.ndarray:
    """(P, N) matrix averaging clips per pitch index."""
    weights = np.zeros((n_pitches, len(index)), dtype=dtype)
    weights[index, np.arange(len(index))] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def _stack_layers(features) -> np.ndarray:
    """Stack layers of different widths by zero-padding the feature axis (zero columns leave PCA unchanged)."""
    if isinstance(features, np.ndarray) or hasattr(features, "shape"):
        return np.asarray(features)
    arrays = [np.asarray(f) for f in features]
    width = max(a.shape[-1] for a in arrays)
    return np.stack([np.pad(a, ((0, 0), (0, width - a.shape[-1]))) for a in arrays])


def _double_centre(gram: np.ndarray) -> np.ndarray:
    """Gram matrix of the points centred on their centroid, from any Gram matrix (..., P, P)."""
    return (gram - gram.mean(axis=-1, keepdims=True) - gram.mean(axis=-2, keepdims=True)
            + gram.mean(axis=(-2, -1), keepdims=True))


def _pca_scores(gram: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA coordinates (..., P, k) and explained-variance ratios (..., k) from centred Grams (..., P, P)."""
    variance, vectors = np.linalg.eigh(gram)
    variance, vectors = np.maximum(variance[..., ::-1], 0.0), vectors[..., ::-1]
    scores = vectors[..., :n_components] * np.sqrt(variance[..., None, :n_components])
    explained = variance[..., :n_components] / np.maximum(variance.sum(axis=-1, keepdims=True), 1e-300)
    return scores, explained


def _octave_index(gram: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of centred per-pitch points 12 semitones apart minus the mean at 11 and 13."""
    norm = np.sqrt(np.maximum(np.diagonal(gram, axis1=-2, axis2=-1), 1e-300))
    cosine = gram / (norm[..., :, None] * norm[..., None, :])
    distance = np.abs(t[:, None] - t[None, :])

    def mean_at(semitones):
        mask = np.isclose(distance, semitones)
        return (cosine * mask).sum(axis=(-2, -1)) / mask.sum() if mask.any() else np.full(gram.shape[:-2], np.nan)

    return mean_at(12) - (mean_at(11) + mean_at(13)) / 2


class _Pipeline:
    """Centred Gram of per-pitch means → PCA → helix fit of every PC triple → the selected triple.

    The data, the smooth surrogates, the permutations and the bootstrap replicates all go through `run`.
    """

    def __init__(self, t, n_components: int, select_by: str, omega_max: float, fit_options: dict):
        self.t, self.n_components, self.select_by = t, n_components, select_by
        self.triples = np.array(list(combinations(range(n_components), 3)))
        self.fit_options = {**fit_options, "omega_max": omega_max}

    def run(self, gram: np.ndarray):
        """Fits of every triple (..., T), their points (..., T, P, 3), PCA explained variance (..., k)."""
        scores, explained = _pca_scores(gram, self.n_components)
        points = np.moveaxis(scores[..., self.triples], -2, -3)
        return fit_helix(points, self.t, **self.fit_options), points, explained

    def choose(self, fits: HelixFit, select_by: str | None = None) -> np.ndarray:
        key = fits.r2 if (select_by or self.select_by) == "r2" else fits.score_inv_mse
        return np.argmax(key, axis=-1)

    def selected(self, gram: np.ndarray) -> HelixFit:
        """The selected triple's fit for every leading index of `gram` (..., P, P)."""
        fits, _, _ = self.run(gram)
        chosen = self.choose(fits)
        return fits[np.indices(chosen.shape, sparse=True) + (chosen,)]


def _one_blas_thread(function):
    """Run with single-threaded BLAS/LAPACK: the probe's many small factorisations and products run several
    times slower threaded (batched eigh of 36 x 36 matrices ~40x on 2 busy cores)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return wrapper


@_one_blas_thread
def helix_probe(
    features,
    pitch=None,
    n_components: int = 5,
    n_surrogates: int = 99,
    n_bootstrap: int = 100,
    n_permutations: int = 0,
    alpha: float = 0.01,
    seed: int = 0,
    select_by: str = "r2",
    **fit_options,
) -> HelixProbeResult:
    """Helicality of every layer: per-pitch means → PCA → helix fit on each C(n_components, 3) triple → best.

    `features`: clip features (L, N, D) with `pitch` (N,) MIDI labels (needed for the bootstrap CI of ω), or
    per-pitch means (L, P, D) in pitch order with `pitch=None` (pitch 0..P-1); a list of per-layer arrays of
    different widths also works. Pitch index t = pitch − min(pitch); on a pitch grid coarser than a semitone ω is
    only identifiable in (0, π/step]: it is fitted there, and a warning says so. `select_by` "r2" (scale-free) or
    "inv_mse" picks the headline triple; the paper's 1/MSE selection is reported beside it either way.

    Significance: `n_surrogates` smooth surrogates (`smooth_surrogate_grams`) through the same pipeline give
    `p_helix`; `helix_beyond_smooth` is p_helix ≤ `alpha`. `n_permutations` > 0 adds the shuffled-pitch null.
    All randomness comes from `seed`, so equal inputs give equal results (every DDP rank agrees).
    """
    if select_by not in ("r2", "inv_mse"):
        raise ValueError(f"select_by must be 'r2' or 'inv_mse', got {select_by!r}")
    if not 0 < alpha < 1 or (n_surrogates and 1 / (1 + n_surrogates) > alpha):
        raise ValueError(f"alpha={alpha} needs 0 < alpha < 1 and n_surrogates >= 1/alpha - 1, got {n_surrogates}")
    features = _stack_layers(features)
    if features.ndim != 3:
        raise ValueError(f"features must be (L, N, D) or (L, P, D), got shape {features.shape}")
    rng = np.random.default_rng(seed)
    if pitch is None:
        means, pitches, clip_gram, index = np.asarray(features, np.float64), np.arange(features.shape[1]), None, None
    else:
        means, pitches = per_pitch_means(features, pitch)
        means = means.astype(np.float64)
        index = np.unique(np.asarray(pitch), return_inverse=True)[1].reshape(-1)
        centred = features - features.mean(axis=1, keepdims=True)
        clip_gram = (centred @ np.swapaxes(centred, 1, 2)).astype(np.float64)
    n_layers, n_pitches, width = means.shape
    if n_components > min(n_pitches - 1, width) or n_components < 3:
        raise ValueError(f"n_components={n_components} needs 3 <= n_components <= min(P-1, D) = "
                         f"{min(n_pitches - 1, width)}")
    t = (pitches - pitches.min()).astype(np.float64)
    step = pitch_step(t)
    if step > 1:
        warnings.warn(f"pitches are {step} semitones apart: ω is identifiable only up to ±ω + 2πk/{step}; "
                      f"ω is reported folded into (0, π/{step}] = (0, {np.pi / step:.3f}]", stacklevel=2)
    pipeline = _Pipeline(t, n_components, select_by, np.pi / step, fit_options)

    gram = _double_centre(means @ np.swapaxes(means, 1, 2))
    fits, points, explained = pipeline.run(gram)
    layers = np.arange(n_layers)
    chosen, paper_chosen = pipeline.choose(fits), pipeline.choose(fits, "inv_mse")
    best, paper = fits[layers, chosen], fits[layers, paper_chosen]
    best_points, paper_points = points[layers, chosen], points[layers, paper_chosen]

    surrogate_gram = smooth_surrogate_grams(means, t, n_surrogates, rng)
    permutations = rng.permuted(np.tile(np.arange(n_pitches), (n_permutations, 1)), axis=1)
    permuted_gram = gram[:, permutations[:, :, None], permutations[:, None, :]].swapaxes(0, 1)
    do_bootstrap = n_bootstrap > 0 and index is not None and np.bincount(index).min() >= 2
    boot_gram = (_bootstrap_grams(clip_gram, index, n_bootstrap, rng) if do_bootstrap
                 else np.zeros((0, n_layers, n_pitches, n_pitches)))
    replicates = np.concatenate([surrogate_gram, permuted_gram, boot_gram])
    selected = pipeline.selected(replicates) if len(replicates) else None
    bounds = np.cumsum([0, len(surrogate_gram), len(permuted_gram), len(boot_gram)])

    def replicate_values(part: int, field: str) -> np.ndarray:  # (L, n) of one kind of replicate
        if bounds[part + 1] == bounds[part]:
            return np.zeros((n_layers, 0))
        return getattr(selected, field)[bounds[part]:bounds[part + 1]].T

    omega_grid, profile, at_harmonics, off_harmonic = _chroma_profile(best_points, t, step)
    return HelixProbeResult(
        fit=best, paper_fit=paper, best_triple=pipeline.triples[chosen], paper_triple=pipeline.triples[paper_chosen],
        points=best_points, t=t, pitches=pitches, step=step, alpha=alpha,
        line_r2=_polynomial_r2(best_points, t, 1), smooth_r2=_polynomial_r2(best_points, t, 2),
        axis_pitch_corr=_axis_pitch_corr(best, best_points, t),
        paper_axis_pitch_corr=_axis_pitch_corr(paper, paper_points, t),
        null_r2=replicate_values(0, "r2"), perm_null_r2=replicate_values(1, "r2"),
        omega_boot=replicate_values(2, "omega"),
        omega_grid=omega_grid, r2_profile=profile, r2_at_pi6=at_harmonics[:, 0], r2_at_pi3=at_harmonics[:, 1],
        r2_off_harmonic=off_harmonic[0], omega_off_harmonic=off_harmonic[1],
        octave_index=_octave_index(gram, t), null_octave_index=_octave_index(surrogate_gram, t).T,
        triple_r2=fits.r2, explained_variance=explained,
    )


def _chroma_profile(points: np.ndarray, t: np.ndarray, step: int, n_omegas: int = 96):
    """R² over a grid of ω in (0, π/step] (L, G); at π/6 and π/3 (folded) (L, 2); the best R² at least π/24 away
    from every k·π/6 and its ω, ((L,), (L,)). What makes a helix a pitch helix is a peak at a harmonic of π/6."""
    omega_grid = np.linspace(OMEGA_MIN, np.pi / step, n_omegas)
    harmonics = fold_omega(np.arange(1, 7) * np.pi / 6, step)
    profile = helix_r2_profile(points, t, np.concatenate([omega_grid, harmonics[:2]]))
    profile, at_harmonics = profile[:, :n_omegas], profile[:, n_omegas:]
    off = np.abs(omega_grid[:, None] - harmonics[None, :]).min(axis=1) >= np.pi / 24
    best = np.argmax(np.where(off, profile, -np.inf), axis=1)
    return omega_grid, profile, at_harmonics, (profile[np.arange(len(points)), best], omega_grid[best])


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


def _bootstrap_grams(clip_gram: np.ndarray, index: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
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
    weights = np.broadcast_to((1 - inflation[:, None]) * _averaging_weights(index, len(sizes)),
                              (n_bootstrap, len(sizes), n_clips)).copy()
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], group[None, :], picks), (inflation / sizes)[group])
    grams = []
    for start in range(0, n_bootstrap, chunk):  # BLAS products (numpy's broadcast matmul would not use BLAS)
        part = weights[start:start + chunk]
        left = np.tensordot(part, clip_gram, axes=([2], [1]))  # (b, P, L, N)
        grams.append(np.einsum("bpln,bqn->blpq", left, part))
    return _double_centre(np.concatenate(grams))


def _polynomial_r2(points: np.ndarray, t: np.ndarray, degree: int) -> np.ndarray:
    """R² of the best polynomial curve of `degree` in t through points (..., P, 3): 3·(degree + 1) parameters.

    Degree 1 is the pitch-height line alone (`line_r2`); degree 2 (9 parameters, one more than the helix's 8:
    h_pitch, h0, r_slope, r0, ω and the frame's 3 angles) is the smooth competitor of the nested comparison.
    """
    design = np.vander(t - t.mean(), degree + 1)
    residual = points - design @ (np.linalg.pinv(design) @ points)
    sst = ((points - points.mean(axis=-2, keepdims=True)) ** 2).sum(axis=(-2, -1))
    return 1.0 - (residual**2).sum(axis=(-2, -1)) / np.maximum(sst, 1e-300)


def _axis_pitch_corr(fit: HelixFit, points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pearson correlation of the points' projection on the helix axis c with pitch (the paper's check)."""
    height = np.einsum("...pk,...k->...p", points, fit.basis[..., :, 0])
    height = height - height.mean(axis=-1, keepdims=True)
    pitch = t - t.mean()
    return (height @ pitch) / np.maximum(np.linalg.norm(height, axis=-1) * np.linalg.norm(pitch), 1e-300)


def fit_helix_optuna(points, t=None, n_trials: int = 1000, n_restarts: int = 3, seed: int = 0) -> HelixFit:
    """The paper's protocol: Optuna (TPE) over all helix parameters, `n_restarts` studies, best kept.

    The frame {c, u, v} is parametrised by ZYZ Euler angles, t0 by the phase ω·t0 ∈ [−π, π], ω ∈ [−π, π]
    (ω < 0 is reported as ω > 0 with v flipped). One study per point set: slow by design, for comparison.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y = np.asarray(points, dtype=np.float64)
    lead, n_points = y.shape[:-2], y.shape[-2]
    t = np.arange(n_points, dtype=np.float64) if t is None else np.asarray(t, dtype=np.float64)
    flat = y.reshape(-1, n_points, 3)
    span = max(t[-1] - t[0], 1.0)
    best_params = []
    for cloud in tqdm(flat, desc="optuna helix fits", leave=False):
        scale = float(np.abs(cloud).max()) or 1.0

        def objective(trial, cloud=cloud, scale=scale):
            p = _optuna_params(trial, scale, span)
            return float(((cloud - helix_curve(*p, t)) ** 2).sum(axis=-1).mean())

        studies = []
        for restart in range(n_restarts):
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed + restart))
            study.optimize(objective, n_trials=n_trials)
            studies.append(study)
        best = min(studies, key=lambda s: s.best_value)
        best_params.append(_optuna_params(optuna.trial.FixedTrial(best.best_params), scale, span))
    h_pitch, h0, r_slope, r0, omega, t0, basis = (np.array(v) for v in zip(*best_params))
    flip = np.where(omega < 0, -1.0, 1.0)
    basis = basis * np.stack([np.ones_like(flip), np.ones_like(flip), flip], axis=-1)[:, None, :]
    omega = np.abs(omega)
    curve = helix_curve(h_pitch, h0, r_slope, r0, omega, t0, basis, t)
    sse = ((flat - curve) ** 2).sum(axis=(1, 2))
    sst = ((flat - flat.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2))
    fit = HelixFit(h_pitch=h_pitch, h0=h0, r_slope=r_slope, r0=r0, omega=omega, t0=t0, basis=basis,
                   mse=sse / n_points, r2=1.0 - sse / np.maximum(sst, 1e-300))
    return HelixFit(**{k: v.reshape(lead + v.shape[1:]) for k, v in vars(fit).items()})


def _optuna_params(trial, scale: float, span: float):
    h_pitch = trial.suggest_float("h_pitch", -2 * scale / span, 2 * scale / span)
    h0 = trial.suggest_float("h0", -scale, scale)
    r_slope = trial.suggest_float("r_slope", -scale / span, scale / span)
    r0 = trial.suggest_float("r0", 0.0, 1.5 * scale)
    omega = trial.suggest_float("omega", -np.pi, np.pi)
    phase0 = trial.suggest_float("phase0", -np.pi, np.pi)
    alpha, beta, gamma = (trial.suggest_float(n, lo, hi) for n, lo, hi in
                          (("alpha", -np.pi, np.pi), ("beta", 0.0, np.pi), ("gamma", -np.pi, np.pi)))
    t0 = phase0 / omega if abs(omega) > 1e-9 else 0.0
    return h_pitch, h0, r_slope, r0, omega, t0, _euler_zyz(alpha, beta, gamma)


def _euler_zyz(alpha: float, beta: float, gamma: float) -> np.ndarray:
    def rz(a):
        return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])

    ry = np.array([[np.cos(beta), 0.0, np.sin(beta)], [0.0, 1.0, 0.0], [-np.sin(beta), 0.0, np.cos(beta)]])
    return rz(alpha) @ ry @ rz(gamma)


def benchmark_fitters(points, n_trials: int = 50, n_restarts: int = 1, seed: int = 0) -> dict[str, float]:
    """Time `fit_helix` vs the Optuna protocol on the same point sets (..., P, 3); for `bench/probe.py`.

    Optuna's time is measured with `n_trials` × `n_restarts` and extrapolated linearly to the paper's
    1000 × 3 (TPE's per-trial cost grows with the trial count, so the extrapolation is a lower bound).
    """
    points = np.asarray(points, dtype=np.float64)
    n_sets = int(np.prod(points.shape[:-2]))
    start = time.perf_counter()
    closed_form = fit_helix(points)
    closed_form_s = time.perf_counter() - start
    start = time.perf_counter()
    optuna_fit = fit_helix_optuna(points, n_trials=n_trials, n_restarts=n_restarts, seed=seed)
    optuna_s = time.perf_counter() - start
    return {
        "n_point_sets": n_sets,
        "fit_helix_s": closed_form_s,
        "fit_helix_mean_r2": float(closed_form.r2.mean()),
        "optuna_s": optuna_s,
        "optuna_trials": n_trials * n_restarts,
        "optuna_mean_r2": float(optuna_fit.r2.mean()),
        "optuna_paper_protocol_s_extrapolated": optuna_s * (1000 * 3) / (n_trials * n_restarts),
    }


def plot_helix(result: HelixProbeResult, layer: int | None = None, title: str | None = None):
    """3-D scatter of a layer's per-pitch PCA points (coloured by pitch class) with its fitted helix."""
    from matplotlib.figure import Figure

    layer = int(np.argmax(result.r2)) if layer is None else layer
    points, fit = result.points[layer], result.fit[layer]
    dense = np.linspace(result.t[0], result.t[-1], 20 * len(result.t))
    curve = fit.curve(dense)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="3d")
    ax.plot(*curve.T, color="0.4", lw=1)
    sc = ax.scatter(*points.T, c=result.pitches % 12, cmap="twilight", vmin=0, vmax=12, s=25, depthshade=False)
    pcs = [f"PC{i + 1}" for i in result.best_triple[layer]]
    ax.set_xlabel(pcs[0])
    ax.set_ylabel(pcs[1])
    ax.set_zlabel(pcs[2])
    fig.colorbar(sc, ax=ax, shrink=0.6, label="pitch class")
    ax.set_title(title or f"layer {layer}: R²={result.r2[layer]:.3f}, p_helix={result.p_helix[layer]:.2f}, "
                 f"ω={result.omega_chroma[layer]:.3f} (π/6={np.pi / 6:.3f})", fontsize=9)
    return fig


def plot_helicality_vs_layer(result: HelixProbeResult, layer_names=None, title: str = "helicality"):
    """R² per layer with the smooth-surrogate null's mean ± 2 std band, and ω_chroma on a second axis."""
    from matplotlib.figure import Figure

    x = np.arange(len(result.r2))
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    ax.fill_between(x, result.null_mean - 2 * result.null_std, result.null_mean + 2 * result.null_std,
                    color="0.85", label="smooth null ± 2σ")
    ax.plot(x, result.null_mean, color="0.5", lw=1)
    ax.plot(x, result.r2, "o-", color="C0", label="helix R²")
    ax.set_xlabel("layer")
    ax.set_ylabel("R²")
    ax.set_title(title)
    omega_axis = ax.twinx()
    omega_axis.plot(x, result.omega_chroma, "s--", color="C1", ms=3, label="ω_chroma")
    omega_axis.axhline(np.pi / 6, color="C1", lw=0.5, ls=":")
    omega_axis.set_ylabel("ω_chroma (rad/semitone)")
    if layer_names is not None:
        ax.set_xticks(x, layer_names, rotation=60, ha="right", fontsize=7)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_helicality_over_training(epochs: np.ndarray, r2: np.ndarray, p_helix: np.ndarray, layer_names,
                                  alpha: float = 0.01, title: str = "helicality during training"):
    """Helix R² (left) and p_helix against smooth surrogates (right, log scale, `alpha` dashed) per layer against
    epoch: `r2`, `p_helix` `(E, L)` at `epochs` `(E,)`, as `HelicalityCallback` logs them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for layer, name in enumerate(layer_names):
        left.plot(epochs, r2[:, layer], "o-", ms=3, color=f"C{layer}", label=name)
        right.plot(epochs, p_helix[:, layer], "o-", ms=3, color=f"C{layer}", label=name)
    right.axhline(alpha, color="0.3", ls="--", lw=1, label=f"α = {alpha}")
    right.set_yscale("log")
    left.set(xlabel="epoch", ylabel="helix R²", title=title)
    right.set(xlabel="epoch", ylabel="p_helix (smooth-surrogate null)")
    left.legend(fontsize=7, loc="best")
    right.legend(handles=right.get_lines()[-1:], fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
