"""Discrete codes and partials: does a code name a frequency band (mutual information, purity, bands spanned), and
does the code→band map learnt on pure tones still name a present band in other contexts? Each with its
shuffled-label null. Used by `earlens.stats.partials` for integer-valued layers (RVQ / k-means codes).
"""

from __future__ import annotations

import numpy as np

from earlens.stimuli.partial_stimuli import shuffled_labels


def _entropy_mm(counts: np.ndarray) -> np.ndarray:
    """Miller-Madow corrected plug-in entropy (bits) of count vectors along the last axis."""
    total = counts.sum(-1, keepdims=True)
    p = counts / np.maximum(total, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plug_in = -np.where(p > 0, p * np.log2(p), 0).sum(-1)
    return plug_in + ((counts > 0).sum(-1) - 1) / (2 * np.maximum(total[..., 0], 1) * np.log(2))


def code_stats(symbols: np.ndarray, bands: np.ndarray, n_bands: int, n_shuffles: int = 100,
               seed: int = 0) -> dict[str, float]:
    """MI (bits, Miller-Madow) between code symbol and band, normalised by H(band); purity (share of a code's
    frames in its modal band) and bands spanned (2^H(band | code): the effective number of bands), frame-weighted.
    Nulls: the same on band labels permuted across items, all shuffles in one array; mi_p_value the permutation
    p-value of MI/H(band), (1 + shuffles at least as high) / (1 + shuffles)."""
    rng = np.random.default_rng(seed)
    items, n_frames = symbols.shape
    _, codes = np.unique(symbols, return_inverse=True)
    codes = codes.reshape(items, n_frames)
    n_codes = codes.max() + 1
    label_sets = np.concatenate([bands[None], shuffled_labels(bands, n_shuffles, rng)])  # (S+1, items)
    joint_index = codes[None] * n_bands + label_sets[:, :, None]  # (S+1, items, frames)
    offsets = np.arange(len(label_sets))[:, None, None] * n_codes * n_bands
    joint = np.bincount((joint_index + offsets).ravel(), minlength=len(label_sets) * n_codes * n_bands)
    joint = joint.reshape(len(label_sets), n_codes, n_bands).astype(float)
    h_band = _entropy_mm(joint.sum(1))
    mi = h_band + _entropy_mm(joint.sum(2)) - _entropy_mm(joint.reshape(len(label_sets), -1))
    per_code = joint.sum(2)
    purity = (joint.max(2)).sum(1) / per_code.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = joint / per_code[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        entropy = -np.where(share > 0, share * np.log2(share), 0).sum(2)
    spanned = (2**entropy * per_code).sum(1) / per_code.sum(1)  # effective number of bands, frame-weighted
    norm = np.maximum(h_band, 1e-12)
    return {"mi_bits": float(mi[0]), "mi_norm": float(mi[0] / norm[0]),
            "mi_norm_null": float(np.mean(mi[1:] / norm[1:])),
            "mi_norm_null_p95": float(np.quantile(mi[1:] / norm[1:], 0.95)),
            "mi_p_value": float((1 + np.sum(mi[1:] / norm[1:] >= mi[0] / norm[0])) / len(mi)),
            "purity": float(purity[0]), "purity_null": float(purity[1:].mean()),
            "bands_spanned": float(spanned[0]), "bands_spanned_null": float(spanned[1:].mean()),
            "n_codes": int(n_codes)}


def code_map_survival(tone_symbols: np.ndarray, tone_bands: np.ndarray, context_symbols: np.ndarray,
                      context_presence: np.ndarray, n_bands: int, n_shuffles: int = 100, seed: int = 0) -> dict:
    """Fit code → modal band on pure tones; in other contexts, the share of frames (with a known code) whose
    mapped band holds an active partial. Null: the same with the code → band map permuted over codes;
    hit_rate_p_value its permutation p-value."""
    rng = np.random.default_rng(seed)
    vocabulary, inverse = np.unique(np.concatenate([tone_symbols.ravel(), context_symbols.ravel()]),
                                    return_inverse=True)
    tone_codes = inverse[: tone_symbols.size].reshape(tone_symbols.shape)
    context_codes = inverse[tone_symbols.size:].reshape(context_symbols.shape)
    counts = np.zeros((len(vocabulary), n_bands))
    np.add.at(counts, (tone_codes, np.broadcast_to(tone_bands[:, None], tone_codes.shape)), 1)
    known = counts.sum(1) > 0
    mapping = counts.argmax(1)
    maps = np.concatenate([mapping[None], np.stack([mapping[rng.permutation(len(mapping))]
                                                    for _ in range(n_shuffles)])])
    covered = known[context_codes]  # (N, F)
    hit = np.take_along_axis(context_presence[None], maps[:, context_codes][..., None], axis=-1)[..., 0]
    rates = (hit & covered[None]).sum((1, 2)) / max(covered.sum(), 1)
    return {"hit_rate": float(rates[0]), "hit_rate_null": float(rates[1:].mean()),
            "hit_rate_p_value": float((1 + np.sum(rates[1:] >= rates[0])) / len(rates)),
            "coverage": float(covered.mean())}


def codes_layer(tone_codes: np.ndarray, tone_bands: np.ndarray, item_codes: np.ndarray,
                 frame_presence: np.ndarray, n_bands: int, max_codebooks: int, seed: int) -> dict:
    """Code statistics per codebook and per code tuple (codebooks 0..j), on frames of pure tones."""
    stats = {}
    n_codebooks = min(tone_codes.shape[2], max_codebooks)
    views = [(f"codebook_{j}", [j]) for j in range(n_codebooks)]
    views += [(f"tuple_0-{j}", list(range(j + 1))) for j in range(1, n_codebooks)]
    radix = int(max(tone_codes.max(), item_codes.max())) + 1
    for view, columns in views:
        tone_symbols = _tuple_symbols(tone_codes[..., columns], radix)
        item_symbols = _tuple_symbols(item_codes[..., columns], radix)
        values = {**code_stats(tone_symbols, tone_bands, n_bands, seed=seed),
                  **code_map_survival(tone_symbols, tone_bands, item_symbols, frame_presence, n_bands, seed=seed)}
        constant = np.unique(np.concatenate([tone_symbols.ravel(), item_symbols.ravel()])).size == 1
        if constant:  # one code on every frame (a dead quantiser): no statistic says anything about partials
            values = {key: float("nan") for key in values} | {"n_codes": 1}
        stats[view] = {**values, "constant_layer": float(constant)}
    return {"codes": stats}


def _tuple_symbols(codes: np.ndarray, radix: int) -> np.ndarray:
    """One integer per frame for a tuple of codebooks (codes in [0, radix), codebook 0 least significant)."""
    codes = codes.astype(np.int64)
    return codes @ (np.int64(radix) ** np.arange(codes.shape[-1], dtype=np.int64))
