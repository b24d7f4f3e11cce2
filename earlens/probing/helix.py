"""The helix fit of the pitch-helix probe (Yagi & Takamichi 2025): how well do points indexed by pitch lie on a helix
(height = pitch height, angle = chroma)?

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
`bench/helix_optuna.py` (the paper's Optuna protocol, the reference) searches t0 freely instead.

The probe built on it (PCA of per-pitch means, nulls, chroma diagnostics) is `earlens.probing.helicality`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

OMEGA_MIN = 0.05  # rad/semitone; slower turns are indistinguishable from a bent line over a few octaves


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


def nearest_rotation(m: np.ndarray, n_newton: int = 8) -> np.ndarray:
    """Nearest orthogonal matrices (the orthogonal Procrustes solution) to a batch of 3×3 matrices.

    Scaled Newton iteration X ← (γX + X^{-T}/γ)/2 with X^{-T} = cofactor/det in closed form (faster than batched
    SVD for 3×3: `bench/probe.py` times both); near-singular matrices, where the polar factor is ill-defined, fall
    back to SVD.
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
            rotation = nearest_rotation(np.swapaxes(y, 1, 2) @ z)
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
    return nearest_rotation(np.stack([rise, radial_u, radial_v], axis=-1))


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
