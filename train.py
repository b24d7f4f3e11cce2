"""Train a frontend on a task: `python train.py --config gabor_vad [--trainer.* ...]`.

Fits, tests the best checkpoint, writes `summary.json` into the run folder and prints its path last.
Resume an interrupted run with `--resume runs/<config>/<stamp>` (or `--config NAME --ckpt_path last` for the newest
run of NAME): it is rebuilt from that run's own `config.yaml`, which is never rewritten.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import wandb
import yaml
from jsonargparse import ArgumentError
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from earlens.io.audio import AudioError
from earlens.lightning_modules.checkpointing import (
    AtomicCheckpointIO,
    CheckpointError,
    FreshLastCheckpoint,
    RNGStateCallback,
    migrated_config,
    read_checkpoint,
    remove_stale_temporaries,
)
from earlens.lightning_modules.classifier import AudioClassifier, check_hyperparameters
from earlens.lightning_modules.cli import (
    UsageError,
    claim_run_dir,
    close_dead_attempt,
    expand_config_args,
    is_launcher,
    parse_error_line,
    pop_verbose,
    quiet_startup,
    read_attempts,
    record_attempt,
    remove_failed_run_dir,
    short_help,
    start_wandb_run,
    write_summary,
)

USER_ERRORS = (FileNotFoundError, AudioError, UsageError, CheckpointError)


@dataclass
class RunPlan:
    """What this invocation does: the CLI arguments, its run folder, and the checkpoint it resumes (if any)."""

    argv: list[str]
    config_name: str | None
    run_dir: Path
    resume_from: Path | None = None
    created: Path | None = None  # the top-most folder this invocation made (removed again if the start fails)
    resuming: bool = False  # continuing this folder's own run from its last.ckpt
    subclass_model: bool = False  # the config names its LightningModule (`model: {class_path: ...}`)


def _pop_flag(argv: list[str], flag: str) -> tuple[list[str], str | None]:
    """Remove `flag VALUE` / `flag=VALUE` from argv; return the rest and the (last) value."""
    rest, value, args = [], None, iter(argv)
    for arg in args:
        if arg == flag:
            value = next(args, None)
            if value is None:
                raise UsageError(f"{flag} needs a value")
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, value


def _newest_run(config_name: str | None) -> Path:
    runs = sorted(Path("runs", config_name or "adhoc").glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UsageError(f"--ckpt_path last: no runs/{config_name}/*/checkpoints/last.ckpt to resume")
    return runs[-1].parent.parent.resolve()


def names_model_class(argv: list[str]) -> bool:
    """Whether the configs or options name the LightningModule (`model.class_path`); otherwise it is
    `AudioClassifier`, whose configs give its arguments directly."""
    if any(arg.startswith(("--model.class_path", "--model=")) for arg in argv):
        return True
    paths = [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    return any("class_path" in ((yaml.safe_load(path.read_text()) or {}).get("model") or {}) for path in paths)


def plan_run(argv: list[str]) -> RunPlan:
    """Resolve `--resume`, `--ckpt_path last`, `--run_dir` and `--config` into one `RunPlan`.

    DDP ranks that Lightning re-launches (`LOCAL_RANK` set) take the folder the launching process chose from
    `EARLENS_RUN_DIR`, so all ranks agree on it and none creates another.
    """
    argv, resume = _pop_flag(argv, "--resume")
    argv, ckpt_path = _pop_flag(argv, "--ckpt_path")
    argv, run_dir = _pop_flag(argv, "--run_dir")
    argv, config_name = expand_config_args(argv)
    config_paths = [Path(argv[i + 1]) for i, arg in enumerate(argv) if arg == "--config"]
    if ckpt_path == "last":
        in_run = [p.parent for p in config_paths if (p.parent / "checkpoints").is_dir()]
        resume = resume or str(in_run[0] if in_run else _newest_run(config_name))
    inherited = os.environ.get("EARLENS_RUN_DIR") if os.environ.get("LOCAL_RANK") else None
    if resume:
        folder = Path(resume).resolve()
        config = folder / "config.yaml"
        if not config.is_file():
            raise UsageError(f"--resume {resume}: no config.yaml there (not a train.py run folder)")
        checkpoint = folder / "checkpoints" / "last.ckpt"
        remove_stale_temporaries(checkpoint.parent)
        read_checkpoint(checkpoint)  # a clear error now, not after the data are decoded
        others = [a for i, a in enumerate(argv) if a != "--config" and (i == 0 or argv[i - 1] != "--config")]
        name = next((a.get("config") for a in read_attempts(folder) if a.get("config")), folder.parent.name)
        return RunPlan(["--config", str(migrated_config(config)), *others], name, folder, resume_from=checkpoint,
                       resuming=True)
    if ckpt_path is not None:
        read_checkpoint(ckpt_path)
    if inherited:
        return RunPlan(argv, config_name, Path(inherited), Path(ckpt_path) if ckpt_path else None)
    if run_dir and (Path(run_dir) / "checkpoints").is_dir():
        raise UsageError(f"--run_dir {run_dir} already holds a run; resume it with --resume {run_dir}")
    folder, created = claim_run_dir(run_dir, config_name)
    return RunPlan(argv, config_name, folder, Path(ckpt_path) if ckpt_path else None, created=created)


class RunConfigCallback(SaveConfigCallback):
    """Writes `config.yaml` into the run folder whatever loggers the run has (Lightning's callback writes it into the
    first logger's folder, which is `csv/version_N/` when W&B is off)."""

    def __init__(self, parser, config, run_dir: Path):
        super().__init__(parser, config, save_to_log_dir=False)
        self.run_dir = run_dir

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():  # skip_none=False keeps None values, which a resume needs back
            warnings.filterwarnings("ignore", message=".*skip_none parameter was deprecated")
            self.parser.save(self.config, str(self.run_dir / "config.yaml"), skip_none=False, overwrite=True)


class TrainCLI(LightningCLI):
    def __init__(self, plan: RunPlan, **kwargs):
        self.plan = plan
        super().__init__(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        if self.plan.subclass_model:
            self._add_common_arguments(parser, monitor="val/loss", mode="min")
            return
        self._add_common_arguments(parser, monitor="val/acc_macro", mode="max")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.task", "model.task", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def _add_common_arguments(self, parser, monitor: str, mode: str) -> None:
        parser.add_argument("--wandb_project", type=str, default="earlens")
        parser.add_argument("--wandb_group", type=str | None, default=None,
                            help="W&B group of runs that belong together (default: the config name)")
        parser.add_lightning_class_args(FreshLastCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.dirpath": str(self.plan.run_dir / "checkpoints"), "checkpoint.save_last": True,
                             "checkpoint.monitor": monitor, "checkpoint.mode": mode,
                             "checkpoint.filename": "best-{epoch:03d}"})

    def before_instantiate_classes(self) -> None:
        """Options that would waste a run are refused before any data is decoded."""
        trainer = self.config["trainer"]
        max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
        if max_epochs == 0 or max_steps == 0:
            raise UsageError("--trainer.max_epochs / --trainer.max_steps 0 would train nothing")
        if (max_epochs is not None and max_epochs < -1) or (max_steps is not None and max_steps < -1):
            raise UsageError(f"--trainer.max_epochs {max_epochs} / --trainer.max_steps {max_steps}: use -1 or >= 1")
        if max_epochs == -1 and (max_steps is None or max_steps == -1):
            raise UsageError("--trainer.max_epochs -1 trains forever; give --trainer.max_steps N (the learning-rate "
                             "schedule needs an end)")
        if self.plan.subclass_model:
            return
        model = self.config["model"]
        check_hyperparameters(**{k: v for k, v in vars(model).items() if k != "frontend"})
        frontend = model["frontend"]  # built once here: a bad frontend option fails before decoding
        module, name = frontend.class_path.rsplit(".", 1)
        getattr(importlib.import_module(module), name)(**vars(frontend.init_args))
        data_rate = (self.config["data"].get("init_args") or {}).get("sample_rate")
        model_rate = frontend.init_args.get("sample_rate")
        if None not in (data_rate, model_rate) and data_rate != model_rate:
            raise UsageError(f"--data.init_args.sample_rate {data_rate} != --model.frontend.init_args.sample_rate "
                             f"{model_rate}: set both to the same rate")

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        plan = self.plan
        if self._get(self.config, "trainer.logger") in (None, True) and is_launcher():
            run = start_wandb_run(project=self._get(self.config, "wandb_project"), dir=str(plan.run_dir),
                                  name=f"{plan.config_name}/{plan.run_dir.name}", config=self.config.as_dict(),
                                  group=self._get(self.config, "wandb_group") or plan.config_name, job_type="train",
                                  resume="allow", id=_wandb_id(plan.run_dir))
            kwargs["logger"] = [CSVLogger(save_dir=plan.run_dir, name="csv")]  # csv/version_N: one per attempt
            if run is not None:  # None: W&B could not start (one warning said why); the CSV log goes on
                kwargs["logger"].insert(0, WandbLogger(experiment=run, save_dir=str(plan.run_dir)))
        elif self._get(self.config, "trainer.logger") in (None, True):
            kwargs["logger"] = [WandbLogger(save_dir=str(plan.run_dir)), CSVLogger(save_dir=plan.run_dir, name="csv")]
        kwargs["plugins"] = [*(self._get(self.config_init, "trainer.plugins") or []), AtomicCheckpointIO()]
        kwargs["callbacks"] = [*(self._get(self.config_init, "trainer.callbacks") or []), RNGStateCallback()]
        if self._get(self.config_init, "trainer.enable_progress_bar") is not False and not any(
                isinstance(callback, ProgressBar) for callback in kwargs["callbacks"]):
            kwargs["callbacks"].append(MonitoredProgressBar())
        return super().instantiate_trainer(**kwargs)


class MonitoredProgressBar(TQDMProgressBar):
    """The training bar with the monitored validation metric (the one that picks the best checkpoint), without
    Lightning's `v_num`."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        if monitor in trainer.callback_metrics:
            items[monitor] = f"{float(trainer.callback_metrics[monitor]):.3f}"
        return items


def _wandb_id(run_dir: Path) -> str:
    """One W&B run per run folder, so a resume continues it."""
    return f"{run_dir.parent.name}-{run_dir.name}".replace("/", "-")[:64]


HELP_OPTIONS = [
    ("--config NAME", "experiment to run (several --config compose, later ones win)"),
    ("--resume RUN_DIR", "continue an interrupted run from its own config.yaml and last.ckpt"),
    ("--ckpt_path last", "with --config NAME: resume the newest run of NAME"),
    ("--run_dir DIR", "run folder (default runs/<config>/<time>)"),
    ("--seed_everything N", "seed (also pass --data.init_args.seed N for the split and crops)"),
    ("--trainer.max_epochs N", "epochs (or --trainer.max_steps N)"),
    ("--trainer.devices N", "with --trainer.strategy ddp [--trainer.num_nodes M]: data-parallel training"),
    ("--trainer.precision P", "32-true, bf16-mixed or 16-mixed"),
    ("--data.init_args.root DIR", "data folder (default $EARLENS_DATA, then ../shared/data)"),
    ("--model.frontend.init_args.*", "frontend options, e.g. n_filters, kernel_size, kind (gabor|gabor_frozen|conv2d)"),
    ("--model.lr / --model.frontend_lr", "learning rates (the frontend's defaults to lr)"),
    ("--verbose", "Lightning's informational lines and known deprecation warnings too"),
    ("--help-all", "every option LightningCLI knows (long)"),
]


def main(argv: list[str] | None = None) -> Path:
    argv, verbose = pop_verbose(list(sys.argv[1:] if argv is None else argv))
    quiet_startup(verbose)
    if {"-h", "--help"} & set(argv):
        print(short_help("usage: python train.py --config NAME [--trainer.* ...] [--resume RUN_DIR]\n\n"
                         + __doc__.strip().splitlines()[0], HELP_OPTIONS,
                         prefixes=("gabor", "mel", "sample_cnn", "ssl")))
        return Path(".")
    argv = ["--help" if arg == "--help-all" else arg for arg in argv]
    plan = plan_run(argv)
    plan.subclass_model = names_model_class(plan.argv)
    attempts = close_dead_attempt(plan.run_dir) if is_launcher() else read_attempts(plan.run_dir)
    if plan.resuming and attempts and attempts[-1].get("status") == "finished":
        print(f"{plan.run_dir} is finished ({attempts[-1].get('epochs_run')} epochs): nothing to do; its summary is "
              f"{plan.run_dir / 'summary.json'}")
        return plan.run_dir
    os.environ["EARLENS_RUN_DIR"] = str(plan.run_dir)
    started = time.time()
    try:
        cli = TrainCLI(plan, model_class=pl.LightningModule if plan.subclass_model else AudioClassifier,
                       subclass_mode_model=plan.subclass_model, datamodule_class=pl.LightningDataModule,
                       subclass_mode_data=True, run=False, args=plan.argv,
                       trainer_defaults={"default_root_dir": str(plan.run_dir), "enable_model_summary": verbose},
                       save_config_callback=None if plan.resuming else RunConfigCallback,
                       save_config_kwargs={"run_dir": plan.run_dir},
                       parser_kwargs={"default_env": False, "exit_on_error": False})
    except BaseException as err:
        remove_failed_run_dir(plan.run_dir, plan.created)  # a failed start leaves no run folder
        if isinstance(err, ArgumentError):  # jsonargparse's report of a bad option, as one line
            raise UsageError(parse_error_line(str(err))) from None
        cause = _chain(err, ValueError)[-1:]  # the innermost: jsonargparse wraps a constructor's own error
        cause = cause[0] if cause else None
        if cause is not None and user_error(err) is None:  # a constructor refused an option: say which, in one line
            raise UsageError(str(cause).splitlines()[0]) from err
        raise
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    splits = getattr(data, "split_sizes", {})  # an AudioDataModule's; other datamodules have none
    if trainer.is_global_zero:
        record_attempt(plan.run_dir, config=plan.config_name, argv=plan.argv,
                       resumed_from=str(plan.resume_from) if plan.resume_from else None)
        if splits:
            print("items per split: " + ", ".join(f"{name} {n}" for name, n in splits.items()), flush=True)
    try:
        fit_started = time.time()
        trainer.fit(model, datamodule=data, ckpt_path=str(plan.resume_from) if plan.resume_from else None)
        fit_seconds = time.time() - fit_started
        best = trainer.checkpoint_callback.best_model_path or None
        test_metrics = trainer.test(model, datamodule=data, ckpt_path=best or "last", verbose=False)
    except BaseException as err:
        if trainer.is_global_zero:
            record_attempt(plan.run_dir, status="failed", error=f"{type(err).__name__}: {err}"[:500])
        raise
    if not trainer.is_global_zero:
        return plan.run_dir
    metrics = {k: float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()}
    attempts = record_attempt(plan.run_dir, status="finished", epochs_run=trainer.current_epoch)
    best_epoch = read_checkpoint(best)["epoch"] if best else None
    n_params = sum(p.numel() for p in model.parameters())
    summary = write_summary(
        plan.run_dir,
        config=plan.config_name,
        status="finished",
        test_metrics=metrics,
        best_epoch=best_epoch,
        best_checkpoint=best,
        monitor=trainer.checkpoint_callback.monitor,
        best_score=float(trainer.checkpoint_callback.best_model_score)
        if trainer.checkpoint_callback.best_model_score is not None else None,
        epochs_run=trainer.current_epoch,
        seed=cli.config.get("seed_everything"),
        wall_time_s=round(time.time() - started, 2),
        fit_time_s=round(fit_seconds, 2),
        train_samples_per_s=round(model.samples_seen * trainer.world_size / max(fit_seconds, 1e-9), 1),
        params={"total": n_params, "frontend": sum(p.numel() for p in model.frontend.parameters())
                if hasattr(model, "frontend") else None},
        world_size=trainer.world_size,
        data_root=str(getattr(data, "root", None)),
        splits=splits,
        skipped={"count": len(getattr(data, "skipped", [])),
                 "items": [list(map(str, s)) for s in getattr(data, "skipped", [])]},
        duplicates={"count": len(getattr(data, "duplicates", [])),
                    "items": [list(map(str, d)) for d in getattr(data, "duplicates", [])]},
        attempts=attempts,
        run_dir=str(plan.run_dir),
    )
    print_metrics(metrics)
    if wandb.run is not None:  # summary and CSV are on disk before W&B is finalised
        log_artifacts(wandb.run, plan, best)
        wandb.finish()
    print(summary)
    return plan.run_dir


def log_artifacts(run, plan: RunPlan, best: str | None) -> None:
    """The best checkpoint, `config.yaml` and `summary.json` as one W&B model artifact (kept offline, uploaded by
    `wandb sync`); a failure here is a warning, never a lost run."""
    try:
        artifact = wandb.Artifact(f"model-{_wandb_id(plan.run_dir)}", type="model",
                                  metadata={"config": plan.config_name, "run_dir": str(plan.run_dir)})
        for path in (best, plan.run_dir / "config.yaml", plan.run_dir / "summary.json"):
            if path and Path(path).is_file():
                artifact.add_file(str(path))
        run.log_artifact(artifact)
    except Exception as err:  # noqa: BLE001 - W&B must never cost the run
        warnings.warn(f"W&B artifact not logged ({type(err).__name__}: {err})", stacklevel=2)


def print_metrics(metrics: dict[str, float]) -> None:
    """The test metrics as a small table (the summary path follows on the last line)."""
    if metrics:
        width = max(map(len, metrics))
        print("\n".join(f"{name:<{width}}  {value:.4f}" for name, value in sorted(metrics.items())))


def _chain(error: BaseException | None, kinds) -> list[BaseException]:
    """The exceptions of `kinds` in `error`'s cause/context chain, outermost first."""
    found, seen = [], set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kinds):
            found.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return found


def user_error(error: BaseException) -> BaseException | None:
    """The bad-input error behind `error` (jsonargparse wraps what a constructor raises), if there is one."""
    found = _chain(error, USER_ERRORS)
    return found[0] if found else None


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        sys.exit(f"train.py: {cause}")
