"""Gabor STRF frontend vs the mel + Conv2d baseline on the four tasks (CPU, each fit capped in time).

    python bench/tasks.py                       # all 8 runs, default configs
    python bench/tasks.py --tasks speaker vad   # a subset
    python bench/tasks.py --max-time 00:00:10:00 --extra --trainer.max_epochs=5
    python bench/tasks.py --summaries runs/*_*/*/summary.json   # re-print the table from finished runs

Runs `train.py --config {gabor,mel}_{task}` and prints one markdown row per run from its `summary.json`:
the task's headline test metric, macro accuracy/F1, parameters, wall time and training samples/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADLINE = {"vad": "test/frame_f1", "speaker": "test/acc", "birdcall": "test/acc", "scene": "test/acc"}
TARGET = {"vad": 0.90, "speaker": 0.97, "birdcall": 0.95, "scene": 0.75}


def run(config: str, max_time: str, extra: list[str]) -> dict:
    cmd = [sys.executable, str(REPO / "train.py"), "--config", config, "--trainer.max_time", max_time,
           "--trainer.enable_progress_bar", "false", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{config} failed ({' '.join(cmd)})")
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def row(summary: dict) -> str:
    frontend, task = summary["config"].split("_", 1)
    m = summary["test_metrics"]
    return (f"| {task} | {frontend} | {HEADLINE[task]} | {m[HEADLINE[task]]:.4f} | {TARGET[task]:.2f} "
            f"| {m['test/acc_macro']:.4f} | {m['test/f1_macro']:.4f} | {summary['params']['total']:,} "
            f"({summary['params']['frontend']:,}) | {summary['epochs_run']} | {summary['wall_time_s']:.0f} "
            f"| {summary['train_samples_per_s']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(HEADLINE), choices=list(HEADLINE))
    parser.add_argument("--frontends", nargs="+", default=["gabor", "mel"], choices=["gabor", "mel"])
    parser.add_argument("--max-time", default="00:00:09:00", help="per-fit cap (DD:HH:MM:SS)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_tasks.json")
    parser.add_argument("--summaries", nargs="+", type=Path, help="print rows from these summary.json files instead")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides passed to every run")
    args = parser.parse_args()

    header = ("| task | frontend | headline metric | value | target | acc_macro | f1_macro | params (frontend) "
              "| epochs | wall s | train samples/s |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    if args.summaries:
        for path in args.summaries:
            print(row(json.loads(path.read_text())))
        return
    results = []
    for task in args.tasks:
        for frontend in args.frontends:
            results.append(run(f"{frontend}_{task}", args.max_time, args.extra))
            print(row(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nsummaries: {args.out}")


if __name__ == "__main__":
    main()
