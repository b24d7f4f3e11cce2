"""Speed of the Gabor STRF bank against a dense `nn.Conv2d` with the same output channels.

Forward + backward (parameter gradients; the log-mel input needs none, as in the frontend) of three layers with
128 output channels, batch 32 x 64 mels x 200 frames, median of `--repeats` interleaved timed runs after one
warm-up:
  - dense: `nn.Conv2d(1, 128, kernel)` (cuDNN on a GPU, oneDNN on CPU);
  - reference: `GaborSTRF2d(64, kernel, "concat", dense=True)`, dense Gabor kernels through `conv2d`, which is how
    the public learnable-strf implementation runs its bank;
  - ours: the same bank on its default path (separable for these kernel sizes; with torch's n > 1 threads on CPU
    it runs n runs of clips on n single-threaded workers, so `--threads 1` times one worker's path).
Also reports the largest difference between ours and the reference, relative to the largest reference output.
`--group-sweep` adds a table of the separable path's time (9 x 111) against `CPU_GROUP_BYTES`, the size of the
groups of clips it filters at once on CPU, for clips of 25 to 300 frames (64 x 25 ... 16 x 300 clips);
`--breakdown` where one forward + backward of the 9 x 111 bank spends its time (torch.profiler, by operator);
`--busy 0 1 2` repeats the table with 0, 1 and 2 processes spinning on the CPU beside it (a data-loader worker or a
second job: on 2 cores, one core busy, then oversubscribed), the load average printed with each.

    PYTHONPATH=. python bench/frontend.py [--repeats 5] [--threads N] [--device cuda] [--group-sweep] [--breakdown]
                                          [--busy 0 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import statistics
import time
from unittest import mock

import torch
from torch import nn

import earlens.frontend.gabor_separable as separable
from earlens.frontend.gabor import GaborSTRF2d
from machine import describe  # bench/machine.py

CLIP_RUNS = separable.clip_runs

CONFIGS = [(9, 111), (25, 25), (9, 25)]
BATCH, N_MELS, N_FRAMES, N_FILTERS = 32, 64, 200, 64
SWEEP_CLIPS = [(64, 25), (32, 100), (32, 200), (16, 300)]  # (batch, frames)
SWEEP_MB = [0.5, 1, 2, 4, 8]
STAGES = {  # profiler operator -> stage of the separable path
    "aten::mm": "time step: matmuls (forward)", "aten::addmm_": "time step: tap gradients",
    "aten::bmm": "frequency step: batched matmuls", "aten::baddbmm_": "frequency step: batched matmuls",
    "aten::gather": "im2col columns (sums, differences)", "aten::add": "im2col columns (sums, differences)",
    "aten::sub": "im2col columns (sums, differences)", "aten::copy_": "layout copies (output, gradients)",
    "aten::fill_": "zeroing buffers",
}


def forward_backward_s(module: nn.Module, spec: torch.Tensor, grad: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    if spec.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    module(spec).backward(grad)
    if spec.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_median_ms(modules: list[nn.Module], spec, grad, repeats: int) -> list[float]:
    """Median time per module, alternating them each round so load changes on a shared CPU hit all alike."""
    times = [[forward_backward_s(module, spec, grad) for module in modules] for _ in range(repeats + 1)]
    return [1e3 * statistics.median(column) for column in zip(*times[1:])]


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_processes(count: int):
    """`count` processes each keeping a core busy while the block runs."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for spinner in spinners:
        spinner.start()
    try:
        time.sleep(2.0 if count else 0.0)  # let the load settle
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


class OneRun(nn.Module):
    """A bank whose separable path runs the batch as one run in the calling thread, every matmul a parallel region
    of all torch threads: the path without its single-threaded workers."""

    def __init__(self, bank: GaborSTRF2d):
        super().__init__()
        self.bank = bank

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        with mock.patch.object(separable, "clip_runs", functools.partial(CLIP_RUNS, n_runs=1)):
            return self.bank(spec)


def speed_table(spec: torch.Tensor, repeats: int) -> None:
    """The layers' table: dense Conv2d, the reference dense Gabor, ours, and ours without workers (one run of
    torch-threaded matmuls; the same as ours at one thread), forward + backward."""
    device = spec.device
    print("| kernel (F x T) | dense Conv2d | reference (dense Gabor) | ours | ours, no workers | ours vs Conv2d | "
          "no workers vs Conv2d | ours vs reference | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kernel_size in CONFIGS:
        torch.manual_seed(0)
        ours = GaborSTRF2d(N_FILTERS, kernel_size, mode="concat").to(device)
        reference = GaborSTRF2d(N_FILTERS, kernel_size, mode="concat", dense=True).to(device)
        reference.load_state_dict(ours.state_dict())
        conv = nn.Conv2d(1, ours.out_channels, kernel_size, padding="same").to(device)
        with torch.no_grad():
            expected = reference(spec)
            error = ((ours(spec) - expected).abs().max() / expected.abs().max()).item()
        grad = torch.randn_like(expected)
        del expected
        conv_ms, reference_ms, ours_ms, one_run_ms = interleaved_median_ms([conv, reference, ours, OneRun(ours)], spec,
                                                                           grad, repeats)
        path = "dense" if ours.dense else "separable"
        print(f"| {kernel_size[0]} x {kernel_size[1]} ({path}) | {conv_ms:.0f} | {reference_ms:.0f} | {ours_ms:.0f} | "
              f"{one_run_ms:.0f} | {conv_ms / ours_ms:.2f}x | {conv_ms / one_run_ms:.2f}x | "
              f"{reference_ms / ours_ms:.2f}x | {error:.1e} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--group-sweep", action="store_true", help="also time CPU_GROUP_BYTES choices (CPU)")
    parser.add_argument("--breakdown", action="store_true", help="also profile the 9 x 111 bank by stage")
    parser.add_argument("--busy", type=int, nargs="+", default=[0], metavar="N",
                        help="run the table with N processes spinning beside it, for each N (default 0)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads or torch.get_num_threads())  # one setting for every layer
    device = torch.device(args.device)
    torch.manual_seed(0)
    spec = torch.randn(BATCH, 1, N_MELS, N_FRAMES, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else describe()
    print(f"torch {torch.__version__}, {name}, median of {args.repeats} runs, forward + backward, ms")
    for count in args.busy:
        with busy_processes(count):
            print(f"\n{count} other processes spinning, load average {os.getloadavg()[0]:.1f} at the start:\n")
            speed_table(spec, args.repeats)
    if args.group_sweep:
        if device.type == "cpu":
            group_sweep(args.repeats)
        else:
            print("\n--group-sweep: CPU only (a GPU filters the whole batch as one group); skipped")
    if args.breakdown:
        if device.type == "cpu" and torch.get_num_threads() > 1:
            print("\n--breakdown: run with --threads 1 (the stages of several workers overlap in time); skipped")
        else:
            breakdown(spec)


def breakdown(spec: torch.Tensor) -> None:
    """Self time of the separable 9 x 111 bank's forward + backward by stage (`STAGES`; device time on a GPU), one
    profiled run after two warm-ups."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    bank = GaborSTRF2d(N_FILTERS, (9, 111), mode="concat", dense=False).to(spec.device)
    grad = torch.randn(spec.shape[0], bank.out_channels, *spec.shape[-2:], device=spec.device)
    for _ in range(2):
        forward_backward_s(bank, spec, grad)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if spec.is_cuda else [])
    with profile(activities=activities) as prof:
        total = forward_backward_s(bank, spec, grad)
    stages: dict[str, float] = {}
    for event in prof.key_averages():
        stage = STAGES.get(event.key, "other operators and Python")
        self_us = event.self_device_time_total if spec.is_cuda else event.self_cpu_time_total
        stages[stage] = stages.get(stage, 0.0) + self_us / 1e3
    stages["other operators and Python"] = 1e3 * total - sum(v for k, v in stages.items()
                                                             if k != "other operators and Python")
    print(f"\nWhere the 9 x 111 bank's forward + backward goes ({1e3 * total:.0f} ms, one profiled run):\n")
    print("| stage | ms | share |\n|---|---|---|")
    for stage, ms in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"| {stage} | {ms:.0f} | {ms / (1e3 * total):.0%} |")


def group_sweep(repeats: int) -> None:
    """Separable 9 x 111 bank, ms per forward + backward, against the CPU group size (the default marked *), with
    the clips per group in brackets: cells with the same count run the same code, so their spread is noise."""
    default = separable.CPU_GROUP_BYTES
    print(f"\nCPU_GROUP_BYTES (MB) vs clip length, 9 x 111, ms (clips per group; default {default / 2**20:g} MB):\n")
    print("| batch x frames | " + " | ".join(f"{mb:g} MB" for mb in SWEEP_MB) + " |")
    print("|---" * (len(SWEEP_MB) + 1) + "|")
    torch.manual_seed(0)
    bank = GaborSTRF2d(N_FILTERS, (9, 111), mode="concat", dense=False)
    layout = separable.FreqBlocking(N_FILTERS, N_MELS, 9)
    try:
        for batch, frames in SWEEP_CLIPS:
            spec = torch.randn(batch, 1, N_MELS, frames)
            grad = torch.randn(batch, bank.out_channels, N_MELS, frames)
            cells, clips = [], []
            for mb in SWEEP_MB:
                separable.CPU_GROUP_BYTES = int(mb * 2**20)
                clips.append(separable.group_size(spec, N_FILTERS, layout))
                cells.append(interleaved_median_ms([bank], spec, grad, repeats)[0])
            best = min(cells)
            print(f"| {batch} x {frames} | " + " | ".join(
                f"{ms:.0f} ({n}){'*' if mb * 2**20 == default else ''}{' best' if ms == best else ''}"
                for mb, ms, n in zip(SWEEP_MB, cells, clips)) + " |", flush=True)
    finally:
        separable.CPU_GROUP_BYTES = default


if __name__ == "__main__":
    main()
