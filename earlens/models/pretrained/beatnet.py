"""BeatNet (kind `beatnet`; Heydari et al. 2021, joint beat/downbeat CRNN, CC BY 4.0) rebuilt in torch from the
BeatNet wheel's `BeatNet/models/model_{1,2,3}_weights.pt` (trained without GTZAN, Ballroom or the Rock corpus;
`name_or_path` 1, 2 or 3, default 1), 22050 Hz, 20 ms frames, run offline over the whole clip as BeatNet's
`online` mode extracts activations.

Input: madmom's log-filtered spectrogram (1411-sample frames every 441 samples, 24 bands per octave, 30 Hz-
17 kHz: 136 bands) and its positive first difference, 272 per frame. Layers per frame: `spectrogram` (272),
`conv` (2 channels x 131 after ReLU and max-pooling, channel-major), `linear` (150), `lstm.0`, `lstm.1` (150
each, the two unidirectional LSTM layers, from a zero state at the clip's start) and `activations` (softmax over
beat, downbeat, no beat).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import (file_digest, LogFilteredSpectrogram, ModuleBackbone, torch_checkpoint,
                                              weights_path)


BEATNET_INSTALL = "pip install --no-deps BeatNet==1.1.3"
BEATNET_RATE = 22050
BEATNET_LAYERS = ["spectrogram", "conv", "linear", "lstm.0", "lstm.1", "activations"]


class BeatNet(nn.Module):
    """BeatNet's `BDA` network on its spectrogram: a 10-tap conv over each frame's 272 features (2 channels,
    ReLU, max-pool 2), a linear layer to 150, a 2-layer LSTM over frames and a linear layer to 3 classes."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.spectrogram = LogFilteredSpectrogram(BEATNET_RATE, 1411, 50, 30, 17000)
        self.conv1 = nn.Conv1d(1, 2, 10)
        self.linear0 = nn.Linear(262, 150)
        self.lstm = nn.ModuleList(nn.LSTM(150, 150, batch_first=True) for _ in range(2))
        self.linear = nn.Linear(150, 3)
        mapped = {key: value for key, value in state.items() if not key.startswith("lstm.")}
        for index in range(2):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mapped[f"lstm.{index}.{kind}_l0"] = state[f"lstm.{kind}_l{index}"]
        self.load_state_dict(mapped, strict=False)  # the spectrogram's window and filterbank are computed

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """`(B, frames, 272)`: the log-filtered spectrogram and its positive difference to the previous frame."""
        spectrogram = self.spectrogram(waves)
        rise = (spectrogram[:, 1:] - spectrogram[:, :-1]).clamp_min(0)
        return torch.cat([spectrogram, nn.functional.pad(rise, (0, 0, 1, 0))], -1)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] = range(len(BEATNET_LAYERS))) -> list[torch.Tensor]:
        x = self.features(waves)
        batch, n_frames = x.shape[:2]
        conv = nn.functional.max_pool1d(torch.relu(self.conv1(x.reshape(-1, 1, x.shape[-1]))), 2)
        outputs = [x, conv.reshape(batch, n_frames, -1)]
        h = self.linear0(outputs[-1])
        outputs.append(h)
        for lstm in self.lstm:
            h = lstm(h)[0]
            outputs.append(h)
        outputs.append(torch.softmax(self.linear(h), -1))
        return [outputs[index] for index in layers]


def load_beatnet(name_or_path: str | None = None, layers=None) -> Backbone:
    """BeatNet model 1 (default), 2 or 3 from the BeatNet wheel (or a user state-dict path)."""
    model = str(name_or_path or 1)
    if model in ("1", "2", "3"):
        path = weights_path(None, "BeatNet", f"models/model_{model}_weights.pt", BEATNET_INSTALL)
    else:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"beatnet name_or_path {model!r}: not 1, 2, 3 (the wheel's models) nor a file")
    state = torch_checkpoint(path)
    if not {"conv1.weight", "linear0.weight", "lstm.weight_ih_l1", "linear.weight"} <= set(state):
        raise ValueError(f"{path}: not a BeatNet state dict (conv1, linear0, a 2-layer lstm, linear)")
    return ModuleBackbone(BeatNet(state), BEATNET_LAYERS, layers, f"beatnet-{Path(path).stem}", BEATNET_RATE,
                          f"beatnet:{file_digest(path)}")
