"""Train a frontend on a task: `python train.py --config gabor_vad [--trainer.* ...] [--ckpt_path last]`.

Fits, tests the best checkpoint, writes `summary.json` into the run folder and prints its path last.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from lightning_modules.classifier import AudioClassifier
from lightning_modules.cli import ensure_wandb_mode, expand_config_args, run_dir_for, write_summary


def pick_run_dir(argv: list[str], config_name: str | None) -> Path:
    """`--run_dir` if given; for `--ckpt_path last` the newest run of this config; else a fresh folder.

    The launching process exports its choice in `EARLENS_RUN_DIR`, and the DDP ranks Lightning re-launches
    (they have `LOCAL_RANK` set) take it from there, so all ranks agree on one folder.
    """
    explicit = _flag_value(argv, "--run_dir")
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("LOCAL_RANK") and os.environ.get("EARLENS_RUN_DIR"):
        return Path(os.environ["EARLENS_RUN_DIR"])
    if _flag_value(argv, "--ckpt_path") == "last":
        runs = sorted(Path("runs", config_name or "adhoc").glob("*/checkpoints/last.ckpt"),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"--ckpt_path last: no runs/{config_name}/*/checkpoints/last.ckpt to resume")
        return runs[-1].parent.parent.resolve()
    return run_dir_for(config_name).resolve()


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


class TrainCLI(LightningCLI):
    def __init__(self, run_dir: Path, config_name: str | None, **kwargs):
        self.run_dir, self.config_name = run_dir, config_name
        super().__init__(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="checkpoint to resume; 'last' resumes")
        parser.add_argument("--run_dir", type=str | None, default=None, help="run folder (runs/<config>/<time>)")
        parser.add_argument("--wandb_project", type=str, default="earlens")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.dirpath": str(self.run_dir / "checkpoints"), "checkpoint.save_last": True,
                             "checkpoint.monitor": "val/acc_macro", "checkpoint.mode": "max",
                             "checkpoint.filename": "best-{epoch:03d}"})
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.task", "model.task", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        if self._get(self.config, "trainer.logger") in (None, True):
            ensure_wandb_mode()
            project = self._get(self.config, "wandb_project")
            kwargs["logger"] = [
                WandbLogger(project=project, name=f"{self.config_name}/{self.run_dir.name}", save_dir=self.run_dir,
                            config=self.config.as_dict()),
                CSVLogger(save_dir=self.run_dir, name="csv"),  # csv/version_N: one per attempt (resume)
            ]
        return super().instantiate_trainer(**kwargs)


def main(argv: list[str] | None = None) -> Path:
    argv, config_name = expand_config_args(list(sys.argv[1:] if argv is None else argv))
    run_dir = pick_run_dir(argv, config_name)
    os.environ["EARLENS_RUN_DIR"] = str(run_dir)
    started = time.time()
    cli = TrainCLI(run_dir, config_name, model_class=AudioClassifier, datamodule_class=pl.LightningDataModule,
                   subclass_mode_data=True, run=False, args=argv,
                   trainer_defaults={"default_root_dir": str(run_dir)},
                   save_config_kwargs={"overwrite": True}, parser_kwargs={"default_env": False})
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    ckpt_path = cli.config.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(run_dir / "checkpoints" / "last.ckpt")
    fit_started = time.time()
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    fit_seconds = time.time() - fit_started
    best = trainer.checkpoint_callback.best_model_path or None
    test_metrics = trainer.test(model, datamodule=data, ckpt_path=best or "last", verbose=False)
    if not trainer.is_global_zero:
        return run_dir
    best_epoch = torch.load(best, map_location="cpu", weights_only=False)["epoch"] if best else None
    n_params = sum(p.numel() for p in model.parameters())
    summary = write_summary(
        run_dir,
        config=config_name,
        test_metrics={k: float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()},
        best_epoch=best_epoch,
        best_checkpoint=best,
        monitor=trainer.checkpoint_callback.monitor,
        best_score=float(trainer.checkpoint_callback.best_model_score)
        if trainer.checkpoint_callback.best_model_score is not None else None,
        epochs_run=trainer.current_epoch,
        wall_time_s=round(time.time() - started, 2),
        fit_time_s=round(fit_seconds, 2),
        train_samples_per_s=round(model.samples_seen * trainer.world_size / max(fit_seconds, 1e-9), 1),
        params={"total": n_params, "frontend": sum(p.numel() for p in model.frontend.parameters())},
        world_size=trainer.world_size,
        data_root=str(getattr(data, "root", None)),
        skipped_files={"count": len(getattr(data, "skipped", [])),
                       "files": [list(map(str, s)) for s in getattr(data, "skipped", [])]},
        run_dir=str(run_dir),
    )
    if wandb.run is not None:  # close W&B first so its exit messages do not follow the summary path
        wandb.finish()
    print(summary)
    return run_dir


if __name__ == "__main__":
    main()
