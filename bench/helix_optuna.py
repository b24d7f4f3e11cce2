"""The helix paper's fitting protocol (Optuna TPE over every helix parameter), the reference
`earlens.probing.helix.fit_helix` is compared with: in `tests/test_helix.py` (same optimum on clean helices) and
`bench/probe.py` (speed)."""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from earlens.probing.helix import HelixFit, fit_helix, helix_curve


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
