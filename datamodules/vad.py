"""Voice activity detection on AMI excerpts (pyannote's debug protocol: `{uri}.wav` + lst/RTTM/UEM).

Per-sample labels: 1 inside the union of the RTTM speaker turns, 0 elsewhere, -1 outside the UEM
(not scored). The list files name `trñ00` while RTTM/UEM say `trn00`, so every uri is matched by
its ASCII folding (NFKD, accents dropped), with a warning where the names differ.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from earlens.datamodules.base import AudioDataModule
from earlens.io.vad import fold_uri

PROTOCOL_SPLITS = {"train": "train", "val": "development", "test": "test"}


def read_intervals(path: Path, uri_field: int, start_field: int, end_field: int, is_duration: bool, skip=None):
    """`{folded uri: (n, 2) array of [start, end) seconds}` from a whitespace-separated RTTM/UEM file.

    Every row is validated: too few fields, a non-numeric or non-finite time, a negative start or an empty or
    negative span is passed to `skip("file:line", reason)` (default: raise ValueError) and left out.
    """
    intervals = defaultdict(list)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            start, second = float(fields[start_field]), float(fields[end_field])
            end = start + second if is_duration else second
            problem = ("non-finite time" if not np.isfinite([start, end]).all() else
                       "negative start" if start < 0 else
                       "negative or zero duration" if end <= start else None)
        except (IndexError, ValueError):
            problem = f"expected a number in fields {start_field + 1} and {end_field + 1}"
        if problem:
            if skip is None:
                raise ValueError(f"{path}:{number}: {problem}: {line.strip()!r}")
            skip(f"{path}:{number}", f"{problem}: {line.strip()!r}")
            continue
        intervals[fold_uri(fields[uri_field])].append((start, end))
    return {uri: np.array(spans, dtype=np.float64) for uri, spans in intervals.items()}


def read_rttm(path: Path, skip=None) -> dict[str, np.ndarray]:
    """Speaker turns: `SPEAKER uri channel onset duration ...`."""
    return read_intervals(path, uri_field=1, start_field=3, end_field=4, is_duration=True, skip=skip)


def read_uem(path: Path, skip=None) -> dict[str, np.ndarray]:
    """Scored regions: `uri channel start end`."""
    return read_intervals(path, uri_field=0, start_field=2, end_field=3, is_duration=False, skip=skip)


def interval_mask(spans: np.ndarray, n_samples: int, sample_rate: int) -> np.ndarray:
    """Boolean mask of the samples covered by the union of `[start, end)` second spans."""
    bounds = np.clip(np.round(spans.reshape(-1, 2) * sample_rate).astype(np.int64), 0, n_samples)
    delta = np.zeros(n_samples + 1, dtype=np.int64)
    np.add.at(delta, bounds[:, 0], 1)
    np.add.at(delta, bounds[:, 1], -1)
    return np.cumsum(delta[:n_samples]) > 0


def speech_labels(n_samples: int, sample_rate: int, turns: np.ndarray, scored: np.ndarray | None) -> np.ndarray:
    """int8 per-sample labels: speech 1 / non-speech 0 inside `scored` spans (all of it if None), -1 outside."""
    speech = interval_mask(turns, n_samples, sample_rate)
    inside = np.ones(n_samples, bool) if scored is None else interval_mask(scored, n_samples, sample_rate)
    return np.where(inside, speech, -1).astype(np.int8)


class RandomChunkDataset(Dataset):
    """`n_chunks` chunks per epoch, each from a file (of `sources`) drawn in proportion to its length.

    A file shorter than the chunk is zero-padded with label -1.
    """

    def __init__(
        self, waves: list[np.ndarray], labels: list[np.ndarray], sources: list[Path], chunk_samples: int, n_chunks: int
    ):
        self.waves, self.labels, self.sources = waves, labels, [str(source) for source in sources]
        self.chunk_samples, self.n_chunks = chunk_samples, n_chunks
        lengths = np.array([len(w) for w in waves], dtype=np.float64)
        self.file_weights = lengths / lengths.sum()

    def __len__(self) -> int:
        return self.n_chunks

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(key[1])
        file = rng.choice(len(self.waves), p=self.file_weights)
        wave, labels = self.waves[file], self.labels[file]
        offset = int(rng.integers(0, max(len(wave) - self.chunk_samples, 0) + 1))
        piece = slice(offset, offset + self.chunk_samples)
        audio = np.zeros(self.chunk_samples, dtype=np.float32)
        label = np.full(self.chunk_samples, -1, dtype=np.int64)
        audio[: len(wave[piece])] = wave[piece]
        label[: len(wave[piece])] = labels[piece]
        return {"audio": torch.from_numpy(audio), "label": torch.from_numpy(label),
                "length": torch.tensor(len(wave[piece]))}


class WholeFileDataset(Dataset):
    """Whole files (`sources[i]`) with per-sample labels, for evaluation (batch size 1: lengths differ)."""

    def __init__(self, waves: list[np.ndarray], labels: list[np.ndarray], sources: list[Path]):
        self.waves, self.labels, self.sources = waves, labels, [str(source) for source in sources]

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index = key[0]
        return {
            "audio": torch.from_numpy(self.waves[index].copy()),
            "label": torch.from_numpy(self.labels[index].astype(np.int64)),
            "length": torch.tensor(len(self.waves[index])),
        }


def read_protocol(database: Path, protocol: str) -> tuple[dict[str, dict[str, Path]], str]:
    """The file lists of a pyannote.database protocol defined in a `database.yml`: `{split: {"uri": lst,
    "annotation": rttm, "annotated": uem}}` (paths relative to the YAML) and the audio path template (`{uri}`)."""
    spec = yaml.safe_load(database.read_text(encoding="utf-8"))
    try:
        name, task, variant = protocol.split(".")
        entry, template = spec["Protocols"][name][task][variant], spec["Databases"][name]
    except (ValueError, KeyError, TypeError) as err:
        known = [f"{d}.{t}.{v}" for d, tasks in (spec.get("Protocols") or {}).items() for t, vs in tasks.items()
                 for v in vs]
        raise ValueError(f"{database}: no protocol {protocol!r} (Database.Task.Protocol); it defines {known}") from err
    template = template[0] if isinstance(template, list) else template
    files = {split: {kind: database.parent / entry[split][kind] for kind in ("uri", "annotation", "annotated")}
             for split in PROTOCOL_SPLITS.values()}
    return files, str(database.parent / template)


class AMIVADDataModule(AudioDataModule):
    """Voice activity detection from a pyannote.database protocol (default: the AMI excerpts' `ami_mini/database.yml`,
    `Debug.SpeakerDiarization.Debug`), a per-sample (frame) task with -1 outside the UEM.

    `database` (a `database.yml`) and `protocol` (`Database.Task.Protocol`) point at any protocol whose splits list uris
    (`.lst`), speaker turns (RTTM) and scored regions (UEM); audio comes from the database's path template
    (`./{uri}.wav`). RTTM/UEM rows are validated (bad rows skipped, named, counted) and uris matched by ASCII folding
    (the AMI list says `trñ00`, its RTTM `trn00`: pyannote.database itself would give that file no labels).
    Training draws `chunks_per_epoch` random `chunk_seconds` chunks from the training files; validation and test run
    on whole files, one per batch. A listed file with no RTTM turns is all non-speech; one with no UEM entry is
    scored everywhere (with a warning).
    """

    dataset = "ami_mini"
    task = "frame"

    def __init__(
        self,
        root: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        chunk_seconds: float = 3.0,
        chunks_per_epoch: int = 256,
        database: str | None = None,
        protocol: str = "Debug.SpeakerDiarization.Debug",
    ):
        self.database = Path(database).resolve() if database else None
        super().__init__(root, sample_rate, batch_size, num_workers, seed)
        self.chunk_seconds, self.chunks_per_epoch = chunk_seconds, chunks_per_epoch
        self.database = self.database or self.root / "database.yml"
        if not self.database.is_file():
            raise FileNotFoundError(f"vad: no protocol file {self.database} (--data.init_args.database)")
        self.protocol_files, self.audio_template = read_protocol(self.database, protocol)

    def _resolve_root(self, root: str | None) -> Path:
        return self.database.parent if self.database else super()._resolve_root(root)

    @property
    def class_names(self) -> list[str]:
        return ["non-speech", "speech"]

    def _split_files(self, protocol_split: str) -> list[tuple[str, Path]]:
        """`(listed uri, wave path)` for each uri of a split's list, the file found by the template or, failing
        that, by the uri's ASCII folding (with a warning)."""
        listed = self.protocol_files[protocol_split]["uri"]
        uris = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        files = []
        for uri in uris:
            path = Path(self.audio_template.format(uri=uri))
            if fold_uri(uri) != uri:
                folded = Path(self.audio_template.format(uri=fold_uri(uri)))
                path = path if path.is_file() else folded
                warnings.warn(f"vad: uri {uri!r} in {listed.name} matched to {fold_uri(uri)!r} in RTTM/UEM and "
                              f"{path.name} by ASCII folding", stacklevel=2)
            files.append((uri, path))
        return files

    def _build_splits(self) -> dict[str, Dataset]:
        datasets = {}
        for split, protocol_split in PROTOCOL_SPLITS.items():
            files = self._split_files(protocol_split)
            turns = read_rttm(self.protocol_files[protocol_split]["annotation"], skip=self._skip)
            scored = read_uem(self.protocol_files[protocol_split]["annotated"], skip=self._skip)
            decoded = self._decode([path for _, path in files])
            waves, labels, used = [], [], []
            for uri, path in files:
                if path not in decoded:
                    continue
                if fold_uri(uri) not in scored:
                    warnings.warn(f"ami_mini: no UEM entry for {uri!r}; scoring the whole of {path}", stacklevel=2)
                wave = decoded[path]
                uri_turns = turns.get(fold_uri(uri), np.zeros((0, 2)))
                beyond = uri_turns[:, 0] >= len(wave) / self.sample_rate
                for onset, offset in uri_turns[beyond]:
                    self._skip(f"{self.protocol_files[protocol_split]['annotation']} ({uri})",
                               f"turn {onset:.2f}-{offset:.2f} s starts after the end of {path.name} "
                               f"({len(wave) / self.sample_rate:.2f} s)")
                uri_turns = uri_turns[~beyond]
                waves.append(wave)
                labels.append(speech_labels(len(wave), self.sample_rate, uri_turns, scored.get(fold_uri(uri))))
                used.append(path)
            self._register_split(split, used)
            chunk_samples = round(self.chunk_seconds * self.sample_rate)
            datasets[split] = (
                RandomChunkDataset(waves, labels, used, chunk_samples, self.chunks_per_epoch)
                if split == "train"
                else WholeFileDataset(waves, labels, used)
            )
        return datasets

    def stimuli(self, split: str = "test", max_items: int | None = None, window_seconds: float = 0.5):
        """Probe stimuli from a frame task: the split's files cut into `window_seconds` windows, each labelled
        `speech` or `non-speech` by the majority of its samples (windows touching unscored samples are left out);
        `max_items` keeps a seeded, class-balanced subset. Same return as `AudioDataModule.stimuli`."""
        dataset, window = self.split(split), round(window_seconds * self.sample_rate)
        waves, names, sources = [], [], []
        for wave, labels, source in zip(dataset.waves, dataset.labels, dataset.sources):
            for start in range(0, len(wave) - window + 1, window):
                piece = labels[start:start + window]
                if (piece >= 0).all():
                    waves.append(wave[start:start + window])
                    names.append(self.class_names[int(piece.mean() > 0.5)])
                    sources.append(f"{source}@{start / self.sample_rate:.2f}s")
        order = np.arange(len(waves))
        if max_items is not None and max_items < len(order):
            rng = np.random.default_rng(self.seed)
            per_class = [rng.permutation([i for i in order if names[i] == n]) for n in sorted(set(names))]
            order = np.sort(np.concatenate([members[: max_items // len(per_class)] for members in per_class]))
        return (np.stack([waves[i] for i in order]), np.full(len(order), window, dtype=np.int64),
                [names[i] for i in order], [sources[i] for i in order])

    def val_dataloader(self):
        return self._loader("val", batch_size=1, shuffle=False)

    def test_dataloader(self):
        return self._loader("test", batch_size=1, shuffle=False)
