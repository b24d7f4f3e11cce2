"""Basic Pitch (kind `basic_pitch`; Bittner et al. 2022, polyphonic note transcription): the basic-pitch wheel's
ONNX graph `saved_models/icassp_2022/nmp.onnx` under onnxruntime (CPU only), 22050 Hz, 256-sample frames (86 Hz).

Layers: `cqt` (309 log-CQT bins after batch norm), `harmonic_stack` (264 bins x 8 harmonics), `contour_hidden`
(8 ch x 264), `contour` (264 pitch bins, 3 per semitone from A0), `note_hidden` (32 x 88), `note` (88 piano keys),
`onset_hidden` (32 x 88), `onset` (88); flattened frequency-major.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import OnnxBackbone, onnx_model, weights_path


BASIC_PITCH_INSTALL = "pip install --no-deps basic-pitch==0.4.0 && pip install onnxruntime onnx"
BASIC_PITCH_RATE = 22050
BASIC_PITCH_WINDOW = 2 * BASIC_PITCH_RATE - 256  # samples per model call (172 frames of 256)
BASIC_PITCH_OVERLAP = 30  # frames shared by consecutive windows (basic_pitch.inference.run_inference)
BASIC_PITCH_HOP = 256
# layer -> ONNX tensor (None: found from the graph) and its layout; `onset`/`note`/`contour` are the model outputs
BASIC_PITCH_TENSORS = {
    "cqt": ("model_1/batch_normalization/FusedBatchNormV3;model_1/batch_normalization/FusedBatchNormV33", "btfc"),
    "harmonic_stack": (None, "bctf"),
    "contour_hidden": ("Relu__38:0", "bctf"),
    "contour": ("StatefulPartitionedCall:0", "btf"),
    "note_hidden": ("Relu__42:0", "bctf"),
    "note": ("StatefulPartitionedCall:1", "btf"),
    "onset_hidden": ("Relu__35:0", "bctf"),
    "onset": ("StatefulPartitionedCall:2", "btf"),
}


def basic_pitch_tensors(path: Path) -> dict[str, str]:
    """Layer name -> tensor of the ICASSP 2022 graph; the harmonic stack is what the contour branch's first
    convolution reads."""
    producers = {output: node for node in onnx_model(path).graph.node for output in node.output}
    tensors = {name: tensor for name, (tensor, _) in BASIC_PITCH_TENSORS.items()}
    if "Relu__38:0" not in producers:
        raise ValueError(f"{path}: not the Basic Pitch ICASSP 2022 graph (no tensor Relu__38:0)")
    tensors["harmonic_stack"] = producers[producers["Relu__38:0"].input[0]].input[0]
    return tensors


class BasicPitchBackbone(OnnxBackbone):
    """Basic Pitch's ONNX graph under onnxruntime, with the selected layers added as graph outputs.

    Clips are read as `basic_pitch.inference.run_inference` reads a file: 3840 zeros in front, windows of 43844
    samples every 36164, 15 frames dropped at each window edge, trimmed to `floor(T * 86 / 22050)` frames."""

    def __init__(self, path: Path, layers=None):
        super().__init__(path, basic_pitch_tensors(path), layers, "basic_pitch", BASIC_PITCH_RATE)
        self.layouts = [BASIC_PITCH_TENSORS[name][1] for name in self.layer_names]

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        overlap = BASIC_PITCH_OVERLAP * BASIC_PITCH_HOP
        step = BASIC_PITCH_WINDOW - overlap
        batch, n_samples = waves.shape
        padded = nn.functional.pad(waves, (overlap // 2, 0))
        n_windows = -(-padded.shape[1] // step)
        padded = nn.functional.pad(padded, (0, (n_windows - 1) * step + BASIC_PITCH_WINDOW - padded.shape[1]))
        windows = padded.unfold(1, BASIC_PITCH_WINDOW, step).reshape(batch * n_windows, BASIC_PITCH_WINDOW, 1)
        fetched = self.run(windows.cpu().numpy())
        results = [fetched[self.tensors[name]] for name in self.layer_names]
        n_frames = int(np.floor(n_samples * (BASIC_PITCH_RATE // BASIC_PITCH_HOP) / BASIC_PITCH_RATE))
        edge = BASIC_PITCH_OVERLAP // 2
        layers = []
        for result, layout in zip(results, self.layouts):
            if layout == "bctf":
                result = result.permute(0, 2, 3, 1)
            result = result.reshape(batch, n_windows, result.shape[1], -1)[:, :, edge:-edge]
            layers.append(result.reshape(batch, -1, result.shape[-1])[:, :n_frames].to(waves.device))
        return layers


def load_basic_pitch(name_or_path: str | None = None, layers=None) -> Backbone:
    """Basic Pitch (ICASSP 2022) from the basic-pitch wheel's `saved_models/icassp_2022/nmp.onnx` (or a user
    path), run by onnxruntime."""
    path = weights_path(name_or_path, "basic_pitch", "saved_models/icassp_2022/nmp.onnx", BASIC_PITCH_INSTALL)
    return BasicPitchBackbone(path, layers)
