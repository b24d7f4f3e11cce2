"""ESC-10 environmental sound classification: 400 five-second Ogg clips, 10 classes, 5 folds."""

from __future__ import annotations

import re

from earlens.datamodules.base import SPLITS, AudioDataModule, ClipDataset
from earlens.io.audio import find_audio

CLASS_FOLDER = re.compile(r"(\d{3}) - (.+)")
CLIP_NAME = re.compile(r"([1-5])-(\d+)-([A-Z])")  # file stem: {fold}-{freesound id}-{take}
CLIP_SECONDS = 5.0
N_FOLDS = 5


def fold_split(cv_fold: int | None) -> dict[str, set[int]]:
    """Folds per split: 1-3/4/5 by default; with `cv_fold` k, test = k, val = the next fold, train = rest.

    ESC's folds keep clips cut from one Freesound recording together, so splitting by fold never
    leaks a recording across splits.
    """
    if cv_fold is None:
        return {"train": {1, 2, 3}, "val": {4}, "test": {5}}
    if not 1 <= cv_fold <= N_FOLDS:
        raise ValueError(f"cv_fold must be in 1..{N_FOLDS}, got {cv_fold}")
    val_fold = cv_fold % N_FOLDS + 1
    return {"train": set(range(1, N_FOLDS + 1)) - {cv_fold, val_fold}, "val": {val_fold}, "test": {cv_fold}}


class ESC10DataModule(AudioDataModule):
    """ESC-10 (`esc10/NNN - Class name/{fold}-{freesound id}-{take}.ogg`) as a clip task.

    Evaluation sees whole 5 s clips; training takes random `clip_seconds` crops (5 s = whole clips).
    """

    dataset = "esc10"
    task = "clip"

    def __init__(
        self,
        root: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        clip_seconds: float = CLIP_SECONDS,
        cv_fold: int | None = None,
    ):
        super().__init__(root, sample_rate, batch_size, num_workers, seed)
        self.clip_seconds = clip_seconds
        self.folds = fold_split(cv_fold)

    def _build_splits(self) -> dict[str, ClipDataset]:
        split_of = {fold: split for split, folds in self.folds.items() for fold in folds}
        clips, folder_number = [], {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and CLASS_FOLDER.fullmatch(p.name)):
            files, ignored = find_audio(folder, recursive=False)
            for path, reason in ignored:
                self._skip(path, reason)
            for path in files:
                name = CLIP_NAME.fullmatch(path.stem)
                if name is None:
                    self._skip(path, "name does not match {fold}-{freesound id}-{take}.<audio extension>")
                    continue
                number, label = CLASS_FOLDER.fullmatch(folder.name).groups()
                folder_number[label] = int(number)
                clips.append((path, label, split_of[int(name.group(1))]))
        if not clips:
            raise FileNotFoundError(f"esc10: no '<NNN - Class>/<fold>-<id>-<take>.<ext>' audio files under {self.root}")
        n_samples = {split: round(CLIP_SECONDS * self.sample_rate) for split in SPLITS}
        n_samples["train"] = round(self.clip_seconds * self.sample_rate)
        return self._clip_datasets(clips, n_samples, order_key=folder_number.get)  # classes in folder order
