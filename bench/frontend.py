"""Speed of the separable Gabor STRF bank vs a dense `nn.Conv2d` of the same shape (CPU).

Forward + backward (parameter gradients; the log-mel input needs none, as in the frontend) of
`GaborSTRF2d(64 filters, mode="concat")` against `nn.Conv2d(1, 128, kernel)`, batch 32 x 64 mels x 200
frames, median of `--repeats` interleaved timed runs after one warm-up. Also reports the largest difference between
the separable path and the dense Gabor conv2d, relative to the largest dense output.

    PYTHONPATH=. python bench/frontend.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from earlens.gabor import GaborSTRF2d

CONFIGS = [(9, 111), (25, 25)]
BATCH, N_MELS, N_FRAMES, N_FILTERS = 32, 64, 200, 64


def forward_backward_s(module: nn.Module, spec: torch.Tensor, grad: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    module(spec).backward(grad)
    return time.perf_counter() - start


def interleaved_median_ms(modules: list[nn.Module], spec, grad, repeats: int) -> list[float]:
    """Median time per module, alternating them each round so load changes on a shared CPU hit all alike."""
    times = [[forward_backward_s(module, spec, grad) for module in modules] for _ in range(repeats + 1)]
    return [1e3 * statistics.median(column) for column in zip(*times[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)  # one setting for both sides, reported per row
    torch.manual_seed(0)
    spec = torch.randn(BATCH, 1, N_MELS, N_FRAMES)
    print(f"torch {torch.__version__}, median of {args.repeats} runs")
    print(f"{'kernel (F x T)':>15} {'threads':>8} {'dense conv2d ms':>16} {'Gabor separable ms':>19} {'speed-up':>9} "
          f"{'max rel err':>12}")
    for kernel_size in CONFIGS:
        gabor = GaborSTRF2d(N_FILTERS, kernel_size, mode="concat")
        conv = nn.Conv2d(1, gabor.out_channels, kernel_size, padding="same")
        with torch.no_grad():
            separable = gabor(spec)
            gabor.dense = True
            dense = gabor(spec)
            gabor.dense = False
        error = ((separable - dense).abs().max() / dense.abs().max()).item()
        grad = torch.randn_like(dense)
        del separable, dense
        conv_ms, gabor_ms = interleaved_median_ms([conv, gabor], spec, grad, args.repeats)
        name = f"{kernel_size[0]} x {kernel_size[1]}"
        print(f"{name:>15} {torch.get_num_threads():>8} {conv_ms:16.0f} {gabor_ms:19.0f} {conv_ms / gabor_ms:8.1f}x "
              f"{error:12.1e}", flush=True)


if __name__ == "__main__":
    main()
