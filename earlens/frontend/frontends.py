"""Spectro-temporal frontends: waveform -> log-mel -> learnable 2-D filterbank -> per-channel norm."""

from __future__ import annotations

import torch
from torch import nn

from earlens.frontend.gabor import GaborSTRF2d
from earlens.frontend.spectrogram import LogMel
from earlens.io.lengths import zero_padding

KINDS = ("gabor", "gabor_frozen", "conv2d")


class SpectroTemporalFrontend(nn.Module):
    """`wave (B, T)` -> `(B, out_channels, n_mels, T // hop_length + 1)`.

    `kind`: "gabor" (learnable `GaborSTRF2d`), "gabor_frozen" (the same bank fixed at init, a control) or
    "conv2d" (an unconstrained `nn.Conv2d` with the same kernel size and output channels, the other
    control). `mode`, `init` and `sigma_max` are the Gabor options (`mode` also sets the conv2d channel count).
    `projection_channels` adds a learned 1 × 1 convolution of the normalised maps to that many channels, so a large
    bank (the paper's 64 filters, 128 maps) costs the encoder what a bank of that width does.
    All arguments are plain values so a YAML config can set them.
    """

    def __init__(
        self,
        kind: str = "gabor",
        n_filters: int = 32,
        kernel_size: tuple[int, int] | list[int] = (9, 25),
        mode: str = "concat",
        init: str = "paper",
        sample_rate: int = 16000,
        n_mels: int = 64,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        sigma_max: float | None = None,
        projection_channels: int | None = None,
    ):
        super().__init__()
        self.init_args = {"kind": kind, "n_filters": n_filters, "kernel_size": list(kernel_size), "mode": mode,
                          "init": init, "sample_rate": sample_rate, "n_mels": n_mels, "win_ms": win_ms,
                          "hop_ms": hop_ms, "sigma_max": sigma_max,
                          "projection_channels": projection_channels}  # what a checkpoint needs to rebuild this
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} (got {kind!r})")
        if n_filters < 1:
            raise ValueError(f"--model.frontend.init_args.n_filters must be >= 1 (got {n_filters})")
        if projection_channels is not None and projection_channels < 1:
            raise ValueError(f"--model.frontend.init_args.projection_channels must be >= 1 (got {projection_channels})")
        kernel_size = tuple(kernel_size)
        self.kind = kind
        self.logmel = LogMel(sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms)
        if kind == "conv2d":
            self.out_channels = 2 * n_filters if mode == "concat" else n_filters
            self.filterbank = nn.Conv2d(1, self.out_channels, kernel_size, padding="same")
        else:
            self.filterbank = GaborSTRF2d(n_filters, kernel_size, mode, init, freeze=kind == "gabor_frozen",
                                          sigma_max=sigma_max)
            self.out_channels = self.filterbank.out_channels
        self.norm = nn.BatchNorm2d(self.out_channels)
        self.projection = None
        if projection_channels is not None:
            self.projection = nn.Conv2d(self.out_channels, projection_channels, 1)
            self.out_channels = projection_channels

    @property
    def sample_rate(self) -> int:
        return self.logmel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.logmel.hop_length

    @property
    def n_mels(self) -> int:
        return self.logmel.n_mels

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Spectrogram frames of clips with `lengths` real samples (centred frames: `length // hop + 1`)."""
        return torch.div(lengths, self.hop_length, rounding_mode="floor") + 1

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """With `lengths`, frames past each clip's end are zeroed before and after the filterbank, so they act
        like the convolution's own zero padding: a padded clip gives the unpadded clip's output on its frames."""
        frames = None if lengths is None else self.frame_lengths(lengths)
        spec = zero_padding(self.logmel(wave).unsqueeze(1), frames)
        maps = self.norm(self.filterbank(spec))
        return zero_padding(maps if self.projection is None else self.projection(maps), frames)


class WaveformFrontend(nn.Module):
    """`wave (B, T)` -> `(B, channels[-1], 1, T // hop_length)`: a SampleCNN-style waveform encoder (Lee et al. 2017).

    A Conv1d of kernel 3 and stride 3 on the samples, then per further channel count a block Conv1d(3) + BatchNorm
    + ReLU + MaxPool(3): the hop is 3^len(channels) samples (243 = 15 ms at 16 kHz with five stages). Its blocks
    (`blocks.0` ... ) are where `PartialsCallback` and `probe.py --config partials_run` look for partials. The
    singleton frequency axis lets `AudioClassifier`'s encoder take it like a spectrogram.
    """

    def __init__(self, channels: tuple[int, ...] | list[int] = (32, 32, 64, 64, 128), sample_rate: int = 16000):
        super().__init__()
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError(f"--model.frontend.init_args.channels must be positive counts, got {channels}")
        self.init_args = {"channels": list(channels), "sample_rate": sample_rate}
        self.sample_rate = sample_rate
        stem = nn.Sequential(nn.Conv1d(1, channels[0], 3, stride=3), nn.BatchNorm1d(channels[0]), nn.ReLU())
        self.blocks = nn.ModuleList([stem] + [
            nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(3))
            for c_in, c_out in zip(channels[:-1], channels[1:])])
        self.out_channels, self.n_mels, self.hop_length = channels[-1], 1, 3 ** len(channels)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of clips with `lengths` real samples (every stage divides by 3, rounding down)."""
        return torch.div(lengths, self.hop_length, rounding_mode="floor")

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """With `lengths`, each stage's frames past the clip's end are zeroed, so padding never reaches a real frame."""
        x = wave.unsqueeze(1)
        for stage, block in enumerate(self.blocks):
            x = block(x)
            if lengths is not None:
                x = zero_padding(x, torch.div(lengths, 3 ** (stage + 1), rounding_mode="floor"))
        return x.unsqueeze(2)
