"""A self-contained HTML report of run folders, without W&B: `python -m earlens.report RUN_DIR [RUN_DIR ...]`.

Reads only what `train.py` and `probe.py` leave in their run folders (`summary.json`, `csv/version_*/metrics.csv`,
`layers.csv`, the PNG figures) and writes one HTML file with every image inlined: a table of the runs side by side,
metric-vs-epoch plots (every run of a metric on one axis), metric-vs-layer plots of probe runs, and each run's own
figures (filters, helix, Zipf, scores per layer), and heatmaps over epoch × layer of the callbacks' per-layer tables
(`tables/<callback>.csv`: helix R² with the layers beyond smooth surrogates marked, partials, Zipf per n-gram order).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import sys
import warnings
from pathlib import Path

from matplotlib.figure import Figure

from earlens.plots import plot_epoch_layer_heatmap

TABLE_COLUMNS = ("epoch", "step", "layer", "metric", "value", "ci_low", "ci_high")  # of `tables/<callback>.csv`
HEATMAPS = {"helix": [("r2", "q_helix_epochs", 0.05)],
            "partials": [("band_auc", None, None), ("invariance", None, None)],
            "zipf": [("alpha_zm", None, None), ("alpha_tail", None, None)],
            "filters": [("move/omega_t_rel_change", None, None), ("move/sigma_t_rel_change", None, None)]}
# (metric, marked where `mark` ≤ bound) per callback table


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _image(data: str, caption: str) -> str:
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _numbers(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(x, value) pairs of rows where `key` has a number; x is the epoch (train) or the layer index (probe)."""
    pairs = []
    for row in rows:
        value, x = row.get(key, ""), row.get("epoch", row.get("layer", ""))
        try:
            pairs.append((float(x), float(value)))
        except (TypeError, ValueError):
            continue
    return pairs


class ReportError(ValueError):
    """A run folder, or a file in it, that the report cannot read; the message names it."""


def _read_csv(path: Path) -> list[dict]:
    """Rows of a CSV a run wrote. A cut-off last row (the writer was killed mid-line: no final newline, or fewer
    fields than the header) is left out with a warning naming the file; an unreadable file is a `ReportError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: cannot read ({err})") from None
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if rows and (not text.endswith("\n") or None in rows[-1].values()):
        warnings.warn(f"{path}: the last row is incomplete (a write was interrupted); left out", stacklevel=2)
        rows.pop()
    return rows


def read_layer_table(path: str | Path) -> list[dict]:
    """Rows of a table written by `log_layer_table`; a row logged again for the same (epoch, layer, metric), as after
    a resume, replaces the earlier one."""
    return list({(row["epoch"], row["layer"], row["metric"]): row for row in _read_csv(Path(path))}.values())


def read_run(run_dir: Path) -> dict:
    """Everything the report shows about one run folder; `ReportError` names a folder that is not a run or a file
    that cannot be read."""
    summary_path = run_dir / "summary.json"
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such folder")
    if not summary_path.is_file():
        raise ReportError(f"{run_dir}: not a run folder (no summary.json); give folders that train.py or probe.py "
                          "wrote, such as runs/<config>/<stamp>")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ReportError(f"{summary_path}: unreadable ({err}); the file is cut short or damaged") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{summary_path}: not a run summary (a JSON object)")
    epochs = [row for path in sorted(run_dir.glob("csv/version_*/metrics.csv")) for row in _read_csv(path)]
    layers = _read_csv(run_dir / "layers.csv") if (run_dir / "layers.csv").is_file() else []
    intervals = {}
    if (run_dir / "layer_metrics.csv").is_file():
        intervals = {(row["layer"], row["metric"]): (float(row["ci_low"]), float(row["ci_high"]))
                     for row in _read_csv(run_dir / "layer_metrics.csv") if row["ci_low"] not in ("", "nan")}
    return {"dir": run_dir, "name": f"{run_dir.parent.name}/{run_dir.name}", "summary": summary, "epochs": epochs,
            "layers": layers, "intervals": intervals,
            "figures": sorted(run_dir.glob("*.png")) + sorted(run_dir.glob("figures/*.png")),
            "tables": {path.stem: read_layer_table(path) for path in sorted(run_dir.glob("tables/*.csv"))}}


def _flat(summary: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict) and key not in ("versions", "files"):
            flat.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def _comparison_table(runs: list[dict]) -> str:
    """Runs side by side: every numeric summary field some run has (test metrics and probe summaries first)."""
    flats = [_flat(run["summary"]) for run in runs]
    keys = sorted({k for flat in flats for k in flat}, key=lambda k: (not k.startswith(("test_metrics", "probes",
                                                                                         "helix")), k))
    head = "".join(f"<th>{html.escape(run['name'])}</th>" for run in runs)
    body = "".join(f"<tr><td>{html.escape(key)}</td>" + "".join(
        f"<td>{flat[key]:.4g}</td>" if key in flat else "<td></td>" for flat in flats) + "</tr>" for key in keys)
    return f"<table><tr><th>metric</th>{head}</tr>{body}</table>"


def _curves(runs: list[dict], source: str, x_label: str) -> list[str]:
    """One plot per metric: every run that logged it, against epoch (`epochs`) or layer (`layers`)."""
    tabled = tuple(f"{table}/" for run in runs for table in run["tables"])  # drawn as heatmaps instead
    metrics = sorted({k for run in runs for row in run[source] for k in row
                      if k not in ("epoch", "step", "layer", "layer_name") and _numbers([row], k)
                      and not (source == "epochs" and k.startswith(tabled))})
    images = []
    for metric in metrics:
        if source == "epochs" and not metric.startswith(("val/", "train/loss_epoch", "helix/", "zipf/", "filters/")):
            continue
        values = {round(y, 12) for run in runs for _, y in _numbers(run[source], metric) if math.isfinite(y)}
        if len(values) < 2:  # constant (or a single point): a chart would say nothing a table does not
            continue
        figure = Figure(figsize=(5, 3))
        axes = figure.add_subplot()
        for run in runs:
            pairs = _numbers(run[source], metric)
            if not pairs:
                continue
            xs, ys = zip(*sorted(pairs))
            line = axes.plot(xs, ys, "o-", ms=3, label=run["name"])[0]
            if source == "layers":  # 95 % intervals where the run has them (test accuracy, ω)
                bands = [(x, *run["intervals"][(row["layer_name"], metric)]) for x, row in zip(xs, run["layers"])
                         if (row.get("layer_name"), metric) in run["intervals"]]
                if bands:
                    bx, low, high = zip(*bands)
                    axes.fill_between(bx, low, high, color=line.get_color(), alpha=0.2, lw=0)
        if source == "layers" and runs[0]["layers"]:
            names = [row.get("layer_name", row.get("layer")) for row in runs[0]["layers"]]
            axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axes.set(xlabel=x_label, ylabel=metric, title=metric)
        axes.legend(fontsize=7)
        images.append(_image(_png(figure), f"{metric} against {x_label}"))
    return images


def _heatmaps(run: dict) -> list[str]:
    """Heatmaps over epoch × layer of the callbacks' tables (`HEATMAPS` says which metrics)."""
    images = []
    for table, rows in run["tables"].items():
        present = {row["metric"] for row in rows}
        for metric, mark, bound in HEATMAPS.get(table, [(sorted(present)[0], None, None)] if present else []):
            if metric in present:
                figure = plot_epoch_layer_heatmap(rows, metric, mark if mark in present else None, bound,
                                                  title=f"{table}: {metric}")
                images.append(_image(_png(figure), f"{table} {metric} over epoch and layer"))
    return images


def render(run_dirs: list[Path], title: str = "earlens runs") -> str:
    runs = [read_run(Path(d)) for d in run_dirs]
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Runs side by side</h2>", _comparison_table(runs)]
    by_epoch, by_layer = _curves(runs, "epochs", "epoch"), _curves(runs, "layers", "layer")
    if by_epoch:
        parts += ["<h2>Metrics against epoch</h2>", '<div class="grid">', *by_epoch, "</div>"]
    if by_layer:
        parts += ["<h2>Metrics against layer</h2>", '<div class="grid">', *by_layer, "</div>"]
    for run in runs:
        heatmaps = _heatmaps(run)
        if heatmaps:
            parts += [f"<h2>Per layer and epoch: {html.escape(run['name'])}</h2>", '<div class="grid">', *heatmaps,
                      "</div>"]
        if run["figures"]:
            parts += [f"<h2>Figures of {html.escape(run['name'])}</h2>", '<div class="grid">']
            parts += [_image(base64.b64encode(p.read_bytes()).decode(), p.stem) for p in run["figures"]]
            parts.append("</div>")
    style = ("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:13px} "
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right} td:first-child{text-align:left} "
             ".grid{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} img{max-width:520px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m earlens.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: report.html in the first run folder")
    parser.add_argument("--title", default="earlens runs")
    args = parser.parse_args(argv)
    page = render(args.run_dirs, args.title)  # every run read before anything is written
    args.out = args.out or args.run_dirs[0] / "report.html"
    args.out.write_text(page, encoding="utf-8")
    print(args.out.resolve())
    return args.out


if __name__ == "__main__":
    try:
        main()
    except (ReportError, OSError) as error:  # OSError: a figure or --out that cannot be read or written, named
        sys.exit(f"earlens.report: {error}")
