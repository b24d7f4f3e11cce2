"""SynTheory's handcrafted baselines (mel spectrogram, chroma, MFCC) as a backbone whose "layers" are the features.

Wrapping them as a `Backbone` sends them through the same feature cache, probes and helix fits as the
foundation models, so their rows sit in the same tables. Features are computed with librosa per frame
(`(B, frames, D)`; the feature cache mean-pools over time and zero-pads the narrower layers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import librosa
import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone, select_layers

HANDCRAFTED_LAYERS = ["mel", "chroma", "mfcc", "log_cqt"]
CQT_FMIN_NOTE, CQT_BINS = "C2", 72  # six octaves of semitone bins, C2 (65 Hz) to B7
TOP_DB = 80.0  # librosa's dynamic range for log-mel and MFCC


class HandcraftedBackbone(Backbone):
    """Log-mel (dB, absolute reference), CQT chroma, MFCC and log constant-Q of each clip; no weights, on CPU.

    `layers` picks a subset (names or indices) of `mel`, `chroma`, `mfcc`, `log_cqt`. `log_cqt` is
    log(1 + 100·|CQT|) over 72 semitone bins from C2, the constant-Q reference in which Lostanlen et al. (2020)
    found a pitch helix. Each clip's log-mel is clipped
    80 dB below its own peak (librosa's `mfcc(y=...)` per clip), never the batch's; chroma assumes A440
    tuning (librosa would estimate it from the whole batch).
    """

    def __init__(self, layers: Sequence[str | int] | None = None, sample_rate: int = 22050, n_fft: int = 2048,
                 hop_length: int = 512, n_mels: int = 128, n_mfcc: int = 20):
        self.module = nn.Module()
        self.layer_indices = select_layers(HANDCRAFTED_LAYERS, layers)
        self.layer_names = [HANDCRAFTED_LAYERS[index] for index in self.layer_indices]
        self.sample_rate = int(sample_rate)
        self.settings = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "n_mfcc": n_mfcc}
        self.name = "handcrafted"
        self.weights_id = f"handcrafted:sr{self.sample_rate}:{json.dumps(self.settings, sort_keys=True)}"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def frame_lengths(self, lengths: torch.Tensor, n_frames: int, n_samples: int) -> torch.Tensor:
        """librosa's centred frames: a clip of `length` samples has `length // hop + 1` of them."""
        return (torch.div(lengths, self.settings["hop_length"], rounding_mode="floor") + 1).clamp(1, n_frames)

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        y = waves.cpu().numpy().astype(np.float32)
        n_fft, hop, n_mels, n_mfcc = (self.settings[k] for k in ("n_fft", "hop_length", "n_mels", "n_mfcc"))
        mel = librosa.feature.melspectrogram(y=y, sr=self.sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
        log_mel = np.maximum(log_mel, log_mel.max(axis=(1, 2), keepdims=True) - TOP_DB)  # per clip, as librosa
        features = {"mel": lambda: log_mel,
                    "chroma": lambda: librosa.feature.chroma_cqt(y=y, sr=self.sample_rate, hop_length=hop, tuning=0.0),
                    "mfcc": lambda: librosa.feature.mfcc(S=log_mel, n_mfcc=n_mfcc),
                    "log_cqt": lambda: np.log1p(100 * np.abs(librosa.cqt(
                        y, sr=self.sample_rate, hop_length=hop, fmin=librosa.note_to_hz(CQT_FMIN_NOTE),
                        n_bins=CQT_BINS)))}
        return [torch.from_numpy(np.ascontiguousarray(features[name]().transpose(0, 2, 1), dtype=np.float32))
                for name in self.layer_names]


SYNTHEORY_FEATURES = ("mel", "mfcc", "chroma", "aggregate")
SYNTHEORY_SAMPLE_RATE = 22050  # brown-palm/syntheory embeddings/models.py SAMPLE_RATE_FEATS
SYNTHEORY_SECONDS = 4.0  # DURATION_IN_SEC: every clip is cut to its first 4 s
TUNING_STEP = 0.05  # chroma tuning (fractions of a 1/3-semitone bin) rounded to 1.7 cents, so clips batch by tuning
CHROMA_BINS_PER_OCTAVE = 36  # librosa chroma_cqt's default 3 × n_chroma, at which it estimates the tuning


def summary_statistics(frames: np.ndarray) -> np.ndarray:
    """SynTheory's `concat_features`: mean and standard deviation over time of `frames` `(N, D, T)` and of their
    first and second differences, `(N, 6·D)` as [mean, std, Δmean, Δstd, Δ²mean, Δ²std]."""
    moments = []
    for order in range(3):
        delta = np.diff(frames, n=order, axis=-1)
        moments += [delta.mean(-1), delta.std(-1)]
    return np.concatenate(moments, axis=-1)


def chroma_tuning(power: np.ndarray, sample_rate: int) -> np.ndarray:
    """librosa `estimate_tuning(y, bins_per_octave=36)` of every clip at once, from its power STFT `(N, F, T)`:
    what `chroma_cqt(y)` (tuning=None) uses for a single clip; a batch would get one tuning for all clips."""
    pitch, magnitude = librosa.piptrack(S=np.sqrt(power), sr=sample_rate)
    tunings = np.zeros(len(power))
    for index, (p, m) in enumerate(zip(pitch, magnitude)):  # per-clip median threshold, as estimate_tuning
        voiced = p > 0
        threshold = np.median(m[voiced]) if voiced.any() else 0.0
        tunings[index] = librosa.pitch_tuning(p[(m >= threshold) & voiced], bins_per_octave=CHROMA_BINS_PER_OCTAVE)
    return tunings


def syntheory_features(waves: np.ndarray, sample_rate: int = SYNTHEORY_SAMPLE_RATE) -> dict[str, np.ndarray]:
    """SynTheory's handcrafted embeddings (brown-palm/syntheory embeddings/models.py) of clips `(N, T)`: each clip
    cut to 4 s and peak-normalised; `summary_statistics` of the power mel spectrogram (128 bands), the 20 MFCCs
    (log-mel clipped 80 dB below the clip's peak) and CQT chroma (each clip's own estimated tuning, to
    `TUNING_STEP`), all with librosa's defaults (n_fft 2048, hop 512); `aggregate` is mel, chroma, MFCC
    concatenated (960 dimensions)."""
    if sample_rate != SYNTHEORY_SAMPLE_RATE:
        raise ValueError(f"SynTheory's handcrafted features are defined at {SYNTHEORY_SAMPLE_RATE} Hz, "
                         f"got sample_rate={sample_rate}")
    y = np.asarray(waves[:, :round(SYNTHEORY_SECONDS * sample_rate)], dtype=np.float32)
    peak = np.abs(y).max(axis=1, keepdims=True)
    y = y / np.where(peak > 0, peak, 1.0)
    power = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate)
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
    log_mel = np.maximum(log_mel, log_mel.max(axis=(1, 2), keepdims=True) - TOP_DB)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=20)
    tunings = np.round(chroma_tuning(power, sample_rate) / TUNING_STEP) * TUNING_STEP
    chroma = np.empty((len(y), 12, mel.shape[-1]), dtype=np.float32)
    for tuning in np.unique(tunings):
        same = tunings == tuning
        chroma[same] = librosa.feature.chroma_cqt(y=y[same], sr=sample_rate, tuning=tuning)
    stats = {"mel": summary_statistics(mel), "chroma": summary_statistics(chroma), "mfcc": summary_statistics(mfcc)}
    stats["aggregate"] = np.concatenate([stats["mel"], stats["chroma"], stats["mfcc"]], axis=-1)
    return {name: stats[name].astype(np.float32) for name in SYNTHEORY_FEATURES}
