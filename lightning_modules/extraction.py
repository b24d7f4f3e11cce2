"""Feature extraction as `Trainer.predict`: the frozen backbone on any number of devices and nodes.

Lightning's launchers (its own subprocess launcher, torchrun, SLURM) start the ranks; each rank predicts a share of
the cache entry's missing shards (`earlens.probing.features.ExtractionPlan`) and `ShardWriter` writes them into the same
cache `extract_features` uses (atomic files, checksums), so a killed job resumes at the shards still missing and one
device or eight give the same entry. After a barrier, rank 0 assembles the array, which every rank then maps.
Precision is the Trainer's: `bf16-mixed`/`16-mixed` autocast (GPU) is part of the cache key.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from earlens.models.base import Backbone
from earlens.probing.features import ExtractionPlan, assemble, encode_span, write_shard

CACHE_PRECISION = {"32-true": "float32", "32": "float32", "bf16-mixed": "bfloat16", "16-mixed": "float16"}


def cache_precision(trainer: pl.Trainer) -> str:
    """The cache key's precision for the Trainer's `precision` (true half precision is refused: features would be
    computed in a dtype the backbone was never checked in)."""
    name = str(trainer.precision)
    if name not in CACHE_PRECISION:
        raise ValueError(f"--trainer.precision {name} is not supported for extraction; use one of "
                         f"{sorted(CACHE_PRECISION)}")
    return CACHE_PRECISION[name]


class FeatureExtractor(pl.LightningModule):
    """The frozen backbone as a LightningModule: one predict step encodes one shard `(start, stop)` of clips."""

    def __init__(self, backbone: Backbone, plan: ExtractionPlan):
        super().__init__()
        self.backbone, self.plan = backbone, plan
        self.frozen = backbone.module  # registered, so Lightning moves it to the rank's device
        self.frozen.eval().requires_grad_(False)

    def predict_step(self, span: torch.Tensor, batch_idx: int):
        start, stop = (int(v) for v in span[0])
        return start, stop, *encode_span(self.backbone, self.plan, start, stop)


class ShardWriter(BasePredictionWriter):
    """Writes each predicted shard into the cache entry as soon as it exists (nothing held in memory)."""

    def __init__(self, plan: ExtractionPlan):
        super().__init__(write_interval="batch")
        self.plan = plan

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        write_shard(self.plan, *prediction)


def extract_on_trainer(trainer: pl.Trainer, backbone: Backbone, plan: ExtractionPlan) -> np.memmap:
    """Fill `plan`'s missing shards with `trainer.predict` (every rank a share), assemble on rank 0, and return the
    cached array (a memory map) on every rank."""
    if plan.missing:
        writer = ShardWriter(plan)
        trainer.callbacks.append(writer)
        spans = torch.tensor(plan.missing, dtype=torch.long)
        trainer.predict(FeatureExtractor(backbone, plan), DataLoader(spans, batch_size=1),
                        return_predictions=False)
        trainer.callbacks.remove(writer)
    if trainer.world_size == 1:
        return assemble(plan)
    trainer.strategy.barrier("features-written")
    if trainer.is_global_zero:
        assemble(plan)
    trainer.strategy.barrier("features-assembled")
    return np.load(plan.folder / "features.npy", mmap_mode="r")
