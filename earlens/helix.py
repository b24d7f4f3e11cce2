"""Helix probe for pitch (Yagi & Takamichi 2025): does a layer lay pitches out on a helix (height = pitch height,
angle = chroma)?

Model, for pitch index t (semitones from the lowest pitch) in a 3-D PCA subspace:

    y(t) = h(t)·c + r(t)·(cos θ(t)·u + sin θ(t)·v),  h = h_pitch·t + h0,  r = r_slope·t + r0,  θ = ω(t − t0)

with {c, u, v} orthonormal. One turn per octave is ω = π/6.

Fitter (`fit_helix`), batched over any leading axes (layers × PC triples × permutations):
for a fixed ω the phase offset t0 is an in-plane rotation of (u, v), so with R = [c, u', v'] the model is
Z(t) R^T with Z(t) = [h(t), r(t) cos ωt, r(t) sin ωt]. Given R, the four scalars are two closed-form line fits
(h from the c-coordinate; r from the radial projection w_u cos ωt + w_v sin ωt); given them, R is an orthogonal
Procrustes (polar) step. We alternate these from an unconstrained linear fit at candidate ω's (picked on a grid by
the linear surrogate y = A·[1, t, cos, sin, t cos, t sin]), keep the best, and refine ω by a shrinking
three-point search with parabolic steps. Parameters are reported with the convention ω ∈ (0, π], h_pitch ≥ 0,
mean radius ≥ 0 and u = the radial direction of the first pitch (t0 = 0); `fit_helix_optuna` (the paper's
protocol) searches t0 freely instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations

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
            x = 0.5 * (gamma[..., None, None] * x + cofactor / (gamma * det)[..., None, None])
    size = np.abs(m).max(axis=(-2, -1)) + 1e-300
    singular = ~np.isfinite(x).all(axis=(-2, -1)) | (np.abs(np.linalg.det(m)) < 1e-9 * size**3)
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


def _fit_batch(y, t, n_grid, n_candidates, n_iter, n_refine):
    b = len(y)
    omegas = np.linspace(OMEGA_MIN, np.pi, n_grid)
    energy, projected, to_coef = _linear_surrogate(y, t, omegas)
    picks = _local_maxima(energy, n_candidates)  # (B, K)
    coef = to_coef[picks] @ projected[np.arange(b)[:, None], picks]  # (B, K, 6, 3)
    cand_omega = omegas[picks].reshape(-1)
    cand_rotation = _initial_frame(coef, t).reshape(-1, 3, 3)
    params, rotation, sse = _alternate(np.repeat(y, n_candidates, axis=0), t, cand_omega, cand_rotation, n_iter)
    best = np.argmin(sse.reshape(b, n_candidates), axis=1) + np.arange(b) * n_candidates
    omega, params, rotation, sse = cand_omega[best], params[best], rotation[best], sse[best]

    step = (omegas[1] - omegas[0]) / 2
    warm_iter = max(n_iter // 2, 3)

    def keep_better(state, trial):
        better = trial[3] < state[3]
        return tuple(np.where(better.reshape(-1, *[1] * (a.ndim - 1)), b, a) for a, b in zip(state, trial))

    state = (omega, params, rotation, sse)
    for _ in range(n_refine):  # ω: probe ±step around the best, jump to the parabola's vertex, shrink the step
        center, center_sse = state[0], state[3]
        sides = []
        for direction in (-1.0, 1.0):
            trial_omega = np.clip(center + direction * step, OMEGA_MIN, np.pi)
            sides.append((trial_omega, *_alternate(y, t, trial_omega, state[2], warm_iter)))
        curvature = sides[0][3] + sides[1][3] - 2 * center_sse
        shift = np.where(curvature > 0, 0.5 * step * (sides[0][3] - sides[1][3]) / np.maximum(curvature, 1e-300), 0.0)
        vertex = np.clip(center + np.clip(shift, -step, step), OMEGA_MIN, np.pi)
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
) -> HelixFit:
    """Least-squares helix through points (..., P, 3) at pitch indices t (P,) (default 0..P-1), batched.

    `n_grid` ω values in [0.05, π] screen candidates with the linear surrogate; the best `n_candidates` local
    maxima get `n_iter` alternating steps; `n_refine` rounds of a shrinking three-point (parabolic) search polish ω.
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
        _fit_batch(flat[s:s + chunk_size], t, n_grid, n_candidates, n_iter, n_refine)
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


@dataclass
class HelixProbeResult:
    """Per-layer helicality (arrays with leading axis L) and what is needed to plot the best helices."""

    score_inv_mse: np.ndarray  # (L,) paper's score of the selected PC triple
    r2: np.ndarray  # (L,)
    line_r2: np.ndarray  # (L,) R² of the pitch-height line alone (h(t)·c, no circle) on the same points
    null_mean: np.ndarray  # (L,) mean R² of the permutation null (same max over triples)
    null_std: np.ndarray  # (L,)
    z: np.ndarray  # (L,) (r2 − null_mean) / null_std
    omega_chroma: np.ndarray  # (L,)
    best_triple: np.ndarray  # (L, 3) PC indices (0-based)
    fit: HelixFit  # fits of the selected triples, leading shape (L,)
    points: np.ndarray  # (L, P, 3) PCA coordinates of the selected triples
    t: np.ndarray  # (P,) pitch indices
    pitches: np.ndarray  # (P,) pitch labels in the order of t
    triple_r2: np.ndarray  # (L, n_triples) R² of every triple
    null_r2: np.ndarray  # (L, n_permutations)
    explained_variance: np.ndarray  # (L, n_components) ratio per PC


def per_pitch_means(features, pitch) -> tuple[np.ndarray, np.ndarray]:
    """Average features (L, N, D) over clips of the same pitch: ((L, P, D), sorted unique pitches (P,))."""
    features = np.asarray(features, dtype=np.float64)
    pitch = np.asarray(pitch)
    if features.ndim != 3 or features.shape[1] != len(pitch):
        raise ValueError(f"features must be (L, N, D) with N = len(pitch) = {len(pitch)}, got {features.shape}")
    pitches, index = np.unique(pitch, return_inverse=True)
    onehot = np.zeros((len(pitches), len(pitch)))
    onehot[index, np.arange(len(pitch))] = 1.0
    return (onehot / onehot.sum(axis=1, keepdims=True)) @ features, pitches


def _stack_layers(features) -> np.ndarray:
    """Stack layers of different widths by zero-padding the feature axis (zero columns leave PCA unchanged)."""
    if isinstance(features, np.ndarray) or hasattr(features, "shape"):
        return np.asarray(features, dtype=np.float64)
    arrays = [np.asarray(f, dtype=np.float64) for f in features]
    width = max(a.shape[-1] for a in arrays)
    return np.stack([np.pad(a, ((0, 0), (0, width - a.shape[-1]))) for a in arrays])


def helix_probe(
    features,
    pitch=None,
    n_components: int = 5,
    n_permutations: int = 100,
    seed: int = 0,
    select_by: str = "r2",
    **fit_options,
) -> HelixProbeResult:
    """Helicality of every layer: per-pitch means → PCA → helix fit on each C(n_components, 3) triple → best.

    `features`: per-pitch means (L, P, D) in pitch order (then `pitch` optional, default 0..P-1), or clip features
    (L, N, D) with `pitch` (N,) MIDI labels; a list of per-layer arrays of different widths also works. Pitch
    index t = pitch − min(pitch), so missing pitches leave gaps. The null shuffles the pitch order (PCA is
    unchanged) and takes the same best-over-triples. `select_by` "r2" (scale-free) or "inv_mse" (the paper's
    choice, which favours low-variance PCs) picks the triple.
    """
    if select_by not in ("r2", "inv_mse"):
        raise ValueError(f"select_by must be 'r2' or 'inv_mse', got {select_by!r}")
    features = _stack_layers(features)
    if pitch is None:
        means, pitches = features, np.arange(features.shape[1])
    else:
        means, pitches = per_pitch_means(features, pitch)
    n_layers, n_pitches, width = means.shape
    if n_components > min(n_pitches - 1, width) or n_components < 3:
        raise ValueError(f"n_components={n_components} needs 3 <= n_components <= min(P-1, D) = "
                         f"{min(n_pitches - 1, width)}")
    t = (pitches - pitches.min()).astype(np.float64)

    centered = means - means.mean(axis=1, keepdims=True)
    variance, vectors = np.linalg.eigh(centered @ np.swapaxes(centered, 1, 2))  # P×P Gram: cheap for any D
    variance, vectors = np.maximum(variance[:, ::-1], 0.0), vectors[:, :, ::-1]
    scores = vectors[..., :n_components] * np.sqrt(variance[:, None, :n_components])  # (L, P, k) PCA coordinates
    explained = variance[:, :n_components] / np.maximum(variance.sum(axis=1, keepdims=True), 1e-300)
    triples = np.array(list(combinations(range(n_components), 3)))
    points = np.moveaxis(scores[:, :, triples], 2, 1)  # (L, T, P, 3)

    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(np.arange(n_pitches), (n_permutations, 1)), axis=1)
    orders = np.concatenate([np.arange(n_pitches)[None], shuffled])  # row 0: the true pitch order
    fits = fit_helix(points[:, :, orders], t, **fit_options)  # (L, T, 1 + n_perm)
    key = fits.r2 if select_by == "r2" else fits.score_inv_mse
    chosen = np.argmax(key, axis=1)  # (L, 1 + n_perm) best triple per layer and per permutation
    chosen_r2 = np.take_along_axis(fits.r2, chosen[:, None], axis=1)[:, 0]
    null_r2 = chosen_r2[:, 1:]
    null_mean = null_r2.mean(axis=1) if n_permutations else np.full(n_layers, np.nan)
    null_std = null_r2.std(axis=1, ddof=1) if n_permutations > 1 else np.full(n_layers, np.nan)
    layers = np.arange(n_layers)
    best = fits[layers, chosen[:, 0], 0]
    best_points = points[layers, chosen[:, 0]]
    return HelixProbeResult(
        score_inv_mse=best.score_inv_mse, r2=best.r2, line_r2=_line_r2(best_points, t),
        null_mean=null_mean, null_std=null_std,
        z=(best.r2 - null_mean) / np.maximum(null_std, 1e-12), omega_chroma=best.omega,
        best_triple=triples[chosen[:, 0]], fit=best, points=best_points, t=t, pitches=pitches,
        triple_r2=fits.r2[:, :, 0], null_r2=null_r2, explained_variance=explained,
    )


def _line_r2(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """R² of the best straight line through points (..., P, 3) parametrised by t: the pitch-height share.

    The shuffle null cannot tell a helix from a line (both are ordered in pitch), so `r2 − line_r2` is what the
    chroma circle adds on top of pitch height.
    """
    design = np.stack([t, np.ones_like(t)], axis=1)
    residual = points - design @ (np.linalg.pinv(design) @ points)
    sst = ((points - points.mean(axis=-2, keepdims=True)) ** 2).sum(axis=(-2, -1))
    return 1.0 - (residual**2).sum(axis=(-2, -1)) / np.maximum(sst, 1e-300)


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
    ax.set_title(title or f"layer {layer}: R²={result.r2[layer]:.3f}, z={result.z[layer]:.1f}, "
                 f"ω={result.omega_chroma[layer]:.3f} (π/6={np.pi / 6:.3f})", fontsize=9)
    return fig


def plot_helicality_vs_layer(result: HelixProbeResult, layer_names=None, title: str = "helicality"):
    """R² per layer with the permutation null's mean ± 2 std band, and ω_chroma on a second axis."""
    from matplotlib.figure import Figure

    x = np.arange(len(result.r2))
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    ax.fill_between(x, result.null_mean - 2 * result.null_std, result.null_mean + 2 * result.null_std,
                    color="0.85", label="null ± 2σ")
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
