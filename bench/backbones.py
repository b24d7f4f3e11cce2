"""Feature-extraction throughput (clips/s) of the wheel-shipped pretrained backbones, all layers, mean-pooled,
beside CREPE-tiny. Prints a markdown table; a kind whose wheel is missing gets a row saying so.

    python bench/backbones.py [--clips 16 --seconds 2 --threads 2 --kinds silero_vad pesto ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.models.backbones import PRETRAINED_KINDS, load_backbone  # noqa: E402
from earlens.models.base import Backbone  # noqa: E402
from earlens.probing.features import extract_features  # noqa: E402


def bench_extraction(backbone: Backbone, n_clips: int = 8, seconds: float = 2.0, batch_size: int = 8,
                     sample_rate: int = 16000) -> dict:
    """Feature-extraction throughput (clips/s) on `n_clips` harmonic tones of `seconds`, in a throwaway cache."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 110.0 * 2 ** (np.arange(n_clips)[:, None] / 12)
    waves = (0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)).astype(np.float32)
    folder = tempfile.mkdtemp(prefix="earlens-bench-")
    try:
        began = time.perf_counter()
        extract_features(backbone, waves, sample_rate, f"bench-{n_clips}x{seconds}", batch_size=batch_size,
                         cache_dir=folder)
        elapsed = time.perf_counter() - began
    finally:
        shutil.rmtree(folder)
    return {"backbone": backbone.name, "layers": len(backbone.layer_names), "clips": n_clips,
            "seconds_per_clip": seconds, "batch_size": batch_size, "wall_s": elapsed,
            "clips_per_s": n_clips / elapsed, "device": str(backbone.device), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch (and onnxruntime) CPU threads")
    parser.add_argument("--kinds", nargs="*", default=[*PRETRAINED_KINDS, "crepe"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"## Extraction throughput on CPU ({args.clips} harmonic tones of {args.seconds:g} s at 16 kHz, "
          f"batch {args.batch_size}, {args.threads} threads, all layers, mean-pooled)")
    print("| kind | model | layers | model rate (Hz) | wall s | clips/s |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds:
        try:
            backbone = load_backbone(kind, "tiny" if kind == "crepe" else None)
        except (FileNotFoundError, ImportError) as error:
            print(f"| {kind} | not installed ({str(error).splitlines()[0]}) | | | | |")
            continue
        report = bench_extraction(backbone, n_clips=args.clips, seconds=args.seconds, batch_size=args.batch_size)
        print(f"| {kind} | {backbone.name} | {report['layers']} | {backbone.sample_rate} | {report['wall_s']:.1f} | "
              f"{report['clips_per_s']:.2f} |")


if __name__ == "__main__":
    main()
