"""Figures of metrics over layers and epochs (matplotlib `Figure`s, no pyplot state: safe in callbacks and workers)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def plot_epoch_layer_heatmap(rows: list[dict], metric: str, mark_metric: str | None = None,
                             mark_at_most: float | None = None, title: str | None = None) -> Figure:
    """Heatmap of `metric` over epoch (x) × layer (y) from long rows {epoch, layer, metric, value}.

    Cells where `mark_metric` ≤ `mark_at_most` (e.g. p_helix ≤ α) get a white dot: where the effect is significant.
    Layers keep their first-seen order (the model's order when rows come from a callback).
    """
    layers = list(dict.fromkeys(r["layer"] for r in rows if r["metric"] == metric))
    epochs = sorted({int(r["epoch"]) for r in rows if r["metric"] == metric})
    if not layers:
        raise ValueError(f"no rows of metric {metric!r}")
    grid = np.full((len(layers), len(epochs)), np.nan)
    marks = np.zeros_like(grid, dtype=bool)
    for r in rows:
        if r["layer"] not in layers or int(r["epoch"]) not in epochs:
            continue
        cell = layers.index(r["layer"]), epochs.index(int(r["epoch"]))
        if r["metric"] == metric:
            grid[cell] = float(r["value"])
        elif mark_metric and r["metric"] == mark_metric and float(r["value"]) <= mark_at_most:
            marks[cell] = True
    fig = Figure(figsize=(max(4.0, 0.35 * len(epochs) + 2.5), max(2.5, 0.3 * len(layers) + 1.2)))
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ys, xs = np.nonzero(marks)
    if len(xs):
        ax.plot(xs, ys, "o", color="white", markersize=4, label=f"{mark_metric} ≤ {mark_at_most:g}")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.5)
    ax.set_xticks(range(len(epochs)), epochs, fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer")
    ax.set_title(title or metric, fontsize=9)
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    return fig
