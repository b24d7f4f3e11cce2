"""What learned filters are tuned to: Gabor STRF modulations in physical units, waveform conv filter spectra.

Two families, both framework-free (numpy/torch, plain arrays in, numpy out):

* **Gabor STRF filters on a log-mel spectrogram** (`gabor_stats`, `gabor_mtf`): a filter with envelope
  widths (sigma_t frames, sigma_f mel bins) and carrier (omega_t rad/frame, omega_f rad/bin) is converted to
  temporal modulation rate in Hz, spectral modulation (scale) in cycles per octave, sigma_t in ms and
  sigma_f in octaves, and its modulation transfer function (MTF) is drawn on the rate-scale plane.
* **Waveform conv encoders** (`conv_filter_stats`): a Conv1d on raw audio (or the linear composition of
  its first layers, `compose_conv1d`) is read as a bank of FIR filters; each gets a peak frequency,
  centroid, equivalent noise bandwidth, Q and spectral flatness, to compare against the same layer at
  random initialisation (`default_init_conv1d`).

The figures of these statistics are in `earlens.plots`.

Mel bins per octave. Mel bins are equally spaced in mel, not in log frequency, so bins/octave depends on
frequency. We use the number of mel bins in the one-octave band geometrically centred on a reference
frequency (`MelGrid.bins_per_octave`, default 2 kHz). For librosa's default Slaney mel scale, which is
logarithmic above 1 kHz, this count is *exact and constant* for every reference at or above 1.41 kHz
(27 ln 2 / ln 6.4 = 10.07 mels per octave divided by the mel spacing); below 1 kHz the scale is linear in
Hz, so low bands hold fewer bins per octave and a filter's cycles/octave there would read lower.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import librosa
import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]
DEFAULT_REFERENCE_HZ = 2000.0
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)


def _numpy(x: ArrayLike) -> np.ndarray:
    """float64 numpy copy of a tensor (detached, on CPU) or array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class MelGrid:
    """The time-frequency grid a spectro-temporal filter slides over: STFT hop and mel band layout."""

    sample_rate: int
    hop_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None
    htk: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def mel_spacing(self) -> float:
        """Mels between adjacent bin centres (librosa spaces n_mels + 2 points evenly from fmin to fmax)."""
        fmax = self.fmax if self.fmax is not None else self.sample_rate / 2
        mel_lo, mel_hi = librosa.hz_to_mel(np.array([self.fmin, fmax]), htk=self.htk)
        return float(mel_hi - mel_lo) / (self.n_mels + 1)

    def bins_per_octave(self, reference_hz: float = DEFAULT_REFERENCE_HZ) -> float:
        """Mel bins in the octave [reference/sqrt 2, reference*sqrt 2] (see the module docstring)."""
        edges = librosa.hz_to_mel(np.array([reference_hz / math.sqrt(2), reference_hz * math.sqrt(2)]), htk=self.htk)
        return float(edges[1] - edges[0]) / self.mel_spacing


def quantile_summary(stats: dict[str, ArrayLike], quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, float]:
    """`{name: per-filter values}` -> `{f"{name}_q{100 q:02d}": quantile}`, e.g. `rate_hz_q50` (the median)."""
    qs = np.asarray(quantiles)
    return {
        f"{name}_q{round(100 * q):02d}": float(v)
        for name, values in stats.items()
        for q, v in zip(qs, np.quantile(_numpy(values), qs))
    }


# --------------------------------------------------------------------------------------------------
# Gabor STRF filters
# --------------------------------------------------------------------------------------------------


def gabor_stats(
    omega_t: ArrayLike,
    omega_f: ArrayLike,
    sigma_t: ArrayLike,
    sigma_f: ArrayLike,
    grid: MelGrid,
    reference_hz: float = DEFAULT_REFERENCE_HZ,
) -> dict[str, np.ndarray]:
    """Per-filter Gabor parameters in physical units.

    Inputs in grid units: omega_t rad/frame, omega_f rad/mel bin, sigma_t frames, sigma_f mel bins.
    Returns `rate_hz` = |omega_t| / 2pi * frames/s, `scale_cyc_per_oct` = |omega_f| / 2pi * bins/octave,
    `sigma_t_ms`, `sigma_f_oct`. Magnitudes: the sign of the carrier only sets the sweep direction (shown
    on the rate-scale plane of `gabor_mtf`), not how fast the filter modulates.
    """
    bins_per_octave = grid.bins_per_octave(reference_hz)
    return {
        "rate_hz": np.abs(_numpy(omega_t)) / (2 * np.pi) * grid.frames_per_second,
        "scale_cyc_per_oct": np.abs(_numpy(omega_f)) / (2 * np.pi) * bins_per_octave,
        "sigma_t_ms": np.abs(_numpy(sigma_t)) * 1000.0 / grid.frames_per_second,
        "sigma_f_oct": np.abs(_numpy(sigma_f)) / bins_per_octave,
    }


GABOR_PARAMETERS = ("sigma_t", "sigma_f", "omega_t", "omega_f")


def gabor_movement(
    initial: dict[str, ArrayLike],
    current: dict[str, ArrayLike],
    grid: MelGrid,
    reference_hz: float = DEFAULT_REFERENCE_HZ,
) -> dict[str, float]:
    """How far a Gabor bank has moved from its initial state (the critique that learnable frontends barely
    leave their initialisation, Anderson, Kinnunen & Harte 2023).

    `initial` and `current`: `{sigma_t, sigma_f, omega_t, omega_f}` per filter, same filters in the same order.
    Returns, per parameter, `{p}_rel_change` = ||p - p0||_2 / ||p0||_2 (filter by filter: swapping two filters
    counts as movement), and per `gabor_stats` quantity (rate, scale, sigmas in physical units),
    `{stat}_w1_rel` = W1(current, initial) / mean |initial|, the 1-Wasserstein distance between the two
    distributions over filters relative to the initial magnitude (order-free: how much the population moved).
    Both are 0 for a bank that did not move and 0.1 for every sigma scaled by 1.1.
    """
    movement = {}
    for name in GABOR_PARAMETERS:
        before, after = _numpy(initial[name]), _numpy(current[name])
        movement[f"{name}_rel_change"] = float(np.linalg.norm(after - before) / np.linalg.norm(before))
    stats = [gabor_stats(*(state[name] for name in ("omega_t", "omega_f", "sigma_t", "sigma_f")), grid, reference_hz)
             for state in (initial, current)]
    for name, before in stats[0].items():
        # W1 between two equal-size samples: the mean distance between their sorted values.
        shift = np.mean(np.abs(np.sort(stats[1][name]) - np.sort(before)))
        movement[f"{name}_w1_rel"] = float(shift / np.mean(np.abs(before)))
    return movement


def signed_rate_hz(omega_t: ArrayLike, omega_f: ArrayLike, grid: MelGrid) -> np.ndarray:
    """Rate in Hz where each filter sits on the folded rate-scale plane of `gabor_mtf` (scale >= 0): its
    sign is the sweep direction, sign(omega_t * omega_f) (sign(omega_t) when omega_f = 0, where the folded
    MTF is symmetric in rate). For a carrier exp(i(omega_t t + omega_f f)) the ripples drift along
    df/dt = -omega_t / omega_f, so positive rates are ripples moving down in frequency."""
    omega_t, omega_f = _numpy(omega_t), _numpy(omega_f)
    return np.where(omega_f < 0, -omega_t, omega_t) / (2 * np.pi) * grid.frames_per_second


def gabor_mtf(
    real: ArrayLike,
    imag: ArrayLike,
    grid: MelGrid,
    n_fft: int = 129,
    reference_hz: float = DEFAULT_REFERENCE_HZ,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modulation transfer function of each complex Gabor kernel `real + i imag`, each `(n, k_f, k_t)`.

    The 2-D FFT magnitude (zero-padded to `n_fft`, made odd so the grid is symmetric about 0) is folded
    onto scale >= 0: |K(scale, rate)| + |K(-scale, -rate)|, the response of the filter's energy (a carrier
    and its negation give the same real part). Returns `rate_hz (n_fft,)` (signed: the sign tells the
    sweep direction), `scale_cyc_per_oct (n_fft // 2 + 1,)` and `mtf (n, n_scale, n_rate)`.
    """
    n_fft = n_fft | 1
    kernel = _numpy(real) + 1j * _numpy(imag)
    if kernel.shape[-2] > n_fft or kernel.shape[-1] > n_fft:
        raise ValueError(f"n_fft={n_fft} is smaller than the kernel {kernel.shape[-2:]}")
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(kernel, s=(n_fft, n_fft))), axes=(-2, -1))
    centre = n_fft // 2
    folded = spectrum[:, centre:, :] + spectrum[:, ::-1, ::-1][:, centre:, :]
    cycles = np.arange(-centre, centre + 1) / n_fft  # cycles per frame / per bin
    rate_hz = cycles * grid.frames_per_second
    scale = cycles[centre:] * grid.bins_per_octave(reference_hz)
    return rate_hz, scale, folded


def tile_kernels(kernels: ArrayLike, n_cols: int | None = None) -> np.ndarray:
    """Kernels `(n, h, w)` -> one image, each kernel scaled to max |.| = 1, separated by NaN lines."""
    kernels = _numpy(kernels)
    n, h, w = kernels.shape
    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    scaled = kernels / np.maximum(np.abs(kernels).max(axis=(1, 2), keepdims=True), 1e-12)
    padded = np.full((n_rows * n_cols, h + 1, w + 1), np.nan)
    padded[:n, :h, :w] = scaled
    return padded.reshape(n_rows, n_cols, h + 1, w + 1).transpose(0, 2, 1, 3).reshape(n_rows * (h + 1), -1)


def compose_conv1d(
    weights: Sequence[ArrayLike], strides: Sequence[int], dilations: Sequence[int] | None = None
) -> tuple[torch.Tensor, int]:
    """Single equivalent kernel `(out_last, in_first, K)` and stride of a stack of Conv1d layers.

    Exact for the linear stack (conv, no bias, no padding): layer-2 output n sees
    sum_{c,j,l} w2[o,c,j] w1[c,i,l] x[s1 s2 n + s1 d2 j + d1 l], i.e. the full convolution of w2 dilated
    by s1*d2 with w1 dilated by d1. Approximation for real encoders: nonlinearities (ReLU) are ignored, biases
    dropped (they shift, not shape, the response), max-pooling must be passed as a stride; per-channel affine
    maps (BatchNorm at inference) can be folded into the weights by the caller.
    """
    dilations = dilations or [1] * len(weights)
    if not len(weights) == len(strides) == len(dilations):
        raise ValueError(f"{len(weights)} weights, {len(strides)} strides and {len(dilations)} dilations differ")

    def dilate(w: torch.Tensor, d: int) -> torch.Tensor:
        out = w.new_zeros(*w.shape[:-1], d * (w.shape[-1] - 1) + 1)
        out[..., ::d] = w
        return out

    def compose(acc: tuple[torch.Tensor, int], layer: tuple[torch.Tensor, int, int]) -> tuple[torch.Tensor, int]:
        kernel, stride = acc  # (c, in, L1)
        w, s, d = layer
        outer = dilate(w, stride * d)  # (out, c, L2)
        length = outer.shape[-1] + kernel.shape[-1] - 1
        # full convolution over taps, summed over the shared channel c, as a product of spectra
        spectrum = torch.einsum("ocf,cif->oif", torch.fft.rfft(outer, n=length), torch.fft.rfft(kernel, n=length))
        return torch.fft.irfft(spectrum, n=length), stride * s

    tensors = [torch.as_tensor(_numpy(w)) for w in weights]
    first = (dilate(tensors[0], dilations[0]), strides[0])
    return functools.reduce(compose, zip(tensors[1:], strides[1:], dilations[1:]), first)


def default_init_conv1d(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Weights `(out, in, k)` of a fresh `nn.Conv1d` (PyTorch's default init), seeded, global RNG untouched."""
    out_channels, in_channels, kernel_size = shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Conv1d(in_channels, out_channels, kernel_size).weight.detach()


def frequency_response(
    kernels: ArrayLike, sample_rate: float, n_fft: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power response of FIR kernels `(out, k)` or `(out, in, k)` (power summed over inputs).

    Zero-padded to `n_fft` (default 8x the next power of two >= k) so peaks are located to a fraction of
    the kernel's own resolution sample_rate / k. Returns `freqs_hz (F,)`, `power (out, F)`.
    """
    kernels = _numpy(kernels)
    kernels = kernels.reshape(kernels.shape[0], -1, kernels.shape[-1])
    n_fft = n_fft or 8 * 2 ** math.ceil(math.log2(kernels.shape[-1]))
    power = (np.abs(np.fft.rfft(kernels, n=n_fft, axis=-1)) ** 2).sum(axis=1)
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate), power


def conv_filter_stats(kernels: ArrayLike, sample_rate: float, n_fft: int | None = None) -> dict[str, np.ndarray]:
    """Per-filter spectral statistics of FIR kernels (see `frequency_response`).

    - `peak_hz`: frequency of maximum power; `centroid_hz`: power-weighted mean frequency.
    - `bandwidth_hz`: equivalent noise bandwidth, sum(P) df / max(P): the width of a rectangle with the
      peak's height and the same power. Unlike the -3 dB width it is not fooled by the single sharp spike
      of a random (white) kernel, and a filter tuned to several partials counts the width of all of them.
      Closed forms: Hann window of N taps 1.5 sr/N; Gaussian window of std s seconds 1 / (2 sqrt(pi) s).
    - `q` = peak_hz / bandwidth_hz (0 for a lowpass filter).
    - `flatness`: geometric / arithmetic mean of P (1 for an impulse; a single white-noise kernel's
      periodogram is exponentially distributed per bin, so its expected flatness is exp(-gamma) = 0.56).
    """
    freqs, power = frequency_response(kernels, sample_rate, n_fft)
    peak_power = power.max(axis=-1)
    total = power.sum(axis=-1)
    bandwidth = total * (freqs[1] - freqs[0]) / np.maximum(peak_power, 1e-300)
    peak_hz = freqs[power.argmax(axis=-1)]
    floor = 1e-12 * peak_power[:, None] + 1e-300
    return {
        "peak_hz": peak_hz,
        "centroid_hz": (power * freqs).sum(axis=-1) / np.maximum(total, 1e-300),
        "bandwidth_hz": bandwidth,
        "q": peak_hz / bandwidth,
        "flatness": np.exp(np.log(power + floor).mean(axis=-1)) / np.maximum(power.mean(axis=-1), 1e-300),
    }
