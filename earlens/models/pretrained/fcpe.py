"""FCPE (kind `fcpe`; Fast Context-based Pitch Estimation, MIT) rebuilt in torch from the torchfcpe wheel's
`torchfcpe/assets/fcpe_c_v001.pt` (its bundled convolution-only conformer), 16 kHz, 10 ms frames.

Layers per frame: `mel` (128 log-mel bands, the network's input), `input_stack` (512), `conformer.0`..
`conformer.5` (512 each, after each residual convolution block) and `latent` (360 sigmoid pitch bins, 20 cents
apart from 32.7 Hz; `fcpe_pitch_hz` decodes them as torchfcpe does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import librosa
import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import file_digest, ModuleBackbone, torch_checkpoint, weights_path


FCPE_INSTALL = "pip install --no-deps torchfcpe==0.0.4"
FCPE_THRESHOLD = 0.006  # torchfcpe's default: frames whose largest bin is no higher are unvoiced (0 Hz)


class ConvBlock(nn.Module):
    """The conformer's convolution module with its residual: LayerNorm, 1x1 conv + GLU, depthwise conv (31 taps),
    SiLU, 1x1 conv."""

    def __init__(self, dim: int, kernel: int = 31):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Conv1d(dim, 4 * dim, 1)
        self.depthwise = nn.Conv1d(2 * dim, 2 * dim, kernel, padding=kernel // 2, groups=2 * dim)
        self.project = nn.Conv1d(2 * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.glu(self.expand(self.norm(x).transpose(1, 2)), dim=1)
        return x + self.project(nn.functional.silu(self.depthwise(y))).transpose(1, 2)


class Fcpe(nn.Module):
    """FCPE's `CFNaiveMelPE` with `conv_only` (the bundled model): log-mel -> conv stem (GroupNorm, LeakyReLU) ->
    residual convolution blocks -> LayerNorm -> weight-normed linear -> sigmoid over pitch bins."""

    def __init__(self, config: dict):
        super().__init__()
        mel, model = config["mel"], config["model"]
        if model["type"] != "CFNaiveMelPE" or not model.get("conv_only") or model.get("use_harmonic_emb"):
            raise ValueError("only torchfcpe's convolution-only CFNaiveMelPE checkpoints are supported")
        dim = model["hidden_dims"]
        self.sample_rate, self.n_fft, self.hop = mel["sr"], mel["n_fft"], mel["hop_size"]
        if mel["win_size"] != self.n_fft:
            raise ValueError("FCPE checkpoints with win_size != n_fft are not supported")
        self.register_buffer("window", torch.hann_window(self.n_fft))
        self.register_buffer("mel_basis", torch.from_numpy(librosa.filters.mel(
            sr=self.sample_rate, n_fft=self.n_fft, n_mels=mel["num_mels"], fmin=mel["fmin"], fmax=mel["fmax"])))
        self.stem = nn.Sequential(nn.Conv1d(mel["num_mels"], dim, 3, padding=1), nn.GroupNorm(4, dim), nn.LeakyReLU(),
                                  nn.Conv1d(dim, dim, 3, padding=1))
        self.blocks = nn.ModuleList(ConvBlock(dim) for _ in range(model["n_layers"]))
        self.norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, model["out_dims"])
        self.register_buffer("cent_table", torch.zeros(model["out_dims"]))

    @property
    def layer_names(self) -> list[str]:
        return ["mel", "input_stack", *(f"conformer.{index}" for index in range(len(self.blocks))), "latent"]

    def load_fcpe_state(self, state: dict[str, torch.Tensor]) -> None:
        mapped = {"cent_table": state["cent_table"], "norm.weight": state["norm.weight"],
                  "norm.bias": state["norm.bias"], "output.bias": state["output_proj.bias"]}
        direction = state["output_proj.weight_v"]
        mapped["output.weight"] = state["output_proj.weight_g"] * direction / direction.norm(dim=1, keepdim=True)
        for key in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"):  # the stem keeps its layout
            mapped[f"stem.{key}"] = state[f"input_stack.{key}"]
        for index in range(len(self.blocks)):
            prefix = f"net.encoder_layers.{index}.conformer.net"
            for ours, theirs in (("norm", "0"), ("expand", "2"), ("depthwise", "4.conv"), ("project", "6")):
                for kind in ("weight", "bias"):
                    mapped[f"blocks.{index}.{ours}.{kind}"] = state[f"{prefix}.{theirs}.{kind}"]
        self.load_state_dict(mapped, strict=False)  # the window and mel filters are computed

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """torchfcpe's mel: (n_fft - hop) / 2 reflected samples each side, uncentred STFT magnitude, natural log
        clamped at 1e-5, the last frame repeated to give T // hop + 1 frames: `(B, T // hop + 1, n_mels)`."""
        pad = (self.n_fft - self.hop) // 2
        right = max((self.n_fft - self.hop + 1) // 2, self.n_fft - waves.shape[1] - pad)
        mode = "reflect" if right < waves.shape[1] else "constant"
        padded = nn.functional.pad(waves[:, None], (pad, right), mode=mode)[:, 0]
        spectrum = torch.stft(padded, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        magnitude = (spectrum.real ** 2 + spectrum.imag ** 2 + 1e-9).sqrt()
        mel = (self.mel_basis @ magnitude).clamp_min(1e-5).log().transpose(1, 2)
        n_frames = waves.shape[1] // self.hop + 1
        return torch.cat([mel, mel[:, -1:].expand(-1, max(0, n_frames - mel.shape[1]), -1)], 1)[:, :n_frames]

    def forward(self, waves: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        layers = range(len(self.layer_names)) if layers is None else layers
        mel = self.log_mel(waves)
        x = self.stem(mel.transpose(1, 2)).transpose(1, 2)
        outputs = [mel, x]
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs.append(torch.sigmoid(self.output(self.norm(x))))
        return [outputs[index] for index in layers]


def fcpe_pitch_hz(latent: torch.Tensor, cent_table: torch.Tensor, threshold: float = FCPE_THRESHOLD) -> torch.Tensor:
    """Pitch (Hz) from FCPE's `latent` `(..., 360)` as torchfcpe's `local_argmax` decoder reads it: the latent-
    weighted mean of the cents of the 9 bins around the peak; 0 Hz where the peak is at most `threshold`."""
    peak, index = latent.max(-1, keepdim=True)
    window = (index + torch.arange(-4, 5, device=latent.device)).clamp(0, latent.shape[-1] - 1)
    weights = latent.gather(-1, window)
    cents = (cent_table[window] * weights).sum(-1) / weights.sum(-1)
    return torch.where(peak[..., 0] > threshold, 10.0 * 2 ** (cents / 1200), torch.zeros_like(cents))


def load_fcpe(name_or_path: str | None = None, layers=None) -> Backbone:
    """FCPE from the torchfcpe wheel's bundled `assets/fcpe_c_v001.pt` (or a user checkpoint of that kind)."""
    path = weights_path(name_or_path, "torchfcpe", "assets/fcpe_c_v001.pt", FCPE_INSTALL)
    checkpoint = torch_checkpoint(path)
    if not {"config_dict", "model"} <= set(checkpoint):
        raise ValueError(f"{path}: not a torchfcpe checkpoint (needs 'config_dict' and 'model')")
    module = Fcpe(checkpoint["config_dict"])
    module.load_fcpe_state(checkpoint["model"])
    return ModuleBackbone(module, module.layer_names, layers, f"fcpe-{Path(path).stem}", module.sample_rate,
                          f"fcpe:{file_digest(path)}")
