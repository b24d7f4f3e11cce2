"""Learnable spectro-temporal Gabor filters (STRFs) on a log-mel spectrogram (Riad et al. 2021).

Each filter has four parameters: envelope widths sigma_t (frames) and sigma_f (mel bins), and carrier
modulations omega_t (rad/frame) and omega_f (rad/bin):

    g(f, t) = exp(-t^2 / 2 sigma_t^2 - f^2 / 2 sigma_f^2) / (2 pi sigma_t sigma_f)
    real(f, t) = g(f, t) cos(omega_t t + omega_f f),   imag(f, t) = g(f, t) sin(omega_t t + omega_f f)

on integer offsets centred at 0. Filters are applied as cross-correlations (`F.conv2d`), "same" size.

Parameterisation (raw tensors are unconstrained; every value they can take is a valid filter):
    sigma = 0.5 + (k / 2 - 0.5) * sigmoid(raw_sigma)      along each axis, k = kernel size on that axis
    omega = 0.95 pi * tanh(raw_omega)                     each component, so |omega| < 0.95 pi
Both maps have a nonzero derivative everywhere, sigma >= 0.5 keeps the envelope finite and nonzero,
and no parameter ever produces NaN (they saturate at extreme raw values instead). The 5% margin below
Nyquist keeps a saturated filter alive: at omega = pi the imaginary kernel sin(pi (t + f)) would be 0
on the whole integer grid, with no gradient left to leave. The only all-zero kernel is the imaginary
part at omega_t = omega_f = 0 (raw 0), where the omega gradients are nonzero.

Because the envelope is axis-aligned, cos(wt t + wf f) = cos cos - sin sin (and sin likewise) makes each
kernel a sum of two rank-1 kernels, so the bank runs as 1-D filtering along time (all filters in one
convolution) followed by a per-filter banded matrix along frequency (one batched matmul); `dense=True`
runs the same bank as a plain `conv2d` with the dense kernels instead (same output, slower).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("real", "imag", "concat", "magnitude")
INITS = ("paper", "grid")
SIGMA_MIN = 0.5
MAGNITUDE_EPS = 1e-8
OMEGA_MAX = 0.95 * math.pi


def _offsets(size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(size, device=like.device, dtype=like.dtype) - size // 2


def gabor_kernels(
    sigma_t: torch.Tensor,
    sigma_f: torch.Tensor,
    omega_t: torch.Tensor,
    omega_f: torch.Tensor,
    kernel_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense Gabor kernels `(real, imag)`, each `(n, k_f, k_t)`, from per-filter parameters `(n,)`.

    Offsets are the integers -(k//2)..k//2 on each axis (odd sizes only), so the centre tap is (0, 0).
    """
    k_f, k_t = _check_kernel_size(kernel_size)
    f = _offsets(k_f, sigma_t)[None, :, None]
    t = _offsets(k_t, sigma_t)[None, None, :]
    sigma_t, sigma_f, omega_t, omega_f = (p[:, None, None] for p in (sigma_t, sigma_f, omega_t, omega_f))
    envelope = torch.exp(-(t**2) / (2 * sigma_t**2) - f**2 / (2 * sigma_f**2)) / (2 * math.pi * sigma_t * sigma_f)
    phase = omega_t * t + omega_f * f
    return envelope * torch.cos(phase), envelope * torch.sin(phase)


def _separable_factors(sigma_t, sigma_f, omega_t, omega_f, kernel_size):
    """1-D factors `(cos_f, sin_f) (n, k_f)` and `(cos_t, sin_t) (n, k_t)` with
    real = cos_f (x) cos_t - sin_f (x) sin_t and imag = sin_f (x) cos_t + cos_f (x) sin_t."""
    k_f, k_t = kernel_size
    f = _offsets(k_f, sigma_t)[None, :]
    t = _offsets(k_t, sigma_t)[None, :]
    sigma_t, sigma_f, omega_t, omega_f = (p[:, None] for p in (sigma_t, sigma_f, omega_t, omega_f))
    envelope_f = torch.exp(-(f**2) / (2 * sigma_f**2))
    envelope_t = torch.exp(-(t**2) / (2 * sigma_t**2)) / (2 * math.pi * sigma_t * sigma_f)
    return (
        (envelope_f * torch.cos(omega_f * f), envelope_f * torch.sin(omega_f * f)),
        (envelope_t * torch.cos(omega_t * t), envelope_t * torch.sin(omega_t * t)),
    )


def _banded(taps: torch.Tensor, size: int) -> torch.Tensor:
    """`(n, k)` taps -> `(n, size, size)` matrices M with (M @ x)[o] = sum_j taps[j] x[o + j - k//2]
    (zero outside), i.e. "same" cross-correlation along one axis as a matrix."""
    k = taps.shape[-1]
    out_index = torch.arange(size, device=taps.device)[:, None]
    in_index = torch.arange(size, device=taps.device)[None, :]
    tap = in_index - out_index + k // 2
    inside = (tap >= 0) & (tap < k)
    return taps[:, tap.clamp(0, k - 1)] * inside


def _check_kernel_size(kernel_size) -> tuple[int, int]:
    k_f, k_t = (int(k) for k in kernel_size)
    if k_f < 3 or k_t < 3 or k_f % 2 == 0 or k_t % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3 on both axes (got {tuple(kernel_size)})")
    return k_f, k_t


def _logit_of_fraction(fraction: torch.Tensor) -> torch.Tensor:
    """Raw value whose sigmoid is `fraction`, kept off the flat tails so init filters still learn."""
    return torch.logit(fraction.clamp(0.02, 0.98))


class GaborSTRF2d(nn.Module):
    """Bank of `n_filters` learnable Gabor STRFs: `(B, 1, F, T)` or `(B, F, T)` -> `(B, C, F, T)`.

    `mode`: "real" or "imag" (C = n_filters), "concat" (C = 2 n_filters, all real channels then all
    imaginary ones), "magnitude" (C = n_filters, sqrt(re^2 + im^2 + 1e-8), finite gradient at 0).
    `init`: "paper" (Riad et al.: sigma = 2 * 1.41^U(0,6) per axis, |omega| = (pi/2) 1.41^-U(0,5) at an
    orientation U(-pi, pi); sigmas beyond the allowed range are clipped into it) or "grid" (temporal
    rates log-spaced with both signs, spectral scales uniform, sigma = pi / |omega| clipped: about half a
    carrier period per envelope sigma). `freeze=True` keeps the initial bank fixed (a control).
    """

    def __init__(
        self,
        n_filters: int = 32,
        kernel_size: tuple[int, int] = (9, 25),
        mode: str = "concat",
        init: str = "paper",
        freeze: bool = False,
        dense: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} (got {init!r})")
        self.n_filters = n_filters
        self.kernel_size = _check_kernel_size(kernel_size)
        self.mode = mode
        self.dense = dense
        sigma_t, sigma_f, omega_t, omega_f = (self._paper_init if init == "paper" else self._grid_init)()
        k_f, k_t = self.kernel_size
        self.raw_sigma_t = nn.Parameter(_logit_of_fraction((sigma_t - SIGMA_MIN) / (k_t / 2 - SIGMA_MIN)))
        self.raw_sigma_f = nn.Parameter(_logit_of_fraction((sigma_f - SIGMA_MIN) / (k_f / 2 - SIGMA_MIN)))
        self.raw_omega_t = nn.Parameter(torch.atanh((omega_t / OMEGA_MAX).clamp(-0.98, 0.98)))
        self.raw_omega_f = nn.Parameter(torch.atanh((omega_f / OMEGA_MAX).clamp(-0.98, 0.98)))
        self.requires_grad_(not freeze)

    def _paper_init(self):
        n = self.n_filters
        sigma_t, sigma_f = 2.0 * 1.41 ** (6.0 * torch.rand(2, n))
        modulation = (math.pi / 2) * 1.41 ** (-5.0 * torch.rand(n))
        orientation = (2 * torch.rand(n) - 1) * math.pi
        return sigma_t, sigma_f, modulation * torch.cos(orientation), modulation * torch.sin(orientation)

    def _grid_init(self):
        n, k_t = self.n_filters, self.kernel_size[1]
        n_scales = max(1, round(math.sqrt(n / 2)))
        n_rates = math.ceil(n / n_scales / 2)
        rates = torch.logspace(math.log10(min(2 * math.pi / k_t, math.pi / 2)), math.log10(math.pi / 2), n_rates)
        omega_t, omega_f = torch.meshgrid(
            torch.cat([rates, -rates]), torch.linspace(0, math.pi / 2, n_scales), indexing="ij"
        )
        omega_t, omega_f = omega_t.flatten()[:n], omega_f.flatten()[:n]
        return math.pi / omega_t.abs(), math.pi / omega_f.abs(), omega_t, omega_f

    @property
    def out_channels(self) -> int:
        return 2 * self.n_filters if self.mode == "concat" else self.n_filters

    @property
    def sigma_t(self) -> torch.Tensor:
        """Temporal envelope widths (frames), in [0.5, k_t / 2]."""
        return SIGMA_MIN + (self.kernel_size[1] / 2 - SIGMA_MIN) * torch.sigmoid(self.raw_sigma_t)

    @property
    def sigma_f(self) -> torch.Tensor:
        """Spectral envelope widths (mel bins), in [0.5, k_f / 2]."""
        return SIGMA_MIN + (self.kernel_size[0] / 2 - SIGMA_MIN) * torch.sigmoid(self.raw_sigma_f)

    @property
    def omega_t(self) -> torch.Tensor:
        """Temporal modulations (rad/frame), in (-0.95 pi, 0.95 pi)."""
        return OMEGA_MAX * torch.tanh(self.raw_omega_t)

    @property
    def omega_f(self) -> torch.Tensor:
        """Spectral modulations (rad/mel bin), in (-0.95 pi, 0.95 pi)."""
        return OMEGA_MAX * torch.tanh(self.raw_omega_f)

    def _parameters_now(self):
        return self.sigma_t, self.sigma_f, self.omega_t, self.omega_f

    def kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current dense kernels `(real, imag)`, each `(n_filters, k_f, k_t)`."""
        return gabor_kernels(*self._parameters_now(), self.kernel_size)

    def _parts(self) -> tuple[str, ...]:
        return {"real": ("real",), "imag": ("imag",)}.get(self.mode, ("real", "imag"))

    def _dense_responses(self, spec: torch.Tensor) -> torch.Tensor:
        real, imag = self.kernels()
        weight = torch.cat([{"real": real, "imag": imag}[part] for part in self._parts()]).unsqueeze(1)
        return F.conv2d(spec, weight, padding="same")

    def _separable_responses(self, spec: torch.Tensor) -> torch.Tensor:
        batch, _, n_freq, n_time = spec.shape
        n, k_t = self.n_filters, self.kernel_size[1]
        (cos_f, sin_f), (cos_t, sin_t) = _separable_factors(*self._parameters_now(), self.kernel_size)
        # Time step: every (freq row, clip) is one row of a single-image conv, so the output comes out
        # laid out (filter, cos|sin, freq, batch, time), ready for the per-filter frequency matmul.
        rows = spec.permute(1, 2, 0, 3).reshape(1, 1, n_freq * batch, n_time)
        time_taps = torch.stack([cos_t, sin_t], dim=1).reshape(2 * n, 1, 1, k_t)
        along_time = F.conv2d(rows, time_taps, padding=(0, k_t // 2)).view(n, 2 * n_freq, batch * n_time)
        # Frequency step: real = C_f * (x*C_t) - S_f * (x*S_t), imag = S_f * (x*C_t) + C_f * (x*S_t).
        cos_band, sin_band = _banded(cos_f, n_freq), _banded(sin_f, n_freq)
        blocks = {"real": torch.cat([cos_band, -sin_band], 2), "imag": torch.cat([sin_band, cos_band], 2)}
        mixing = torch.cat([blocks[part] for part in self._parts()], 1)
        out = torch.bmm(mixing, along_time).view(n, -1, n_freq, batch, n_time)
        return out.permute(3, 1, 0, 2, 4).reshape(batch, -1, n_freq, n_time)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.dim() == 3:
            spec = spec.unsqueeze(1)
        if spec.dim() != 4 or spec.shape[1] != 1:
            raise ValueError(f"expected (B, 1, F, T) or (B, F, T), got {tuple(spec.shape)}")
        responses = self._dense_responses(spec) if self.dense else self._separable_responses(spec)
        if self.mode != "magnitude":
            return responses
        real, imag = responses.chunk(2, dim=1)
        return torch.sqrt(real**2 + imag**2 + MAGNITUDE_EPS)
