"""Resemblyzer (kind `resemblyzer`): the GE2E speaker encoder (16 kHz) rebuilt in torch from the resemblyzer
wheel's `resemblyzer/pretrained.pt`.

Layers `mel` (40 mel power bands per 10 ms frame), `lstm.0`..`lstm.2` (256-d states at every frame of every 1.6 s
partial utterance, partials concatenated in time) and `embedding` (the 256-d utterance embedding, one per clip).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import file_digest, ModuleBackbone, weights_path


RESEMBLYZER_INSTALL = "pip install --no-deps resemblyzer==0.1.4"
RESEMBLYZER_LAYERS = ["mel", "lstm.0", "lstm.1", "lstm.2", "embedding"]
RESEMBLYZER_HOP = 160  # 10 ms at 16 kHz
RESEMBLYZER_PARTIAL = 160  # frames per partial utterance (1.6 s)


def resemblyzer_partial_starts(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """First mel frame of each 160-frame partial utterance (Resemblyzer's `compute_partial_slices`)."""
    n_frames = int(np.ceil((n_samples + 1) / RESEMBLYZER_HOP))
    frame_step = int(np.round((16000 / rate) / RESEMBLYZER_HOP))
    starts = list(range(0, max(1, n_frames - RESEMBLYZER_PARTIAL + frame_step + 1), frame_step))
    coverage = (n_samples - starts[-1] * RESEMBLYZER_HOP) / (RESEMBLYZER_PARTIAL * RESEMBLYZER_HOP)
    return starts[:-1] if coverage < min_coverage and len(starts) > 1 else starts


class Resemblyzer(nn.Module):
    """Resemblyzer's GE2E speaker encoder (Wan et al. 2018): 40 mel power bands (25 ms Hann window, 10 ms hop,
    librosa's slaney filterbank), a 3-layer LSTM (256) over 1.6 s partials, ReLU(linear) L2-normalised; the
    utterance embedding is the L2-normalised mean of the partial embeddings (its `embed_utterance`).

    The three LSTM layers are separate modules so each layer's per-frame states are readable."""

    def __init__(self):
        super().__init__()
        import librosa

        self.register_buffer("mel_basis", torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)))
        self.register_buffer("window", torch.hann_window(400))
        self.lstm = nn.ModuleList(nn.LSTM(40 if index == 0 else 256, 256, batch_first=True) for index in range(3))
        self.linear = nn.Linear(256, 256)

    def load_resemblyzer_state(self, state: dict[str, torch.Tensor]) -> None:
        mapped = {f"lstm.{index}.{kind}_l0": state[f"lstm.{kind}_l{index}"]
                  for index in range(3) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        mapped.update({"linear.weight": state["linear.weight"], "linear.bias": state["linear.bias"]})
        self.load_state_dict(mapped, strict=False)  # the buffers are computed, not stored

    def mel(self, waves: torch.Tensor) -> torch.Tensor:
        """`(B, 1 + T // 160, 40)` mel power frames (librosa.feature.melspectrogram with Resemblyzer's settings)."""
        spectrum = torch.stft(waves, 400, RESEMBLYZER_HOP, window=self.window, center=True, pad_mode="constant",
                              return_complex=True).abs() ** 2
        return (self.mel_basis @ spectrum).transpose(1, 2)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] = range(5)) -> list[torch.Tensor]:
        starts = resemblyzer_partial_starts(waves.shape[1])
        waves = nn.functional.pad(waves, (0, max(0, (starts[-1] + RESEMBLYZER_PARTIAL) * RESEMBLYZER_HOP
                                                 - waves.shape[1])))
        mel = self.mel(waves)
        batch, n_partials = len(waves), len(starts)
        frames = torch.tensor(starts, device=waves.device)[:, None] + torch.arange(RESEMBLYZER_PARTIAL,
                                                                                   device=waves.device)
        x = mel[:, frames].reshape(batch * n_partials, RESEMBLYZER_PARTIAL, -1)
        outputs = [mel]
        for lstm in self.lstm[: max(max(layers), 1)]:
            x = lstm(x)[0]
            outputs.append(x.reshape(batch, n_partials * RESEMBLYZER_PARTIAL, -1))
        if 4 in layers:
            partial = torch.relu(self.linear(x[:, -1]))
            partial = (partial / partial.norm(dim=1, keepdim=True)).reshape(batch, n_partials, -1).mean(1)
            outputs.append((partial / partial.norm(dim=1, keepdim=True))[:, None])
        return [outputs[index] for index in layers]


def normalize_volume(waves: torch.Tensor, target_dbfs: float = -30.0) -> torch.Tensor:
    """Raise each clip's RMS to `target_dbfs` (never lower it), as Resemblyzer's `preprocess_wav` does."""
    rms_db = 20 * torch.log10((waves ** 2).mean(1, keepdim=True).sqrt().clamp_min(1e-10))
    return waves * 10 ** ((target_dbfs - rms_db).clamp_min(0) / 20)


class ResemblyzerBackbone(ModuleBackbone):
    """Resemblyzer read out per mel frame (`mel`), per frame of every partial (`lstm.*`) and per clip
    (`embedding`). Clips are volume-normalised like `preprocess_wav`; its webrtcvad silence trimming is left
    out (probe stimuli are already cut to the sound)."""

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        return self.module(normalize_volume(waves), self.layer_indices)


def load_resemblyzer(name_or_path: str | None = None, layers=None) -> Backbone:
    """Resemblyzer's speaker encoder from the resemblyzer wheel's `pretrained.pt` (or a user path)."""
    path = weights_path(name_or_path, "resemblyzer", "pretrained.pt", RESEMBLYZER_INSTALL)
    module = Resemblyzer()
    module.load_resemblyzer_state(torch.load(path, map_location="cpu", weights_only=True)["model_state"])
    return ResemblyzerBackbone(module, RESEMBLYZER_LAYERS, layers, "resemblyzer", 16000,
                               f"resemblyzer:{file_digest(path)}")
