"""PESTO (kind `pesto`; self-supervised pitch, trained on MIR-1K) rebuilt in torch from the pesto-pitch wheel's
`pesto/weights/mir-1k_g7.ckpt`, read without omegaconf, at 16 kHz with 10 ms frames (`step_ms`).

Layers per frame: `cqt` (the encoder's input, 219 log-power CQT bins, 3 per semitone), `conv1`, `prefilt.0`,
`prefilt.1` (40 ch x 219 bins, flattened position-major), `conv.0`..`conv.3` (1x1 conv stages: 30, 30, 10, 3 ch
x 219) and `activations` (softmax over 384 pitch bins, PESTO's output; `pesto_pitch_hz` reads it as Hz).
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import file_digest, ModuleBackbone, weights_path


PESTO_INSTALL = "pip install --no-deps pesto-pitch==2.0.1"


class _ConfigNode:
    """Stands in for the omegaconf containers pickled in PESTO checkpoints (omegaconf need not be installed)."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _plain(value):
    if isinstance(value, _ConfigNode):
        return _plain(value.state["_content"] if "_content" in value.state else value.state["_val"])
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "omegaconf":
            return _ConfigNode
        return super().find_class(module, name)


def load_pesto_checkpoint(path: Path) -> dict:
    """A PESTO Lightning checkpoint as plain dicts and tensors (`state_dict`, `hparams`, `hcqt_params`)."""
    pickle_module = types.ModuleType("pesto_checkpoint_pickle")
    pickle_module.Unpickler = _CheckpointUnpickler
    pickle_module.load = pickle.load
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    return {key: _plain(checkpoint[key]) for key in ("hparams", "hcqt_params")} | {
        "state_dict": checkpoint["state_dict"]}


def cqt_kernels(sample_rate: int, fmin: float, n_bins: int, bins_per_octave: int, gamma: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """nnAudio's time-domain CQT kernels as PESTO builds them (periodic Hann, L1-normalised, centred in a
    power-of-two width, variable-Q with `gamma`): complex `(n_bins, width)` and the kernel lengths."""
    q = 1.0 / (2 ** (1 / bins_per_octave) - 1)
    freqs = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    if freqs.max() > sample_rate / 2:
        raise ValueError(f"PESTO's top CQT bin {freqs.max():.0f} Hz exceeds Nyquist at {sample_rate} Hz")
    alpha = 2.0 ** (1.0 / bins_per_octave) - 1.0
    lengths = np.ceil(q * sample_rate / (freqs + gamma / alpha))
    width = int(2 ** np.ceil(np.log2(lengths.max())))
    starts = np.ceil(width / 2 - lengths / 2).astype(int) - (lengths % 2 == 1)
    n = np.arange(width)[None] - starts[:, None]
    inside = (n >= 0) & (n < lengths[:, None])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / lengths[:, None])
    phase = n + np.floor(-lengths / 2)[:, None]
    kernels = np.where(inside, window * np.exp(2j * np.pi * phase * freqs[:, None] / sample_rate)
                       / lengths[:, None], 0)
    kernels /= np.abs(kernels).sum(1, keepdims=True)
    return torch.from_numpy(kernels.astype(np.complex64)), torch.from_numpy(lengths).float()


class Pesto(nn.Module):
    """PESTO (Riou et al. 2023): log-power CQT (3 bins per semitone), layer norm, a residual prefilter stack,
    1x1 convolutions, a Toeplitz (translation-equivariant) linear layer and a softmax over 384 pitch bins.

    Built from the checkpoint's `hparams`/`hcqt_params`; the CQT is a strided conv with nnAudio's kernels."""

    def __init__(self, hparams: dict, hcqt_params: dict, sample_rate: int, step_ms: float):
        super().__init__()
        encoder, cqt = hparams["encoder"], hcqt_params
        if cqt["harmonics"] != [1] or encoder["n_chan_input"] != 1 or encoder["activation_fn"] != "leaky":
            raise ValueError("only single-harmonic PESTO checkpoints with leaky ReLUs are supported")
        bps = cqt["bins_per_semitone"]
        fmin = cqt["fmin"] / 2 ** ((bps - 1) / (24 * bps)) if cqt.get("center_bins", True) else cqt["fmin"]
        kernels, lengths = cqt_kernels(sample_rate, fmin, cqt["n_bins"], 12 * bps, cqt.get("gamma", 0))
        self.register_buffer("cqt_weight", torch.cat([kernels.real, -kernels.imag])[:, None])
        self.register_buffer("sqrt_lengths", lengths.sqrt()[:, None])
        self.register_buffer("shift", torch.zeros(()))
        self.hop = int(step_ms * sample_rate / 1000 + 0.5)
        self.crop = (hparams["pitch_shift"]["max_steps"], hparams["pitch_shift"]["min_steps"])
        self.bins_per_semitone = bps
        self.slope = encoder["a_lrelu"]
        n_bins, channels, kernel = encoder["n_bins_in"], list(encoder["n_chan_layers"]), encoder["prefilt_kernel_size"]
        self.residual = encoder["residual"]
        self.layernorm = nn.LayerNorm([1, n_bins])
        self.conv1 = nn.Conv1d(1, channels[0], kernel, padding=kernel // 2)
        self.prefilt = nn.ModuleList(nn.Conv1d(channels[0], channels[0], kernel, padding=kernel // 2)
                                     for _ in range(encoder["n_prefilt_layers"] - 1))
        self.convs = nn.ModuleList(nn.Conv1d(cin, cout, 1) for cin, cout in zip(channels[:-1], channels[1:]))
        output_dim = encoder["output_dim"]
        self.fc = nn.Conv1d(1, 1, n_bins * channels[-1] + output_dim - 1, padding=output_dim - 1, bias=False)

    @property
    def layer_names(self) -> list[str]:
        return ["cqt", "conv1", *[f"prefilt.{i}" for i in range(len(self.prefilt))],
                *[f"conv.{i}" for i in range(len(self.convs))], "activations"]

    def load_pesto_state(self, state: dict[str, torch.Tensor]) -> None:
        mapped = {"shift": state["shift"], "fc.weight": state["encoder.fc.weight"]}
        for kind in ("weight", "bias"):
            mapped[f"layernorm.{kind}"] = state[f"encoder.layernorm.{kind}"]
            mapped[f"conv1.{kind}"] = state[f"encoder.conv1.0.{kind}"]
            for index in range(len(self.prefilt)):
                mapped[f"prefilt.{index}.{kind}"] = state[f"encoder.prefilt_layers.{index}.0.{kind}"]
            for index in range(len(self.convs)):
                mapped[f"convs.{index}.{kind}"] = state[f"encoder.conv_layers.{3 * index}.{kind}"]
        self.load_state_dict(mapped, strict=False)  # the CQT buffers are computed, not stored

    def log_cqt(self, waves: torch.Tensor) -> torch.Tensor:
        """`(B, T', n_bins)` natural-log CQT power, frames centred every `hop` samples (reflect-padded)."""
        width = self.cqt_weight.shape[-1]
        padded = nn.functional.pad(waves[:, None], (width // 2, width // 2), mode="reflect")
        cqt = nn.functional.conv1d(padded, self.cqt_weight, stride=self.hop)
        cqt = cqt.view(len(waves), 2, -1, cqt.shape[-1]) * self.sqrt_lengths
        magnitude = (cqt[:, 0] ** 2 + cqt[:, 1] ** 2).sqrt().transpose(1, 2)
        # PESTO takes 20 log10 |X| and scales it in place by ln(10) / 10 (for its energy), so the encoder reads
        # ln |X|^2
        return magnitude.clamp_min(torch.finfo(torch.float32).eps).log10() * 20 * (np.log(10) / 10)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        layers = range(len(self.layer_names)) if layers is None else layers
        log_cqt = self.log_cqt(waves)
        batch, n_frames = log_cqt.shape[:2]
        x = log_cqt[..., self.crop[0]: self.crop[1]].reshape(batch * n_frames, 1, -1)
        outputs = [x]
        x = nn.functional.leaky_relu(self.conv1(self.layernorm(x)), self.slope)
        outputs.append(x)
        for conv in self.prefilt:
            update = nn.functional.leaky_relu(conv(x), self.slope)
            x = update + x if self.residual else update
            outputs.append(x)
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), self.slope)
            outputs.append(x)
        activations = torch.softmax(self.fc(x.flatten(1)[:, None])[:, 0], dim=-1)
        outputs.append(activations.roll(-round(self.shift.item() * self.bins_per_semitone), -1)[:, None])
        return [outputs[index].transpose(1, 2).reshape(batch, n_frames, -1) for index in layers]


def pesto_pitch_hz(activations: torch.Tensor) -> torch.Tensor:
    """Pitch (Hz) from PESTO activations `(..., 128 * bps)`: PESTO's argmax-local weighted average ("alwa")
    over the bins within one semitone of the peak; bin b is MIDI b / bps."""
    bps = activations.shape[-1] // 128
    bins = torch.arange(activations.shape[-1], device=activations.device)
    peak = activations.argmax(dim=-1, keepdim=True)
    weights = activations * ((bins - peak).abs() < bps)
    midi = (weights * bins).sum(-1) / weights.sum(-1) / bps
    return 440.0 * 2 ** ((midi - 69) / 12)


def load_pesto(name_or_path: str | None = None, layers=None, step_ms: float = 10.0,
               sample_rate: int = 16000) -> Backbone:
    """PESTO from the pesto-pitch wheel's `weights/mir-1k_g7.ckpt` (its default model) or a user checkpoint;
    frames every `step_ms`, audio at `sample_rate`."""
    path = weights_path(name_or_path, "pesto", "weights/mir-1k_g7.ckpt", PESTO_INSTALL)
    checkpoint = load_pesto_checkpoint(path)
    module = Pesto(checkpoint["hparams"], checkpoint["hcqt_params"], sample_rate, step_ms)
    module.load_pesto_state(checkpoint["state_dict"])
    return ModuleBackbone(module, module.layer_names, layers, f"pesto-{path.stem}", sample_rate,
                           f"pesto:{file_digest(path)}:{sample_rate}:{step_ms}")
