"""Does a pitch helix form while a model trains, when, and where? Reads the helicality a `HelicalityCallback` logged
in training runs (`train.py --config gabor_notes_interp`), prints R², p_helix and the turn rate per layer against
epoch as a markdown table and saves the figure (`earlens.plots.plot_helicality_over_training`) next to each run.

Every layer of every epoch of every run is a test: verdicts use Benjamini–Hochberg q-values over all of them
(`q ≤ alpha`). Per layer, run by run: the first epoch with q_helix ≤ alpha, how many epochs reach it, the same for
octave equivalence (q_octave), and the last epoch's R² (mean ± sd over the runs).

    python train.py --config gabor_notes_interp --trainer.max_epochs 6
    python bench/helix_training.py runs/gabor_notes_interp/<timestamp> [more runs ...] [--alpha 0.05]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.plots import plot_helicality_over_training  # noqa: E402
from earlens.stats.multiple_testing import benjamini_hochberg  # noqa: E402

STATS = ("r2", "p_helix", "omega_periodic", "p_octave")


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
    stats = {stat: np.array([[float(by_epoch[e].get(f"helix/{layer}/{stat}") or "nan") for layer in layers]
                             for e in epochs]) for stat in STATS}
    return epochs, layers, stats


def _callback_layers(run_dir: Path) -> list[str]:
    """The HelicalityCallback's layers in the run's config.yaml (model order; the CSV sorts them by name)."""
    import yaml

    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    return next((c.get("init_args", {}).get("layers", []) for c in callbacks
                 if str(c.get("class_path", "")).endswith("HelicalityCallback")), [])


def with_q_values(logs: list) -> list:
    """Adds q_helix and q_octave (E, L) to each run's stats: BH over every run, epoch and layer together."""
    for name in ("p_helix", "p_octave"):
        q = benjamini_hochberg(np.concatenate([stats[name].ravel() for _, _, stats in logs]))
        bounds = np.cumsum([0] + [stats[name].size for _, _, stats in logs])
        for (_, _, stats), start, stop in zip(logs, bounds[:-1], bounds[1:]):
            stats["q" + name[1:]] = q[start:stop].reshape(stats[name].shape)
    return logs


def print_run(run_dir: Path, log: tuple, alpha: float) -> None:
    epochs, layers, stats = log
    print(f"\n{run_dir}\n\n| epoch | " + " | ".join(layers) + " |\n|---" + "|---" * len(layers) + "|")
    for index, epoch in enumerate(epochs):
        cells = [f"{r2:.3f} (q {q:.3f}, ω {omega:.2f})" for r2, q, omega in
                 zip(stats["r2"][index], stats["q_helix"][index], stats["omega_periodic"][index])]
        print(f"| {epoch} | " + " | ".join(cells) + " |")
    figure = plot_helicality_over_training(epochs, stats["r2"], stats["q_helix"], layers, alpha=alpha,
                                           title=f"helicality during training ({run_dir.name})")
    out = run_dir / "helicality_over_training.png"
    figure.savefig(out, dpi=120)
    print(f"\nhelix R² (q_helix over every run, epoch and layer; ω where the layer turns, rad/semitone) per layer; "
          f"figure: {out}")


def print_runs_summary(logs: list, alpha: float) -> None:
    """Per layer, run by run: first epoch and number of epochs with q ≤ alpha (helix, octave), the last R²."""
    layers = logs[0][1]
    print(f"\n{len(logs)} runs, per layer (values run by run):\n\n| layer | first epoch with q_helix ≤ {alpha} | "
          f"epochs with q_helix ≤ {alpha} | "
          f"epochs with q_octave ≤ {alpha} | last epoch's R² (mean ± sd) | last epoch's p_helix\n"
          "|---|---|---|---|---|---|")
    for layer in layers:
        first, count, octave, last_r2, last_p = [], [], [], [], []
        for epochs, run_layers, stats in logs:
            column = run_layers.index(layer)
            q = stats["q_helix"][:, column]
            hits = np.flatnonzero(q <= alpha)
            first.append(str(epochs[hits[0]]) if len(hits) else "–")
            count.append(f"{int((q <= alpha).sum())}/{len(q)}")
            octave.append(f"{int((stats['q_octave'][:, column] <= alpha).sum())}/{len(q)}")
            last_r2.append(stats["r2"][-1, column])
            last_p.append(f"{stats['p_helix'][-1, column]:.3f}")
        spread = np.std(last_r2, ddof=1) if len(last_r2) > 1 else float("nan")
        print(f"| {layer} | {' '.join(first)} | {' '.join(count)} | {' '.join(octave)} | "
              f"{np.mean(last_r2):.3f} ± {spread:.3f} | {' '.join(last_p)} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--alpha", type=float, default=0.05, help="false discovery rate of the verdicts")
    args = parser.parse_args(argv)
    logs = with_q_values([helicality_log(run_dir) for run_dir in args.run_dirs])
    for run_dir, log in zip(args.run_dirs, logs):
        print_run(run_dir, log, args.alpha)
    print_runs_summary(logs, args.alpha)


if __name__ == "__main__":
    main()
