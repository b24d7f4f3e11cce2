"""SwiftF0 (kind `swift_f0`; a small pitch CNN, MIT): the swift-f0 wheel's ONNX graph `swift_f0/model.onnx`
under onnxruntime with every layer exposed, 16 kHz, 256-sample frames (16 ms). The graph computes its own
spectrogram; one clip per call (its batch size is fixed at 1).

Layers per frame (maps flattened channel-major): `spectrogram` (the CNN's input, 3 channels x 128 bins), `conv1`..
`conv13` (ReLU maps, 12 x 128), `pitch_head` (4 x 95 pitch bins), `pitch_logits` (95 bins, log-spaced from 46.875
to 2093.75 Hz; `swift_f0_bin_hz`), `confidence_hidden` (16) and `confidence` (the voicing score).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from earlens.models.base import Backbone
from earlens.models.pretrained.common import OnnxBackbone, onnx_model, onnx_node_outputs, weights_path


SWIFT_F0_INSTALL = "pip install --no-deps swift-f0==0.3.0 && pip install onnxruntime onnx"
SWIFT_F0_RATE = 16000
SWIFT_F0_RANGE = (46.875, 2093.75)  # Hz, the model's pitch range (its fmin/fmax inputs)
SWIFT_F0_BINS = 95


def swift_f0_bin_hz() -> np.ndarray:
    """The centre frequency (Hz) of each of the 95 `pitch_logits` bins."""
    low, high = SWIFT_F0_RANGE
    return low * (high / low) ** (np.arange(SWIFT_F0_BINS) / (SWIFT_F0_BINS - 1))


def swift_f0_tensors(path: Path) -> dict[str, str]:
    """Layer name -> tensor of the swift-f0 0.3 graph: the first convolution's input, the 15 ReLUs in order
    (13 trunk convolutions, the pitch head, the confidence branch), the one-channel convolution that reads the
    pitch head (the pitch logits) and the `confidence` output."""
    graph = onnx_model(path).graph
    relus = onnx_node_outputs(path, ("Relu",), [*(f"conv{index}" for index in range(1, 14)), "pitch_head",
                                                "confidence_hidden"])
    weights = {tensor.name: tensor.dims for tensor in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    logits = [node.output[0] for node in convs
              if node.input[0] == relus["pitch_head"] and weights[node.input[1]][0] == 1]
    if len(logits) != 1:
        raise ValueError(f"{path}: not the swift-f0 0.3 graph (no single pitch-logit convolution)")
    return {"spectrogram": convs[0].input[0], **{name: relus[name] for name in list(relus)[:14]},
            "pitch_logits": logits[0], "confidence_hidden": relus["confidence_hidden"], "confidence": "confidence"}


class SwiftF0Backbone(OnnxBackbone):
    """SwiftF0 on whole clips; `(1, C, F, T)` maps become `(1, T, C * F)`."""

    def __init__(self, path: Path, layers=None):
        super().__init__(path, swift_f0_tensors(path), layers, "swift_f0", SWIFT_F0_RATE)

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        fmin, fmax = (np.asarray(value, dtype=np.float32) for value in SWIFT_F0_RANGE)
        per_clip = []
        for wave in waves.cpu().numpy():
            fetched = self.run(wave[None], fmin, fmax)
            per_clip.append([_time_major(fetched[self.tensors[name]]) for name in self.layer_names])
        return [torch.cat(per_layer).to(waves.device) for per_layer in zip(*per_clip)]


def _time_major(tensor: torch.Tensor) -> torch.Tensor:
    """`(1, C, F, T)`, `(1, C, T)` or `(1, T)` -> `(1, T, D)`."""
    if tensor.ndim == 2:
        return tensor[..., None]
    return tensor.flatten(1, -2).transpose(1, 2)


def load_swift_f0(name_or_path: str | None = None, layers=None) -> Backbone:
    """SwiftF0 from the swift-f0 wheel's `model.onnx` (or a user path), run by onnxruntime."""
    return SwiftF0Backbone(weights_path(name_or_path, "swift_f0", "model.onnx", SWIFT_F0_INSTALL), layers)
