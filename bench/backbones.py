"""Feature-extraction throughput (clips/s) of the wheel-shipped pretrained backbones, all layers, mean-pooled,
beside CREPE-tiny. Prints a markdown table; a kind whose wheel is missing gets a row saying so.

    python bench/backbones.py [--clips 16 --seconds 2 --threads 2 --kinds silero_vad pesto ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.backbones import PRETRAINED_KINDS, load_backbone  # noqa: E402
from earlens.features import bench_extraction  # noqa: E402


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
