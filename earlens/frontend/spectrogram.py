"""Log-mel spectrogram from `torch.stft` and librosa's mel filterbank (no torchaudio).

Frames are centred (`center=True`, zero padding as in librosa >= 0.10): frame i is centred at
sample i * hop_length, which the batch contract relies on to read frame labels.
"""

from __future__ import annotations

from functools import cache

import librosa
import numpy as np
import torch
from torch import nn


@cache
def _mel_filters_numpy(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Slaney mel filterbank `(n_mels, n_fft // 2 + 1)` (librosa's default), cached per configuration."""
    return torch.from_numpy(_mel_filters_numpy(sample_rate, n_fft, n_mels, float(fmin), fmax).copy())


def log_mel_spectrogram(
    wave: torch.Tensor,
    sample_rate: int = 16000,
    win_length: int = 400,
    hop_length: int = 160,
    n_fft: int | None = None,
    n_mels: int = 64,
    fmin: float = 0.0,
    fmax: float | None = None,
    floor: float = 1e-6,
    window: torch.Tensor | None = None,
    filters: torch.Tensor | None = None,
) -> torch.Tensor:
    """Natural-log mel power spectrogram of `wave (..., T)` -> `(..., n_mels, frames)`.

    `frames = T // hop_length + 1`; frame i is centred at sample i * hop_length. `window` and
    `filters` may be passed precomputed (the `LogMel` module keeps them as buffers).
    """
    n_fft = n_fft or win_length
    if window is None:
        window = torch.hann_window(win_length, device=wave.device, dtype=wave.dtype)
    if filters is None:
        filters = mel_filters(sample_rate, n_fft, n_mels, fmin, fmax).to(wave.device, wave.dtype)
    batch_shape = wave.shape[:-1]
    stft = torch.stft(
        wave.reshape(-1, wave.shape[-1]),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = stft.real.square() + stft.imag.square()
    mel = filters @ power
    return torch.log(mel.clamp(min=floor)).reshape(*batch_shape, n_mels, mel.shape[-1])


class LogMel(nn.Module):
    """`log_mel_spectrogram` as a module, with window and hop given in milliseconds."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 64,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        fmin: float = 0.0,
        fmax: float | None = None,
        floor: float = 1e-6,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        self.n_fft = n_fft or self.win_length
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} is shorter than the window ({self.win_length} samples)")
        self.fmin, self.fmax, self.floor = fmin, fmax, floor
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filters", mel_filters(sample_rate, self.n_fft, n_mels, fmin, fmax), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """`(..., T)` -> `(..., n_mels, T // hop_length + 1)`."""
        return log_mel_spectrogram(
            wave,
            sample_rate=self.sample_rate,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            floor=self.floor,
            window=self.window,
            filters=self.filters,
        )
