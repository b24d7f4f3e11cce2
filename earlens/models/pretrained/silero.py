"""Silero VAD (kind `silero_vad`): its 16 kHz network rebuilt in torch from the silero-vad wheel's
`silero_vad/data/silero_vad.jit`.

The wave is cut into 512-sample chunks (32 ms), each read with the 64 samples before it, as the JIT model's
streaming `forward` does. Layers per chunk: `stft` (129-bin magnitudes x 4 frames), `encoder.0`..`encoder.3` (conv
blocks, flattened position-major), `lstm` (the 128-d LSTM cell state h carried across chunks) and `speech_prob` (1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import file_digest, ModuleBackbone, weights_path


SILERO_INSTALL = "pip install --no-deps silero-vad==6.2.3"
SILERO_CHUNK = 512
SILERO_CONTEXT = 64
SILERO_LAYERS = ["stft", "encoder.0", "encoder.1", "encoder.2", "encoder.3", "lstm", "speech_prob"]


class SileroVad(nn.Module):
    """Silero VAD's 16 kHz network (STFT as a fixed conv, 4 conv blocks, LSTM cell, 1x1 conv + sigmoid), with
    the JIT model's parameter names, run over all chunks of a wave at once (only the LSTM steps in sequence)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("stft_basis", torch.zeros(258, 1, 256))
        strides = [1, 2, 2, 1]
        widths = [129, 128, 64, 64, 128]
        self.encoder = nn.ModuleList(nn.Conv1d(cin, cout, 3, stride, 1)
                                     for cin, cout, stride in zip(widths[:-1], widths[1:], strides))
        self.rnn = nn.LSTMCell(128, 128)
        self.decoder = nn.Conv1d(128, 1, 1)

    def load_jit_state(self, state: dict[str, torch.Tensor]) -> None:
        prefix = "_model."
        mapped = {"stft_basis": state[prefix + "stft.forward_basis_buffer"],
                  "decoder.weight": state[prefix + "decoder.decoder.2.weight"],
                  "decoder.bias": state[prefix + "decoder.decoder.2.bias"]}
        for index in range(4):
            for kind in ("weight", "bias"):
                mapped[f"encoder.{index}.{kind}"] = state[f"{prefix}encoder.{index}.reparam_conv.{kind}"]
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mapped[f"rnn.{kind}"] = state[f"{prefix}decoder.rnn.{kind}"]
        self.load_state_dict(mapped)

    @staticmethod
    def chunks(waves: torch.Tensor) -> torch.Tensor:
        """`(B, N, 576)`: 512-sample chunks (the last zero-padded) each with the 64 samples before it."""
        n_chunks = -(-waves.shape[1] // SILERO_CHUNK)
        padded = nn.functional.pad(waves, (SILERO_CONTEXT, n_chunks * SILERO_CHUNK - waves.shape[1]))
        return padded.unfold(1, SILERO_CHUNK + SILERO_CONTEXT, SILERO_CHUNK)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] = range(7)) -> list[torch.Tensor]:
        chunks = self.chunks(waves)
        batch, n_chunks = chunks.shape[:2]
        x = nn.functional.pad(chunks.reshape(batch * n_chunks, 1, -1), (0, 64), mode="reflect")
        spectrum = nn.functional.conv1d(x, self.stft_basis, stride=128)
        x = (spectrum[:, :129] ** 2 + spectrum[:, 129:] ** 2).sqrt()
        outputs = [x]
        for conv in self.encoder:
            x = torch.relu(conv(x))
            outputs.append(x)
        deepest = max(layers)
        if deepest >= 5:
            steps = x[..., 0].reshape(batch, n_chunks, -1)
            h = c = steps.new_zeros(batch, 128)
            states = []
            for step in steps.unbind(1):
                h, c = self.rnn(step, (h, c))
                states.append(h)
            hidden = torch.stack(states, 1)
            outputs.append(hidden)
            outputs.append(torch.sigmoid(self.decoder(torch.relu(hidden).transpose(1, 2))).transpose(1, 2))
        return [outputs[index].transpose(1, 2).reshape(batch, n_chunks, -1) if index < 5 else outputs[index]
                for index in layers]


def load_silero_vad(name_or_path: str | None = None, layers=None) -> Backbone:
    """Silero VAD (16 kHz) from the silero-vad wheel's `silero_vad.jit` (or a user path to that file)."""
    path = weights_path(name_or_path, "silero_vad", "data/silero_vad.jit", SILERO_INSTALL)
    module = SileroVad()
    module.load_jit_state(torch.jit.load(str(path), map_location="cpu").state_dict())
    return ModuleBackbone(module, SILERO_LAYERS, layers, "silero_vad", 16000, f"silero_vad:{file_digest(path)}")
