"""Helicality of every layer (Yagi & Takamichi 2025): per-pitch means → PCA → a helix fit (`earlens.probing.helix`) per
triple of the top PCs → the best triple; whether the layer turns with pitch beyond what smooth curves give (the
periodic likelihood ratio against a smooth spiked null, `earlens.probing.helix_nulls`); the field's octave-equivalence
measures (octave index, d_strict, an RSA decomposition into pitch height and chroma) against the same null;
Benjamini–Hochberg q-values over layers; chroma diagnostics (R² over ω), a clip bootstrap for ω and ω's aliasing on
gapped pitch sets.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from earlens.probing.helix import OMEGA_MIN, HelixFit, fit_helix, fold_omega, helix_r2_profile, pitch_step
from earlens.probing.helix_nulls import (
    PROJECTED_COORDINATES, SmoothSpikedNull, averaging_weights, bootstrap_grams, double_centre,
    periodic_lr, periodic_omegas, smooth_kernels,
)
from earlens.stats.multiple_testing import benjamini_hochberg


@dataclass
class HelixProbeResult:
    """Per-layer helicality (arrays with leading axis L); `layer_stats()` gives every per-layer number by name.

    Two triple selections: the headline one (`select_by`, R² by default) and the paper's (`paper_*`, 1/MSE).
    Significance (`p_helix` of the periodic likelihood ratio, `p_octave` of d_strict, `p_rsa_chroma`,
    `p_octave_index`) is against draws of the smooth spiked null (`earlens.probing.helix_nulls`), and `q_*` are
    their Benjamini–Hochberg q-values over the layers; the pitch permutation null (`perm_*`) is kept for comparison
    only: any curve ordered by pitch beats it.
    """

    fit: HelixFit  # headline selection, leading shape (L,)
    paper_fit: HelixFit  # selection by 1/MSE (Yagi & Takamichi), (L,)
    best_triple: np.ndarray  # (L, 3) PC indices (0-based)
    paper_triple: np.ndarray  # (L, 3)
    points: np.ndarray  # (L, P, 3) PCA coordinates of the headline triple
    t: np.ndarray  # (P,) pitch indices (semitones above the lowest pitch)
    pitches: np.ndarray  # (P,) pitch labels in the order of t
    step: int  # pitch grid step in semitones; ω is identifiable in (0, π/step]
    alpha: float  # false discovery rate at which `helix_beyond_smooth` is called (q_helix ≤ alpha)
    line_r2: np.ndarray  # (L,) R² of the straight pitch-height line alone (no circle) on the same points
    smooth_r2: np.ndarray  # (L,) R² of a quadratic curve in t in the same 3-D subspace (9 parameters vs 8)
    axis_pitch_corr: np.ndarray  # (L,) correlation of the projection on the axis c with pitch
    paper_axis_pitch_corr: np.ndarray  # (L,)
    periodic_lr: np.ndarray  # (L,) the periodic likelihood ratio (`earlens.probing.helix_nulls.periodic_lr`)
    omega_periodic: np.ndarray  # (L,) the ω where it peaks
    null_periodic_lr: np.ndarray  # (L, n_surrogates) the same on draws of the smooth spiked null
    n_spikes: np.ndarray  # (L,) spike directions of each layer's null
    perm_null_r2: np.ndarray  # (L, n_permutations) same on shuffled pitch order
    omega_boot: np.ndarray  # (L, n_bootstrap) ω of clip-resampled replicates (empty without clip features)
    omega_grid: np.ndarray  # (G,) ω of the profile
    r2_profile: np.ndarray  # (L, G) R² of the headline triple's points at fixed ω
    r2_at_pi6: np.ndarray  # (L,) R² at ω = π/6 (one turn per octave; folded when aliased)
    r2_at_pi3: np.ndarray  # (L,) R² at ω = π/3
    r2_off_harmonic: np.ndarray  # (L,) best R² at ω at least π/24 away from every k·π/6
    omega_off_harmonic: np.ndarray  # (L,)
    octave: dict  # name → (L,) octave measures (`octave_measures`) of the data
    null_octave: dict  # name → (L, n_surrogates) the same on the null's draws
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
    def z(self) -> np.ndarray:
        """(periodic LR − its null mean) / its null sd."""
        return (self.periodic_lr - _mean(self.null_periodic_lr)) / np.maximum(_std(self.null_periodic_lr), 1e-12)

    @property
    def p_helix(self) -> np.ndarray:
        """One-sided p-value of the periodic likelihood ratio against the smooth null, (1 + #{null ≥ observed}) /
        (1 + n): does the layer turn with pitch beyond what smooth curves of its rank and shape give?"""
        return _p_value(self.periodic_lr, self.null_periodic_lr)

    @property
    def octave_index(self) -> np.ndarray:
        return self.octave["octave_index"]

    @property
    def p_octave(self) -> np.ndarray:
        """Octave equivalence beyond smooth curves: the p-value of d_strict (`octave_measures`; a whole number of
        turns per octave, one or more)."""
        return _p_value(self.octave["d_strict"], self.null_octave["d_strict"])

    @property
    def q_helix(self) -> np.ndarray:
        return benjamini_hochberg(self.p_helix)

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
            "p_helix": self.p_helix, "q_helix": self.q_helix, "z": self.z, "periodic_lr": self.periodic_lr,
            "omega_periodic": self.omega_periodic, "n_spikes": self.n_spikes,
            "helix_beyond_smooth": (self.q_helix <= self.alpha).astype(np.float64),
            "smooth_r2": self.smooth_r2, "delta_r2_smooth": fit.r2 - self.smooth_r2,
            "helix_beats_smooth": (fit.r2 > self.smooth_r2).astype(np.float64),
            "omega_chroma": fit.omega, "omega_ci_low": self.omega_ci[:, 0], "omega_ci_high": self.omega_ci[:, 1],
            "omega_max": np.full(n_layers, self.omega_max), "omega_aliased": np.full(n_layers, float(self.step > 1)),
            "r2_at_pi6": self.r2_at_pi6, "r2_at_pi3": self.r2_at_pi3, "r2_off_harmonic": self.r2_off_harmonic,
            "omega_off_harmonic": self.omega_off_harmonic,
            "d_strict": self.octave["d_strict"], "p_octave": self.p_octave,
            "q_octave": benjamini_hochberg(self.p_octave),
            "rsa_height": self.octave["rsa_height"], "rsa_chroma": self.octave["rsa_chroma"],
            "p_rsa_chroma": _p_value(self.octave["rsa_chroma"], self.null_octave["rsa_chroma"]),
            "octave_index": self.octave_index,
            "p_octave_index": _p_value(self.octave["octave_index"], self.null_octave["octave_index"]),
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
    """(1 + #{null ≥ observed}) / (1 + n) per layer; NaN where the statistic is undefined or there is no null."""
    if null.shape[1] == 0:
        return np.full(len(observed), np.nan)
    p = (1.0 + (null >= observed[:, None]).sum(axis=1)) / (1.0 + null.shape[1])
    return np.where(np.isfinite(observed), p, np.nan)


def per_pitch_means(features, pitch) -> tuple[np.ndarray, np.ndarray]:
    """Average features (L, N, D) over clips of the same pitch: ((L, P, D) float64, sorted unique pitches (P,))."""
    features = np.asarray(features)
    pitch = np.asarray(pitch)
    if features.ndim != 3 or features.shape[1] != len(pitch):
        raise ValueError(f"features must be (L, N, D) with N = len(pitch) = {len(pitch)}, got {features.shape}")
    pitches, index = np.unique(pitch, return_inverse=True)
    return averaging_weights(index.reshape(-1), len(pitches), features.dtype) @ features, pitches


def _stack_layers(features) -> np.ndarray:
    """Stack layers of different widths by zero-padding the feature axis (zero columns leave PCA unchanged)."""
    if isinstance(features, np.ndarray) or hasattr(features, "shape"):
        return np.asarray(features)
    arrays = [np.asarray(f) for f in features]
    width = max(a.shape[-1] for a in arrays)
    return np.stack([np.pad(a, ((0, 0), (0, width - a.shape[-1]))) for a in arrays])


def _pca_scores(gram: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA coordinates (..., P, k) and explained-variance ratios (..., k) from centred Grams (..., P, P)."""
    variance, vectors = np.linalg.eigh(gram)
    variance, vectors = np.maximum(variance[..., ::-1], 0.0), vectors[..., ::-1]
    scores = vectors[..., :n_components] * np.sqrt(variance[..., None, :n_components])
    explained = variance[..., :n_components] / np.maximum(variance.sum(axis=-1, keepdims=True), 1e-300)
    return scores, explained


def _cosine(gram: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.maximum(np.diagonal(gram, axis1=-2, axis2=-1), 1e-300))
    return gram / (norm[..., :, None] * norm[..., None, :])


OCTAVE_MEASURES = ("octave_index", "d_strict", "rsa_height", "rsa_chroma")


def octave_measures(gram: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """Octave equivalence of points from their centred Grams (..., P, P) at pitch indices t (semitones).

    sim(Δ) is the mean cosine similarity of pitches Δ semitones apart. `octave_index`: sim(12) − (sim(11) +
    sim(13))/2. `d_strict` (topo-music 2026): sim(12) − max sim(7..11). RSA (Grasse & Tata 2026): the
    dissimilarity 1 − cosine of every pitch pair regressed on pitch distance |Δ| and chroma distance
    min(Δ mod 12, 12 − Δ mod 12), all standardised: `rsa_height`, `rsa_chroma` (> 0: pitches an octave apart are
    closer than their height predicts). NaN where the pitch set has no pair at a needed distance.
    """
    cosine = _cosine(gram)
    distance = np.abs(t[:, None] - t[None, :])
    shape = gram.shape[:-2]

    def sim(semitones):
        mask = np.isclose(distance, semitones)
        return (cosine * mask).sum(axis=(-2, -1)) / mask.sum() if mask.any() else np.full(shape, np.nan)

    at = {d: sim(d) for d in range(7, 14)}
    upper = np.triu_indices(len(t), 1)
    height = distance[upper]
    chroma = np.minimum(height % 12, 12 - height % 12)
    design = np.stack([height, chroma], axis=1)
    rsa = np.full(shape + (2,), np.nan)
    if len(height) > 3 and design.std(axis=0).min() > 0:
        design = (design - design.mean(axis=0)) / design.std(axis=0)
        dissimilarity = 1 - cosine[..., upper[0], upper[1]]
        spread = dissimilarity.std(axis=-1, keepdims=True)
        standard = (dissimilarity - dissimilarity.mean(axis=-1, keepdims=True)) / np.where(spread > 0, spread, np.nan)
        rsa = standard @ np.linalg.pinv(design).T
    return {"octave_index": at[12] - (at[11] + at[13]) / 2,
            "d_strict": at[12] - np.max(np.stack([at[d] for d in range(7, 12)]), axis=0),
            "rsa_height": rsa[..., 0], "rsa_chroma": rsa[..., 1]}


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
    """Run with single-threaded BLAS/LAPACK: the probe's many small factorisations and products (batched eigh of
    P x P matrices) run several times slower threaded (`bench/probe.py` times the probe)."""

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
    n_surrogates: int = 499,
    n_bootstrap: int = 100,
    n_permutations: int = 0,
    alpha: float = 0.05,
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

    Significance: `n_surrogates` draws of each layer's smooth spiked null (`layer_null`) give `p_helix` (periodic
    likelihood ratio), `p_octave` (d_strict), `p_rsa_chroma` and `p_octave_index`; `helix_beyond_smooth` is
    q_helix ≤ `alpha`, the
    Benjamini–Hochberg q-value over the layers. `n_permutations` > 0 adds the shuffled-pitch null. All randomness
    comes from `seed`, so equal inputs give equal results (every DDP rank agrees).
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

    gram = double_centre(means @ np.swapaxes(means, 1, 2))
    fits, points, explained = pipeline.run(gram)
    layers = np.arange(n_layers)
    chosen, paper_chosen = pipeline.choose(fits), pipeline.choose(fits, "inv_mse")
    best, paper = fits[layers, chosen], fits[layers, paper_chosen]
    best_points, paper_points = points[layers, chosen], points[layers, paper_chosen]

    nulls = [layer_null(layer_means, t, step, n_surrogates, np.random.default_rng([seed, layer]))
             for layer, layer_means in enumerate(tqdm(means, desc="helix nulls", unit="layer", leave=False,
                                                      disable=n_layers < 4 or not n_surrogates))]
    permutations = rng.permuted(np.tile(np.arange(n_pitches), (n_permutations, 1)), axis=1)
    permuted_gram = gram[:, permutations[:, :, None], permutations[:, None, :]].swapaxes(0, 1)
    do_bootstrap = n_bootstrap > 0 and index is not None and np.bincount(index).min() >= 2
    boot_gram = (bootstrap_grams(clip_gram, index, n_bootstrap, rng) if do_bootstrap
                 else np.zeros((0, n_layers, n_pitches, n_pitches)))
    replicates = np.concatenate([permuted_gram, boot_gram])
    selected = pipeline.selected(replicates) if len(replicates) else None
    bounds = np.cumsum([0, len(permuted_gram), len(boot_gram)])

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
        periodic_lr=np.array([null.periodic_lr for null in nulls]),
        omega_periodic=np.array([null.omega for null in nulls]),
        null_periodic_lr=np.stack([null.null_periodic_lr for null in nulls]),
        n_spikes=np.array([null.n_spikes for null in nulls], dtype=np.float64),
        perm_null_r2=replicate_values(0, "r2"), omega_boot=replicate_values(1, "omega"),
        omega_grid=omega_grid, r2_profile=profile, r2_at_pi6=at_harmonics[:, 0], r2_at_pi3=at_harmonics[:, 1],
        r2_off_harmonic=off_harmonic[0], omega_off_harmonic=off_harmonic[1],
        octave=octave_measures(gram, t),
        null_octave={key: np.stack([null.null_octave[key] for null in nulls]) for key in nulls[0].null_octave},
        triple_r2=fits.r2, explained_variance=explained,
    )


@dataclass
class LayerNull:
    """One layer's periodic likelihood ratio and octave measures against draws of its smooth spiked null."""

    periodic_lr: float
    omega: float  # where the ratio peaks
    null_periodic_lr: np.ndarray  # (n,)
    null_octave: dict  # name → (n,) `octave_measures` of the draws
    n_spikes: int


def layer_null(means: np.ndarray, t: np.ndarray, step: int, n_surrogates: int, rng: np.random.Generator,
               chunk: int = 50) -> LayerNull:
    """Test one layer's per-pitch means (P, D) against `n_surrogates` draws of its smooth spiked null.

    The statistic sums over a fixed random projection of the layer to at most `PROJECTED_COORDINATES` coordinates
    (drawn from `rng`, the same for data and draws). Draws keep the data's pitch-height line. A dead layer (no
    variance across pitch) gets NaN; a layer that is a pitch-height line and nothing else has no periodic evidence
    (ratio 0, every draw equal to the data).
    """
    centred = means - means.mean(axis=0)
    centred = centred[:, np.abs(centred).max(axis=0) > 0]  # drops a narrower layer's zero padding
    if centred.size == 0:
        return LayerNull(np.nan, np.nan, np.full(n_surrogates, np.nan),
                         {key: np.full(n_surrogates, np.nan) for key in OCTAVE_MEASURES}, 0)
    family = smooth_kernels(t)
    omegas = periodic_omegas(t, step)
    contrasts = family.basis.T @ centred
    slope = family.line @ centred  # (D,) the pitch-height line
    norm = np.linalg.norm(slope)
    line_gram = norm**2 * np.outer(family.line, family.line)
    if np.linalg.norm(contrasts) <= 1e-9 * np.linalg.norm(centred):  # a line: nothing turns
        null_octave = octave_measures(np.broadcast_to(line_gram, (n_surrogates,) + line_gram.shape), t)
        return LayerNull(0.0, np.nan, np.zeros(n_surrogates), null_octave, 0)
    width = centred.shape[1]
    projection = np.linalg.qr(rng.standard_normal((width, min(width, PROJECTED_COORDINATES))))[0]
    ratio, where = periodic_lr((contrasts @ projection)[None], t, omegas)
    direction = slope / norm if norm > 0 else np.zeros(width)
    null = SmoothSpikedNull(contrasts, smooth_kernels(t, null=True),
                            np.concatenate([projection, direction[:, None]], axis=1))
    ratios, octaves = [np.zeros(0)], [{key: np.zeros(0) for key in OCTAVE_MEASURES}]
    for start in range(0, n_surrogates, chunk):
        scatter, coordinates = null.draw(min(chunk, n_surrogates - start), rng)
        ratios.append(periodic_lr(coordinates[..., :-1], t, omegas)[0])
        cross = (family.basis @ coordinates[..., -1:]) * (norm * family.line)  # (n, P, P): draws × the line
        octaves.append(octave_measures(family.basis @ scatter @ family.basis.T + cross + np.swapaxes(cross, 1, 2)
                                       + line_gram, t))
    return LayerNull(float(ratio[0]), float(omegas[where[0]]), np.concatenate(ratios),
                     {key: np.concatenate([o[key] for o in octaves]) for key in OCTAVE_MEASURES}, null.n_spikes)


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
