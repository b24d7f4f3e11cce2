"""Where the time of a training epoch goes, per config (CPU).

1. One epoch of `train.py --config C --trainer.max_epochs 1` (no sanity check) under Lightning's SimpleProfiler, in
   seconds: data (fetching the training batches), forward (`training_step`), backward, the optimiser and the rest
   of each step, validation (its batches and steps) and callbacks (every callback hook of the fit, checkpoint
   writing and the fit's start and end included, so the columns need not add up to the epoch).
2. One training step of that model on one of its own training batches, split with module hooks into log-mel,
   filterbank, its batch norm and encoder + head + loss, forward + backward each (median of `--repeats`).

    python bench/epoch_profile.py                                  # mel_vad, gabor_vad, gabor_vad_paper
    python bench/epoch_profile.py --configs mel_birdcall gabor_birdcall_paper --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
PARTS = ("log-mel", "filterbank", "batch norm", "encoder + head + loss")


def profile_epoch(config: str, threads: int | None, extra: list[str]) -> tuple[dict[str, float], Path]:
    """Seconds per part of one epoch of `config` (SimpleProfiler totals) and the run folder it wrote."""
    with tempfile.TemporaryDirectory() as folder:
        cmd = [sys.executable, str(REPO / "train.py"), "--config", config, "--trainer.max_epochs", "1",
               "--trainer.limit_test_batches", "1",  # the test after fit is not profiled
               "--trainer.num_sanity_val_steps", "0",  # runs outside the epoch: its validation would be counted
               "--trainer.enable_progress_bar", "false", "--wandb_group", "epoch-profile",
               "--trainer.profiler", "pytorch_lightning.profilers.SimpleProfiler",
               "--trainer.profiler.init_args.dirpath", folder, "--trainer.profiler.init_args.filename", "profile",
               *extra]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{config} failed ({' '.join(cmd)})")
        totals = profiler_totals(Path(folder) / "fit-profile.txt")
    run_dir = REPO / json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())["run_dir"]
    step = totals["[LightningModule]AudioClassifier.optimizer_step"]  # wraps the forward and backward closure
    forward = totals["[Strategy]SingleDeviceStrategy.training_step"]
    backward = totals["[Strategy]SingleDeviceStrategy.backward"]
    return {
        "epoch": totals["run_training_epoch"],
        "data": totals["[_TrainingEpochLoop].train_dataloader_next"],
        "forward": forward,
        "backward": backward,
        "optimizer + rest of step": step - forward - backward,
        "validation": totals.get("[Strategy]SingleDeviceStrategy.validation_step", 0.0)
        + totals.get("[_EvaluationLoop].val_next", 0.0),
        "callbacks": sum(v for k, v in totals.items() if k.startswith("[Callback]")),
    }, run_dir


def profiler_totals(path: Path) -> dict[str, float]:
    """Action -> total seconds from a SimpleProfiler report (rows `| action | mean | calls | total | percent |`)."""
    totals = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2].isdigit():
            totals[cells[0]] = float(cells[3])
    return totals


def training_batch(run_dir: Path) -> dict:
    """The first training batch of the run's own datamodule (rebuilt from its config.yaml)."""
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    datamodule = getattr(importlib.import_module(module), name)(**data.get("init_args", {}))
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def step_split_s(model, batch: dict, repeats: int) -> dict[str, float]:
    """Forward + backward seconds of each part of one training step, from hooks: a module's forward is the span
    between its forward pre-hook and hook; its backward ends when the gradient of its input is ready (a tensor
    hook on the previous part's output), the filterbank's (the log-mel needs none) when `backward()` returns.
    A frozen filterbank's output needs no gradient: its backward is 0 and the batch norm's ends with `backward()`."""
    frontend = model.frontend
    if not all(hasattr(frontend, name) for name in ("logmel", "filterbank", "norm")):
        raise SystemExit(f"{type(frontend).__name__}: the step split needs a log-mel, filterbank and norm frontend")
    modules = {"log-mel": frontend.logmel, "filterbank": frontend.filterbank, "batch norm": frontend.norm}
    marks: dict[str, float] = {}

    def mark(name):
        marks[name] = time.perf_counter()

    def forward_done(part):
        def hook(module, args, out):  # returns None: the output stays as it is
            mark(f"{part} fwd end")
            if out.requires_grad:
                out.register_hook(lambda grad: mark(f"{part} output grad"))
        return hook

    handles = []
    for part, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda m, args, part=part: mark(f"{part} fwd start")))
        handles.append(module.register_forward_hook(forward_done(part)))
    runs = []
    try:
        for _ in range(repeats + 1):
            marks.clear()
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss = model.training_step(batch, 0)
            forward_end = time.perf_counter()
            loss.backward()
            end = time.perf_counter()
            fwd = {part: marks[f"{part} fwd end"] - marks[f"{part} fwd start"] for part in modules}
            bank_grad = marks.get("filterbank output grad", end)
            norm_grad = marks.get("batch norm output grad", bank_grad)
            runs.append({
                "log-mel": fwd["log-mel"],
                "filterbank": fwd["filterbank"] + end - bank_grad,
                "batch norm": fwd["batch norm"] + bank_grad - norm_grad,
                "encoder + head + loss": (forward_end - start - sum(fwd.values())) + norm_grad - forward_end,
                "total": end - start,
            })
    finally:
        for handle in handles:
            handle.remove()
    return {key: statistics.median(run[key] for run in runs[1:]) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["mel_vad", "gabor_vad", "gabor_vad_paper"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps for the split (median, >= 1)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides passed to every run")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from earlens.lightning_modules.cli import load_run

    epochs, splits = {}, {}
    for config in args.configs:
        epochs[config], run_dir = profile_epoch(config, args.threads, args.extra)
        model, _ = load_run(run_dir, "last")
        model.train()
        splits[config] = step_split_s(model, training_batch(run_dir), args.repeats)
        print(f"{config}: epoch {epochs[config]['epoch']:.1f} s, step {splits[config]['total']:.2f} s", flush=True)
    threads = args.threads or torch.get_num_threads()
    print(f"\nOne epoch, s ({threads} threads; `train.py --config C --trainer.max_epochs 1`, SimpleProfiler):\n")
    columns = list(next(iter(epochs.values())))
    base = next(iter(epochs))
    print("| config | " + " | ".join(columns) + f" | epoch vs {base} |")
    print("|---" * (len(columns) + 2) + "|")
    for config, parts in epochs.items():
        print(f"| {config} | " + " | ".join(f"{parts[c]:.1f}" for c in columns)
              + f" | {parts['epoch'] / epochs[base]['epoch']:.2f}x |")
    print(f"\nOne training step (forward + backward), s, median of {args.repeats}:\n")
    print("| config | " + " | ".join(PARTS) + " | total |")
    print("|---" * (len(PARTS) + 2) + "|")
    for config, split in splits.items():
        print(f"| {config} | " + " | ".join(f"{split[p]:.3f}" for p in (*PARTS, "total")) + " |")


if __name__ == "__main__":
    main()
