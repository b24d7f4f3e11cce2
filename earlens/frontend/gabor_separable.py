"""The Gabor bank's fast path: each kernel is a sum of two rank-1 (frequency x time) kernels, so the bank runs as 1-D
filtering along time (two matmuls, 1 -> 2n maps, on sums and differences of mirrored frames: `_symmetric_columns`)
followed by small blocked banded matmuls along frequency (`FreqBlocking`), over groups of clips side by side
(`separable_responses`). Same output as the dense `conv2d`
of `earlens.frontend.gabor.GaborSTRF2d` (tested in float64, values and gradients); faster for large kernels.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

FREQ_BLOCK = 8  # output mel bins per block of the frequency step


def _band_blocks(taps: torch.Tensor, width: int) -> torch.Tensor:
    """`(..., k)` taps -> `(..., FREQ_BLOCK, width)` Toeplitz blocks B with B[r, w] = taps[w - r] (zero
    outside): FREQ_BLOCK consecutive outputs of a "valid" cross-correlation over `width` inputs."""
    k = taps.shape[-1]
    tap = torch.arange(width, device=taps.device)[None, :] - torch.arange(FREQ_BLOCK, device=taps.device)[:, None]
    inside = (tap >= 0) & (tap < k)
    return taps[..., tap.clamp(0, k - 1)] * inside


class FreqBlocking:
    """Layout of the frequency step for `n_freq` bins and `k_f` taps.

    Every time-filtered map is zero-padded along frequency to `rows` = n_blocks * FREQ_BLOCK rows
    (k_f // 2 zeros on top, at least as many below), and the maps of all filters lie end to end. Window
    m = (filter, block) covers rows m * FREQ_BLOCK + [0, width) of that stack and yields FREQ_BLOCK output
    bins from one small matmul with its filter's Toeplitz block; the windows overlap, so they are a strided
    view (no copy). Blocks past the last bin are computed and dropped. Work per output is width / k_f
    times the taps (1.8x for k_f = 9, 1.3x for 25; times rows / F for the padding), against F / k_f for
    a full F x F banded matrix (7x for F = 64, k_f = 9). Along time the columns are the frames of the clips
    of a group side by side (`_symmetric_columns`).
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


CPU_GROUP_BYTES = 4 * 2**20  # time-filtered maps per group of clips on CPU: small enough to stay in cache


class _SeparableGabor(torch.autograd.Function):
    """Gabor bank as time filtering (two matmuls, 1 -> 2n maps) then blocked banded matmuls along frequency
    (`FreqBlocking`), on groups of clips side by side (`_symmetric_columns`: each clip with its own padding).

    On a GPU the group is the whole batch (no loop over clips). On CPU a group holds as many clips as keep
    the time-filtered maps within `CPU_GROUP_BYTES` (at least one clip; four of 64 filters x 64 mels x 25
    frames): the buffers are then reused from cache, where batch-sized ones cost page faults and memory
    traffic (`bench/frontend.py --group-sweep`: 4 MB is the fastest or close to it from 25 to 300 frames).
    With torch's n > 1 threads the batch is cut into n runs of clips, each run on its own single-threaded worker
    (`_workers`): hundreds of small matmuls, each a parallel region of all threads, would otherwise wait at every
    region for a thread the OS has descheduled (`bench/frontend.py --busy`).
    When a backward follows (`keep_maps`), forward keeps every group's time-filtered maps for it (2n maps of
    F + k_f - 1 rows or more per clip, against the output's P n maps of F rows; recomputing them was the slower
    choice on CPU).
    Gradients are written by hand, so autograd keeps nothing else per group and never differentiates through
    the overlapping window views. The time step is an explicit im2col matmul (the input has one channel, so
    the columns and their scratch are only ~1.5 k_t copies of the clips): oneDNN's conv is slower. The other
    per-group buffers (columns, mixed rows, gradient blocks) are allocated once per worker and call and reused: a
    fresh one per group costs its page faults again.
    """

    @staticmethod
    def forward(ctx, spec, cos_t, sin_t, freq_blocks, layout: FreqBlocking, runs: list, keep_maps: bool):
        """spec `(B, 1, F, T)`; the time taps' halves `cos_t` `(n, h + 1)` (offsets 0..h) and `sin_t` `(n, h)`
        (offsets 1..h); freq_blocks `(2, n, 8 P, width)` mixing the cos / sin maps into rows (bin in block, part);
        `runs`: per worker, its groups of clips (`clip_runs`) -> `(B, P n, F, T)`, parts outermost. `keep_maps`: a
        backward will follow (otherwise a worker's groups share one maps buffer per group width)."""
        batch, _, n_freq, n_time = spec.shape
        n_parts = freq_blocks.shape[2] // FREQ_BLOCK
        window_blocks = layout.per_window(freq_blocks)
        out = spec.new_empty(batch, n_parts * cos_t.shape[0], n_freq, n_time)
        kept_maps = _workers(
            lambda groups: _forward_run(spec, cos_t, sin_t, window_blocks, layout, groups, keep_maps, out), runs)
        ctx.save_for_backward(spec, cos_t, sin_t, window_blocks, *(maps for run in kept_maps for maps in run))
        ctx.layout, ctx.runs = layout, runs
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        """Runs with autocast off (autograd replays the forward's autocast state, which would turn the matmuls
        into low-precision ones writing into float32 buffers)."""
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _SeparableGabor._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        spec, cos_t, sin_t, window_blocks, *kept_maps = ctx.saved_tensors
        layout, runs = ctx.layout, ctx.runs
        grad_spec = torch.empty_like(spec) if ctx.needs_input_grad[0] else None
        # A block's grad comes from the windows over it; windows from the previous filter reaching into it
        # cover only its dropped blocks (zero grads), so each block can use its own filter's taps.
        adjoint_blocks = layout.transposed(window_blocks[:, :: layout.n_blocks]).repeat_interleave(layout.n_blocks, 1)
        first = [sum(len(groups) for groups in runs[:w]) for w in range(len(runs))]  # index of a run's first maps
        partials = _workers(
            lambda w: _backward_run(spec, cos_t, sin_t, window_blocks, adjoint_blocks, layout, runs[w],
                                    kept_maps[first[w] : first[w] + len(runs[w])], grad_out, grad_spec),
            range(len(runs)))
        grad_cos_t, grad_sin_t, grad_window_blocks = (sum(grads) for grads in zip(*partials))
        return grad_spec, grad_cos_t, grad_sin_t, layout.per_filter(grad_window_blocks), None, None, None


def _forward_run(spec, cos_t, sin_t, window_blocks, layout: FreqBlocking, groups: list[slice], keep_maps: bool,
                 out: torch.Tensor) -> list[torch.Tensor]:
    """One worker's groups of clips through the bank into their rows of `out`; returns their maps if kept."""
    _, _, n_freq, n_time = spec.shape
    n, half = sin_t.shape
    n_parts = out.shape[1] // n
    kept_maps = []
    buffers = {}  # per group width, reused: a fresh buffer per group costs its page faults again
    for group in groups:
        clips = spec[group]
        n_columns = len(clips) * n_time
        if n_columns not in buffers:  # mixed: the rows of windows past the last one stay unused
            buffers[n_columns] = (_columns_buffer(spec, n_columns, half),
                                  spec.new_empty(n * layout.n_blocks, FREQ_BLOCK * n_parts, n_columns),
                                  None if keep_maps else _maps_buffer(spec, n, layout, n_columns))
        columns, mixed, maps = buffers[n_columns]
        if keep_maps:
            maps = _maps_buffer(spec, n, layout, n_columns)
            kept_maps.append(maps)
        _time_step(_symmetric_columns(clips, half, columns), cos_t, sin_t, layout, maps)
        torch.bmm(window_blocks[0], layout.windows(maps[0]), out=mixed[: layout.n_windows])
        mixed[: layout.n_windows].baddbmm_(window_blocks[1], layout.windows(maps[1]))
        # (filter, bin, part, clip, frame) -> (clip, part, filter, bin, frame), dropping the padding rows.
        rows = mixed.view(n, layout.rows, n_parts, len(clips), n_time)[:, :n_freq]
        out[group].view(len(clips), n_parts, n, n_freq, n_time).copy_(rows.permute(3, 2, 0, 1, 4))
    return kept_maps


def _backward_run(spec, cos_t, sin_t, window_blocks, adjoint_blocks, layout: FreqBlocking, groups: list[slice],
                  kept_maps, grad_out, grad_spec):
    """One worker's groups: writes their rows of `grad_spec` (if not None) and returns its share of the gradients
    of the time taps' halves and of the window blocks."""
    _, _, n_freq, n_time = spec.shape
    n, half = sin_t.shape
    n_parts = window_blocks.shape[2] // FREQ_BLOCK
    grad_cos_t, grad_sin_t = torch.zeros_like(cos_t), torch.zeros_like(sin_t)
    grad_window_blocks = torch.zeros_like(window_blocks)
    buffers = {}  # per group width, reused as in forward
    for group, maps in zip(groups, kept_maps):
        clips = spec[group]
        n_columns = len(clips) * n_time
        if n_columns not in buffers:
            # Output grads as blocks behind sub_blocks - 1 zero blocks; padding rows stay zero.
            buffers[n_columns] = (
                _columns_buffer(spec, n_columns, half),
                spec.new_zeros(layout.sub_blocks - 1 + n * layout.n_blocks, FREQ_BLOCK * n_parts, n_columns),
                spec.new_empty(2, n * layout.n_blocks, FREQ_BLOCK, n_columns))
        columns, grad_stack, grad_maps = buffers[n_columns]
        columns = _symmetric_columns(clips, half, columns)
        grad_rows = grad_stack[layout.sub_blocks - 1 :].view(n, layout.rows, n_parts, len(clips), n_time)
        grad_rows[:, :n_freq].copy_(grad_out[group].view(len(clips), n_parts, n, n_freq, n_time).permute(2, 3, 1, 0, 4))
        grad_windows = grad_stack[layout.sub_blocks - 1 :][: layout.n_windows]
        for cos_sin in range(2):
            grad_window_blocks[cos_sin].baddbmm_(grad_windows, layout.windows(maps[cos_sin]).transpose(1, 2))
            torch.bmm(adjoint_blocks[cos_sin], layout.grad_windows(grad_stack), out=grad_maps[cos_sin])
        grad_cos_maps, grad_sin_maps = (_interior(g.view(n, layout.rows, n_columns), layout) for g in grad_maps)
        grad_cos_t.addmm_(grad_cos_maps, columns[:, : half + 1])
        grad_sin_t.addmm_(grad_sin_maps, columns[:, half + 1 :])
        if grad_spec is not None:
            grad_columns = torch.cat([cos_t.T @ grad_cos_maps, sin_t.T @ grad_sin_maps])
            grad_spec[group, 0] = _unfold_adjoint(grad_columns, half, n_freq, len(clips))
    return grad_cos_t, grad_sin_t, grad_window_blocks


def group_size(spec: torch.Tensor, n_filters: int, layout: FreqBlocking) -> int:
    """Clips processed together: all of them on a GPU, cache-sized groups on CPU."""
    if spec.device.type != "cpu":
        return spec.shape[0]
    clip_bytes = 2 * n_filters * layout.rows * spec.shape[-1] * spec.element_size()
    return max(1, CPU_GROUP_BYTES // clip_bytes)


def clip_runs(spec: torch.Tensor, group_size: int, n_runs: int | None = None) -> list[list[slice]]:
    """Per worker, its groups of clips: on CPU with torch's n threads, the batch cut into min(n, B) runs (or
    `n_runs`) of near-equal length, each cut into groups of at most `group_size`; one run of the whole batch on a
    GPU."""
    batch = spec.shape[0]
    if spec.device.type != "cpu":
        n_runs = 1
    n_runs = max(1, min(n_runs or torch.get_num_threads(), batch))  # one (empty) run for an empty batch
    bounds = [batch * run // n_runs for run in range(n_runs + 1)]
    return [[slice(start, min(start + group_size, stop)) for start in range(start, stop, group_size)]
            for start, stop in zip(bounds, bounds[1:])]


_POOL: tuple[tuple[int, int], ThreadPoolExecutor] | None = None  # ((process id, threads), pool)
_POOL_LOCK = threading.Lock()


def _workers(task, items) -> list:
    """`task` over `items`, one per single-threaded worker thread (in this thread when there is one item). Workers
    run with grad and autocast off, as a custom Function's forward and backward do (both thread-local)."""
    items = list(items)
    if len(items) == 1:
        return [task(items[0])]
    return list(_worker_pool(torch.get_num_threads()).map(partial(_untracked, task), items))


def _untracked(task, item):
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        return task(item)


def _single_threaded() -> None:
    """One intra-op thread for this thread. torch sets a thread's count from the process-wide one at its first
    parallel op; reading the count does that first, so the later ops do not undo the 1."""
    torch.get_num_threads()
    torch.set_num_threads(1)


def _worker_pool(n_threads: int) -> ThreadPoolExecutor:
    """`n_threads` workers of one intra-op thread each, made again when torch's thread count changes or in a
    forked child (whose copy of the pool has no threads)."""
    global _POOL
    key = (os.getpid(), n_threads)
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != key:
            if _POOL is not None and _POOL[0][0] == key[0]:
                _POOL[1].shutdown(wait=False)  # this process's pool for another thread count
            pool = ThreadPoolExecutor(n_threads, thread_name_prefix="earlens-gabor")
            started = threading.Barrier(n_threads, timeout=60)  # every worker thread started, each set to 1 thread
            list(pool.map(lambda _: (_single_threaded(), started.wait()), range(n_threads)))
            torch.set_num_threads(n_threads)  # a worker's set_num_threads also set the count new threads start with
            _POOL = key, pool
        return _POOL[1]


def _symmetric_columns(clips: torch.Tensor, half: int, buffer: torch.Tensor) -> torch.Tensor:
    """`(c, 1, F, T)` clips -> columns `(F c T, 1 + 2 half)`: [x(t), x(t + s) + x(t - s), x(t + s) - x(t - s)] for
    s = 1..half along time, each clip zero beyond its own ends (so no clip's filtering reaches into another's).
    A centred cosine tap is even and a sine tap odd, so the cos maps need only the sums and the sin maps only the
    differences: half the multiply-adds of filtering with the full taps. `buffer` `(F c T (1 + 3 half),)` is
    reused from group to group (the columns, then x(t - s) for s = 1..half; a fresh one costs page faults again)."""
    padded = F.pad(clips[:, 0].transpose(0, 1), (half, half))  # (F, c, T + 2 half)
    windows = padded.unfold(2, 2 * half + 1, 1)  # (F, c, T, k_t), windows[..., half + s] = x(t + s)
    n_columns = windows[..., 0].numel() * (2 * half + 1)
    columns, before = buffer[:n_columns].view(*windows.shape), buffer[n_columns:].view(*windows.shape[:3], half)
    mirror = torch.arange(half - 1, -1, -1, device=padded.device).expand_as(before)
    torch.gather(windows[..., :half], 3, mirror, out=before)  # flip into `before`: torch.flip allocates
    after = windows[..., half + 1 :]
    columns[..., 0] = windows[..., half]
    torch.add(after, before, out=columns[..., 1 : half + 1])
    torch.sub(after, before, out=columns[..., half + 1 :])
    return columns.view(-1, 2 * half + 1)


def _columns_buffer(spec: torch.Tensor, n_columns: int, half: int) -> torch.Tensor:
    """Flat buffer for `_symmetric_columns` of a group of `n_columns` frames: its columns, then its scratch."""
    return spec.new_empty(spec.shape[-2] * n_columns * (1 + 3 * half))


def _maps_buffer(spec: torch.Tensor, n: int, layout: FreqBlocking, n_columns: int) -> torch.Tensor:
    """`(2, n, rows, L)` buffer for the cos and sin maps, its frequency padding rows zero."""
    maps = spec.new_empty(2, n, layout.rows, n_columns)
    maps[:, :, : layout.pad_top].zero_()
    maps[:, :, layout.pad_top + layout.n_freq :].zero_()
    return maps


def _interior(maps: torch.Tensor, layout: FreqBlocking) -> torch.Tensor:
    """`(n, rows, L)` maps -> `(n, F L)` view of their rows inside the frequency padding."""
    n_columns = maps.shape[-1]
    return maps.view(maps.shape[0], -1)[:, layout.pad_top * n_columns : (layout.pad_top + layout.n_freq) * n_columns]


def _time_step(columns, cos_t, sin_t, layout: FreqBlocking, maps: torch.Tensor) -> None:
    """Time-filters every clip row with every filter's cos and sin taps into the inside rows of `maps`
    `(2, n, rows, L)`: two matmuls, one on the sums and one on the differences."""
    half = cos_t.shape[1] - 1
    torch.mm(cos_t, columns[:, : half + 1].T, out=_interior(maps[0], layout))
    torch.mm(sin_t, columns[:, half + 1 :].T, out=_interior(maps[1], layout))


def _unfold_adjoint(grad_columns, half: int, n_freq: int, n_clips: int) -> torch.Tensor:
    """Adjoint of `_symmetric_columns`: `(1 + 2 half, F c T)` column grads -> `(c, F, T)` clip grads."""
    centre, sums, diffs = grad_columns[:1], grad_columns[1 : half + 1], grad_columns[half + 1 :]
    per_offset = torch.cat([(sums - diffs).flip(0), centre, sums + diffs])  # offsets -half..half
    n_time = grad_columns.shape[1] // (n_freq * n_clips)
    padded = F.fold(per_offset.unsqueeze(0), (n_freq * n_clips, n_time + 2 * half), kernel_size=(1, 2 * half + 1))
    return padded[0, 0, :, half : half + n_time].view(n_freq, n_clips, n_time).transpose(0, 1)


def separable_responses(spec: torch.Tensor, freq_factors, time_factors, parts: tuple[str, ...]) -> torch.Tensor:
    """Responses `(B, len(parts) n, F, T)` of the bank with 1-D factors `(cos_f, sin_f)` `(n, k_f)` and
    `(cos_t, sin_t)` `(n, k_t)` (`earlens.frontend.gabor.separable_factors`) for `parts` ("real", "imag") in order. The
    time factors must be centred on odd k_t with cos_t even and sin_t odd (as Gabor carriers are): only their halves
    are used."""
    (cos_f, sin_f), (cos_t, sin_t) = freq_factors, time_factors
    n, k_f = cos_f.shape
    layout = FreqBlocking(n, spec.shape[-2], k_f)
    # real = C_f * (x*C_t) - S_f * (x*S_t), imag = S_f * (x*C_t) + C_f * (x*S_t): taps per (cos|sin map, part).
    taps = {"real": (cos_f, -sin_f), "imag": (sin_f, cos_f)}
    freq_taps = torch.stack([torch.stack([taps[part][cos_sin] for part in parts], 1) for cos_sin in (0, 1)])
    # (cos|sin, filter, part, bin in block, width) -> rows ordered (bin in block, part).
    freq_blocks = _band_blocks(freq_taps, layout.width).transpose(2, 3).reshape(2, n, -1, layout.width)
    half = cos_t.shape[1] // 2  # centred odd taps: cos even, sin odd (`_symmetric_columns`)
    backward_follows = torch.is_grad_enabled() and any(t.requires_grad for t in (spec, cos_t, sin_t, freq_blocks))
    runs = clip_runs(spec, group_size(spec, n, layout))
    return _SeparableGabor.apply(spec.contiguous(), cos_t[:, half:], sin_t[:, half + 1 :], freq_blocks, layout, runs,
                                 backward_follows)
