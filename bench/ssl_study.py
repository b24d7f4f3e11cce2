"""What a HuBERT pretrained on music without labels knows about pitch, and when it learns it: every model that
`python train.py --config ssl_music --model.init_args.hf_every_n_epochs 1` wrote to `RUN/hf_steps/step_<N>`
(step 0 is the random initialisation) is probed layer by layer, run by run, through the same loader as downloaded
weights (`earlens.models.backbones.load_backbone("hubert", folder)`).

Per layer and step, over the runs (seeds): linear pitch-class and octave test accuracy (`earlens.probing.probes`, the
weight decay chosen on validation, averaged over `--splits` seeded 70/15/15 splits of the 288 notes C3–B5 × 8
SynTheory instruments), the helix fit's R², the periodic turn rate ω and how many runs turn beyond smooth curves
(q_helix ≤ α) and are octave-closer than the null (q_octave ≤ α); q-values are Benjamini–Hochberg over every
run × step × layer. Per step: the validation loss the run logged and the Zipf statistics of the units the model's
head predicts on the run's validation clips (`earlens.stats.zipf.zipf_statistics`). Step 0 of each run is the same model
at random initialisation: the reference every later step is read against (printed as `init` in each row).

    python bench/ssl_study.py runs/ssl_study/seed_0 runs/ssl_study/seed_1 runs/ssl_study/seed_2 \
        --out runs/ssl_study/study.csv --figure runs/ssl_study/study.png
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.datamodules.music import RenderedMusicDataModule  # noqa: E402
from earlens.lightning_modules.ssl import load_unit_head  # noqa: E402
from earlens.models.backbones import load_backbone  # noqa: E402
from earlens.plots import plot_layer_curves  # noqa: E402
from earlens.probing.features import extract_features  # noqa: E402
from earlens.probing.helicality import helix_probe  # noqa: E402
from earlens.probing.probes import fit_layer_probes  # noqa: E402
from earlens.probing.probes_common import split_indices  # noqa: E402
from earlens.stats.multiple_testing import benjamini_hochberg  # noqa: E402
from earlens.stats.zipf import zipf_statistics  # noqa: E402
from earlens.stimuli.rendering import render_stimuli  # noqa: E402

NOTES = {"midi_pitches": list(range(48, 84)), "programs": [0, 4, 24, 40, 56, 65, 73, 80]}
LAYER_STATS = ("pitch_class", "octave", "r2", "omega_periodic", "p_helix", "p_octave")
STEP_STATS = ("val_loss", "types", "alpha_zm", "alpha_zm_low", "alpha_zm_high", "power_law")


def step_folders(run_dir: Path) -> list[tuple[int, Path]]:
    folders = sorted((int(path.name.split("_")[1]), path) for path in (run_dir / "hf_steps").glob("step_*"))
    if not folders:
        raise FileNotFoundError(f"{run_dir}/hf_steps: no step_<N> folders (train with "
                                "--model.init_args.hf_every_n_epochs 1)")
    return folders


def val_losses(run_dir: Path) -> list[float]:
    """The logged val/loss of every validation epoch, in order (one per exported step after step 0)."""
    rows = []
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with open(path, newline="") as file:
            rows += [row for row in csv.DictReader(file) if row.get("val/loss")]
    return [float(row["val/loss"]) for row in sorted(rows, key=lambda row: int(float(row["step"])))]


def validation_waves(run_dir: Path) -> torch.Tensor:
    """The run's validation clips (its datamodule's options from config.yaml)."""
    options = dict((yaml.safe_load((run_dir / "config.yaml").read_text())["data"] or {}).get("init_args") or {})
    data = RenderedMusicDataModule(**options)
    return torch.cat([batch["audio"] for batch in data.val_dataloader()])


def layer_rows(folder: Path, notes, splits: int, seed: int) -> tuple[list[dict], object]:
    """One row per layer of the model in `folder` and its backbone."""
    backbone = load_backbone("hubert", str(folder))
    features = np.asarray(extract_features(backbone, notes.waves, backbone.sample_rate, stimulus_key=notes.key),
                          dtype=np.float32)
    labels = notes.labels
    accuracy = {target: np.mean([fit_layer_probes(features, labels[target], seed=split, progress=False,
                                                  split=split_indices(labels[target], seed=split)
                                                  ).metrics["test_accuracy"] for split in range(splits)], axis=0)
                for target in ("pitch_class", "octave")}
    helix = helix_probe(np.swapaxes(features, 0, 1), labels["midi_pitch"], seed=seed).layer_stats()
    return [{"layer": name, **{key: float(accuracy[key][index]) for key in accuracy},
             **{key: float(helix[key][index]) for key in ("r2", "omega_periodic", "p_helix", "p_octave")}}
            for index, name in enumerate(backbone.layer_names)], backbone


@torch.no_grad()
def unit_statistics(folder: Path, backbone, waves: torch.Tensor, seed: int) -> dict:
    """Zipf statistics of the units the head predicts at every frame of `waves`."""
    head, centroids = load_unit_head(folder)
    units = torch.cat([head(backbone(chunk)[-1]).argmax(-1).flatten() for chunk in waves.split(16)])
    counts = np.bincount(units.numpy(), minlength=len(centroids))
    result = zipf_statistics(counts, max_population=len(centroids), seed=seed)
    return {"types": result.vocab_size, "alpha_zm": result.alpha_zm, "alpha_zm_low": result.alpha_zm_low,
            "alpha_zm_high": result.alpha_zm_high, "power_law": float(result.verdict == "power_law")}


def study_rows(runs: list[Path], splits: int, seed: int) -> list[dict]:
    notes = render_stimuli("notes", None, 16000, **NOTES)
    rows = []
    for run_index, run_dir in enumerate(runs):
        losses, waves = val_losses(run_dir), validation_waves(run_dir)
        for position, (step, folder) in enumerate(step_folders(run_dir)):
            began = time.perf_counter()
            layers, backbone = layer_rows(folder, notes, splits, seed)
            per_step = {"val_loss": losses[position - 1] if 0 < position <= len(losses) else float("nan"),
                        **unit_statistics(folder, backbone, waves, seed)}
            rows += [{"run": run_index, "step": step, **row, **per_step} for row in layers]
            print(f"{run_dir} step {step}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    for key in ("p_helix", "p_octave"):
        for row, q in zip(rows, benjamini_hochberg(np.array([row[key] for row in rows]))):
            row["q" + key[1:]] = float(q)
    return rows


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return "—" if values.size == 0 else f"{values.mean():.2f} ± {values.std(ddof=1) if values.size > 1 else 0:.2f}"


def markdown(rows: list[dict], alpha: float) -> str:
    runs = sorted({row["run"] for row in rows})
    steps = sorted({row["step"] for row in rows})
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    by = {(row["run"], row["step"], row["layer"]): row for row in rows}
    per_step = ["| step | val loss | unit types used | α (Zipf–Mandelbrot) | runs 'power law' |", "|---" * 5 + "|"]
    for step in steps:
        first = [by[(run, step, layers[0])] for run in runs if (run, step, layers[0]) in by]
        cells = [_mean_sd([r[key] for r in first]) for key in ("val_loss", "types", "alpha_zm")]
        per_step.append(f"| {step} | " + " | ".join(cells) + f" | {sum(r['power_law'] for r in first):.0f}/"
                        f"{len(first)} |")
    columns = "| layer | step | pitch class | octave | helix R² | ω | runs q_helix ≤ α | runs q_octave ≤ α |"
    per_layer = [columns, "|---" * 8 + "|"]
    for layer in layers:
        for step in steps:
            here = [by[(run, step, layer)] for run in runs if (run, step, layer) in by]
            init = [by[(run, steps[0], layer)] for run in runs if (run, steps[0], layer) in by]
            cells = [_mean_sd([r[key] for r in here]) for key in ("pitch_class", "octave", "r2", "omega_periodic")]
            if step != steps[0]:
                cells[:3] = [f"{cell} (init {_mean_sd([r[key] for r in init])})"
                             for cell, key in zip(cells[:3], ("pitch_class", "octave", "r2"))]
            counts = [f"{sum(r[key] <= alpha for r in here)}/{len(here)}" for key in ("q_helix", "q_octave")]
            per_layer.append(f"| {layer} | {step} | " + " | ".join(cells + counts) + " |")
    return "\n".join(per_step) + "\n\n" + "\n".join(per_layer)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of train.py --config ssl_music")
    parser.add_argument("--splits", type=int, default=3, help="probe splits averaged per accuracy")
    parser.add_argument("--seed", type=int, default=0, help="helix null and Zipf bootstrap seed")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None, help="CSV of every statistic of every run, step, layer")
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the accuracies and R² against step")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} at the start\n")
    rows = study_rows(args.runs, args.splits, args.seed)
    print(markdown(rows, args.alpha))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"every statistic: {args.out}")
    if args.figure:
        steps = sorted({row["step"] for row in rows})
        layers = list(dict.fromkeys(row["layer"] for row in rows))
        runs = sorted({row["run"] for row in rows})
        by = {(row["run"], row["step"], row["layer"]): row for row in rows}
        values = {key: np.array([[[by[(run, step, layer)][key] if (run, step, layer) in by else np.nan
                                   for layer in layers] for step in steps] for run in runs])
                  for key in ("pitch_class", "octave", "r2")}
        figure = plot_layer_curves(np.array(steps), values, layers, chance={"pitch_class": 1 / 12, "octave": 1 / 3},
                                   title=f"HuBERT pretrained on music, {len(runs)} runs")
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=120)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
