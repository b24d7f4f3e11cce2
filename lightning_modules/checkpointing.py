"""Checkpoints that survive a kill and resume bit-identically.

`AtomicCheckpointIO` writes every checkpoint to a temporary file in its destination folder, fsyncs it and renames
it over the old one, so `last.ckpt` is always a complete checkpoint (the old one or the new one), whatever
filesystem the temp dir is on. `RNGStateCallback` stores every random generator in the checkpoint and puts them
back when training restarts, so an interrupted-and-resumed run draws the same numbers as an uninterrupted one.
`FreshLastCheckpoint` rewrites `last.ckpt` at the end of every epoch and of fit, whatever the monitored metric did.
`read_checkpoint` turns unreadable files into one clear line. `current_class_path` and `migrated_config` read the
class paths of runs written when the frontends lived in `earlens.frontends` (now `earlens.frontend.frontends`).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn

TEMPORARY_MARK = ".tmp-"
# module named by stored checkpoints and run configs -> the module that holds those classes in this layout
MOVED_MODULES = {"earlens.frontends": "earlens.frontend.frontends"}


def current_class_path(class_path: str) -> str:
    """`class_path` (module.Class) as importable in this layout."""
    module, _, name = class_path.rpartition(".")
    return f"{MOVED_MODULES.get(module, module)}.{name}"


def migrated_config(path: Path) -> Path:
    """A run's `config.yaml`, or beside it `config.migrated.yaml` with every moved module's class paths rewritten
    when it names one (the run's own config.yaml is never rewritten)."""
    text = path.read_text()
    migrated = text
    for old, new in MOVED_MODULES.items():
        migrated = re.sub(rf"\b{re.escape(old)}\.(?=\w+\s*$)", f"{new}.", migrated, flags=re.MULTILINE)
    if migrated == text:
        return path
    target = path.with_name("config.migrated.yaml")
    target.write_text(migrated)
    return target


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """`torch.load` of one of our checkpoints, with a one-line error for missing, empty or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint (a save was interrupted?)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120]})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: a PyTorch file but not a Lightning checkpoint (no state_dict)")
    return checkpoint


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary checkpoint files a killed save left behind; returns what was removed."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TEMPORARY_MARK}*")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose saves are all-or-nothing: temp file beside the target, fsync, `os.replace`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself reaches the disk
        finally:
            os.close(directory)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path, map_location or "cpu")


class RNGStateCallback(pl.Callback):
    """Saves the torch, CUDA, numpy and Python generators in each checkpoint and restores them at `on_train_start`.

    Restoring at train start (after any sanity-check validation) gives the next training epoch exactly the generator
    state it had in the uninterrupted run, provided nothing between the save and the next batch draws from the global
    generators: the datamodules' loaders take their worker seeds from a private `generator` (else every new
    dataloader iterator would draw from torch's), and data order and crops come from `(seed, epoch)`.
    """

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        """Plain tensors, lists and numbers only, so checkpoints still load with `weights_only=True`."""
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        kind, keys, position, has_gauss, gauss = states["numpy"]
        states["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), int(position), int(has_gauss), float(gauss)]
        return {"rng": states}

    def load_state_dict(self, state_dict: dict) -> None:
        states = dict(state_dict.get("rng") or {}) or None
        if states is not None:
            kind, keys, position, has_gauss, gauss = states["numpy"]
            states["numpy"] = (kind, keys.numpy().astype("uint32"), position, has_gauss, gauss)
        self._pending = states

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None


class FreshLastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose `last.ckpt` is the model of the last finished epoch (and, at the end, of fit).

    Lightning 2.6 rewrites `last.ckpt` only when a top-k checkpoint is saved at the same step, so after epochs
    without improvement it is stale: a resume repeats finished epochs and `predict.py --checkpoint last` runs an
    old model. Here it is saved at every point where Lightning would consider saving, improvement or not.
    """

    def _save_last_if_stale(self, trainer: pl.Trainer) -> None:
        if (self.save_last and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
                and not trainer.fast_dev_run and self._last_global_step_saved != trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_stale(trainer)  # fit stopped between epochs (max_steps, early stopping)
