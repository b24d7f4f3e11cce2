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

HANDCRAFTED_LAYERS = ["mel", "chroma", "mfcc"]
TOP_DB = 80.0  # librosa's dynamic range for log-mel and MFCC


class HandcraftedBackbone(Backbone):
    """Log-mel (dB, absolute reference), CQT chroma and MFCC of each clip; no weights, always on CPU.

    `layers` picks a subset (names or indices) of `mel`, `chroma`, `mfcc`. Each clip's log-mel is clipped
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

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        y = waves.cpu().numpy().astype(np.float32)
        n_fft, hop, n_mels, n_mfcc = (self.settings[k] for k in ("n_fft", "hop_length", "n_mels", "n_mfcc"))
        mel = librosa.feature.melspectrogram(y=y, sr=self.sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
        log_mel = np.maximum(log_mel, log_mel.max(axis=(1, 2), keepdims=True) - TOP_DB)  # per clip, as librosa
        features = {"mel": lambda: log_mel,
                    "chroma": lambda: librosa.feature.chroma_cqt(y=y, sr=self.sample_rate, hop_length=hop, tuning=0.0),
                    "mfcc": lambda: librosa.feature.mfcc(S=log_mel, n_mfcc=n_mfcc)}
        return [torch.from_numpy(np.ascontiguousarray(features[name]().transpose(0, 2, 1), dtype=np.float32))
                for name in self.layer_names]
