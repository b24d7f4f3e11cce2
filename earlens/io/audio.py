"""Audio I/O: decode any soundfile-readable file to mono float32 at a fixed rate, or say why not.

Every loader in the project goes through `load_audio`, so bad input (unreadable, empty, NaN/inf,
wrong channel count) is caught in one place with an `AudioError` that names the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """An audio file (or a dataset split) that cannot be used; the message names the file."""


# File extensions of the formats libsndfile reads (matched case-insensitively: `.WAV` is a WAV).
AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                              ".au", ".snd", ".caf", ".w64", ".rf64", ".nist", ".sph", ".voc", ".htk", ".sf", ".paf",
                              ".svx", ".mat", ".xi", ".sd2", ".avr", ".wve", ".mpc"})


def audio_fingerprint(waves: np.ndarray, chunk_rows: int = 256) -> str:
    """BLAKE2b digest of audio as float32 samples, shape included: one clip `(T,)` or clips `(N, T)`. Equal audio
    gives equal digests whatever the file's name or format (duplicate detection, the feature cache's key)."""
    waves = np.asarray(waves)
    digest = hashlib.blake2b(repr(tuple(waves.shape)).encode(), digest_size=16)
    for start in range(0, len(waves), chunk_rows):
        digest.update(np.ascontiguousarray(waves[start:start + chunk_rows], dtype=np.float32).tobytes())
    return digest.hexdigest()


def first_copies(keys: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Duplicate detection by content key (`audio_fingerprint`): the index of the first item of each key, in order,
    and a (copy, first) index pair for every later item with a key already seen."""
    first, kept, copies = {}, [], []
    for index, key in enumerate(keys):
        if key in first:
            copies.append((index, first[key]))
        else:
            first[key] = index
            kept.append(index)
    return kept, copies


def is_audio_name(path: str | os.PathLike) -> bool:
    """Whether a file name has an audio extension that soundfile reads (any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


def find_audio(folder: str | os.PathLike, recursive: bool = True) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Audio files under `folder` (sorted) and the audio-looking entries ignored, each with the reason.

    Directories named like audio files and dangling links are ignored and reported, never silently dropped;
    files with other extensions are simply not audio.
    """
    folder = Path(folder)
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    found, ignored = [], []
    for path in entries:
        if not is_audio_name(path):
            continue
        if path.is_symlink() and not path.exists():
            ignored.append((path, "dangling symbolic link"))
        elif path.is_dir():
            ignored.append((path, "a directory named like an audio file"))
        elif path.is_file():
            found.append(path)
    return found, ignored


def load_audio(
    path: str | os.PathLike, sample_rate: int, channels: int | Literal["mix"] = "mix"
) -> np.ndarray:
    """Decode `path` to a 1-D float32 array at `sample_rate` (soxr high-quality resampling).

    `channels="mix"` averages however many channels the file has; an int demands exactly that many
    channels (then averages them), so a stereo file where mono was expected is an error, not a surprise.
    """
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    try:
        wave, file_rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: unreadable audio ({err})") from err
    if channels != "mix" and wave.shape[1] != channels:
        raise AudioError(f"{path}: has {wave.shape[1]} channels, expected {channels}")
    if wave.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono)


def crop_or_pad(wave: np.ndarray, n_samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Fit `wave` to exactly `n_samples`: crop a longer one, zero-pad a shorter one at the end.

    With `rng` the crop offset is random, for training; without it the excerpt is centred, so evaluation sees
    the same samples every time. Padding always goes after the signal, so the valid part of the result is its
    first `min(len(wave), n_samples)` samples (the batch's `length`).
    """
    if len(wave) >= n_samples:
        slack = len(wave) - n_samples
        offset = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
        return wave[offset : offset + n_samples]
    fitted = np.zeros(n_samples, dtype=wave.dtype)
    fitted[: len(wave)] = wave
    return fitted


class LazySegment:
    """Samples `first..first+n_frames` (file frames) of an audio file, read only when sliced: `segment[a:b]` (indices at
    `sample_rate`) seeks, reads the frames it needs, mixes to mono and resamples, so a corpus of hours trains in
    O(batch) memory. Drop-in for a decoded array in `crop_or_pad` and `ClipDataset` (`len`, slices, `np.asarray`).
    Chunks are resampled on their own (edges differ slightly from resampling the whole file). A read that fails
    mid-run (a file changed or vanished) warns and gives silence rather than ending the run.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, first: int = 0, n_frames: int | None = None):
        try:
            info = sf.info(os.fspath(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioError(f"{path}: unreadable audio ({err})") from err
        if info.frames == 0:
            raise AudioError(f"{path}: empty audio (0 samples)")
        self.path, self.sample_rate, self.file_rate = str(path), int(sample_rate), int(info.samplerate)
        self.first = int(first)
        self.n_frames = info.frames - self.first if n_frames is None else int(n_frames)
        if self.first < 0 or self.n_frames <= 0 or self.first + self.n_frames > info.frames:
            raise AudioError(f"{path}: segment of {self.n_frames} frames at {self.first} outside its {info.frames}")

    def __len__(self) -> int:
        return int(self.n_frames * self.sample_rate // self.file_rate)

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, _ = index.indices(len(self))
        n = max(stop - start, 0)
        ratio = self.file_rate / self.sample_rate
        lo, hi = int(start * ratio), min(int(np.ceil(stop * ratio)) + 1, self.n_frames)
        try:
            frames, _ = sf.read(self.path, start=self.first + lo, stop=self.first + hi, dtype="float32",
                                always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            warnings.warn(f"{self.path}: read failed mid-run ({err}); using silence for this item", stacklevel=2)
            return np.zeros(n, dtype=np.float32)
        mono = frames.mean(axis=1, dtype=np.float32)
        if self.file_rate != self.sample_rate:
            mono = soxr.resample(mono, self.file_rate, self.sample_rate, quality="HQ").astype(np.float32)
        out = np.zeros(n, dtype=np.float32)
        out[: min(n, len(mono))] = mono[:n]
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        wave = self[0 : len(self)]
        return wave if dtype is None else wave.astype(dtype)
