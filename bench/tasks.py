"""Gabor STRF frontend vs the mel + Conv2d baseline on the four tasks, over seeds (CPU, each fit capped in time).

    python bench/tasks.py                          # 3 seeds per task (ESC-10: 5-fold cross-validation), both frontends
    python bench/tasks.py --tasks speaker --seeds 0 1 2 3 4
    python bench/tasks.py --summaries runs/bench_tasks.json   # re-print the table from a finished bench

Runs `train.py --config {gabor,mel}_{task}` once per seed (`seed_everything` and the datamodule's split/crop seed);
ESC-10 runs its 5 published folds instead (test fold k, validation fold k+1), so its figure is comparable with
published 5-fold results. Prints, per task and frontend, the headline test metric as mean ± sd over the runs
with every run's value, then macro F1, wall time and training samples/s (means).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HEADLINE = {"vad": "test/frame_f1", "speaker": "test/acc", "birdcall": "test/acc", "scene": "test/acc"}
TARGET = {"vad": 0.90, "speaker": 0.97, "birdcall": 0.95, "scene": 0.75}


def run(config: str, max_time: str, extra: list[str], group: str) -> dict:
    cmd = [sys.executable, str(REPO / "train.py"), "--config", config, "--trainer.max_time", max_time,
           "--trainer.enable_progress_bar", "false", "--wandb_group", group, *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{config} failed ({' '.join(cmd)})")
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def variants(task: str, seeds: list[int]) -> list[tuple[str, list[str]]]:
    """(label, overrides) of the runs of one task: one per seed, or one per ESC-10 fold."""
    if task == "scene":
        return [(f"fold {k}", ["--data.init_args.cv_fold", str(k)]) for k in range(1, 6)]
    return [(f"seed {s}", ["--seed_everything", str(s), "--data.init_args.seed", str(s)]) for s in seeds]


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| task | frontend | headline metric | mean ± sd | runs | each run | target | f1_macro | params "
             "(frontend) | wall s | train samples/s |", "|---" * 11 + "|"]
    for key, summaries in results.items():
        task, frontend = key.split("/")
        values = np.array([s["test_metrics"][HEADLINE[task]] for s in summaries])
        f1 = np.mean([s["test_metrics"]["test/f1_macro"] for s in summaries])
        params = summaries[0]["params"]
        lines.append(
            f"| {task} | {frontend} | {HEADLINE[task]} | {values.mean():.3f} ± {values.std(ddof=1):.3f} | "
            f"{len(values)} ({'folds' if task == 'scene' else 'seeds'}) | {' '.join(f'{v:.3f}' for v in values)} | "
            f"{TARGET[task]:.2f} | {f1:.3f} | {params['total']:,} ({params['frontend']:,}) | "
            f"{np.mean([s['wall_time_s'] for s in summaries]):.0f} | "
            f"{np.mean([s['train_samples_per_s'] for s in summaries]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(HEADLINE), choices=list(HEADLINE))
    parser.add_argument("--frontends", nargs="+", default=["gabor", "mel"], choices=["gabor", "mel"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-time", default="00:00:09:00", help="per-fit cap (DD:HH:MM:SS)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_tasks.json")
    parser.add_argument("--summaries", type=Path, help="print the table of a finished bench's JSON instead")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides passed to every run")
    args = parser.parse_args()
    if args.summaries:
        print(table(json.loads(args.summaries.read_text())))
        return
    results: dict[str, list[dict]] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    group = f"bench-tasks-{time.strftime('%Y%m%d-%H%M%S')}"  # every run of this bench shares one W&B group
    for task in args.tasks:
        for frontend in args.frontends:
            for label, overrides in variants(task, args.seeds):
                summary = run(f"{frontend}_{task}", args.max_time, [*overrides, *args.extra], group)
                results.setdefault(f"{task}/{frontend}", []).append(summary)
                print(f"{task} {frontend} {label}: {summary['test_metrics'][HEADLINE[task]]:.4f}", flush=True)
                args.out.write_text(json.dumps(results, indent=1))  # partial results survive an interruption
    print(table(results))
    log_summary_run(results, group)
    print(f"\nsummaries: {args.out}")


def log_summary_run(results: dict[str, list[dict]], group: str) -> None:
    """One W&B run in the bench's group holding every run's headline metric as a table (offline unless credentials)."""
    from earlens.lightning_modules.cli import start_wandb_run

    run = start_wandb_run(project="earlens", name=group, group=group, job_type="bench-summary",
                          dir=str(REPO / "runs"))
    rows = [[key.split("/")[0], key.split("/")[1], i, s["test_metrics"][HEADLINE[key.split("/")[0]]], s["run_dir"]]
            for key, summaries in results.items() for i, s in enumerate(summaries)]
    import wandb

    run.log({"tasks": wandb.Table(columns=["task", "frontend", "run", "headline", "run_dir"], data=rows)})
    run.finish()


if __name__ == "__main__":
    main()
