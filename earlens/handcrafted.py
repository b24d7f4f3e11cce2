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

from earlens.backbones import Backbone, _select

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
        self.layer_indices = _select(HANDCRAFTED_LAYERS, layers)
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
