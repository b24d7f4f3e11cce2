"""Linear probes of every layer trained from the feature cache in mini-batches: features larger than memory, DDP.

`probe.py --probes.linear.protocol streaming` uses it. The cached array `(N, L, D)` stays on disk: training reads
shuffled rows through a DataLoader (Lightning shards them across ranks), the standardisation moments come from one
chunked pass and the evaluation from another; no step holds more than a mini-batch or a chunk, and rows are read
with positioned reads, so the file's pages never pile up in the process's resident memory (`bench/probe_memory.py`).
The objective is the fast protocol's (mean cross-entropy + weight_decay/2 · |W|², one model per layer × weight
decay), minimised by Adam instead of full-batch L-BFGS; every model keeps the weights of its lowest validation
loss and each layer the weight decay of its best validation accuracy, so both paths select alike (tested).
"""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from earlens.probing.probes import FAST_WEIGHT_DECAYS
from earlens.probing.probes_common import ProbeResult, ProbeSplit, classification_scores, select_on_validation

CHUNK_ROWS = 1024  # rows per read of the memory map in the moment and evaluation passes


class RowReader:
    """Rows of a feature array `(N, L, D)` as float32. From a memory-mapped `.npy` file it reads by positioned
    reads (`os.pread`) rather than through the map, so pages once read do not stay mapped into the process: its
    resident memory is the rows asked for, not the part of the file visited so far. Other arrays are indexed."""

    def __init__(self, features: np.ndarray):
        self.features, self.shape = features, features.shape
        mapped = isinstance(features, np.memmap) and features.filename is not None
        self.filename = features.filename if mapped else None
        self.offset, self.dtype = (features.offset, features.dtype) if mapped else (0, features.dtype)
        self.row_bytes = int(np.prod(features.shape[1:])) * features.dtype.itemsize
        self._file = None

    def __getstate__(self) -> dict:  # DataLoader workers and spawned ranks reopen the file themselves
        return {**self.__dict__, "_file": None}

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """`(len(rows), L, D)` float32; sorted `rows` are read as one span (contiguous on disk)."""
        rows = np.asarray(rows)
        if self.filename is None:
            return np.asarray(self.features[rows], dtype=np.float32)
        if self._file is None:
            self._file = os.open(self.filename, os.O_RDONLY)
        low, high = int(rows.min()), int(rows.max()) + 1
        if high - low <= 2 * len(rows):  # dense enough: one read of the span
            data = os.pread(self._file, (high - low) * self.row_bytes, self.offset + low * self.row_bytes)
            block = np.frombuffer(data, self.dtype).reshape(high - low, *self.shape[1:])[rows - low]
        else:
            block = np.stack([np.frombuffer(os.pread(self._file, self.row_bytes, self.offset + r * self.row_bytes),
                                            self.dtype).reshape(self.shape[1:]) for r in rows.tolist()])
        return block.astype(np.float32, copy=False)


class FeatureRows(Dataset):
    """Rows `indices` of a feature array with their class codes, for a DataLoader: one row per item."""

    def __init__(self, reader: RowReader, codes: np.ndarray, indices: np.ndarray):
        self.reader, self.codes, self.indices = reader, codes, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = self.indices[i]
        return torch.from_numpy(self.reader.rows(np.array([row]))[0].copy()), int(self.codes[row])


def _chunks(indices: np.ndarray):
    ordered = np.sort(indices)  # sorted reads: sequential on disk
    for start in range(0, len(ordered), CHUNK_ROWS):
        yield ordered[start:start + CHUNK_ROWS]


def training_moments(features: np.ndarray | RowReader, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer mean and standard deviation `(L, D)` over the training rows, in one chunked float64 pass;
    constant dimensions (and padding) get a deviation of 1."""
    reader = features if isinstance(features, RowReader) else RowReader(features)
    total = square = None
    for chunk in _chunks(indices):
        block = reader.rows(chunk).astype(np.float64)
        total = block.sum(0) if total is None else total + block.sum(0)
        square = (block ** 2).sum(0) if square is None else square + (block ** 2).sum(0)
    n = len(indices)
    mean = total / n
    std = np.sqrt(np.maximum(square / n - mean ** 2, 0.0) * n / max(n - 1, 1))
    std = np.where(std > 1e-6 * std.max(-1, keepdims=True), std, 1.0)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


class StreamingLinearProbes(pl.LightningModule):
    """One linear classifier per layer × weight decay, `W (L, K, C, D)`, on standardised features `(B, L, D)`."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, n_classes: int, weight_decays, lr: float = 1e-2,
                 patience: int = 10):
        super().__init__()
        self.patience, self._stale = patience, 0
        n_layers, dim = mean.shape
        decays = torch.as_tensor(np.asarray(weight_decays, dtype=np.float32))
        self.lr = lr
        self.weight = nn.Parameter(torch.zeros(n_layers, len(decays), n_classes, dim))
        self.bias = nn.Parameter(torch.zeros(n_layers, len(decays), n_classes))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("weight_decays", decays)
        self.register_buffer("best_weight", self.weight.detach().clone())
        self.register_buffer("best_bias", self.bias.detach().clone())
        self.register_buffer("best_val_loss", torch.full((n_layers, len(decays)), float("inf")))
        self.register_buffer("best_epoch", torch.zeros(n_layers, len(decays), dtype=torch.long))
        self._val_sum = self._val_count = None

    def logits(self, x: torch.Tensor, best: bool = False) -> torch.Tensor:
        """`(B, L, D)` → `(B, L, K, C)`."""
        weight, bias = (self.best_weight, self.best_bias) if best else (self.weight, self.bias)
        return torch.einsum("bld,lkcd->blkc", (x - self.mean) / self.std, weight) + bias

    def _losses(self, x: torch.Tensor, y: torch.Tensor, best: bool = False) -> torch.Tensor:
        """Cross-entropy of every model on every row, `(B, L, K)`."""
        out = self.logits(x, best)
        return F.cross_entropy(out.permute(0, 3, 1, 2), y[:, None, None].expand(-1, *out.shape[1:3]),
                               reduction="none")

    def training_step(self, batch, batch_idx):
        x, y = batch
        penalty = 0.5 * self.weight_decays[None] * self.weight.square().sum((2, 3))  # (L, K), biases unpenalised
        return (self._losses(x, y).mean(0) + penalty).sum()  # models share no parameter: each gets its own gradient

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros_like(self.best_val_loss)
        self._val_count = torch.zeros((), device=self.device)

    def validation_step(self, batch, batch_idx) -> None:
        x, y = batch
        self._val_sum += self._losses(x, y).sum(0)
        self._val_count += len(y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        reduce = self.trainer.strategy.reduce
        val_loss = reduce(self._val_sum, reduce_op="sum") / reduce(self._val_count, reduce_op="sum")
        better = val_loss < self.best_val_loss - 1e-6
        self.best_val_loss = torch.where(better, val_loss, self.best_val_loss)
        self.best_epoch = torch.where(better, self.current_epoch, self.best_epoch)
        self.best_weight = torch.where(better[..., None, None], self.weight.detach(), self.best_weight)
        self.best_bias = torch.where(better[..., None], self.bias.detach(), self.best_bias)
        self._stale = 0 if bool(better.any()) else self._stale + 1  # the same on every rank (reduced losses)
        if self._stale >= self.patience:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


@torch.no_grad()
def _evaluate(module: StreamingLinearProbes, reader: RowReader, codes: np.ndarray, split: ProbeSplit,
              n_classes: int) -> dict[str, np.ndarray]:
    """Train/val/test loss, accuracy and macro-F1 `(L, K)` of the kept weights, in chunked passes."""
    module = module.cpu().eval()
    metrics = {}
    for name, indices in zip(("train", "val", "test"), (split.train, split.val, split.test)):
        losses, predicted, truth = [], [], []
        for chunk in _chunks(indices):
            x = torch.from_numpy(reader.rows(chunk).copy())
            y = torch.as_tensor(codes[chunk])
            losses.append(module._losses(x, y, best=True).sum(0))
            predicted.append(module.logits(x, best=True).argmax(-1))  # (n, L, K)
            truth.append(y)
        predicted, truth = torch.cat(predicted), torch.cat(truth)
        lead = predicted.shape[1:]
        metrics[f"{name}_loss"] = (torch.stack(losses).sum(0) / len(truth)).numpy().astype(np.float64)
        accuracy, macro_f1 = classification_scores(predicted.reshape(len(truth), -1).T, truth, n_classes)
        metrics[f"{name}_accuracy"] = accuracy.view(lead).numpy()
        metrics[f"{name}_macro_f1"] = macro_f1.view(lead).numpy()
    return metrics


def fit_streaming_probes(features: np.ndarray, targets, split: ProbeSplit, *,
                         weight_decay=FAST_WEIGHT_DECAYS, max_epochs: int = 30, patience: int = 10,
                         batch_size: int = 256, lr: float = 1e-2, seed: int = 0, trainer_options: dict | None = None,
                         progress: bool = False) -> ProbeResult | None:
    """Probe every layer of `features (N, L, D)` (a memory map is never read whole) for class `targets`.

    Training stops once no model's validation loss has improved for `patience` epochs. `trainer_options` go to
    `pl.Trainer` (devices, strategy, num_nodes, accelerator). Returns the per-layer result of the validation choice
    on rank 0, None on the other ranks.
    """
    targets = np.asarray(targets)
    if targets.ndim != 1 or targets.dtype.kind == "f":
        raise ValueError("the streaming protocol probes class labels only; use --probes.linear.protocol fast "
                         "for regression targets")
    classes, codes = np.unique(targets, return_inverse=True)
    decays = np.atleast_1d(np.asarray(weight_decay, dtype=np.float64))
    reader = RowReader(features)
    mean, std = training_moments(reader, split.train)
    module = StreamingLinearProbes(mean, std, len(classes), decays, lr, patience)
    pl.seed_everything(seed, verbose=False)
    trainer = pl.Trainer(**{**(trainer_options or {}), "max_epochs": max_epochs, "logger": False,
                            "enable_checkpointing": False, "enable_progress_bar": progress,
                            "enable_model_summary": False, "num_sanity_val_steps": 0})
    loaders = [DataLoader(FeatureRows(reader, codes, part), batch_size=batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed))
               for part, shuffle in ((split.train, True), (split.val, False))]
    trainer.fit(module, *loaders)
    if not trainer.is_global_zero:
        return None
    metrics = _evaluate(module, reader, codes, split, len(classes))
    chosen = select_on_validation(metrics["val_accuracy"], metrics["val_loss"])  # (L,) on validation only
    layers = np.arange(len(chosen))
    return ProbeResult(
        "classification", "linear", {key: values[layers, chosen] for key, values in metrics.items()},
        module.best_epoch.cpu().numpy()[layers, chosen], split, classes, trainer.current_epoch,
        protocol="streaming",
        hyperparameters={"weight_decay": decays[chosen]},
        candidates={"configs": [{"weight_decay": float(w)} for w in decays], "val_score": metrics["val_accuracy"],
                    "val_loss": metrics["val_loss"], "test_score": metrics["test_accuracy"]})
