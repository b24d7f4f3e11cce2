"""Speaker identification on the Free Spoken Digit Dataset (6 speakers x 10 digits x 50 takes, 8 kHz)."""

from __future__ import annotations

import re
from pathlib import Path

from earlens.datamodules.base import SPLITS, AudioDataModule, ClipDataset
from earlens.io.audio import find_audio

RECORDING_NAME = re.compile(r"(\d)_([A-Za-z]+)_(\d+)")  # file stem: {digit}_{speaker}_{take}


class FSDDSpeakerDataModule(AudioDataModule):
    """FSDD (`fsdd/recordings/{digit}_{speaker}_{take}.wav`) labelled by speaker, split by take number.

    Takes below `val_first_take` train, takes below `test_first_take` validate, the rest test
    (default 0-39 / 40-44 / 45-49: 2400 / 300 / 300 clips, every speaker and digit in every split).
    Clips are 0.1-2.3 s (median 0.42 s), so `clip_seconds` = 1 s pads almost all of them.
    """

    dataset = "fsdd"
    task = "clip"

    def __init__(
        self,
        root: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        clip_seconds: float = 1.0,
        val_first_take: int = 40,
        test_first_take: int = 45,
    ):
        super().__init__(root, sample_rate, batch_size, num_workers, seed)
        if not 0 < val_first_take < test_first_take:
            raise ValueError(f"need 0 < val_first_take < test_first_take, got {val_first_take}, {test_first_take}")
        self.clip_seconds = clip_seconds
        self.val_first_take, self.test_first_take = val_first_take, test_first_take

    def _recordings(self) -> list[Path]:
        folder = self.root / "recordings"
        files, ignored = find_audio(folder, recursive=False) if folder.is_dir() else ([], [])
        for path, reason in ignored:
            self._skip(path, reason)
        if not files:
            raise FileNotFoundError(f"fsdd: no audio files in {folder} "
                                    "(expected recordings/<digit>_<speaker>_<take>.wav)")
        return files

    def _split_of(self, take: int) -> str:
        if take < self.val_first_take:
            return "train"
        return "val" if take < self.test_first_take else "test"

    def _build_splits(self) -> dict[str, ClipDataset]:
        labelled = []
        for path in self._recordings():
            name = RECORDING_NAME.fullmatch(path.stem)
            if name is None:
                self._skip(path, "name does not match {digit}_{speaker}_{take}.<audio extension>")
                continue
            labelled.append((path, name.group(2), self._split_of(int(name.group(3)))))
        n_samples = round(self.clip_seconds * self.sample_rate)
        return self._clip_datasets(labelled, dict.fromkeys(SPLITS, n_samples))
