"""Stimuli whose partials are known: pure tones on a log-frequency grid and inharmonic / harmonic mixtures in five
contexts (clean, noise, level, onset, harmonic), with per-frame band targets. What `earlens.stats.partials` plays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONTEXTS = ("clean", "noise", "level", "onset", "harmonic")
LEVEL_FLOOR_DB = -60.0


@dataclass
class PartialStimuli:
    """Waves (N, T) at ``sample_rate``, each with its partials: rows (frequency Hz, amplitude, onset s, offset s)."""

    waves: np.ndarray
    partials: list[np.ndarray]
    context: np.ndarray
    sample_rate: int

    def __len__(self) -> int:
        return len(self.waves)


def log_bands(fmin: float, fmax: float, n_bands: int) -> np.ndarray:
    """(n_bands + 1,) band edges equally spaced in log frequency."""
    if not 0 < fmin < fmax:
        raise ValueError(f"bands need 0 < fmin < fmax, got {fmin}, {fmax}")
    return np.geomspace(fmin, fmax, n_bands + 1)


def _render(partials: list[np.ndarray], n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of sinusoids (random phase) switched on/off with 5 ms raised-cosine ramps."""
    t = np.arange(n_samples) / sample_rate
    waves = np.zeros((len(partials), n_samples))
    ramp = 0.005
    for index, rows in enumerate(partials):
        for frequency, amplitude, onset, offset in rows:
            gate = np.clip(np.minimum(t - onset, offset - t) / ramp, 0, 1)
            waves[index] += amplitude * np.sin(np.pi / 2 * gate) ** 2 * np.sin(
                2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
    return waves


def pure_tones(sample_rate: int, fmin: float, fmax: float, n_tones: int = 48, seconds: float = 0.5,
               amplitude: float = 0.3, seed: int = 0) -> PartialStimuli:
    """Pure tones on a log-frequency grid (context ``tone``): the tuning-curve and code-map stimuli."""
    if fmax >= sample_rate / 2:
        raise ValueError(f"fmax {fmax} must lie below Nyquist ({sample_rate / 2})")
    n_samples = int(seconds * sample_rate)
    partials = [np.array([[f, amplitude, 0.0, seconds]]) for f in np.geomspace(fmin, fmax, n_tones)]
    waves = _render(partials, n_samples, sample_rate, np.random.default_rng(seed))
    return PartialStimuli(waves.astype(np.float32), partials, np.full(n_tones, "tone"), sample_rate)


def harmonic_complex(f0: float, slope_db_per_octave: float, fmax: float, amplitude: float = 0.3,
                     seconds: float = 0.5) -> np.ndarray:
    """Partials of a harmonic complex: harmonics k·f0 < fmax at amplitude ∝ k^(slope/6.02) (dB per octave)."""
    harmonics = np.arange(1, int(fmax // f0) + 1)
    gains = 10 ** (slope_db_per_octave * np.log2(harmonics) / 20)
    rows = np.zeros((len(harmonics), 4))
    rows[:, 0], rows[:, 1], rows[:, 3] = harmonics * f0, amplitude * gains / gains.sum() ** 0.5, seconds
    return rows


def context_stimuli(sample_rate: int, edges: np.ndarray, n_per_context: int = 100, seconds: float = 0.5,
                    contexts: Sequence[str] = CONTEXTS, p_present: float = 0.35, seed: int = 0) -> PartialStimuli:
    """The same band targets in different contexts; every item lists its partials.

    ``clean``: inharmonic mixtures, each band holding a partial (log-uniform inside its inner half, -20..0 dB) with
    probability ``p_present``; ``noise``: the same plus white noise at 0 dB SNR; ``level``: 24 dB quieter;
    ``onset``: each partial starts at a random time in the first half; ``harmonic``: harmonic complexes (f0
    log-uniform over the lowest two bands, spectral slope -12..0 dB/octave).
    """
    unknown = sorted(set(contexts) - set(CONTEXTS))
    if unknown:
        raise ValueError(f"unknown contexts {unknown}; choose from {CONTEXTS}")
    if edges[-1] >= sample_rate / 2:
        raise ValueError(f"top band edge {edges[-1]} must lie below Nyquist ({sample_rate / 2})")
    rng = np.random.default_rng(seed)
    n_bands, n_samples = len(edges) - 1, int(seconds * sample_rate)
    log_lo, log_hi = np.log(edges[:-1]), np.log(edges[1:])
    inner_lo, inner_hi = log_lo + (log_hi - log_lo) / 4, log_hi - (log_hi - log_lo) / 4
    partials, labels = [], []
    for context in contexts:
        for _ in range(n_per_context):
            if context == "harmonic":
                f0 = np.exp(rng.uniform(np.log(edges[0]), np.log(edges[2])))
                rows = harmonic_complex(f0, rng.uniform(-12, 0), edges[-1], seconds=seconds)
                rows = rows[rows[:, 0] >= edges[0]]
            else:
                present = np.flatnonzero(rng.random(n_bands) < p_present)
                rows = np.zeros((len(present), 4))
                rows[:, 0] = np.exp(rng.uniform(inner_lo[present], inner_hi[present]))
                rows[:, 1] = 0.3 * 10 ** (rng.uniform(-20, 0, len(present)) / 20) / max(len(present), 1) ** 0.5
                rows[:, 3] = seconds
                if context == "level":
                    rows[:, 1] *= 10 ** (-24 / 20)
                if context == "onset":
                    rows[:, 2] = rng.uniform(0, seconds / 2, len(present))
            partials.append(rows)
            labels.append(context)
    waves = _render(partials, n_samples, sample_rate, rng)
    noisy = np.asarray(labels) == "noise"
    signal_rms = np.sqrt((waves[noisy] ** 2).mean(axis=1, keepdims=True)).clip(1e-3)
    waves[noisy] += signal_rms * rng.standard_normal((noisy.sum(), n_samples))
    return PartialStimuli(waves.astype(np.float32), partials, np.asarray(labels), sample_rate)


def band_targets(stimuli: PartialStimuli, edges: np.ndarray, frame_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item, frame and band: presence (N, F, B) of an active partial, and band level in dB (floored at -60)."""
    n_bands = len(edges) - 1
    level = np.zeros((len(stimuli), len(frame_times), n_bands))
    for index, rows in enumerate(stimuli.partials):
        band = np.searchsorted(edges, rows[:, 0]) - 1
        inside = (band >= 0) & (band < n_bands)
        active = (frame_times[None, :] >= rows[inside, 2:3]) & (frame_times[None, :] < rows[inside, 3:4])
        np.add.at(level[index].T, band[inside], active * rows[inside, 1:2] ** 2)
    presence = level > 0
    return presence, np.maximum(10 * np.log10(np.maximum(level, 1e-30)), LEVEL_FLOOR_DB)


def frame_times(n_frames: int, n_samples: int, sample_rate: int) -> np.ndarray:
    """Frame centres (s), assuming the frames tile the clip evenly."""
    return (np.arange(n_frames) + 0.5) * n_samples / n_frames / sample_rate


def shuffled_labels(targets: np.ndarray, n_shuffles: int, rng: np.random.Generator) -> np.ndarray:
    """(n_shuffles, N, ...) copies of ``targets`` with rows (items) permuted: the shuffled-label null."""
    return np.stack([targets[rng.permutation(len(targets))] for _ in range(n_shuffles)])
