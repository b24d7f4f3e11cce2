"""Bird syllable classification: Bengalese finch (Koumura & Okanoya's BirdsongRecognition, one bird) and any
annotation format crowsetta reads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import soundfile as sf

from earlens.datamodules.base import SPLITS, AudioDataModule, ClipDataset, natural_key
from earlens.datamodules.folder import group_split


def read_syllables(annotation: Path, skip=None) -> list[tuple[str, int, int, str]]:
    """`(wave file, start, length, label)` per syllable from `Annotation.xml`, in the file's samples.

    Note positions in the XML are relative to their sequence (song bout), whose position is relative
    to the wave file; the start returned here is absolute within the file. Labels stay strings. A note with a
    missing or non-integer field, a negative start or a non-positive length is passed to `skip(where, reason)`
    (default: raise) as `Annotation.xml:sequence S note N`.
    """
    syllables = []
    for s, sequence in enumerate(ET.parse(annotation).getroot().iter("Sequence"), start=1):
        wave_name = sequence.findtext("WaveFileName")
        for n, note in enumerate(sequence.iter("Note"), start=1):
            where = f"{annotation}:sequence {s} note {n}"
            try:
                start = int(sequence.findtext("Position")) + int(note.findtext("Position"))
                length, label = int(note.findtext("Length")), (note.findtext("Label") or "").strip()
                problem = ("negative start" if start < 0 else "non-positive length" if length <= 0
                           else "empty label" if not label else "no WaveFileName" if not wave_name else None)
            except (TypeError, ValueError) as err:
                problem = f"unreadable field ({err})"
            if problem:
                if skip is None:
                    raise ValueError(f"{where}: {problem}")
                skip(where, problem)
                continue
            syllables.append((wave_name, start, length, label))
    return syllables


class BengaleseFinchDataModule(AudioDataModule):
    """Syllables of one bird (`bengalese_finch/{bird}/Wave/{n}.wav` + `Annotation.xml`) as a clip task.

    Songs (wave files) are split at random under `seed` (`val_fraction`, `test_fraction`), so no song
    contributes syllables to two splits. Each syllable is cut with `context_seconds` of the song on
    either side, then centred (eval) or randomly placed (train) in a `clip_seconds` window; syllables
    last 22-141 ms.
    """

    dataset = "bengalese_finch"
    task = "clip"

    def __init__(
        self,
        root: str | None = None,
        sample_rate: int = 16000,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        clip_seconds: float = 0.2,
        context_seconds: float = 0.0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        bird: str = "Bird0",
    ):
        super().__init__(root, sample_rate, batch_size, num_workers, seed)
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(f"need positive val/test fractions summing below 1, got {val_fraction}, {test_fraction}")
        self.bird_dir = self.root / bird
        self.clip_seconds, self.context_seconds = clip_seconds, context_seconds
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._syllables: list[tuple[str, int, int, str]] | None = None

    @property
    def syllables(self) -> list[tuple[str, int, int, str]]:
        if self._syllables is None:
            annotation = self.bird_dir / "Annotation.xml"
            if not annotation.is_file():
                raise FileNotFoundError(f"bengalese_finch: no annotation at {annotation}")
            self._syllables = read_syllables(annotation, skip=self._skip)
        return self._syllables

    def song_splits(self) -> dict[str, list[str]]:
        """Wave file names per split: a seeded shuffle of the annotated songs, cut by the fractions."""
        songs = sorted({wave_name for wave_name, *_ in self.syllables}, key=lambda name: natural_key(Path(name).stem))
        order = np.random.default_rng(self.seed).permutation(len(songs))
        n_test, n_val = round(self.test_fraction * len(songs)), round(self.val_fraction * len(songs))
        shuffled = [songs[i] for i in order]
        return {
            "test": shuffled[:n_test],
            "val": shuffled[n_test : n_test + n_val],
            "train": shuffled[n_test + n_val :],
        }

    def _build_splits(self) -> dict[str, ClipDataset]:
        paths = {name: self.bird_dir / "Wave" / name for name, *_ in self.syllables}
        songs = self._decode(sorted(set(paths.values())))
        file_info = {path: sf.info(path) for path in songs}
        context = round(self.context_seconds * self.sample_rate)
        segments = {split: ([], [], []) for split in SPLITS}
        split_of = {name: split for split, names in self.song_splits().items() for name in names}
        for wave_name, start, length, label in self.syllables:
            path = paths[wave_name]
            if path not in songs:
                continue
            if start + length > file_info[path].frames:
                self._skip(path, f"syllable at sample {start} (+{length}) runs past the end of the file")
                continue
            song, scale = songs[path], self.sample_rate / file_info[path].samplerate
            first, last = round(start * scale), round((start + length) * scale)
            waves, labels, files = segments[split_of[wave_name]]
            waves.append(song[max(first - context, 0) : last + context])
            labels.append(label)
            files.append(path)
        all_labels = [(None, label) for _, labels, _ in segments.values() for label in labels]
        kept_labels = {label for _, label in self._enough_per_class(all_labels)}
        self._set_class_names(sorted(kept_labels, key=natural_key))
        label_of = {name: i for i, name in enumerate(self.class_names)}
        n_samples = round(self.clip_seconds * self.sample_rate)
        datasets = {}
        for split, (waves, labels, files) in segments.items():
            keep = [i for i, label in enumerate(labels) if label in label_of]
            self._register_split(split, [files[i] for i in keep])
            datasets[split] = ClipDataset([waves[i] for i in keep], [label_of[labels[i]] for i in keep],
                                          [files[i] for i in keep], n_samples, random_crop=split == "train")
        return datasets


ANNOTATION_GLOBS = {"notmat": "*.not.mat", "textgrid": "*.TextGrid", "raven": "*.txt", "aud-seq": "*.txt",
                    "simple-seq": "*.csv", "generic-seq": "*.csv", "birdsong-recognition-dataset": "Annotation.xml"}


class SyllableDataModule(AudioDataModule):
    """Animal-vocalisation units from any annotation format `crowsetta` reads (evsonganaly `.not.mat`, Koumura's
    `Annotation.xml`, Praat TextGrid, Raven and Audacity label tables, generic-seq CSV), as a clip task.

    `audio_dir` holds the recordings; annotations are `annotation_path` (one file) or the files matching the format's
    usual pattern (e.g. `*.not.mat`) in `annotation_dir` (default `audio_dir`). Labels stay strings; `exclude_labels`
    drops annotation artefacts (e.g. `["-", "i"]`) and `label_map` merges or renames labels before classes are made.
    Each unit is cut with `context_seconds` either side and centred (eval) or randomly placed (train) in a
    `clip_seconds` window; recordings are split seeded and stratified, never one recording in two splits. A unit with
    a negative onset, an offset before its onset or past the end of its file is skipped and counted.
    """

    dataset = "syllables"
    task = "clip"

    def __init__(
        self,
        audio_dir: str,
        annotation_format: str = "notmat",
        annotation_path: str | None = None,
        annotation_dir: str | None = None,
        exclude_labels: list[str] | None = None,
        label_map: dict[str, str] | None = None,
        sample_rate: int = 16000,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        clip_seconds: float = 0.2,
        context_seconds: float = 0.0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        min_class_items: int = 3,
    ):
        self.min_class_items = min_class_items
        super().__init__(audio_dir, sample_rate, batch_size, num_workers, seed)
        if annotation_format not in ANNOTATION_GLOBS:
            raise ValueError(f"--data.init_args.annotation_format must be one of {sorted(ANNOTATION_GLOBS)}, "
                             f"got {annotation_format!r}")
        self.annotation_format, self.annotation_path = annotation_format, annotation_path
        self.annotation_dir = Path(annotation_dir) if annotation_dir else self.root
        self.exclude_labels, self.label_map = set(exclude_labels or ()), dict(label_map or {})
        self.clip_seconds, self.context_seconds = clip_seconds, context_seconds
        self.fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}

    def _resolve_root(self, root: str | None) -> Path:
        if not root or not Path(root).is_dir():
            raise FileNotFoundError(f"syllables: --data.init_args.audio_dir {root!r} is not a folder")
        return Path(root).resolve()

    def units(self) -> list[tuple[Path, float, float, str, str]]:
        """(audio file, onset s, offset s, label, where) of every annotated unit, through crowsetta."""
        import crowsetta

        files = ([Path(self.annotation_path)] if self.annotation_path else
                 sorted(self.annotation_dir.rglob(ANNOTATION_GLOBS[self.annotation_format])))
        if not files:
            raise FileNotFoundError(f"syllables: no {self.annotation_format} annotations "
                                    f"({ANNOTATION_GLOBS[self.annotation_format]}) in {self.annotation_dir}")
        transcriber = crowsetta.Transcriber(format=self.annotation_format)
        units = []
        for file in files:
            try:
                extra = {"wav_path": self.root} if self.annotation_format == "birdsong-recognition-dataset" else {}
                annots = transcriber.from_file(file, **extra).to_annot()
            except Exception as err:  # noqa: BLE001 - any parser error: name the file, keep the others
                self._skip(file, f"unreadable {self.annotation_format} annotation ({type(err).__name__}: {err})")
                continue
            for annot in annots if isinstance(annots, list) else [annots]:
                notated = Path(annot.notated_path) if annot.notated_path else file.with_suffix(".wav")
                audio = notated if notated.is_absolute() and notated.exists() else self.root / notated.name
                for k, (on, off, label) in enumerate(zip(annot.seq.onsets_s, annot.seq.offsets_s,
                                                         annot.seq.labels)):
                    units.append((audio, float(on), float(off), str(label), f"{file}:unit {k + 1}"))
        return units

    def _build_splits(self) -> dict[str, ClipDataset]:
        units = []
        for audio, on, off, label, where in self.units():
            label = self.label_map.get(label, label)
            if label in self.exclude_labels:
                continue
            problem = "negative onset" if on < 0 else "offset not after onset" if off <= on else None
            if problem:
                self._skip(where, problem)
                continue
            units.append((audio, on, off, label, where))
        songs = self._decode(sorted({unit[0] for unit in units}))
        context = round(self.context_seconds * self.sample_rate)
        clips = []
        for audio, on, off, label, where in units:
            if audio not in songs:
                continue
            song = songs[audio]
            first, last = round(on * self.sample_rate), round(off * self.sample_rate)
            if last > len(song) + 1:
                self._skip(where, f"unit {on:.3f}-{off:.3f} s runs past the end of {audio.name}")
                continue
            clips.append((audio, song[max(first - context, 0): last + context], label))
        kept = {label for _, label in self._enough_per_class([(None, label) for *_, label in clips])}
        clips = [clip for clip in clips if clip[2] in kept]
        splits = group_split([label for *_, label in clips], [str(audio) for audio, *_ in clips], self.fractions,
                             self.seed)
        self._set_class_names(sorted(kept, key=natural_key))
        label_of = {name: i for i, name in enumerate(self.class_names)}
        n_samples = round(self.clip_seconds * self.sample_rate)
        datasets = {}
        for split in SPLITS:
            chosen = [clip for clip, s in zip(clips, splits) if s == split]
            self._register_split(split, [audio for audio, *_ in chosen])
            datasets[split] = ClipDataset([wave for _, wave, _ in chosen], [label_of[label] for *_, label in chosen],
                                          [audio for audio, *_ in chosen], n_samples, random_crop=split == "train")
        return datasets
