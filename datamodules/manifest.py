"""Your own labelled audio listed in a CSV/TSV manifest: path, label, and optionally split, group, start, end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from earlens.datamodules.base import SPLITS, AudioDataModule, ClipDataset, natural_key
from earlens.datamodules.folder import group_split
from earlens.io.audio import AudioError, LazySegment, audio_fingerprint

REQUIRED = ("path", "label")


def read_manifest(path: Path, skip) -> list[dict]:
    """Rows of a CSV (or TSV, by extension) manifest with `path` and `label` columns; relative paths are relative to
    the manifest. A row with an empty path or label, an unknown split or a bad start/end is passed to
    `skip("manifest:line", reason)` and left out."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; it has {reader.fieldnames}")
        rows = []
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            audio, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            split = (row.get("split") or "").strip() or None
            try:
                start = float(row["start"]) if (row.get("start") or "").strip() else None
                end = float(row["end"]) if (row.get("end") or "").strip() else None
            except ValueError as err:
                skip(where, f"start/end not a number ({err})")
                continue
            problem = ("empty path" if not audio else "empty label" if not label else
                       f"split {split!r} is not one of {SPLITS}" if split not in (None, *SPLITS) else
                       "negative start" if start is not None and start < 0 else
                       "end before start" if end is not None and end <= (start or 0.0) else None)
            if problem:
                skip(where, problem)
                continue
            file_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
            rows.append({"path": file_path, "label": label, "split": split, "start": start, "end": end,
                         "group": (row.get("group") or "").strip() or None, "where": where})
    return rows


class ManifestDataModule(AudioDataModule):
    """Clip classification from a manifest (`--data.init_args.manifest FILE.csv|.tsv`).

    Columns: `path`, `label` (any string), optional `split` (train/val/test; rows without one are split seeded,
    stratified and group-disjoint like `FolderDataModule`), `group` (e.g. speaker or recording), `start` and `end`
    in seconds (a segment of a long file; each file is decoded once). Bad rows and unreadable files are skipped,
    named and counted; rows repeating the audio of an earlier row are left out (`duplicates`); classes come from the
    usable rows. `lazy=True` decodes nothing up front: each item reads only the chunk it needs
    (`earlens.io.audio.LazySegment`), for corpora too big for memory (files are checked by their headers at setup, so
    content errors surface as warnings during training instead, and only rows naming the same file and segment
    count as duplicates).
    """

    dataset = "manifest"
    task = "clip"

    def __init__(
        self,
        manifest: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        clip_seconds: float = 1.0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        min_class_items: int = 3,
        lazy: bool = False,
    ):
        self.min_class_items, self.lazy = min_class_items, lazy
        super().__init__(manifest, sample_rate, batch_size, num_workers, seed)
        self.fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        self.clip_seconds = clip_seconds
        self.rows = read_manifest(self.root, self._skip)
        if not self.rows:
            raise ValueError(f"manifest: {self.root} has no usable rows ({len(self.skipped)} skipped)")

    def _resolve_root(self, root: str | None) -> Path:
        if not root:
            raise FileNotFoundError("manifest: --data.init_args.manifest FILE.csv is required")
        if not Path(root).is_file():
            raise FileNotFoundError(f"manifest: --data.init_args.manifest {root!r} is not a file")
        return Path(root).resolve()

    def _segment(self, row: dict, waves: dict):
        """The row's audio: a slice of the decoded file, or a `LazySegment` of it; None (skipped) if outside."""
        if self.lazy:
            rate = sf.info(row["path"]).samplerate
            first = round((row["start"] or 0.0) * rate)
            n_frames = None if row["end"] is None else round(row["end"] * rate) - first
            return LazySegment(row["path"], self.sample_rate, first, n_frames)
        wave = waves[row["path"]]
        first = round((row["start"] or 0.0) * self.sample_rate)
        last = len(wave) if row["end"] is None else round(row["end"] * self.sample_rate)
        if first >= len(wave) or last > len(wave) + 1:
            raise AudioError(f"segment {row['start']}-{row['end']} s outside {row['path'].name} "
                             f"({len(wave) / self.sample_rate:.2f} s)")
        return wave[first:last]

    def _content_key(self, item: tuple[dict, object]) -> str:
        """What makes two rows the same recording: the digest of the segment's samples; with `lazy` (nothing decoded
        up front) the resolved file and the segment's bounds, so copies under other names go undetected there."""
        row, segment = item
        if self.lazy:
            return f"{row['path'].resolve()}|{row['start']}|{row['end']}"
        return audio_fingerprint(segment)

    def _build_splits(self) -> dict[str, ClipDataset]:
        waves = {} if self.lazy else self._decode(sorted({row["path"] for row in self.rows}))
        items = []
        for row in self.rows:
            if not self.lazy and row["path"] not in waves:
                continue
            try:
                items.append((row, self._segment(row, waves)))
            except (AudioError, sf.LibsndfileError, RuntimeError) as err:
                self._skip(row["where"], str(err))
        items = self._drop_duplicates(items, self._content_key, lambda item: f"{item[0]['where']} ({item[0]['path']})")
        kept = {label for _, label in self._enough_per_class([(None, row["label"]) for row, _ in items])}
        items = [(row, segment) for row, segment in items if row["label"] in kept]
        unsplit = [i for i, (row, _) in enumerate(items) if row["split"] is None]
        assigned = group_split([items[i][0]["label"] for i in unsplit],
                               [items[i][0]["group"] or f"{items[i][0]['path']}#{i}" for i in unsplit],
                               self.fractions, self.seed) if unsplit else []
        split_of = {i: s for i, s in zip(unsplit, assigned)}
        self._set_class_names(sorted(kept, key=natural_key))
        label_of = {name: k for k, name in enumerate(self.class_names)}
        n_samples = round(self.clip_seconds * self.sample_rate)
        datasets = {}
        for split in SPLITS:
            chosen = [(row, seg) for i, (row, seg) in enumerate(items) if (row["split"] or split_of.get(i)) == split]
            self._register_split(split, [row["path"] for row, _ in chosen])
            labels = np.array([label_of[row["label"]] for row, _ in chosen])
            datasets[split] = ClipDataset([seg for _, seg in chosen], labels, [row["path"] for row, _ in chosen],
                                          n_samples, random_crop=split == "train")
        return datasets
