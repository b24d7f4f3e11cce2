"""What the interpretability callbacks log beyond scalars: figures as images, and per-layer tables.

A metric per layer per epoch is one table, not dozens of line charts: `log_layer_table` appends rows
(epoch, step, layer, metric, value, ci_low, ci_high) to `<run dir>/tables/<name>.csv` and logs the whole table so
far to W&B as `tables/<name>`, from which a dashboard (or `python -m earlens.report`) draws metric against layer
and a heatmap of metric over epoch × layer. Rank 0 writes; the callbacks compute identical values on every rank.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import WandbLogger

from earlens.report import TABLE_COLUMNS, read_layer_table


def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers on rank 0 (none elsewhere: one rank uploads media)."""
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)] if trainer.is_global_zero else []


def figure_image(figure: Figure) -> np.ndarray:
    """A matplotlib figure as an RGB array `(H, W, 3)` (what `WandbLogger.log_image` takes)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figures(trainer: pl.Trainer, figures: dict[str, Figure]) -> None:
    """Save each figure as `<run dir>/figures/<key>.png` (`/` → `_`; each evaluation overwrites the last), on rank
    0: the run folder holds its own figures whatever W&B does, and `earlens.report` shows them."""
    if not (figures and trainer.is_global_zero):
        return
    folder = Path(trainer.default_root_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    for key, figure in figures.items():
        figure.savefig(folder / f"{key.replace('/', '_')}.png", dpi=100)


def log_layer_table(trainer: pl.Trainer, name: str, values: dict[str, dict[str, float]],
                    intervals: dict[str, tuple[str, str]] | None = None) -> Path | None:
    """Append `values[metric][layer]` at this epoch to `<run dir>/tables/<name>.csv` and log the whole table to W&B.

    intervals: `{metric: (low_metric, high_metric)}` fills that metric's ci columns from two other metrics.
    Returns the CSV path on rank 0, None elsewhere.
    """
    if not trainer.is_global_zero:
        return None
    path = Path(trainer.default_root_dir) / "tables" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    intervals = intervals or {}
    rows = []
    for metric, per_layer in values.items():
        low, high = intervals.get(metric, (None, None))
        for layer, value in per_layer.items():
            ci = [values.get(key, {}).get(layer, math.nan) if key else math.nan for key in (low, high)]
            rows.append([trainer.current_epoch, trainer.global_step, layer, metric, float(value), *map(float, ci)])
    new = not path.exists()
    with open(path, "a", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(TABLE_COLUMNS)
        writer.writerows(rows)
    loggers = wandb_loggers(trainer)
    if loggers:
        table = read_layer_table(path)
        data = [[int(r["epoch"]), int(r["step"]), r["layer"], r["metric"], *(float(r[c]) for c in TABLE_COLUMNS[4:])]
                for r in table]
        for logger in loggers:
            logger.log_table(key=f"tables/{name}", columns=list(TABLE_COLUMNS), data=data, step=trainer.global_step)
    return path
