"""Your own labelled audio: one sub-folder per class (`root/<class>/**/*`), any format soundfile reads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from earlens.datamodules.base import SPLITS, AudioDataModule, ClipDataset
from earlens.io.audio import audio_fingerprint, find_audio


def group_split(labels: list[str], groups: list[str], fractions: dict[str, float], seed: int) -> list[str]:
    """A split name per item: seeded, stratified by label, and group-disjoint (all items of a group share a split).

    Groups are visited in a seeded random order and each goes to the split that most lacks its labels
    (the share of the target count still missing, summed over the group's items), so every split tracks the
    fractions per label as closely as whole groups allow and small splits are not starved by train.
    """
    classes = sorted(set(labels))
    class_index = {name: i for i, name in enumerate(classes)}
    per_class = np.bincount([class_index[label] for label in labels], minlength=len(classes)).astype(float)
    targets = np.array([fractions[s] for s in SPLITS])[:, None] * per_class[None, :]
    counts = np.zeros_like(targets)
    members: dict[str, list[int]] = {}
    for item, group in enumerate(groups):
        members.setdefault(group, []).append(item)
    order = np.random.default_rng(seed).permutation(sorted(members))
    split_of = [""] * len(labels)
    for group in order:
        items = members[group]
        need = np.zeros(len(classes))
        np.add.at(need, [class_index[labels[i]] for i in items], 1.0)
        deficit = ((targets - counts) / np.maximum(targets, 1e-9) * need[None, :]).sum(1)
        choice = int(np.argmax(deficit))
        counts[choice] += need
        for i in items:
            split_of[i] = SPLITS[choice]
    return split_of


class FolderDataModule(AudioDataModule):
    """Clip classification from `root/<class>/…` (class = the first sub-folder's name), audio of any format and
    extension case (`.wav`, `.WAV`, `.flac`, `.ogg`, …).

    The split is seeded and stratified by class (`val_fraction`, `test_fraction`); with `group_pattern`, a regex
    whose first group picks a group id out of each file name (e.g. `^([0-9a-f]+)_` for a speaker prefix), no group
    spans two splits. Files with the same audio as an earlier one are left out (`duplicates`). Unreadable files are
    skipped and counted; classes come from the usable files, and a class with fewer than `min_class_items` of them
    is dropped with a warning. `root` is required (None is refused in one line naming the option).
    """

    dataset = "folder"
    task = "clip"

    def __init__(
        self,
        root: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        clip_seconds: float = 1.0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        group_pattern: str | None = None,
        min_class_items: int = 3,
    ):
        self.min_class_items = min_class_items
        super().__init__(root, sample_rate, batch_size, num_workers, seed)
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(f"need positive val/test fractions summing below 1, got {val_fraction}, {test_fraction}")
        self.fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        self.clip_seconds = clip_seconds
        self.group_pattern = re.compile(group_pattern) if group_pattern else None
        files, ignored = find_audio(self.root)
        for path, reason in ignored:
            self._skip(path, reason)
        self.files = [path for path in files if path.parent != self.root]
        for path in sorted(set(files) - set(self.files)):
            self._skip(path, "not inside a class sub-folder")
        if not self.files:
            raise FileNotFoundError(f"folder: no audio files in class sub-folders under {self.root} "
                                    "(expected root/<class>/<file>)")

    def _resolve_root(self, root: str | None) -> Path:
        if not root:
            raise FileNotFoundError("folder: --data.init_args.root DIR is required (your audio as DIR/<class>/<file>)")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"folder: --data.init_args.root {root!r} is not a folder (expected root/<class>/)")
        return Path(root).resolve()

    def _label_of(self, path: Path) -> str:
        return path.relative_to(self.root).parts[0]

    def _group_of(self, path: Path) -> str:
        if self.group_pattern is None:
            return str(path)
        match = self.group_pattern.search(path.name)
        if match is None:
            raise ValueError(f"folder: group_pattern {self.group_pattern.pattern!r} does not match {path}")
        return match.group(1) if match.groups() else match.group(0)

    def _build_splits(self) -> dict[str, ClipDataset]:
        waves = self._decode(self.files)
        usable = self._drop_duplicates([(path, self._label_of(path)) for path in self.files if path in waves],
                                       lambda item: audio_fingerprint(waves[item[0]]), lambda item: item[0])
        usable = self._enough_per_class(usable)
        splits = group_split([label for _, label in usable], [self._group_of(path) for path, _ in usable],
                             self.fractions, self.seed)
        clips = [(path, label, split) for (path, label), split in zip(usable, splits)]
        return self._clip_datasets(clips, dict.fromkeys(SPLITS, round(self.clip_seconds * self.sample_rate)),
                                   waves=waves)
