"""Do partials stabilise inside an audio encoder? Probe its latents and its codes with stimuli of known partials.

A partial (one narrowband sinusoid) is a *stable feature* of a layer when (a) one linear direction decodes its
presence in a frequency band (decodability), (b) that direction stays the same when the context around the partial
changes: other partials, noise, onsets, level (context invariance), and (c) units or directions respond to pure
tones of one band only (selectivity: peak, bandwidth, Q; share tuned to one band against several). For discrete
codes: mutual information between code identity and the band of a pure tone, purity (how many bands a code spans)
and whether the code→band map learnt on pure tones still names a present band in other contexts.

Every measure comes with a null: the same measure on band labels shuffled across items (and, when the caller
supplies one, on the same architecture at random initialisation: ``partials_probe(init_encode=...)``). Ridge fits
use the linear kernel (N x N), so a layer of any width costs the same and all bands, shuffles and ridge penalties
are solved together; the penalty is picked per band by leave-one-out error inside the training fold. The stimuli
are `earlens.stimuli.partial_stimuli`, the code statistics `earlens.stats.partial_codes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import false_discovery_control, rankdata

from earlens.stats.partial_codes import codes_layer
from earlens.stimuli.partial_stimuli import (
    CONTEXTS,
    PartialStimuli,
    band_targets,
    context_stimuli,
    frame_times,
    log_bands,
    pure_tones,
    shuffled_labels,
)

RIDGE_PENALTIES = np.logspace(-3, 3, 7)  # relative to the mean kernel eigenvalue


# ------------------------------------------------------------------------------------------------ encoders
def run_encoder(encode: Callable, waves: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Named (N, frames, D) float or (N, frames, K) integer arrays from ``encode`` (list, dict or one array)."""
    chunks: dict[str, list] = {}
    for start in range(0, len(waves), batch_size):
        out = encode(torch.as_tensor(waves[start: start + batch_size]))
        if isinstance(out, Mapping):
            items = list(out.items())
        elif isinstance(out, (list, tuple)):
            items = [(f"layer_{index}", value) for index, value in enumerate(out)]
        else:
            items = [("codes" if not torch.is_floating_point(torch.as_tensor(out)) else "layer_0", out)]
        for name, value in items:
            value = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            if value.ndim != 3:
                raise ValueError(f"encode must return (B, frames, D) per layer; {name} has shape {value.shape}")
            chunks.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


# ------------------------------------------------------------------------------------------- ridge algebra
def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero-mean features scaled to unit variance (std floored at 1e-3 of the mean std: dead units stay ~0)."""
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    return x / np.maximum(std, 1e-3 * std.mean() + 1e-12)


def _ridge_dual(kernel: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Dual coefficients (N, Y) of kernel ridge, penalty per target picked by leave-one-out MSE over
    ``RIDGE_PENALTIES`` x mean eigenvalue (targets centred by the caller)."""
    eigenvalues, vectors = np.linalg.eigh(kernel)
    eigenvalues = eigenvalues.clip(0)
    penalties = RIDGE_PENALTIES * max(eigenvalues.mean(), 1e-12)
    projected = vectors.T @ targets  # (N, Y)
    inverse = 1.0 / (eigenvalues[None, :] + penalties[:, None])  # (P, N)
    alphas = vectors @ (inverse[:, :, None] * projected[None])  # (P, N, Y)
    hat_diagonal = (eigenvalues * inverse) @ (vectors**2).T  # (P, N)
    fitted = vectors @ ((eigenvalues * inverse)[:, :, None] * projected[None])
    residual = targets[None] - fitted
    loo = (residual / np.maximum(1 - hat_diagonal[..., None], 1e-9)) ** 2
    best = loo.mean(axis=1).argmin(axis=0)  # (Y,)
    return alphas[best, :, np.arange(targets.shape[1])].T


def _cv_predictions(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, n_folds: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold ridge predictions (N, Y) and each row's fold, folds by group (item), penalty chosen inside each
    training fold."""
    unique = np.unique(groups)
    fold_of_group = np.random.default_rng(seed).permutation(len(unique)) % n_folds
    fold = fold_of_group[np.searchsorted(unique, groups)]
    predictions = np.zeros(targets.shape)
    for k in range(n_folds):
        train, test = fold != k, fold == k
        mean_x, mean_y = features[train].mean(0), targets[train].mean(0)
        x_train = features[train] - mean_x
        alphas = _ridge_dual(x_train @ x_train.T, targets[train] - mean_y)
        predictions[test] = (features[test] - mean_x) @ (x_train.T @ alphas) + mean_y
    return predictions, fold


def _r2(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    variance = ((truth - truth.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 0, 1 - ((truth - predicted) ** 2).sum(0) / variance, np.nan)


def auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC per column (Mann-Whitney, ties averaged); NaN where a column has one class only."""
    labels = labels.astype(bool)
    ranks = rankdata(scores, axis=0)
    positives = labels.sum(0)
    negatives = len(labels) - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        value = ((ranks * labels).sum(0) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), value, np.nan)


def fold_auc(labels: np.ndarray, scores: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """ROC AUC per column within each cross-validation fold, averaged over the folds holding both classes.

    Pooling out-of-fold scores across folds would rank each fold's intercept (its training labels' mean), which
    anti-correlates with the held-out labels: features that carry nothing then score 0.42-0.46 instead of 0.50.
    """
    per_fold = np.stack([auc(labels[fold == k], scores[fold == k]) for k in np.unique(fold)])
    both = np.isfinite(per_fold)
    with np.errstate(invalid="ignore"):
        return np.where(both.any(0), np.where(both, per_fold, 0).sum(0) / both.sum(0), np.nan)


# ------------------------------------------------------------------------------------------- tuning curves
def half_max_q(bandwidth_octaves):
    """Q = f_peak / (f_high − f_low) of a lobe whose half-max points lie bandwidth_octaves apart around its peak."""
    ratio = 2.0 ** np.asarray(bandwidth_octaves, dtype=float)
    with np.errstate(divide="ignore"):
        return np.sqrt(ratio) / (ratio - 1)


def tuning_stats(curves: np.ndarray, tone_hz: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per curve (C, n_tones) on a log-frequency tone grid: peak Hz, half-max bandwidth (octaves, the contiguous
    lobe around the peak), Q = f_peak / bandwidth_Hz, and how many bands reach half the peak (1 = one band).

    The half-max points are interpolated linearly between the tones that bracket them. That measures lobes with at
    least three tones at or above half max (Gaussian and Lorentzian lobes within 15 %); a narrower lobe gets only
    ``q_at_least``, the Q of the widest lobe its tones allow (half max reached within a step beyond the outermost
    tone above it on each side), a bound every lobe inside the grid has. Lobes cut by the grid's ends get NaN (their
    width is unknown).
    Responses are taken above each curve's minimum; flat curves give NaN.
    """
    response = curves - curves.min(axis=1, keepdims=True)
    rows, n_tones = np.arange(len(curves)), response.shape[1]
    peak = response.argmax(axis=1)
    half = 0.5 * response.max(axis=1)
    below = response < half[:, None]
    index = np.arange(n_tones)
    left = np.maximum.accumulate(np.where(below, index, -1), axis=1)[rows, peak]
    right = np.minimum.accumulate(np.where(below, index, n_tones)[:, ::-1], axis=1)[:, ::-1][rows, peak]
    inside = (left >= 0) & (right < n_tones)
    above = right - left - 1  # tones at or above half max around the peak
    outer_left, outer_right = np.clip(left, 0, n_tones - 1), np.clip(right, 0, n_tones - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing_left = outer_left + (half - response[rows, outer_left]) / (
            response[rows, np.minimum(outer_left + 1, n_tones - 1)] - response[rows, outer_left])
        crossing_right = outer_right - (half - response[rows, outer_right]) / (
            response[rows, np.maximum(outer_right - 1, 0)] - response[rows, outer_right])
    step = np.log2(tone_hz[1] / tone_hz[0])
    bandwidth_octaves = np.where(inside & (above >= 3), (crossing_right - crossing_left) * step, np.nan)
    band = np.searchsorted(edges, tone_hz) - 1
    band_max = np.full((len(curves), len(edges) - 1), -np.inf)
    in_bands = (band >= 0) & (band < len(edges) - 1)
    np.maximum.at(band_max.T, band[in_bands], response[:, in_bands].T)
    n_bands = (band_max >= half[:, None]).sum(axis=1).astype(float)
    flat = 2 * half <= 1e-9 * np.abs(curves).max(axis=1).clip(1e-30)
    stats = {"peak_hz": tone_hz[peak], "bandwidth_octaves": bandwidth_octaves, "q": half_max_q(bandwidth_octaves),
             "q_at_least": np.where(inside, half_max_q((above + 1) * step), np.nan), "n_bands": n_bands,
             "peak_band": band[peak].astype(float)}
    return {key: np.where(flat, np.nan, value) for key, value in stats.items()}


def tuning_summary(stats: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """Share of curves tuned to one band, and the median Q of the lobes inside the grid. Lobes too narrow for the
    grid enter with their bound: ``median_q`` is given when they cannot move the median (the medians of the
    per-lobe lower bounds and of the upper bounds, ∞ for those lobes, agree), ``median_q_at_least`` always."""
    valid = ~np.isnan(stats["n_bands"])
    bounded = ~np.isnan(stats["q_at_least"])
    measured = ~np.isnan(stats["q"])
    lower = np.where(measured, stats["q"], stats["q_at_least"])[bounded]
    upper = np.where(measured, stats["q"], np.inf)[bounded]
    at_least = float(np.median(lower)) if lower.size else float("nan")
    median = at_least if lower.size and np.median(upper) == at_least else float("nan")
    return {f"{prefix}_one_band_share": float((stats["n_bands"][valid] == 1).mean()) if valid.any() else float("nan"),
            f"{prefix}_median_q": median, f"{prefix}_median_q_at_least": at_least}


# ---------------------------------------------------------------------------------------- latent statistics
TUNING_PREFIXES = ("unit", "random_direction", "band_direction", "null_direction")


def is_constant(activations: np.ndarray) -> bool:
    """Every unit gives the same value on every row (up to float32 rounding of the largest value): a dead or
    constant layer, about which no partial statistic says anything."""
    spread = np.ptp(activations, axis=0).max(initial=0.0)
    return bool(spread <= 1e-6 * np.abs(activations).max(initial=0.0))


def constant_layer_stats(n_bands: int, tone_hz: np.ndarray, edges: np.ndarray, contexts: Sequence[str]) -> dict:
    """``latent_stats`` of a constant layer: every statistic NaN (flat tuning curves have none), flagged."""
    undefined = np.full(n_bands, np.nan)
    flat = tuning_stats(np.zeros((n_bands, len(tone_hz))), tone_hz, edges)
    out = {key: undefined for key in ("band_auc", "band_auc_null", "band_r2", "band_r2_null", "frame_auc",
                                      "frame_auc_null", "invariance", "invariance_null", "split_half",
                                      "invariance_halves")}
    for prefix in TUNING_PREFIXES:
        out.update(tuning_summary(flat, prefix))
    return {**out, "contexts": list(dict.fromkeys(contexts)), "band_direction_peak_in_band": float("nan"),
            "null_direction_peak_in_band": float("nan"), "unit_tuning": flat,
            "direction_curves": np.full((n_bands, len(tone_hz)), np.nan), "constant_layer": 1.0}


def latent_stats(pooled: np.ndarray, frames: np.ndarray, frame_items: np.ndarray, presence: np.ndarray,
                 level: np.ndarray, frame_presence: np.ndarray, context: np.ndarray, tone_pooled: np.ndarray,
                 tone_hz: np.ndarray, edges: np.ndarray, n_folds: int = 5, n_shuffles: int = 3,
                 seed: int = 0) -> dict:
    """All latent measures of one layer. ``pooled`` (N, D) time-means of the context items, ``frames`` (M, D)
    sampled frames of items ``frame_items`` with ``frame_presence`` (M, B); ``presence``/``level`` (N, B)
    time-pooled; ``tone_pooled`` (n_tones, D) time-means for the pure tones at ``tone_hz``."""
    rng = np.random.default_rng(seed)
    n_bands = presence.shape[1]
    scale_source = np.concatenate([pooled, tone_pooled])
    mean, std = scale_source.mean(0), scale_source.std(0)
    std = np.maximum(std, 1e-3 * std.mean() + 1e-12)
    x, tones = (pooled - mean) / std, (tone_pooled - mean) / std
    out: dict = {}

    # decodability: presence AUC and level R², time-pooled and per frame, real and shuffled columns together
    truth = np.concatenate([presence, level], axis=1).astype(float)
    shuffled = shuffled_labels(truth, n_shuffles, rng)
    predicted, fold = _cv_predictions(x, np.concatenate([truth, *shuffled], axis=1), np.arange(len(x)), n_folds,
                                      seed)
    predicted = predicted.reshape(len(x), n_shuffles + 1, 2 * n_bands).transpose(1, 0, 2)
    all_truth = np.concatenate([truth[None], shuffled])
    band_auc = np.stack([fold_auc(t[:, :n_bands], p[:, :n_bands], fold) for t, p in zip(all_truth, predicted)])
    band_r2 = np.stack([_r2(t[:, n_bands:], p[:, n_bands:]) for t, p in zip(all_truth, predicted)])
    out["band_auc"], out["band_auc_null"] = band_auc[0], band_auc[1:].mean(0)
    out["band_r2"], out["band_r2_null"] = band_r2[0], band_r2[1:].mean(0)
    fx = _standardise(frames)
    frame_truth = frame_presence.astype(float)
    item_perm = rng.permutation(frame_items.max() + 1)  # null: another item's labels, frames kept together
    frame_null = frame_presence_by_item(frame_presence, frame_items, item_perm).astype(float)
    frame_pred, frame_fold = _cv_predictions(fx, np.concatenate([frame_truth, frame_null], 1), frame_items, n_folds,
                                             seed)
    out["frame_auc"] = fold_auc(frame_truth, frame_pred[:, :n_bands], frame_fold)
    out["frame_auc_null"] = fold_auc(frame_null, frame_pred[:, n_bands:], frame_fold)

    # directions per context (and split halves of each context for the within-context ceiling)
    contexts = list(dict.fromkeys(context))
    labels = presence.astype(float)
    null_labels = shuffled_labels(labels, 1, rng)[0]
    directions, null_directions, halves = [], [], []
    for name in contexts:
        members = np.flatnonzero(context == name)
        xc = x[members] - x[members].mean(0)
        both = np.concatenate([labels[members], null_labels[members]], 1)
        coef = xc.T @ _ridge_dual(xc @ xc.T, both - both.mean(0))
        directions.append(coef[:, :n_bands])
        null_directions.append(coef[:, n_bands:])
        split = rng.permutation(members)
        for half in (split[: len(split) // 2], split[len(split) // 2:]):
            xh = x[half] - x[half].mean(0)
            halves.append(xh.T @ _ridge_dual(xh @ xh.T, labels[half] - labels[half].mean(0)))
    out["contexts"] = contexts
    out["invariance"] = _mean_pairwise_cosine(np.stack(directions))
    out["invariance_null"] = _mean_pairwise_cosine(np.stack(null_directions))
    # halves of equal size: within a context (the reliability ceiling) against across contexts (fair comparison)
    halves = np.stack(halves)
    unit = halves / np.maximum(np.linalg.norm(halves, axis=1, keepdims=True), 1e-30)
    cosines = np.einsum("idb,jdb->ijb", unit, unit)
    owner = np.repeat(np.arange(len(contexts)), 2)
    pairs = ~np.eye(len(owner), dtype=bool)
    same = pairs & (owner[:, None] == owner[None, :])
    out["split_half"] = cosines[same].mean(0)
    out["invariance_halves"] = cosines[pairs & ~same].mean(0)

    # selectivity: units and the clean-context band directions, against directions fitted to shuffled labels
    units = tuning_stats(tones.T, tone_hz, edges)
    random_basis = rng.standard_normal((tones.shape[1], min(256, tones.shape[1])))
    rotated = tuning_stats((tones @ random_basis).T, tone_hz, edges)
    band_directions = tuning_stats((tones @ directions[0]).T, tone_hz, edges)
    null_band_directions = tuning_stats((tones @ null_directions[0]).T, tone_hz, edges)
    for prefix, stats in zip(TUNING_PREFIXES, (units, rotated, band_directions, null_band_directions)):
        out.update(tuning_summary(stats, prefix))
    out["band_direction_peak_in_band"] = float(np.nanmean(band_directions["peak_band"] == np.arange(n_bands)))
    out["null_direction_peak_in_band"] = float(np.nanmean(null_band_directions["peak_band"] == np.arange(n_bands)))
    out["unit_tuning"] = units
    out["direction_curves"] = (tones @ directions[0]).T
    out["constant_layer"] = 0.0
    return out


def frame_presence_by_item(frame_presence: np.ndarray, frame_items: np.ndarray, item_perm: np.ndarray) -> np.ndarray:
    """Frame labels taken from item ``item_perm[i]`` at the same frame slot (frames sampled per item alike)."""
    order = np.argsort(frame_items, kind="stable")
    per_item = frame_presence[order].reshape(frame_items.max() + 1, -1, frame_presence.shape[1])
    swapped = per_item[item_perm].reshape(-1, frame_presence.shape[1])
    result = np.empty_like(frame_presence)
    result[order] = swapped
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching columns of (..., D, B) arrays → (..., B)."""
    norm = np.linalg.norm(a, axis=-2) * np.linalg.norm(b, axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(-2) / norm, np.nan)


def _mean_pairwise_cosine(directions: np.ndarray) -> np.ndarray:
    """(C, D, B) directions per context → (B,) mean cosine over context pairs."""
    first, second = np.triu_indices(len(directions), k=1)
    return np.nanmean(_cosine(directions[first], directions[second]), axis=0)


# --------------------------------------------------------------------------------------------- the probe
def partials_probe(encode: Callable, sample_rate: int, fmin: float | None = None, fmax: float | None = None,
                   n_bands: int = 12, n_per_context: int = 100, n_tones: int = 48, seconds: float = 0.5,
                   contexts: Sequence[str] = CONTEXTS, frames_per_item: int = 4, n_folds: int = 5,
                   n_shuffles: int = 3, max_codebooks: int = 4, batch_size: int = 32, seed: int = 0,
                   init_encode: Callable | None = None) -> dict:
    """Per layer of ``encode`` (audio (B, T) → (B, frames, D) floats or (B, frames, K) integer codes, one array,
    a list or a dict): latent or code statistics of partials, each with its shuffled-label null.

    Bands: ``n_bands`` log-spaced from ``fmin`` (default 80 Hz) to ``fmax`` (default 0.4·sample_rate). Returns
    ``{"bands": edges, "tone_hz": ..., "layers": {name: stats}}``; with ``init_encode`` (the same architecture
    at random initialisation) also ``"init"``: the same probe of it on the same stimuli.
    """
    fmin = fmin or 80.0
    fmax = fmax or 0.4 * sample_rate
    edges = log_bands(fmin, fmax, n_bands)
    tones = pure_tones(sample_rate, edges[0] * 1.01, edges[-1] / 1.01, n_tones, seconds, seed=seed)
    items = context_stimuli(sample_rate, edges, n_per_context, seconds, contexts, seed=seed)
    result = {"bands": edges, "tone_hz": np.array([rows[0, 0] for rows in tones.partials]),
              "layers": probe_layers(encode, tones, items, edges, frames_per_item, n_folds, n_shuffles,
                                     max_codebooks, batch_size, seed)}
    if init_encode is not None:
        result["init"] = probe_layers(init_encode, tones, items, edges, frames_per_item, n_folds, n_shuffles,
                                      max_codebooks, batch_size, seed)
    return result


def probe_layers(encode: Callable, tones: PartialStimuli, items: PartialStimuli, edges: np.ndarray,
                 frames_per_item: int = 4, n_folds: int = 5, n_shuffles: int = 3, max_codebooks: int = 4,
                 batch_size: int = 32, seed: int = 0) -> dict[str, dict]:
    """``partials_probe`` on given stimuli: one stats dict per layer (latent or code statistics)."""
    return probe_activations(run_encoder(encode, tones.waves, batch_size), run_encoder(encode, items.waves, batch_size),
                             tones, items, edges, frames_per_item, n_folds, n_shuffles, max_codebooks, seed)


def probe_activations(tone_out: dict[str, np.ndarray], item_out: dict[str, np.ndarray], tones: PartialStimuli,
                      items: PartialStimuli, edges: np.ndarray, frames_per_item: int = 4, n_folds: int = 5,
                      n_shuffles: int = 3, max_codebooks: int = 4, seed: int = 0) -> dict[str, dict]:
    """The probe on activations already computed ({layer: (N, frames, D) floats or (N, frames, K) codes} for the
    pure tones and the context items), e.g. gathered across DDP ranks."""
    n_samples = items.waves.shape[1]
    tone_hz = np.array([rows[0, 0] for rows in tones.partials])
    tone_bands = np.searchsorted(edges, tone_hz) - 1
    n_bands = len(edges) - 1
    layers = {}
    for name, activations in item_out.items():
        n_frames = activations.shape[1]
        times = frame_times(n_frames, n_samples, items.sample_rate)
        frame_presence, frame_level = band_targets(items, edges, times)
        if not np.issubdtype(activations.dtype, np.floating):
            layers[name] = codes_layer(tone_out[name], tone_bands, activations, frame_presence, n_bands,
                                        max_codebooks, seed)
            continue
        # time-pooled labels: a band counts as present if a partial is active in any frame
        presence = frame_presence.any(1)
        level = 10 * np.log10(np.mean(10 ** (frame_level / 10), axis=1))
        rng = np.random.default_rng(seed)
        slots = np.sort(rng.choice(n_frames, size=min(frames_per_item, n_frames), replace=False))
        frames = activations[:, slots].reshape(-1, activations.shape[2])
        frame_items = np.repeat(np.arange(len(items)), len(slots))
        if is_constant(np.concatenate([activations.reshape(-1, activations.shape[2]),
                                       tone_out[name].reshape(-1, activations.shape[2])])):
            layers[name] = constant_layer_stats(n_bands, tone_hz, edges, items.context)
            continue
        layers[name] = latent_stats(activations.mean(1).astype(np.float64), frames.astype(np.float64), frame_items,
                                    presence, level, frame_presence[:, slots].reshape(-1, n_bands), items.context,
                                    tone_out[name].mean(1).astype(np.float64), tone_hz, edges, n_folds,
                                    n_shuffles, seed)
    return layers


def band_mean(values: np.ndarray) -> float:
    """Mean over the bands with a value; NaN when none has one (a constant layer)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    return float(values[finite].mean()) if finite.any() else float("nan")


LATENT_COLUMNS = ("band_auc", "band_auc_null", "frame_auc", "frame_auc_null", "band_r2", "band_r2_null",
                  "invariance", "invariance_null", "split_half", "invariance_halves")
CONSTANT_NOTE = "constant layer: every unit gives the same value on every stimulus"


CODE_P_VALUES = ("mi_p_value", "hit_rate_p_value")


def summary_rows(layers: dict[str, dict]) -> list[dict]:
    """One flat row per layer (latents: band means of the per-band arrays) or per layer x codebook view, each with a
    ``note`` saying why its statistics are NaN ("" when none is). The code views' permutation p-values come with
    ``<p-value>_bh``: Benjamini–Hochberg adjusted over every code view of every layer in the table."""
    rows = []
    for name, stats in layers.items():
        if "codes" in stats:
            rows += [{"layer": name, "view": view, **values,
                      "note": "constant codes: one code on every frame" if values["constant_layer"] else ""}
                     for view, values in stats["codes"].items()]
            continue
        row = {"layer": name, **{key: band_mean(stats[key]) for key in LATENT_COLUMNS}}
        row.update({key: value for key, value in stats.items() if isinstance(value, float)})
        # across-context over within-context cosine of equal-size halves, as a ratio of band means (stable near 0);
        # halves of one context that do not agree (split-half ≤ 0) leave nothing to compare with
        reliable = row["split_half"] > 0
        row["invariance_ratio"] = row["invariance_halves"] / row["split_half"] if reliable else float("nan")
        if stats["constant_layer"]:
            row["note"] = CONSTANT_NOTE
        elif not reliable:
            row["note"] = f"split-half cosine {row['split_half']:.3f} ≤ 0: no invariance ratio"
        else:
            row["note"] = ""
        rows.append(row)
    code_rows = [row for row in rows if "view" in row]
    for key in CODE_P_VALUES:
        p_values = np.array([row[key] for row in code_rows], dtype=float)
        tested = np.isfinite(p_values)
        adjusted = np.full(p_values.shape, np.nan)
        if tested.any():
            adjusted[tested] = false_discovery_control(p_values[tested], method="bh")
        for row, value in zip(code_rows, adjusted):
            row[f"{key}_bh"] = float(value)
    return rows


def seed_summary_rows(layers_per_seed: Sequence[dict[str, dict]]) -> list[dict]:
    """``summary_rows`` of the same layers probed with several seeds (stimuli, folds and shuffles drawn anew): each
    numeric column's mean over the seeds with a value, its standard deviation across them as ``<column>_sd`` (what
    one seed's number may swing by: a one-unit layer's invariance moves between −0.09 and 0.44), every seed's notes
    joined."""
    rows = []
    for group in zip(*(summary_rows(layers) for layers in layers_per_seed)):
        row = {key: group[0][key] for key in ("layer", "view") if key in group[0]}
        for key, value in group[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values = np.array([r[key] for r in group], dtype=float)
                finite = values[np.isfinite(values)]
                row[key] = float(finite.mean()) if finite.size else float("nan")
                row[f"{key}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
        row["note"] = "; ".join(dict.fromkeys(r["note"] for r in group if r["note"]))
        rows.append(row)
    return rows
