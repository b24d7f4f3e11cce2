"""Gabor STRF frontends vs the mel + Conv2d baseline on the four tasks, over seeds (CPU, each fit capped in time).

    python bench/tasks.py                          # 3 seeds per task (ESC-10: 5-fold cross-validation), gabor and mel
    python bench/tasks.py --tasks vad --frontends gabor_paper gabor gabor_frozen mel
    python bench/tasks.py --tasks speaker --seeds 0 1 2 3 4
    python bench/tasks.py --summaries runs/bench_tasks.json   # re-print the table from a finished bench
    python bench/tasks.py --summaries a.json b.json --frontends gabor mel   # several benches' rows, some frontends
    python bench/tasks.py --summaries a.json b.json --pair gabor gabor_frozen   # + learned minus frozen, run by run

Frontends (`FRONTENDS`): `gabor` (16 Gabor filters of 9 x 25), `gabor_paper` (the paper's 64 of 9 x 111),
`gabor_frozen` and `gabor_paper_frozen` (those banks never trained: does learning the filters help?),
`gabor_paper_projected` (the paper's bank mixed to 32 maps by a learned 1 x 1 convolution, the encoder's cost of
`gabor`; VAD and ESC-10 only) and `mel` (log-mel + a plain Conv2d of the `gabor` shape). Runs `train.py --config
<config>` once per seed (`seed_everything` and the datamodule's split/crop seed); ESC-10 runs its 5 published folds
instead (test fold k, validation fold k+1), so its figure is comparable with published 5-fold results. Prints, per
task and frontend, the headline test metric as mean ± sd over the runs with every run's value, macro F1, wall time,
seconds per epoch (fit time / epochs, validation included) and training samples/s (means), and for Gabor banks how far
they moved from their initialisation at the last validation (`FilterStatsCallback`: median over the four parameters of
the relative change, and the largest W1 shift of the rate / scale / sigma distributions, in initial means).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HEADLINE = {"vad": "test/frame_f1", "speaker": "test/acc", "birdcall": "test/acc", "scene": "test/acc"}
FRONTENDS = {  # label: (config name pattern, overrides)
    "gabor": ("gabor_{task}", []),
    "gabor_paper": ("gabor_{task}_paper", []),
    "gabor_frozen": ("gabor_{task}_frozen", []),
    "gabor_paper_frozen": ("gabor_{task}_paper", ["--model.frontend.init_args.kind", "gabor_frozen"]),
    "gabor_paper_projected": ("gabor_{task}_paper_projected", []),
    "mel": ("mel_{task}", []),
}
MOVEMENT_PREFIX = "filters/frontend.filterbank/move/"
TARGET = {"vad": 0.90, "speaker": 0.97, "birdcall": 0.95, "scene": 0.75}


def run(config: str, max_time: str, extra: list[str], group: str) -> dict:
    cmd = [sys.executable, str(REPO / "train.py"), "--config", config, "--trainer.max_time", max_time,
           "--trainer.enable_progress_bar", "false", "--wandb_group", group, *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{config} failed ({' '.join(cmd)})")
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    summary["movement"] = last_movement(REPO / summary["run_dir"])  # run_dir may be relative to the repository
    return summary


def last_movement(run_dir: Path) -> dict[str, float]:
    """The last logged `FilterStatsCallback` movement of the run's Gabor bank (empty for other frontends)."""
    movement = {}
    for path in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with path.open() as rows:
            for row in csv.DictReader(rows):
                movement |= {k[len(MOVEMENT_PREFIX):]: float(v) for k, v in row.items()
                             if k.startswith(MOVEMENT_PREFIX) and v}
    return movement


def movement_cells(summaries: list[dict]) -> str:
    """`median relative change | largest W1 shift` (means over runs), or dashes without a Gabor bank."""
    moves = [s.get("movement") for s in summaries]
    if not all(moves):
        return "– | –"
    change = np.mean([np.median([v for k, v in m.items() if k.endswith("_rel_change")]) for m in moves])
    shift = np.mean([max(v for k, v in m.items() if k.endswith("_w1_rel")) for m in moves])
    return f"{change:.3f} | {shift:.3f}"


def variants(task: str, seeds: list[int]) -> list[tuple[str, list[str]]]:
    """(label, overrides) of the runs of one task: one per seed, or one per ESC-10 fold."""
    if task == "scene":
        return [(f"fold {k}", ["--data.init_args.cv_fold", str(k)]) for k in range(1, 6)]
    return [(f"seed {s}", ["--seed_everything", str(s), "--data.init_args.seed", str(s)]) for s in seeds]


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| task | frontend | headline metric | mean ± sd | runs | each run | target | f1_macro | params "
             "(frontend) | wall s | s/epoch | train samples/s | filters moved (median rel. change) | "
             "distribution shift (max W1 rel.) |", "|---" * 14 + "|"]
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
            f"{np.mean([s['fit_time_s'] / max(s['epochs_run'], 1) for s in summaries]):.1f} | "
            f"{np.mean([s['train_samples_per_s'] for s in summaries]):.0f} | {movement_cells(summaries)} |")
    return "\n".join(lines)


def paired_differences(results: dict[str, list[dict]], first: str, second: str) -> str:
    """Per task, the headline metric of `first` minus `second` run by run (the same seeds or folds, in bench order),
    their mean and a paired t-test (scipy's; p = 1 when every difference is 0). Tasks lacking either are skipped."""
    from scipy.stats import ttest_rel

    lines = [f"| task | metric | {first} − {second}, each run | mean | paired t | p |", "|---" * 6 + "|"]
    for task in HEADLINE:
        a, b = results.get(f"{task}/{first}"), results.get(f"{task}/{second}")
        if not a or not b:
            continue
        if [r.get("seed") for r in a] != [r.get("seed") for r in b]:
            raise SystemExit(f"--pair: {task}: the runs of {first} and {second} have different seeds")
        x, y = (np.array([r["test_metrics"][HEADLINE[task]] for r in runs]) for runs in (a, b))
        diff = x - y
        t, p = (0.0, 1.0) if not diff.any() else ttest_rel(x, y)
        lines.append(f"| {task} | {HEADLINE[task]} | {' '.join(f'{d:+.3f}' for d in diff)} | {diff.mean():+.3f} | "
                     f"{t:.2f} | {p:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(HEADLINE), choices=list(HEADLINE))
    parser.add_argument("--frontends", nargs="+", default=None, choices=list(FRONTENDS),
                        help="default: gabor mel (with --summaries: every frontend in the files)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-time", default="00:00:09:00", help="per-fit cap (DD:HH:MM:SS)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_tasks.json")
    parser.add_argument("--summaries", type=Path, nargs="+", help="print the table of finished benches' JSON "
                        "files instead (rows of --tasks and --frontends, in file order)")
    parser.add_argument("--pair", nargs=2, metavar=("FIRST", "SECOND"), help="also print FIRST minus SECOND run by run "
                        "with a paired t-test (e.g. gabor gabor_frozen: does learning the filters help?)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides passed to every run")
    args = parser.parse_args()
    if args.summaries:
        results = {}
        for path in args.summaries:
            for key, runs in json.loads(path.read_text()).items():
                if key in results:
                    raise SystemExit(f"--summaries: {key} is in more than one file (second: {path}); pass one of them")
                results[key] = runs
        print(table({key: runs for key, runs in results.items() if key.split("/")[0] in args.tasks
                     and (args.frontends is None or key.split("/")[1] in args.frontends)}))
        if args.pair:
            print("\n" + paired_differences(results, *args.pair))
        return
    args.frontends = args.frontends or ["gabor", "mel"]
    results: dict[str, list[dict]] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    group = f"bench-tasks-{time.strftime('%Y%m%d-%H%M%S')}"  # every run of this bench shares one W&B group
    for task in args.tasks:
        for frontend in args.frontends:
            for label, overrides in variants(task, args.seeds):
                config, frontend_overrides = FRONTENDS[frontend]
                summary = run(config.format(task=task), args.max_time, [*frontend_overrides, *overrides, *args.extra],
                              group)
                results.setdefault(f"{task}/{frontend}", []).append(summary)
                print(f"{task} {frontend} {label}: {summary['test_metrics'][HEADLINE[task]]:.4f}", flush=True)
                args.out.write_text(json.dumps(results, indent=1))  # partial results survive an interruption
    print(table(results))
    if args.pair:
        print("\n" + paired_differences(results, *args.pair))
    log_summary_run(results, group)
    print(f"\nsummaries: {args.out}")


def log_summary_run(results: dict[str, list[dict]], group: str) -> None:
    """One W&B run in the bench's group holding every run's headline metric as a table (offline unless credentials)."""
    from earlens.lightning_modules.cli import start_wandb_run

    run = start_wandb_run(project="earlens", name=group, group=group, job_type="bench-summary",
                          dir=str(REPO / "runs"))
    if run is None:  # W&B could not start; the bench's own output is complete without it
        return
    rows = [[key.split("/")[0], key.split("/")[1], i, s["test_metrics"][HEADLINE[key.split("/")[0]]], s["run_dir"]]
            for key, summaries in results.items() for i, s in enumerate(summaries)]
    import wandb

    run.log({"tasks": wandb.Table(columns=["task", "frontend", "run", "headline", "run_dir"], data=rows)})
    run.finish()


if __name__ == "__main__":
    main()
