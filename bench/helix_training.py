"""Does a pitch helix form while a model trains, when, and where? Reads the helicality a `HelicalityCallback` logged
in a training run (`train.py --config gabor_notes_interp`), prints R² and p_helix per layer against epoch as a
markdown table and saves the figure (`earlens.plots.plot_helicality_over_training`) next to the run.

    python train.py --config gabor_notes_interp --trainer.max_epochs 6
    python bench/helix_training.py runs/gabor_notes_interp/<timestamp> [--alpha 0.01]
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level drawn on the p_helix panel")
    args = parser.parse_args(argv)
    epochs, layers, stats = helicality_log(args.run_dir)
    print("| epoch | " + " | ".join(layers) + " |\n|---" + "|---" * len(layers) + "|")
    for index, epoch in enumerate(epochs):
        cells = [f"{r2:.3f} (p {p:.2f}, ω {omega:.2f})" for r2, p, omega in
                 zip(stats["r2"][index], stats["p_helix"][index], stats["omega_chroma"][index])]
        print(f"| {epoch} | " + " | ".join(cells) + " |")
    figure = plot_helicality_over_training(epochs, stats["r2"], stats["p_helix"], layers, alpha=args.alpha,
                                           title=f"helicality during training ({args.run_dir.name})")
    out = args.run_dir / "helicality_over_training.png"
    figure.savefig(out, dpi=120)
    print(f"\nhelix R² (p_helix against smooth surrogates, ω_chroma in rad/semitone) per layer; figure: {out}")


if __name__ == "__main__":
    main()
