"""Does a pitch helix form while a model trains, when, and where? Reads the helicality a `HelicalityCallback` logged
in a training run (`train.py --config gabor_notes_interp`), prints R² and p_helix per layer against epoch as a
markdown table and saves the figure (`earlens.plots.plot_helicality_over_training`) next to the run. Given several
runs (seeds), it also prints per layer, run by run, the first epoch with p_helix ≤ 0.05, how many epochs reach
p_helix ≤ alpha, and the last epoch's R² (mean ± sd over the runs).

    python train.py --config gabor_notes_interp --trainer.max_epochs 6
    python bench/helix_training.py runs/gabor_notes_interp/<timestamp> [more runs ...] [--alpha 0.01]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.plots import plot_helicality_over_training  # noqa: E402


def helicality_log(run_dir: Path) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """(epochs (E,), layer names, {stat: (E, L)}) of the `helix/<layer>/<stat>` columns of every attempt's CSV."""
    rows = []
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with open(path, newline="") as file:
            rows += list(csv.DictReader(file))
    logged = {key[len("helix/"):-len("/r2")] for row in rows for key in row
              if key.startswith("helix/") and key.endswith("/r2")}
    layers = [layer for layer in _callback_layers(run_dir) if layer in logged] or sorted(logged)
    by_epoch = {int(float(row["epoch"])): row for row in rows if layers and row.get(f"helix/{layers[0]}/r2")}
    if not by_epoch:
        raise FileNotFoundError(f"{run_dir}: no helix/<layer>/r2 values in csv/version_*/metrics.csv (was the run "
                                "trained with a HelicalityCallback and the CSV logger?)")
    epochs = np.array(sorted(by_epoch))
    stats = {stat: np.array([[float(by_epoch[e][f"helix/{layer}/{stat}"] or "nan") for layer in layers]
                             for e in epochs]) for stat in ("r2", "p_helix", "omega_chroma")}
    return epochs, layers, stats


def _callback_layers(run_dir: Path) -> list[str]:
    """The HelicalityCallback's layers in the run's config.yaml (model order; the CSV sorts them by name)."""
    import yaml

    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    return next((c.get("init_args", {}).get("layers", []) for c in callbacks
                 if str(c.get("class_path", "")).endswith("HelicalityCallback")), [])


def print_run(run_dir: Path, alpha: float) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    epochs, layers, stats = helicality_log(run_dir)
    print(f"\n{run_dir}\n\n| epoch | " + " | ".join(layers) + " |\n|---" + "|---" * len(layers) + "|")
    for index, epoch in enumerate(epochs):
        cells = [f"{r2:.3f} (p {p:.2f}, ω {omega:.2f})" for r2, p, omega in
                 zip(stats["r2"][index], stats["p_helix"][index], stats["omega_chroma"][index])]
        print(f"| {epoch} | " + " | ".join(cells) + " |")
    figure = plot_helicality_over_training(epochs, stats["r2"], stats["p_helix"], layers, alpha=alpha,
                                           title=f"helicality during training ({run_dir.name})")
    out = run_dir / "helicality_over_training.png"
    figure.savefig(out, dpi=120)
    print(f"\nhelix R² (p_helix against smooth surrogates, ω_chroma in rad/semitone) per layer; figure: {out}")
    return epochs, layers, stats


def print_runs_summary(logs: list, alpha: float) -> None:
    """Per layer, run by run: first epoch with p_helix ≤ 0.05, epochs with p_helix ≤ alpha, the last R²."""
    layers = logs[0][1]
    print(f"\n{len(logs)} runs | first epoch with p_helix ≤ 0.05 | epochs with p_helix ≤ {alpha} | "
          "last epoch's R² (mean ± sd) | last epoch's p_helix\n|---|---|---|---|---|")
    for layer in layers:
        first, count, last_r2, last_p = [], [], [], []
        for epochs, run_layers, stats in logs:
            p = stats["p_helix"][:, run_layers.index(layer)]
            hits = np.flatnonzero(p <= 0.05)
            first.append(str(epochs[hits[0]]) if len(hits) else "–")
            count.append(f"{int((p <= alpha).sum())}/{len(p)}")
            last_r2.append(stats["r2"][-1, run_layers.index(layer)])
            last_p.append(f"{p[-1]:.2f}")
        spread = np.std(last_r2, ddof=1) if len(last_r2) > 1 else float("nan")
        print(f"| {layer} | {' '.join(first)} | {' '.join(count)} | {np.mean(last_r2):.3f} ± {spread:.3f} | "
              f"{' '.join(last_p)} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level drawn on the p_helix panel")
    args = parser.parse_args(argv)
    logs = [print_run(run_dir, args.alpha) for run_dir in args.run_dirs]
    if len(logs) > 1:
        print_runs_summary(logs, args.alpha)


if __name__ == "__main__":
    main()
