"""Learnable spectro-temporal Gabor filters (STRFs) on a log-mel spectrogram (Riad et al. 2021).

Each filter has four parameters: envelope widths sigma_t (frames) and sigma_f (mel bins), and carrier
modulations omega_t (rad/frame) and omega_f (rad/bin):

    g(f, t) = exp(-t^2 / 2 sigma_t^2 - f^2 / 2 sigma_f^2) / (2 pi sigma_t sigma_f)
    real(f, t) = g(f, t) cos(omega_t t + omega_f f),   imag(f, t) = g(f, t) sin(omega_t t + omega_f f)

on integer offsets centred at 0. Filters are applied as cross-correlations (`F.conv2d`), "same" size.

Parameterisation (raw tensors are unconstrained; every value they can take is a valid filter):
    sigma = 0.5 + (sigma_max - 0.5) * sigmoid(raw_sigma)  along each axis, sigma_max = k / 2 by default
    omega = 0.95 pi * tanh(raw_omega)                     each component, so |omega| < 0.95 pi
Both maps have a nonzero derivative everywhere, sigma >= 0.5 keeps the envelope finite and nonzero,
and no parameter ever produces NaN (they saturate at extreme raw values instead). The 5% margin below
Nyquist keeps a saturated filter alive: at omega = pi the imaginary kernel sin(pi (t + f)) would be 0
on the whole integer grid, with no gradient left to leave. The only all-zero kernel is the imaginary
part at omega_t = omega_f = 0 (raw 0), where the omega gradients are nonzero.

Because the envelope is axis-aligned, cos(wt t + wf f) = cos cos - sin sin (and sin likewise) makes each
kernel a sum of two rank-1 kernels, so the bank runs as 1-D filtering along time (all filters in two
matmuls, 1 -> 2n maps) followed by small blocked banded matmuls along frequency, over groups of clips
(`earlens.frontend.gabor_separable`); `dense=True` runs the same bank as a plain `conv2d` with the dense kernels
instead (same output). The separable path wins for large kernels and loses for small ones (9x25, where a dense
conv2d is cheap; `bench/frontend.py` times both), so by default kernels smaller than `SEPARABLE_MIN_AREA` taps run
dense.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from earlens.frontend.gabor_separable import separable_responses

MODES = ("real", "imag", "concat", "magnitude")
INITS = ("paper", "grid")
SIGMA_MIN = 0.5
MAGNITUDE_EPS = 1e-8
OMEGA_MAX = 0.95 * math.pi
SEPARABLE_MIN_AREA = 400  # k_f * k_t from which the separable path is the faster one on CPU


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


def separable_factors(sigma_t, sigma_f, omega_t, omega_f, kernel_size):
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
    `sigma_max`: upper bound of sigma_t and sigma_f (frames, bins); None: half the kernel on each axis, which
    clips the paper init (up to 15.8) on short axes; 17 leaves it whole (the envelope is then truncated by
    the kernel, as in the paper).
    `dense`: None picks the faster path for the kernel size (module docstring); True/False force it.
    """

    def __init__(
        self,
        n_filters: int = 32,
        kernel_size: tuple[int, int] = (9, 25),
        mode: str = "concat",
        init: str = "paper",
        freeze: bool = False,
        dense: bool | None = None,
        sigma_max: float | None = None,
    ):
        super().__init__()
        if n_filters < 1:
            raise ValueError(f"n_filters must be >= 1 (got {n_filters})")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} (got {init!r})")
        self.n_filters = n_filters
        self.kernel_size = _check_kernel_size(kernel_size)
        self.mode = mode
        if sigma_max is not None and sigma_max <= SIGMA_MIN:
            raise ValueError(f"sigma_max must be > {SIGMA_MIN} (got {sigma_max})")
        k_f, k_t = self.kernel_size
        self.sigma_max_f, self.sigma_max_t = (k_f / 2, k_t / 2) if sigma_max is None else (sigma_max, sigma_max)
        self.dense = self.kernel_size[0] * self.kernel_size[1] < SEPARABLE_MIN_AREA if dense is None else dense
        sigma_t, sigma_f, omega_t, omega_f = (self._paper_init if init == "paper" else self._grid_init)()
        self.raw_sigma_t = nn.Parameter(_logit_of_fraction((sigma_t - SIGMA_MIN) / (self.sigma_max_t - SIGMA_MIN)))
        self.raw_sigma_f = nn.Parameter(_logit_of_fraction((sigma_f - SIGMA_MIN) / (self.sigma_max_f - SIGMA_MIN)))
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
        """Temporal envelope widths (frames), in [0.5, sigma_max_t]."""
        return SIGMA_MIN + (self.sigma_max_t - SIGMA_MIN) * torch.sigmoid(self.raw_sigma_t)

    @property
    def sigma_f(self) -> torch.Tensor:
        """Spectral envelope widths (mel bins), in [0.5, sigma_max_f]."""
        return SIGMA_MIN + (self.sigma_max_f - SIGMA_MIN) * torch.sigmoid(self.raw_sigma_f)

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
        """Runs in float32 (or float64) whatever autocast is active (its hand-written kernels write into buffers of the
        input's dtype); under bf16/fp16 autocast the input is upcast and the float32 output handed on."""
        with torch.autocast(device_type=spec.device.type, enabled=False):
            full = spec if spec.dtype in (torch.float32, torch.float64) else spec.float()
            return self._separable_full_precision(full)

    def _separable_full_precision(self, spec: torch.Tensor) -> torch.Tensor:
        factors = separable_factors(*self._parameters_now(), self.kernel_size)
        return separable_responses(spec, *factors, self._parts())

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
