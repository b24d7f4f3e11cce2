"""What a `probe.py` run writes: the per-layer tables (wide and long, with intervals), the W&B run (tables, charts
of metric against layer, plots) and the `summary.json` blocks of the probes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from earlens.lightning_modules.cli import start_wandb_run
from earlens.probing.helicality import HelixProbeResult
from earlens.probing.probes_common import ProbeResult


def layer_table(layer_names: list[str], probes: dict[str, ProbeResult],
                helix: HelixProbeResult | None) -> list[dict]:
    """One row per layer: every target's metrics (prefixed by the target) and the helix columns."""
    rows = [{"layer": index, "layer_name": name} for index, name in enumerate(layer_names)]
    for target, result in probes.items():
        for row, probe_row in zip(rows, result.rows()):
            row.update({f"{target}/{key}": value for key, value in probe_row.items()
                        if key not in ("layer", "layer_name")})
    if helix is not None:
        for index, row in enumerate(rows):  # every statistic of the helix probe (HelixProbeResult.layer_stats)
            row.update({f"helix/{key}": float(values[index]) for key, values in helix.layer_stats().items()})
            row["helix/best_triple"] = "-".join(str(int(pc)) for pc in helix.best_triple[index])
            row["helix/paper_triple"] = "-".join(str(int(pc)) for pc in helix.paper_triple[index])
    return rows


def metric_table(rows: list[dict], probes: dict[str, ProbeResult]) -> list[dict]:
    """The layer table in long form, (layer, metric, value, ci_low, ci_high): test accuracies with a 95 % Wilson
    interval over the test clips, ω with its bootstrap interval, every other number without one."""
    n_test = {target: len(result.split.test) for target, result in probes.items()}
    long = []
    for row in rows:
        for key, value in row.items():
            if key in ("layer", "layer_name") or not isinstance(value, (int, float)):
                continue
            low = high = float("nan")
            target, _, stat = key.partition("/")
            if stat == "test_accuracy" and target in n_test and np.isfinite(value):
                interval = binomtest(round(value * n_test[target]), n_test[target]).proportion_ci(method="wilson")
                low, high = interval.low, interval.high
            elif key == "helix/omega_chroma":
                low, high = row["helix/omega_ci_low"], row["helix/omega_ci_high"]
            long.append({"layer": row["layer_name"], "metric": key, "value": float(value), "ci_low": float(low),
                         "ci_high": float(high)})
    return long


def write_tables(run_dir: Path, rows: list[dict], long: list[dict]) -> dict[str, Path]:
    """`layers.csv`/`layers.json` (a row per layer) and `layer_metrics.csv` (long form, with intervals)."""
    paths = {"csv": run_dir / "layers.csv", "json": run_dir / "layers.json", "long": run_dir / "layer_metrics.csv"}
    for path, table in ((paths["csv"], rows), (paths["long"], long)):
        if not table:
            continue
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    paths["json"].write_text(json.dumps(rows, indent=1) + "\n")
    return paths


def charted_metrics(columns: list[str]) -> list[str]:
    """The columns worth a metric-against-layer chart: each target's test score and the helix's headline numbers."""
    return [c for c in columns if c.endswith(("/test_accuracy", "/test_r2"))
            or c in ("helix/r2", "helix/p_helix", "helix/q_helix", "helix/p_octave", "helix/omega_periodic")]


def console_table(rows: list[dict]) -> str:
    """The per-layer headline numbers as a plain-text table: each target's test score, the helix R², its
    p/q-values and ω (the columns `charted_metrics` chooses), one row per layer."""
    columns = charted_metrics(list(rows[0])) if rows else []
    header = ["layer", *columns]
    body = [[str(row["layer_name"]), *(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                                       for c in columns)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width)
                                in enumerate(zip(line, widths))) for line in [header, *body])


def log_wandb(run_dir: Path, project: str, name: str, config: dict, rows: list[dict], long: list[dict],
              plots: dict[str, Path], summary: dict) -> str | None:
    """One W&B run: per-layer metrics as steps (step = layer), the layer table (wide and long, with intervals),
    a line chart of each headline metric against layer, the plots and the summary."""
    import wandb

    run = start_wandb_run(project=project, name=name, dir=str(run_dir), config=config, job_type="probe",
                          group=name.split("/")[0])
    if run is None:  # W&B could not start (one warning said why); the tables and summary.json are on disk
        return None
    for step, row in enumerate(rows):  # step = the row's layer index
        run.log({key: value for key, value in row.items() if isinstance(value, (int, float))}, step=step)
    columns = list(rows[0])
    layers = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
    charts = {f"charts/{key}": wandb.plot.line(layers, "layer", key, title=f"{key} against layer")
              for key in charted_metrics(columns)}
    tables = {"layers": layers}
    if long:
        tables["tables/layer_metrics"] = wandb.Table(columns=list(long[0]), data=[list(r.values()) for r in long])
    run.log({**tables, **charts, **{f"plots/{key}": wandb.Image(str(path)) for key, path in plots.items()}})
    run.summary.update(_flatten(summary))
    run_path = run.dir
    run.finish()
    return str(Path(run_path).parent)


def _flatten(nested: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str, bool)):
            flat[f"{prefix}{key}"] = value
    return flat


def probe_summary(result: ProbeResult, layer_names: list[str]) -> dict:
    """Best layer and hyper-parameters (chosen on validation) and the test scores there."""
    best = result.best_layer()
    name = result.score_name
    out = {"task": result.task, "protocol": result.protocol, "model": result.model, "best_layer": best,
           "best_layer_name": layer_names[best], f"test_{name}": float(result.metrics[f"test_{name}"][best]),
           f"val_{name}": float(result.metrics[f"val_{name}"][best]),
           "hyperparameters": {key: float(values[best]) for key, values in result.hyperparameters.items()}}
    if result.classes is not None:
        out.update({"test_macro_f1": float(result.metrics["test_macro_f1"][best]), "n_classes": len(result.classes),
                    "chance": 1 / len(result.classes)})
    out["n_train_val_test"] = [len(result.split.train), len(result.split.val), len(result.split.test)]
    return out
