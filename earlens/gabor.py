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
kernel a sum of two rank-1 kernels, so the bank runs as 1-D filtering along time (all filters in one
matmul, 1 -> 2n maps) followed by small blocked banded matmuls along frequency (`_FreqBlocking`), over
clips laid end to end (`_SeparableGabor`); `dense=True` runs the same bank as a plain `conv2d` with the
dense kernels instead (same output). The separable path wins for large kernels (about 2x at 9x111 on CPU
in `bench/frontend.py`) and loses for small ones (9x25, where a dense conv2d is cheap), so by default
kernels smaller than `SEPARABLE_MIN_AREA` taps run dense.
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


FREQ_BLOCK = 8  # output mel bins per block of the frequency step


def _band_blocks(taps: torch.Tensor, width: int) -> torch.Tensor:
    """`(..., k)` taps -> `(..., FREQ_BLOCK, width)` Toeplitz blocks B with B[r, w] = taps[w - r] (zero
    outside): FREQ_BLOCK consecutive outputs of a "valid" cross-correlation over `width` inputs."""
    k = taps.shape[-1]
    tap = torch.arange(width, device=taps.device)[None, :] - torch.arange(FREQ_BLOCK, device=taps.device)[:, None]
    inside = (tap >= 0) & (tap < k)
    return taps[..., tap.clamp(0, k - 1)] * inside


class _FreqBlocking:
    """Layout of the frequency step for `n_freq` bins and `k_f` taps.

    Every time-filtered map is zero-padded along frequency to `rows` = n_blocks * FREQ_BLOCK rows
    (k_f // 2 zeros on top, at least as many below), and the maps of all filters lie end to end. Window
    m = (filter, block) covers rows m * FREQ_BLOCK + [0, width) of that stack and yields FREQ_BLOCK output
    bins from one small matmul with its filter's Toeplitz block; the windows overlap, so they are a strided
    view (no copy). Blocks past the last bin are computed and dropped. Work per output is width / k_f
    times the taps (1.8x for k_f = 9, 1.3x for 25; times rows / F for the padding), against F / k_f for
    a full F x F banded matrix (7x for F = 64, k_f = 9). Along time the columns are clips end to end
    (`_clips_end_to_end`).
    """

    def __init__(self, n_filters: int, n_freq: int, k_f: int):
        self.n_freq, self.pad_top = n_freq, k_f // 2
        self.sub_blocks = 1 + -(-(k_f - 1) // FREQ_BLOCK)
        self.width = self.sub_blocks * FREQ_BLOCK
        self.valid_blocks = -(-n_freq // FREQ_BLOCK)
        self.n_blocks = self.valid_blocks + self.sub_blocks - 1
        self.rows = self.n_blocks * FREQ_BLOCK
        self.n_windows = (n_filters - 1) * self.n_blocks + self.valid_blocks  # the last stays in bounds

    def windows(self, maps: torch.Tensor) -> torch.Tensor:
        """`(n, rows, T)` contiguous maps -> overlapping `(n_windows, width, T)` view."""
        n_time = maps.shape[-1]
        return maps.as_strided((self.n_windows, self.width, n_time), (FREQ_BLOCK * n_time, n_time, 1))

    def per_window(self, blocks: torch.Tensor) -> torch.Tensor:
        """`(..., n, r, width)` per-filter blocks -> `(..., n_windows, r, width)`, one per window."""
        return blocks.repeat_interleave(self.n_blocks, dim=-3)[..., : self.n_windows, :, :]

    def grad_windows(self, grad_stack: torch.Tensor) -> torch.Tensor:
        """`(sub_blocks - 1 + n * n_blocks, r, T)` output-grad blocks (leading ones zero) -> overlapping
        `(n * n_blocks, sub_blocks * r, T)` view: window k holds the grads of the windows that read block k."""
        _, r, n_time = grad_stack.shape
        n_windows = grad_stack.shape[0] - self.sub_blocks + 1
        return grad_stack.as_strided((n_windows, self.sub_blocks * r, n_time), (r * n_time, n_time, 1))

    def transposed(self, blocks: torch.Tensor) -> torch.Tensor:
        """`(..., n, r, width)` blocks -> `(..., n, FREQ_BLOCK, sub_blocks * r)`, the adjoint read by
        `grad_windows`: column (q', row) is sub-block sub_blocks - 1 - q' of that row, transposed."""
        *lead, n, r, _ = blocks.shape
        sub = blocks.view(*lead, n, r, self.sub_blocks, FREQ_BLOCK).flip(-2)
        return sub.permute(*range(len(lead)), -4, -1, -2, -3).reshape(*lead, n, FREQ_BLOCK, self.sub_blocks * r)

    def per_filter(self, window_grads: torch.Tensor) -> torch.Tensor:
        """Adjoint of `per_window`: `(..., n_windows, r, width)` -> `(..., n, r, width)` summed per filter."""
        *lead, _, r, width = window_grads.shape
        missing = self.n_blocks - self.valid_blocks
        padded = F.pad(window_grads, (0, 0, 0, 0, 0, missing))
        return padded.view(*lead, -1, self.n_blocks, r, width).sum(-3)


CPU_GROUP_BYTES = 8 * 2**20  # time-filtered maps per group of clips on CPU: small enough to stay in cache


class _SeparableGabor(torch.autograd.Function):
    """Gabor bank as time filtering (one matmul, 1 -> 2n maps) then blocked banded matmuls along frequency
    (`_FreqBlocking`), on groups of clips laid end to end (`_clips_end_to_end`).

    On a GPU the group is the whole batch (no loop over clips). On CPU a group holds as many clips as keep
    the time-filtered maps within `CPU_GROUP_BYTES` (one clip of 64 filters x 64 mels x 200 frames): the
    buffers are then reused from cache, where batch-sized ones cost page faults and memory traffic
    (the whole batch at once was the slower choice on a 2-core CPU). Backward recomputes the maps
    instead of storing them, and gradients are written by hand so autograd keeps no per-group buffers and
    never differentiates through the overlapping window views. The time step is an explicit im2col matmul
    (the input has one channel, so the columns are only k_t copies of the clips): oneDNN's conv is slower.
    """

    @staticmethod
    def forward(ctx, spec, time_taps, freq_blocks, layout: _FreqBlocking, group_size: int):
        """spec `(B, 1, F, T)`; time_taps `(2n, k_t)` (cos rows then sin rows); freq_blocks `(2, n, 8 P, width)`
        mixing the cos / sin maps into rows (bin in block, part); `group_size` clips at a time -> `(B, P n, F, T)`,
        parts outermost."""
        batch, _, n_freq, n_time = spec.shape
        n, k_t = time_taps.shape[0] // 2, time_taps.shape[1]
        n_parts = freq_blocks.shape[2] // FREQ_BLOCK
        gap = 0 if group_size == 1 else k_t // 2  # one clip alone sees only the im2col's own zero padding
        window_blocks = layout.per_window(freq_blocks)
        out = spec.new_empty(batch, n_parts * n, n_freq, n_time)
        buffers = {}  # per group width, reused: a fresh buffer per group costs its page faults again
        for start in range(0, batch, group_size):
            clips = spec[start : start + group_size]
            n_columns = len(clips) * (n_time + gap)
            if n_columns not in buffers:
                buffers[n_columns] = (spec.new_empty(2, n, layout.rows, n_columns),
                                      spec.new_empty(n * layout.n_blocks, FREQ_BLOCK * n_parts, n_columns))
            maps, mixed = buffers[n_columns]  # mixed: the rows of windows past the last one stay unused
            torch.mm(time_taps, _time_columns(clips, k_t, gap, layout).T, out=maps.view(2 * n, -1))
            torch.bmm(window_blocks[0], layout.windows(maps[0]), out=mixed[: layout.n_windows])
            mixed[: layout.n_windows].baddbmm_(window_blocks[1], layout.windows(maps[1]))
            # (filter, bin, part, clip, frame) -> (clip, part, filter, bin, frame), dropping padding and gaps.
            rows = mixed.view(n, layout.rows, n_parts, len(clips), n_time + gap)[:, :n_freq, ..., :n_time]
            out[start : start + group_size].view(len(clips), n_parts, n, n_freq, n_time).copy_(
                rows.permute(3, 2, 0, 1, 4))
        ctx.save_for_backward(spec, time_taps, window_blocks)
        ctx.layout, ctx.group_size, ctx.gap = layout, group_size, gap
        return out

    @staticmethod
    def backward(ctx, grad_out):
        """Runs with autocast off (autograd replays the forward's autocast state, which would turn the matmuls
        into low-precision ones writing into float32 buffers)."""
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _SeparableGabor._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        spec, time_taps, window_blocks = ctx.saved_tensors
        layout, group_size, gap = ctx.layout, ctx.group_size, ctx.gap
        batch, _, n_freq, n_time = spec.shape
        n, k_t = time_taps.shape[0] // 2, time_taps.shape[1]
        n_parts = window_blocks.shape[2] // FREQ_BLOCK
        grad_time_taps = torch.zeros_like(time_taps)
        grad_window_blocks = torch.zeros_like(window_blocks)
        grad_spec = torch.empty_like(spec) if ctx.needs_input_grad[0] else None
        # A block's grad comes from the windows over it; windows from the previous filter reaching into it
        # cover only its dropped blocks (zero grads), so each block can use its own filter's taps.
        adjoint_blocks = layout.transposed(window_blocks[:, :: layout.n_blocks]).repeat_interleave(layout.n_blocks, 1)
        buffers = {}  # per group width, reused as in forward
        for start in range(0, batch, group_size):
            clips, group = spec[start : start + group_size], slice(start, start + group_size)
            n_columns = len(clips) * (n_time + gap)
            if n_columns not in buffers:
                # Output grads as blocks behind sub_blocks - 1 zero blocks; padding rows and gaps stay zero.
                buffers[n_columns] = (
                    spec.new_empty(2, n, layout.rows, n_columns),
                    spec.new_zeros(layout.sub_blocks - 1 + n * layout.n_blocks, FREQ_BLOCK * n_parts, n_columns),
                    spec.new_empty(2, n * layout.n_blocks, FREQ_BLOCK, n_columns))
            maps, grad_stack, grad_maps = buffers[n_columns]
            columns = _time_columns(clips, k_t, gap, layout)
            torch.mm(time_taps, columns.T, out=maps.view(2 * n, -1))
            grad_rows = grad_stack[layout.sub_blocks - 1 :].view(n, layout.rows, n_parts, len(clips), n_time + gap)
            grad_rows[:, :n_freq, ..., :n_time].copy_(
                grad_out[group].view(len(clips), n_parts, n, n_freq, n_time).permute(2, 3, 1, 0, 4))
            grad_windows = grad_stack[layout.sub_blocks - 1 :][: layout.n_windows]
            for cos_sin in range(2):
                grad_window_blocks[cos_sin].baddbmm_(grad_windows, layout.windows(maps[cos_sin]).transpose(1, 2))
                torch.bmm(adjoint_blocks[cos_sin], layout.grad_windows(grad_stack), out=grad_maps[cos_sin])
            grad_time_taps.addmm_(grad_maps.view(2 * n, -1), columns)
            if grad_spec is not None:
                grad_columns = (time_taps.T @ grad_maps.view(2 * n, -1)).view(1, k_t, -1)
                padded = F.fold(grad_columns, (layout.rows, n_columns + k_t - 1), kernel_size=(1, k_t))[0, 0]
                frames = padded[:, k_t // 2 : k_t // 2 + n_columns].view(layout.rows, len(clips), -1)[..., :n_time]
                grad_spec[group, 0] = frames[layout.pad_top : layout.pad_top + n_freq].transpose(0, 1)
        return grad_spec, grad_time_taps, layout.per_filter(grad_window_blocks), None, None


def _group_size(spec: torch.Tensor, n_filters: int, layout: _FreqBlocking) -> int:
    """Clips processed together: all of them on a GPU, cache-sized groups on CPU."""
    if spec.device.type != "cpu":
        return spec.shape[0]
    clip_bytes = 2 * n_filters * layout.rows * spec.shape[-1] * spec.element_size()
    return max(1, CPU_GROUP_BYTES // clip_bytes)


def _time_columns(clips: torch.Tensor, k_t: int, gap: int, layout: _FreqBlocking) -> torch.Tensor:
    """`(c, 1, F, T)` clips -> `(rows * L, k_t)` im2col along time of the clips end to end, zero-padded on
    both axes (L = c (T + gap) columns)."""
    padded = F.pad(_clips_end_to_end(clips, gap)[0, 0],
                   (k_t // 2, k_t // 2, layout.pad_top, layout.rows - layout.n_freq - layout.pad_top))
    return padded.unfold(1, k_t, 1).reshape(-1, k_t)


def _clips_end_to_end(spec: torch.Tensor, gap: int) -> torch.Tensor:
    """`(B, 1, F, T)` -> `(1, 1, F, B (T + gap))`: the clips side by side along time, each followed by `gap`
    zero frames, so filtering along time that reaches at most `gap` frames sees each clip alone."""
    batch, _, n_freq, n_time = spec.shape
    return F.pad(spec, (0, gap)).permute(1, 2, 0, 3).reshape(1, 1, n_freq, batch * (n_time + gap))


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
        n, k_f = self.n_filters, self.kernel_size[0]
        (cos_f, sin_f), (cos_t, sin_t) = _separable_factors(*self._parameters_now(), self.kernel_size)
        layout = _FreqBlocking(n, spec.shape[-2], k_f)
        # real = C_f * (x*C_t) - S_f * (x*S_t), imag = S_f * (x*C_t) + C_f * (x*S_t): taps per (cos|sin map, part).
        taps = {"real": (cos_f, -sin_f), "imag": (sin_f, cos_f)}
        freq_taps = torch.stack([torch.stack([taps[part][cos_sin] for part in self._parts()], 1) for cos_sin in (0, 1)])
        # (cos|sin, filter, part, bin in block, width) -> rows ordered (bin in block, part).
        freq_blocks = _band_blocks(freq_taps, layout.width).transpose(2, 3).reshape(2, n, -1, layout.width)
        group_size = _group_size(spec, n, layout)
        return _SeparableGabor.apply(spec.contiguous(), torch.cat([cos_t, sin_t]), freq_blocks, layout, group_size)

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
