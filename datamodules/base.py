"""Shared datamodule plumbing: decode once at setup, skip and count bad files, seed every random choice.

Datasets here are small, so each split is decoded into memory in `setup`: epochs are fast and a bad
file is reported (and skipped) before training starts, not hours in. Random crops are driven by
`EpochSampler`, which hands each item its own seed from the main process, so a run is reproducible
under `seed` whatever `num_workers` is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from earlens.io.audio import AudioError, crop_or_pad, first_copies, load_audio
from earlens.io.paths import data_root

SPLITS = ("train", "val", "test")
FEW_TRAIN_ITEMS = 20  # fewer training clips than this in a class: its accuracy is mostly noise


def natural_key(label: str) -> tuple:
    """Sort key putting numeric labels in numeric order ("2" < "10") and the rest alphabetically after them."""
    return (0, int(label), "") if str(label).isdigit() else (1, 0, str(label))


class EpochSampler(Sampler):
    """Yields `(index, item_seed)`: the order and the per-item seeds are drawn from `(seed, epoch)`.

    Lightning calls `set_epoch` before each epoch; without it (e.g. inside a distributed wrapper)
    each pass over the sampler moves on to the next epoch, so crops differ between epochs either way.
    """

    def __init__(self, n_items: int, seed: int, shuffle: bool):
        self.n_items, self.seed, self.shuffle = n_items, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(self.n_items) if self.shuffle else np.arange(self.n_items)
        item_seeds = rng.integers(0, 2**63 - 1, size=self.n_items)
        return iter(zip(order.tolist(), item_seeds.tolist()))


class ClipDataset(Dataset):
    """One label per clip (`sources[i]` names its file), cropped or zero-padded (at the end) to `n_samples`.

    Crops are random when `random_crop`, centred otherwise; `length` is the number of real samples.
    """

    def __init__(
        self,
        waves: Sequence[np.ndarray],
        labels: Sequence[int],
        sources: Sequence[str | Path],
        n_samples: int,
        random_crop: bool,
    ):
        self.waves, self.labels = list(waves), np.asarray(labels, dtype=np.int64)
        self.sources = [str(source) for source in sources]
        self.n_samples, self.random_crop = n_samples, random_crop

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, item_seed = key
        rng = np.random.default_rng(item_seed) if self.random_crop else None
        wave = self.waves[index]
        audio = crop_or_pad(wave, self.n_samples, rng)
        return {"audio": torch.from_numpy(np.array(audio)), "label": torch.tensor(self.labels[index]),
                "length": torch.tensor(min(len(wave), self.n_samples))}


class AudioDataModule(pl.LightningDataModule):
    """Base for the real-data datamodules: subclasses set `dataset`, `task`, and build the splits.

    `root` is resolved by `earlens.io.paths.data_root` at construction, so a missing dataset fails at
    once with a message saying where it looked and where to download it.
    """

    dataset: str
    task: str = "clip"
    min_class_items: int = 3

    def __init__(
        self, root: str | None, sample_rate: int, batch_size: int, num_workers: int, seed: int
    ):
        super().__init__()
        for name, value in (("sample_rate", sample_rate), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"--data.init_args.{name} must be >= 1, got {value}")
        self.root = self._resolve_root(root)
        self.sample_rate, self.batch_size, self.num_workers, self.seed = sample_rate, batch_size, num_workers, seed
        self.skipped: list[tuple[str, str]] = []
        self.duplicates: list[tuple[str, str]] = []  # (left-out copy, the item kept)
        self.split_files: dict[str, list[str]] = {}
        self._splits: dict[str, Dataset] | None = None
        self._class_names: list[str] | None = None

    def _resolve_root(self, root: str | None) -> Path:
        """The dataset folder: `root/<dataset>`, `$EARLENS_DATA/<dataset>` or `../shared/data/<dataset>`."""
        return data_root(root, self.dataset)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order, from the usable items (decodes the data on first use)."""
        if self._class_names is None:
            self.setup()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _set_class_names(self, names: Sequence[str]) -> None:
        if not names:
            raise AudioError(f"{self.dataset}: no usable labelled items under {self.root} "
                             f"({len(self.skipped)} skipped)")
        self._class_names = list(names)

    def _enough_per_class(self, items: Sequence[tuple]) -> list[tuple]:
        """Drop (with a warning, counted in `skipped`) the items of labels with fewer than `min_class_items`."""
        counts: dict[str, int] = {}
        for item in items:
            counts[item[1]] = counts.get(item[1], 0) + 1
        rare = {label for label, n in counts.items() if n < self.min_class_items}
        for label in sorted(rare):
            self._skip(f"class {label!r}", f"only {counts[label]} usable item(s), below min_class_items="
                                           f"{self.min_class_items}: class dropped")
        return [item for item in items if item[1] not in rare]

    def _build_splits(self) -> dict[str, Dataset]:
        """Decode and label every split; call `_register_split` for each."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Decode all splits once (later calls, e.g. for `test` after `fit`, reuse them)."""
        if self._splits is None:
            self._splits = self._build_splits()
            self._warn_small_data()

    @property
    def split_sizes(self) -> dict[str, int]:
        """Items per split (clips; windows for frame tasks)."""
        self.setup()
        return {name: len(self._splits[name]) for name in SPLITS}

    def _warn_small_data(self) -> None:
        """Advice where the numbers alone make training unreliable: one optimiser step per epoch, or classes with
        fewer than `FEW_TRAIN_ITEMS` training clips."""
        train = self._splits["train"]
        if len(train) <= self.batch_size:
            warnings.warn(f"{self.dataset}: the train split ({len(train)} items) is one batch of {self.batch_size}, "
                          "so each epoch takes a single optimiser step; lower --data.init_args.batch_size (e.g. "
                          f"{max(1, len(train) // 8)}) or add data", stacklevel=2)
        if isinstance(train, ClipDataset):
            counts = np.bincount(train.labels, minlength=len(self.class_names))
            few = [f"{self.class_names[k]} {n}" for k, n in enumerate(counts) if n < FEW_TRAIN_ITEMS]
            if few:
                warnings.warn(f"{self.dataset}: {len(few)} class(es) with fewer than {FEW_TRAIN_ITEMS} training items "
                              f"({', '.join(few[:10])}{', ...' if len(few) > 10 else ''}): their scores will be "
                              "noisy; add recordings or merge classes", stacklevel=2)

    def split(self, name: str) -> Dataset:
        """The `train`, `val` or `test` dataset (decoding everything on first use)."""
        self.setup()
        return self._splits[name]

    def stimuli(self, split: str = "test", max_items: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str],
                                                                                 list[str]]:
        """A clip split as probe stimuli: waves `(N, T)` (centred crops, padding after), lengths, class names per
        item and source files; `max_items` keeps a seeded, class-stratified subset. Frame tasks have no clip labels."""
        dataset = self.split(split)
        if not isinstance(dataset, ClipDataset):
            raise ValueError(f"{self.dataset}: only clip tasks give probe stimuli (this is a {self.task} task)")
        order = np.arange(len(dataset))
        if max_items is not None and max_items < len(order):
            rng = np.random.default_rng(self.seed)
            rank = np.empty(len(order))
            for label in np.unique(dataset.labels):  # interleave classes so any prefix is balanced
                members = rng.permutation(np.flatnonzero(dataset.labels == label))
                rank[members] = np.arange(len(members)) + rng.random(len(members)) * 0.5
            order = np.sort(np.argsort(rank, kind="stable")[:max_items])
        items = [dataset[(int(i), 0)] for i in order]
        waves = np.stack([item["audio"].numpy() for item in items])
        lengths = np.array([int(item["length"]) for item in items], dtype=np.int64)
        names = [self.class_names[int(item["label"])] for item in items]
        return waves, lengths, names, [dataset.sources[int(i)] for i in order]

    def _skip(self, what: str | Path, reason: str) -> None:
        """Record and warn about an unusable file, annotation row (`file:line`) or class."""
        self.skipped.append((str(what), reason))
        warnings.warn(f"{self.dataset}: skipping {what}: {reason}", stacklevel=2)

    def _drop_duplicates(self, items: Sequence, key_of, name_of) -> list:
        """Keep the first of items with the same audio (`key_of(item)`, a content digest): a recording listed
        twice, or copied under another name, would otherwise land in train and test and inflate test scores.
        Copies are left out with one warning and listed in `duplicates` as (copy, kept)."""
        kept, copies = first_copies([key_of(item) for item in items])
        self.duplicates += [(str(name_of(items[copy])), str(name_of(items[original]))) for copy, original in copies]
        if copies:
            copy, original = self.duplicates[-1]
            warnings.warn(f"{self.dataset}: {len(copies)} item(s) repeat the audio of another and are left out "
                          f"(e.g. {copy} = {original}); summary.json lists them under 'duplicates'", stacklevel=2)
        return [items[i] for i in kept]

    def _decode(self, paths: Sequence[Path]) -> dict[Path, np.ndarray]:
        """Decode `paths` at `sample_rate`; unusable files are skipped and counted, not fatal."""
        waves = {}
        for path in tqdm(paths, desc=f"decoding {self.dataset}", leave=False):
            try:
                waves[path] = load_audio(path, self.sample_rate)
            except AudioError as err:
                self._skip(path, str(err))
        return waves

    def _register_split(self, split: str, files: Sequence[str | Path]) -> None:
        """Record the source files of a split; a split left with nothing usable is an error."""
        if not files:
            reasons = "; ".join(f"{path}: {reason}" for path, reason in self.skipped[:3])
            raise AudioError(
                f"{self.dataset}: the {split} split has no usable files under {self.root} "
                f"({len(self.skipped)} skipped{': ' + reasons if reasons else ''})"
            )
        self.split_files[split] = sorted({str(f) for f in files})

    def _clip_datasets(
        self, clips: Sequence[tuple[Path, str, str]], n_samples: dict[str, int],
        waves: dict[Path, np.ndarray] | None = None, order_key=natural_key,
    ) -> dict[str, ClipDataset]:
        """`(path, label name, split)` clips → one `ClipDataset` per split (random crops in train).

        Decodes the files unless `waves` are given; classes are the labels of the usable clips (rare ones dropped),
        sorted by `order_key` (default natural order: numeric labels sort as numbers).
        """
        waves = self._decode([path for path, _, _ in clips]) if waves is None else waves
        clips = self._enough_per_class([clip for clip in clips if clip[0] in waves])
        self._set_class_names(sorted({label for _, label, _ in clips}, key=order_key))
        label_of = {name: i for i, name in enumerate(self.class_names)}
        clips = [(path, label_of[label], split) for path, label, split in clips]
        datasets = {}
        for split in SPLITS:
            usable = [(path, label) for path, label, s in clips if s == split and path in waves]
            self._register_split(split, [path for path, _ in usable])
            datasets[split] = ClipDataset(
                [waves[path] for path, _ in usable],
                [label for _, label in usable],
                [path for path, _ in usable],
                n_samples[split],
                random_crop=split == "train",
            )
        return datasets

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.split(split)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochSampler(len(dataset), self.seed, shuffle),
            generator=torch.Generator().manual_seed(self.seed),  # iterators never draw from the global generator
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.batch_size, shuffle=False)
