"""Probing speed: linear probes under SynTheory's protocol (one model per configuration x layer, as SynTheory runs
it) against the same grid batched and against the fast protocol; the vectorised helix fit against the Optuna
protocol and the whole helix probe with its smooth null; CREPE feature-extraction throughput. Prints one table per
part.

    python bench/probe.py [--layers 25 --dim 1024 --programs 28 --noise 0.5 --timing_epochs 10 --threads 1]

The probe features are a realistic synthetic set `(N, L, D)`: 36 pitches (C3-B5) x `programs` timbres, each
layer a random linear image of a pitch helix (height, cos, sin of chroma) plus a timbre embedding plus
noise, with a helix strength that rises and falls over depth as in real models.

SynTheory's grid trains every probe for 100 epochs (its early stopping needs 2048 steps without progress, more
than 100 epochs of these data), so a probe's time is its per-step time x a fixed step count: the sequential
protocol (216 configurations x L layers) and the MLP half of the batched grid are timed on `--timing_epochs`
epochs of stated subsets and extrapolated; the fast protocol and the linear half of the batched grid run in full,
and their validation-selected test accuracies are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.models.backbones import load_backbone  # noqa: E402
from bench.backbones import bench_extraction  # noqa: E402
from bench.helix_optuna import benchmark_fitters  # noqa: E402
from earlens.probing import probes_syntheory  # noqa: E402
from earlens.probing.helicality import helix_probe  # noqa: E402
from earlens.probing.helix import nearest_rotation  # noqa: E402
from earlens.probing.probes import fit_layer_probes  # noqa: E402
from earlens.probing.probes_syntheory import fit_probe_per_layer_sequential, syntheory_configs  # noqa: E402


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


def selected(result) -> tuple[int, float]:
    """Validation-selected layer and its test accuracy."""
    layer = result.best_layer()
    return layer, float(result.metrics["test_accuracy"][layer])


def short_run(epochs: int, fn, *args, **kwargs):
    """`fn` with SynTheory's 100-epoch cap lowered to `epochs`: (result, wall s)."""
    cap = probes_syntheory.SYNTHEORY_MAX_EPOCHS
    probes_syntheory.SYNTHEORY_MAX_EPOCHS = epochs
    try:
        return timed(fn, *args, **kwargs)
    finally:
        probes_syntheory.SYNTHEORY_MAX_EPOCHS = cap


def select_over(results) -> tuple[int, float]:
    """SynTheory's choice over the union of several runs' candidates: per layer the best validation score (ties:
    lower validation loss), then the best layer the same way; returns that layer and its test accuracy."""
    score, loss, test = (np.concatenate([r.candidates[key] for r in results], axis=1)
                         for key in ("val_score", "val_loss", "test_score"))
    order = np.lexsort((loss, -score), axis=1)[:, 0]
    layers = np.arange(len(order))
    best = np.lexsort((layers, loss[layers, order], -score[layers, order]))[0]
    return int(best), float(test[best, order[best]])


def bench_linear(features, labels, timing_epochs: int, mlp_layers: int) -> None:
    n, n_layers, dim = features.shape
    configs = syntheory_configs()
    scale = probes_syntheory.SYNTHEORY_MAX_EPOCHS / timing_epochs
    fast, fast_s = timed(fit_layer_probes, features, labels, progress=False)
    warm_up = {key: [values[0]] for key, values in probes_syntheory.SYNTHEORY_GRID.items()}
    short_run(1, fit_probe_per_layer_sequential, features, labels, grid=warm_up, layers=[0], progress=False)
    rows, linear_runs, check = [], [], []
    for hidden in ([], [512]):
        for batch_size in (64, 256):
            group = {"hidden_layer_sizes": [hidden], "batch_size": [batch_size]}
            per_group = len(syntheory_configs(group))
            one = {**group, "data_standardization": [True], "learning_rate": [1e-3], "dropout_p": [0.5],
                   "l2_weight_decay": [1e-4]}  # one configuration of the group, on layer 0, timed on a short run
            sequential, one_s = short_run(timing_epochs, fit_probe_per_layer_sequential, features, labels, grid=one,
                                          layers=[0], progress=False)
            same, _ = short_run(timing_epochs, fit_layer_probes, features[:, :1], labels, protocol="syntheory",
                                grid=one, progress=False)
            check.append(abs(sequential.candidates["test_score"][0, 0] - same.candidates["test_score"][0, 0]))
            sequential_s = one_s * scale * per_group * n_layers
            if hidden:  # compute-bound: timed on `mlp_layers` layers and a short run
                _, batched_s = short_run(timing_epochs, fit_layer_probes, features[:, :mlp_layers], labels,
                                         protocol="syntheory", grid=group, progress=False)
                batched_s *= scale * n_layers / mlp_layers
                how = f"{mlp_layers} layer(s) x {timing_epochs} epochs, extrapolated"
            else:
                run, batched_s = timed(fit_layer_probes, features, labels, protocol="syntheory", grid=group,
                                       progress=False)
                linear_runs.append(run)
                how = "run in full"
            rows.append((hidden, batch_size, per_group * n_layers, sequential_s, batched_s, how))

    print(f"\n## Linear probes, pitch class ({len(np.unique(labels))}-way), N={n} ({len(fast.split.test)} test), "
          f"L={n_layers}, D={dim}, threads={torch.get_num_threads()}")
    print(f"SynTheory's grid ({len(configs)} configs x {n_layers} layers). Sequential: one nn.Module per config x "
          f"layer, one config per group timed on layer 0 for {timing_epochs} epochs, extrapolated to 100 epochs x "
          f"all configs x layers.")
    print("| hidden layers | batch | models | sequential s | batched s (ours) | speed-up |")
    print("|---|---|---|---|---|---|")
    for hidden, batch_size, models, sequential_s, batched_s, how in rows:
        print(f"| {list(hidden)} | {batch_size} | {models} | {sequential_s:.0f} | {batched_s:.0f} ({how}) | "
              f"{sequential_s / batched_s:.1f}x |")
    total_sequential, total_batched = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"| all | | {len(configs) * n_layers} | {total_sequential:.0f} | {total_batched:.0f} | "
          f"{total_sequential / total_batched:.1f}x |")
    print(f"(batched and sequential train the same probes: max |test acc difference| on the timed configs "
          f"{max(check):.4f})")
    linear_layer, linear_accuracy = select_over(linear_runs)
    fast_layer, fast_accuracy = selected(fast)
    print("\n| protocol | wall s | selected layer (on validation) | its test acc |")
    print("|---|---|---|---|")
    print(f"| SynTheory grid, linear half (hidden [], {len(configs) // 2} configs), batched | "
          f"{sum(r[4] for r in rows[:2]):.0f} | {linear_layer} | {linear_accuracy:.3f} |")
    print(f"| fast protocol (L-BFGS, {len(fast.candidates['configs'])} weight decays x {n_layers} layers) | "
          f"{fast_s:.1f} | {fast_layer} | {fast_accuracy:.3f} |")
    print(f"fast protocol vs the SynTheory grid run sequentially: {total_sequential / fast_s:.0f}x; selected test "
          f"accuracy fast - SynTheory linear half: {100 * (fast_accuracy - linear_accuracy):+.1f} points")


def bench_helix(features, pitch, n_optuna_layers: int, n_trials: int, n_restarts: int) -> None:
    probe, probe_s = timed(helix_probe, np.swapaxes(features, 0, 1), pitch, n_surrogates=0, n_bootstrap=0)
    full, full_s = timed(helix_probe, np.swapaxes(features, 0, 1), pitch)
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
    print(f"helix_probe with its defaults (99 smooth surrogates, 100 clip bootstraps): {full_s:.1f} s for {n_layers} "
          f"layers; layers with a helix beyond smoothness: {int(full.layer_stats()['helix_beyond_smooth'].sum())}")


def bench_procrustes(n_matrices: int = 100_000, repeats: int = 5) -> None:
    """The helix fit's Procrustes step (a third of `helix_probe`'s time): Newton polar factor vs batched SVD."""
    matrices = np.random.default_rng(0).normal(size=(n_matrices, 3, 3))

    def svd_polar(m):
        u, _, vt = np.linalg.svd(m)
        return u @ vt

    print(f"\n## Nearest rotation of {n_matrices} 3x3 matrices (one BLAS thread, median of {repeats})")
    print("| method | s | max difference from SVD |")
    print("|---|---|---|")
    reference = svd_polar(matrices)
    with threadpool_limits(1, user_api="blas"):
        for name, polar in (("earlens.probing.helix.nearest_rotation (scaled Newton, closed-form cofactors)",
                             nearest_rotation),
                            ("np.linalg.svd, U V^T", svd_polar)):
            seconds = statistics.median(timed(polar, matrices)[1] for _ in range(repeats))
            print(f"| {name} | {seconds:.3f} | {np.abs(polar(matrices) - reference).max():.1e} |")


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
    parser.add_argument("--timing_epochs", type=int, default=10, help="epochs of the timed SynTheory subsets")
    parser.add_argument("--mlp_layers", type=int, default=1, help="layers of the timed batched MLP half")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both methods")
    parser.add_argument("--skip", nargs="*", default=[], choices=["linear", "helix", "extraction"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features, pitch = helix_features(args.layers, args.dim, args.programs, args.noise)
    if "linear" not in args.skip:
        bench_linear(features, pitch % 12, args.timing_epochs, args.mlp_layers)
    if "helix" not in args.skip:
        bench_helix(features, pitch, args.optuna_layers, args.optuna_trials, args.optuna_restarts)
        bench_procrustes()
    if "extraction" not in args.skip:
        bench_extraction_rates(args.clips, args.seconds)


if __name__ == "__main__":
    main()
