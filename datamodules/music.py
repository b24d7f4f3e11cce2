"""Random music rendered on the fly (`earlens.models.ssl.MusicRenderer`) for self-supervised pretraining: unlabelled
clips, a new set every epoch, more hours than memory holds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from earlens.datamodules.base import EpochSampler
from earlens.models.ssl import MUSIC_KINDS, MusicRenderer
from earlens.stimuli.syntheory_concepts import SYNTHEORY_PROGRAMS

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2, "units": 3}  # disjoint seed streams per split


class RenderedMusicDataset(Dataset):
    """Item `(index, item_seed)` (from `EpochSampler`) → a clip rendered from `(seed, stream, item_seed)`; a fixed
    split (`fixed=True`: validation, test) renders from `(seed, stream, index)`, the same clips every epoch."""

    def __init__(self, renderer: MusicRenderer, n_clips: int, seed: int, stream: int, fixed: bool):
        self.renderer, self.n_clips, self.seed, self.stream, self.fixed = renderer, n_clips, seed, stream, fixed

    def __len__(self) -> int:
        return self.n_clips

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, item_seed = item
        wave = self.renderer([self.seed, self.stream, index if self.fixed else item_seed])
        return {"audio": torch.from_numpy(wave), "length": torch.tensor(len(wave))}


class RenderedMusicDataModule(pl.LightningDataModule):
    """Unlabelled batches `{"audio": (B, T), "length": (B,)}` of random notes, intervals, chords, scales and melodies
    (`kinds`) over `programs` (default SynTheory's 92 GM programs) and `pitch_range`, `clip_seconds` long.

    Training renders `train_clips` new clips per epoch, each from a seed drawn from `(seed, epoch)`, so a run is
    reproducible under `seed` whatever `num_workers` is; validation and test are fixed sets. Under DDP Lightning
    shards the sampler. `unit_fit_waves(n)` gives clips of their own stream, for fitting the target units.
    """

    def __init__(self, sample_rate: int = 16000, clip_seconds: float = 2.0, batch_size: int = 16,
                 train_clips: int = 2048, val_clips: int = 64, test_clips: int = 64, num_workers: int = 0,
                 seed: int = 0, programs: Sequence[int] = SYNTHEORY_PROGRAMS, pitch_range: tuple[int, int] = (36, 96),
                 kinds: Sequence[str] = MUSIC_KINDS, note_seconds: tuple[float, float] = (0.12, 0.8)):
        super().__init__()
        if min(train_clips, val_clips, test_clips, batch_size) < 1:
            raise ValueError("--data.init_args.train_clips, val_clips, test_clips and batch_size must be >= 1")
        self.sample_rate, self.batch_size, self.num_workers, self.seed = sample_rate, batch_size, num_workers, seed
        self.renderer = MusicRenderer(sample_rate, clip_seconds, programs=tuple(programs),
                                      pitch_range=tuple(pitch_range), kinds=tuple(kinds),
                                      note_seconds=tuple(note_seconds))
        self.renderer(0)  # a bad option fails here, before training starts
        self.sizes = {"train": train_clips, "val": val_clips, "test": test_clips}

    def unit_fit_waves(self, n_clips: int) -> np.ndarray:
        """(n_clips, T) clips from a stream no split uses."""
        return np.stack([self.renderer([self.seed, SPLIT_STREAMS["units"], index]) for index in range(n_clips)])

    def _loader(self, split: str) -> DataLoader:
        dataset = RenderedMusicDataset(self.renderer, self.sizes[split], self.seed, SPLIT_STREAMS[split],
                                       fixed=split != "train")
        return DataLoader(dataset, batch_size=self.batch_size,
                          sampler=EpochSampler(len(dataset), self.seed, shuffle=split == "train"),
                          generator=torch.Generator().manual_seed(self.seed), num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
