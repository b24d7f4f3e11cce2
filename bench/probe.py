"""Probing speed: all-layer batched linear probes vs one probe per layer, the vectorised helix fit vs the
Optuna protocol, and CREPE feature-extraction throughput. Prints one table per part.

    python bench/probe.py [--layers 25 --dim 1024 --programs 28 --noise 0.5 --optuna_layers 1 --threads 1]

The probe features are a realistic synthetic set `(N, L, D)`: 36 pitches (C3-B5) x `programs` timbres, each
layer a random linear image of a pitch helix (height, cos, sin of chroma) plus a timbre embedding plus
noise, with a helix strength that rises and falls over depth as in real models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.backbones import load_backbone  # noqa: E402
from earlens.features import bench_extraction  # noqa: E402
from earlens.helix import benchmark_fitters, helix_probe  # noqa: E402
from earlens.probes import fit_layer_probes, fit_probe_per_layer_sequential  # noqa: E402


def helix_features(n_layers: int, dim: int, n_programs: int, noise: float = 0.5, seed: int = 0):
    """Synthetic layer features `(N, L, D)` with pitch labels; helix strength peaks in the middle layers."""
    rng = np.random.default_rng(seed)
    pitch = np.repeat(np.arange(48, 84), n_programs)
    program = np.tile(np.arange(n_programs), 36)
    t = pitch - 48
    helix = np.stack([t / 12, np.cos(np.pi * t / 6), np.sin(np.pi * t / 6)], axis=1)  # (N, 3)
    timbre = rng.normal(size=(n_programs, 16))[program]  # (N, 16)
    strength = 0.1 + 0.4 * np.exp(-0.5 * ((np.arange(n_layers) - n_layers / 2) / (n_layers / 5)) ** 2)
    helix_maps = rng.normal(size=(n_layers, 3, dim)) / np.sqrt(3)
    timbre_maps = rng.normal(size=(n_layers, 16, dim)) / 4
    features = (strength[None, :, None] * np.einsum("nk,lkd->nld", helix, helix_maps)
                + np.einsum("nk,lkd->nld", timbre, timbre_maps) + noise * rng.normal(size=(len(pitch), n_layers, dim)))
    return features.astype(np.float32), pitch


def timed(fn, *args, **kwargs):
    began = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - began


def timed_cpu(fn, *args, **kwargs):
    """Result, wall seconds and process CPU seconds (the fairer clock on a shared, loaded machine)."""
    began_cpu = time.process_time()
    out, wall_s = timed(fn, *args, **kwargs)
    return out, wall_s, time.process_time() - began_cpu


def bench_linear(features, labels, weight_decay: float) -> None:
    options = dict(weight_decay=weight_decay, max_epochs=500, patience=30, progress=False)
    batched, batched_s, batched_cpu_s = timed_cpu(fit_layer_probes, features, labels, **options)
    sequential, sequential_s, sequential_cpu_s = timed_cpu(fit_probe_per_layer_sequential, features, labels,
                                                           **options)
    accuracy_b, accuracy_s = batched.metrics["test_accuracy"], sequential.metrics["test_accuracy"]
    n, n_layers, dim = features.shape
    print(f"\n## Linear probes, pitch class ({len(np.unique(labels))}-way), N={n} ({len(batched.split.test)} test), "
          f"L={n_layers}, D={dim}, weight decay {weight_decay:g}, patience 30, threads={torch.get_num_threads()}")
    print("| method | wall s | CPU s | epochs (max over layers) | mean test acc | best-layer test acc "
          "| mean val loss |")
    print("|---|---|---|---|---|---|---|")
    print(f"| one probe per layer (nn.Linear, Adam 1e-3, batch 64) | {sequential_s:.1f} | {sequential_cpu_s:.1f} | "
          f"{sequential.epochs_run} | "
          f"{accuracy_s.mean():.3f} | {accuracy_s[sequential.best_layer()]:.3f} | "
          f"{sequential.metrics['val_loss'].mean():.3f} |")
    print(f"| all layers batched (L-BFGS, full batch) | {batched_s:.1f} | {batched_cpu_s:.1f} | {batched.epochs_run} | "
          f"{accuracy_b.mean():.3f} | {accuracy_b[batched.best_layer()]:.3f} | "
          f"{batched.metrics['val_loss'].mean():.3f} |")
    diff = accuracy_b - accuracy_s
    print(f"speed-up: {sequential_s / batched_s:.1f}x wall, {sequential_cpu_s / batched_cpu_s:.1f}x CPU; "
          f"test accuracy batched - sequential: mean "
          f"{100 * diff.mean():+.1f} points, per layer {100 * diff.min():+.1f} to {100 * diff.max():+.1f}")
    print("per-layer test acc (sequential / batched):",
          " ".join(f"{s:.2f}/{b:.2f}" for s, b in zip(accuracy_s, accuracy_b)))


def bench_helix(features, pitch, n_optuna_layers: int, n_trials: int, n_restarts: int) -> None:
    probe, probe_s = timed(helix_probe, np.swapaxes(features, 0, 1), pitch, n_permutations=0)
    n_layers = len(probe.r2)
    layers = np.argsort(-probe.r2)[:n_optuna_layers]
    report = benchmark_fitters(probe.points[layers], n_trials=n_trials, n_restarts=n_restarts)
    per_layer_fit = report["fit_helix_s"] / n_optuna_layers
    per_layer_optuna = report["optuna_paper_protocol_s_extrapolated"] / n_optuna_layers
    print(f"\n## Helix fit, {n_layers} layers x 10 PC triples (best triple compared on the {n_optuna_layers} most "
          f"helical layers), Optuna {n_trials} trials x {n_restarts} restarts run, extrapolated to 1000 x 3")
    print("| method | s per layer (best triple) | mean R2 on compared layers |")
    print("|---|---|---|")
    print(f"| fit_helix (vectorised) | {per_layer_fit:.4f} | {report['fit_helix_mean_r2']:.4f} |")
    print(f"| Optuna TPE ({report['optuna_trials']} trials run) | {report['optuna_s'] / n_optuna_layers:.1f} | "
          f"{report['optuna_mean_r2']:.4f} |")
    print(f"| Optuna 1000 x 3 (extrapolated) | {per_layer_optuna:.1f} | |")
    print(f"helix_probe on all {n_layers} layers x 10 triples (PCA + fits, no permutations): {probe_s:.2f} s; "
          f"speed-up per fitted point set vs Optuna 1000x3: {per_layer_optuna / per_layer_fit:.0f}x; "
          f"whole helix_probe (10 triples/layer) vs Optuna on 1 triple/layer: "
          f"{per_layer_optuna * n_layers / probe_s:.0f}x")


def bench_extraction_rates(n_clips: int, seconds: float) -> None:
    print(f"\n## CREPE feature extraction ({seconds:.0f} s clips, hop 10 ms, all 7 layers, mean-pooled)")
    print("| model | device | clips | wall s | clips/s |")
    print("|---|---|---|---|---|")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for capacity, clips in (("tiny", n_clips), ("full", max(1, n_clips // 4))):
            backbone = load_backbone("crepe", capacity, device=device)
            report = bench_extraction(backbone, n_clips=clips, seconds=seconds)
            print(f"| crepe-{capacity} | {device} | {clips} | {report['wall_s']:.1f} | {report['clips_per_s']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--programs", type=int, default=28, help="timbres per pitch (N = 36 x programs)")
    parser.add_argument("--optuna_layers", type=int, default=1)
    parser.add_argument("--optuna_trials", type=int, default=1000)
    parser.add_argument("--optuna_restarts", type=int, default=3)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--noise", type=float, default=0.5, help="isotropic feature noise (signal-to-noise)")
    parser.add_argument("--weight_decay", type=float, default=1e-4, help="L2 on the probe weights, both methods")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both methods")
    parser.add_argument("--skip", nargs="*", default=[], choices=["linear", "helix", "extraction"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features, pitch = helix_features(args.layers, args.dim, args.programs, args.noise)
    if "linear" not in args.skip:
        bench_linear(features, pitch % 12, args.weight_decay)
    if "helix" not in args.skip:
        bench_helix(features, pitch, args.optuna_layers, args.optuna_trials, args.optuna_restarts)
    if "extraction" not in args.skip:
        bench_extraction_rates(args.clips, args.seconds)


if __name__ == "__main__":
    main()
