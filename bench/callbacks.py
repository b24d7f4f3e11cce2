"""Overhead of the interpretability callbacks at their `gabor_speaker_interp` defaults, as % of a training epoch.

`python bench/callbacks.py [--config gabor_speaker_interp] [--epochs 2] [--limit_train_batches 1.0]`

Two fits of the same seeded model on the same data: without callbacks, and with all of the config's callbacks
(and an offline W&B logger, so plots are drawn as in training). An epoch is timed from the start of training to the
end of its validation (train + validation). Each callback's own time is the wall time spent inside its hooks,
measured in the second fit; the last epoch is the steady state, the first adds one-time costs (note rendering if not
cached, k-means fit). The total is also checked as the difference of epoch times between the two fits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from functools import wraps
from pathlib import Path

# This script's own name would shadow the `callbacks` package: import from the repository root instead.
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [str(BENCH_DIR.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR)]

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.loggers import WandbLogger  # noqa: E402

from earlens.callbacks import FilterStatsCallback, HelicalityCallback, ZipfCallback  # noqa: E402
from earlens.lightning_modules.classifier import AudioClassifier  # noqa: E402
from earlens.lightning_modules.cli import expand_config_args  # noqa: E402
from train import RunPlan, TrainCLI  # noqa: E402

INTERP_CALLBACKS = (FilterStatsCallback, HelicalityCallback, ZipfCallback)
HOOKS = ("setup", "on_validation_epoch_start", "on_validation_batch_end", "on_validation_epoch_end")


class EpochTimer(pl.Callback):
    """Wall time from each training epoch's start to the end of its validation; listed last so it sees the others."""

    def __init__(self):
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._started)


def time_hooks(callback: pl.Callback, seconds: dict[int, float], trainer_epoch) -> None:
    """Wrap the callback's hooks so their wall time accumulates into `seconds[epoch]`."""
    for name in HOOKS:
        hook = getattr(callback, name)

        @wraps(hook)
        def timed(*args, _hook=hook, **kwargs):
            started = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                seconds[trainer_epoch()] += time.perf_counter() - started

        setattr(callback, name, timed)


def build(config: str, log_dir: str) -> tuple[TrainCLI, list[pl.Callback]]:
    """The config's seeded model, datamodule and interpretability callbacks (fresh instances), as `train.py` builds
    them."""
    argv, name = expand_config_args(["--config", config])  # a composed config gives one --config per part
    cli = TrainCLI(RunPlan(argv, name, Path(log_dir)), model_class=AudioClassifier,
                   datamodule_class=pl.LightningDataModule, subclass_mode_data=True, run=False,
                   parser_kwargs={"default_env": False}, args=[*argv, "--trainer.logger", "false"],
                   save_config_callback=None)
    return cli, [c for c in cli.trainer.callbacks if isinstance(c, INTERP_CALLBACKS)]


def fit(config: str, epochs: int, limit_train_batches: float, with_callbacks: bool, log_dir: str):
    cli, interp = build(config, log_dir)
    if with_callbacks and not interp:
        raise ValueError(f"config {config!r} has no interpretability callbacks")
    timer, trainer = EpochTimer(), None
    hook_seconds = {type(c).__name__: defaultdict(float) for c in interp}
    callbacks = interp if with_callbacks else []
    for callback in callbacks:
        time_hooks(callback, hook_seconds[type(callback).__name__], lambda: trainer.current_epoch)
    logger = WandbLogger(save_dir=log_dir, project="bench-callbacks", offline=True) if with_callbacks else False
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger, default_root_dir=log_dir,
                         callbacks=[*callbacks, timer], limit_train_batches=limit_train_batches,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(cli.model, datamodule=cli.datamodule)
    if logger:
        logger.experiment.finish()
    return timer.seconds, {name: [by_epoch[e] for e in range(epochs)] for name, by_epoch in hook_seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="gabor_speaker_interp")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit_train_batches", type=float, default=1.0, help="fraction (≤1) or number of batches")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    limit = int(args.limit_train_batches) if args.limit_train_batches > 1 else args.limit_train_batches
    with tempfile.TemporaryDirectory() as log_dir:
        base, _ = fit(args.config, args.epochs, limit, with_callbacks=False, log_dir=log_dir)
        full, per_callback = fit(args.config, args.epochs, limit, with_callbacks=True, log_dir=log_dir)

    last = args.epochs - 1
    print(f"\nconfig {args.config}, {args.epochs} epochs (limit_train_batches={args.limit_train_batches}), "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"epoch time without callbacks: first {base[0]:.1f} s, last {base[last]:.1f} s; "
          f"with all: first {full[0]:.1f} s, last {full[last]:.1f} s")
    print("\n| callback | first epoch (s) | last epoch (s) | last epoch, % of epoch without callbacks |")
    print("|---|---|---|---|")
    for name, seconds in per_callback.items():
        print(f"| {name} | {seconds[0]:.2f} | {seconds[last]:.2f} | {100 * seconds[last] / base[last]:.1f} % |")
    total = [sum(s[e] for s in per_callback.values()) for e in (0, last)]
    print(f"| total (inside hooks) | {total[0]:.2f} | {total[1]:.2f} | {100 * total[1] / base[last]:.1f} % |")
    print(f"| total (epoch difference) | {full[0] - base[0]:.2f} | {full[last] - base[last]:.2f} | "
          f"{100 * (full[last] - base[last]) / base[last]:.1f} % |")


if __name__ == "__main__":
    main()
