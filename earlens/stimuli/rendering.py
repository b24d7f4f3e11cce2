"""SynTheory's seven music-theory concepts (Wei et al. 2024) rendered from MIDI with a real soundfont synthesizer.

Notes, intervals, scales, chords, chord progressions, tempos and time signatures follow brown-palm/syntheory's
generators (`dataset/synthetic/*.py`) and are synthesised by FluidSynth with the TimGM6mb General MIDI soundfont
(the one SynTheory uses, shipped inside the pretty-midi wheel). Rendering is deterministic (reverb and chorus off
except for time signatures' reverb levels, every voice killed between clips) and cached on disk under
`earlens.io.paths.cache_dir("stimuli")/<key>/`. The concepts' options are `earlens.stimuli.syntheory_concepts`, what
each clip plays `earlens.stimuli.syntheory_events`; this module renders and caches a set, and loads your own recordings
(`load_stimuli_table`).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi
from tqdm.auto import tqdm

from earlens.io.paths import cache_dir as default_cache_dir
from earlens.stimuli.syntheory_concepts import concept_config
from earlens.stimuli.syntheory_events import EVENT_BUILDERS, ClipEvents

SOUNDFONT = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"

SYNTH_GAIN = 0.5  # FluidSynth master gain: a single piano note peaks near 0.05-0.1, a triad stays below 1
FLUID_BLOCK = 64  # FluidSynth renders (and applies MIDI events) in blocks of this many samples
RENDER_VERSION = 2  # bump when the rendering changes, so old caches are not re-used


@dataclass
class StimulusSet:
    """Clips `waves` (N, T) float32 at `sample_rate`, per-clip `labels`, their CSV and the cache key; `lengths`
    (real samples per clip, zero padding after them) when the clips differ in length (None: all are whole);
    `duplicates`: (copy, kept) names of clips left out because they repeat an earlier clip's audio."""

    waves: np.ndarray
    sample_rate: int
    labels: dict[str, np.ndarray]
    table_path: Path
    key: str
    lengths: np.ndarray | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waves)


def load_stimuli_table(table: str | os.PathLike, sample_rate: int = 16000, clip_seconds: float | None = None,
                       path_column: str = "path", check=None) -> StimulusSet:
    """Your own recordings as stimuli: a CSV/TSV with a `path_column` (relative to the table) and label columns
    (e.g. `midi_pitch`, `instrument`; typed like `read_labels`). `check(labels, table)` (the caller's
    validation of the label columns) runs before any audio is decoded. Clips are resampled to `sample_rate`,
    centred-cropped to `clip_seconds` (default: the longest clip) and zero-padded after the signal, with `lengths`.
    Rows whose audio repeats an earlier row's (a file listed twice, or copied under another name) are left out with
    a warning and listed in `duplicates`: copies would otherwise fall on both sides of a probe's train/test split.
    Unreadable files stop with an error naming them (a probe on a silently shrunk set would mislead)."""
    from earlens.io.audio import AudioError, audio_fingerprint, crop_or_pad, first_copies, load_audio

    table = Path(table)
    if not table.is_file():
        raise FileNotFoundError(f"stimuli table {table} not found (a CSV with a {path_column!r} column)")
    delimiter = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    with open(table, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter=delimiter))
    if not rows or path_column not in rows[0]:
        raise ValueError(f"{table}: needs a {path_column!r} column and at least one row")
    labels = {name: typed_column([row[name] for row in rows]) for name in rows[0] if name != path_column}
    if check is not None:
        check(labels, table)
    waves, bad = [], []
    for row in tqdm(rows, desc=f"loading {table.name}", leave=False):
        path = Path(row[path_column]) if Path(row[path_column]).is_absolute() else table.parent / row[path_column]
        try:
            waves.append(load_audio(path, sample_rate))
        except AudioError as err:
            bad.append(str(err))
    if bad:
        raise AudioError(f"{table}: {len(bad)} unreadable file(s): " + "; ".join(bad[:3]))
    keep, copies = first_copies([audio_fingerprint(wave) for wave in waves])
    duplicates = [(rows[copy][path_column], rows[original][path_column]) for copy, original in copies]
    if duplicates:
        warnings.warn(f"{table}: {len(duplicates)} row(s) repeat the audio of an earlier row and are left out (e.g. "
                      f"{duplicates[0][0]} = {duplicates[0][1]})", stacklevel=2)
        waves = [waves[i] for i in keep]
        labels = {name: values[keep] for name, values in labels.items()}
    n_samples = round(clip_seconds * sample_rate) if clip_seconds else max(len(w) for w in waves)
    lengths = np.array([min(len(w), n_samples) for w in waves], dtype=np.int64)
    stacked = np.stack([crop_or_pad(w, n_samples) for w in waves]).astype(np.float32)
    digest = hashlib.sha1(stacked.tobytes() + lengths.tobytes()).hexdigest()[:16]
    return StimulusSet(stacked, sample_rate, labels, table, f"table-{digest}", lengths, duplicates)


class _Renderer:
    """One FluidSynth instance re-used for clips; reverb/chorus off so each clip starts from silence.

    Every clip starts on a FluidSynth block boundary (events apply at block starts), but a used synthesizer still
    alters a few samples of later attacks, so callers `restart` it wherever clips must not depend on their
    predecessors (`_render_to`: every chunk). With `reverb` the reverb unit is on (sends set per clip by CC 91)
    and, since FluidSynth keeps its reverb state across a reset, every clip gets a fresh synthesizer (~50 ms).
    """

    def __init__(self, sample_rate: int, reverb: bool = False):
        self.sample_rate = sample_rate
        self.reverb = reverb
        self.synth = None

    def restart(self) -> None:
        """A fresh synthesizer: a used one still changes a few samples of later attacks (< 0.01 of the peak)."""
        import fluidsynth  # pyfluidsynth; needs libfluidsynth (apt: libfluidsynth3)

        if self.synth is not None:
            self.synth.delete()
        self.synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=float(self.sample_rate),
                                      **{"synth.reverb.active": int(self.reverb), "synth.chorus.active": 0})
        self.soundfont_id = self.synth.sfload(str(SOUNDFONT))
        if self.soundfont_id < 0:
            raise RuntimeError(f"FluidSynth could not load the soundfont {SOUNDFONT}")

    def render(self, clip: ClipEvents, n_samples: int) -> np.ndarray:
        """Mono float32 `n_samples` of `clip`, from its `start` on."""
        if self.synth is None or self.reverb:
            self.restart()
        channel = 9 if clip.drum else 0
        self.synth.program_select(channel, self.soundfont_id, 128 if clip.drum else 0, clip.program)
        if self.reverb:
            self.synth.cc(channel, 91, clip.reverb_send)
        skip = round(clip.start * self.sample_rate)
        end = skip + n_samples
        actions = sorted(
            [(round(on * self.sample_rate), 1, pitch, velocity) for pitch, on, _, velocity in clip.notes]
            + [(round(off * self.sample_rate), 0, pitch, 0) for pitch, _, off, _ in clip.notes]
        )
        chunks, now = [], 0
        for at, is_on, pitch, velocity in actions:
            at = min(at, end)
            if at > now:
                chunks.append(self.synth.get_samples(at - now))
                now = at
            if is_on:
                self.synth.noteon(channel, pitch, velocity)
            else:
                self.synth.noteoff(channel, pitch)
        if end > now:
            chunks.append(self.synth.get_samples(end - now))
        self.synth.all_sounds_off(channel)
        # let the killed voices finish their release inside the synth, not in the next clip, and end on a 64-sample
        # block: FluidSynth applies events at block starts, so the next clip's onsets do not depend on this one
        self.synth.get_samples(FLUID_BLOCK + (-end) % FLUID_BLOCK)
        stereo = np.concatenate(chunks).reshape(-1, 2).astype(np.float32) / 32768.0
        return stereo.mean(axis=1)[skip:]

    def close(self) -> None:
        if self.synth is not None:
            self.synth.delete()


def stimulus_key(concept: str, config, sample_rate: int, subset: tuple[int, int] | None = None) -> str:
    """Hash of everything that changes the audio: concept, config, sample rate, soundfont, renderer version and
    the (size, seed) of a subset."""
    spec = {
        "concept": concept,
        "config": asdict(config),
        "sample_rate": sample_rate,
        "soundfont": [SOUNDFONT.name, SOUNDFONT.stat().st_size],
        "version": RENDER_VERSION,
    }
    if subset is not None:
        spec["subset"] = list(subset)
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _write_table(path: Path, labels: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *labels])
        for i, row in enumerate(zip(*labels.values())):
            writer.writerow([i, *(v.item() if hasattr(v, "item") else v for v in row)])


def read_labels(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A rendered set's labels.csv as columns (`typed_column`)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {name: typed_column([row[name] for row in rows]) for name in rows[0] if name != "index"}


def typed_column(values: list[str]) -> np.ndarray:
    """A CSV column as integers if every value is one, else floats, else booleans (True/False), else strings."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        pass
    return np.array([v == "True" for v in values]) if set(values) <= {"True", "False"} else np.array(values)


def subset_rows(n_rows: int, subset: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded uniform random `subset` of `n_rows` (all of them when `subset` is None)."""
    if subset is None:
        return np.arange(n_rows)
    if not 1 <= subset <= n_rows:
        raise ValueError(f"subset must be in 1..{n_rows}, got {subset}")
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=subset, replace=False))


def render_stimuli(
    concept: str, cache_dir: str | os.PathLike | None = None, sample_rate: int = 16000, *,
    subset: int | None = None, subset_seed: int = 0, **options
) -> StimulusSet:
    """Render (or load from cache) a SynTheory concept (`earlens.stimuli.syntheory_concepts.CONFIGS`: notes, intervals,
    scales, chords, chord_progressions, tempos, time_signatures).

    `options` override fields of the concept's config (`earlens.stimuli.syntheory_concepts.syntheory_options(concept)`
    gives SynTheory's full set); `subset` renders only a seeded random `subset` of its clips (label `row`: the clip's
    index in the full set). Labels carry a boolean `silent` column (SynTheory also flags the few silent soundfont
    notes). Rendering resumes where an interrupted one stopped; waves are memory-mapped from the cache.
    """
    config = concept_config(concept, options)
    key = stimulus_key(concept, config, sample_rate, None if subset is None else (subset, subset_seed))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("stimuli")
    target = folder / key
    if not (target / "waves.npy").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f".{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one renderer per key; the others wait, then load its result
            if not (target / "waves.npy").is_file():
                _render_to(target, concept, config, sample_rate, subset, subset_seed)
    return StimulusSet(
        waves=np.load(target / "waves.npy", mmap_mode="r"),
        sample_rate=sample_rate,
        labels=read_labels(target / "labels.csv"),
        table_path=target / "labels.csv",
        key=key,
    )


def _render_to(target: Path, concept: str, config, sample_rate: int, subset: int | None, subset_seed: int,
               chunk: int = 256) -> None:
    """Render every clip into `<target>.partial` (a memory-mapped array and a count of finished clips, so an
    interrupted render resumes), then move it into place."""
    clips, labels = EVENT_BUILDERS[concept](config)
    rows = subset_rows(len(clips), subset, subset_seed)
    labels = {"row": rows, **{name: values[rows] for name, values in labels.items()}}
    n_samples = round(config.clip_seconds * sample_rate)
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    waves_path, done_path = partial / "waves.npy", partial / "rendered.json"
    done = json.loads(done_path.read_text())["clips"] if done_path.is_file() and waves_path.is_file() else 0
    waves = np.lib.format.open_memmap(waves_path, mode="r+" if done else "w+", dtype=np.float32,
                                      shape=(len(rows), n_samples))
    renderer = _Renderer(sample_rate, reverb=concept == "time_signatures")
    try:
        with tqdm(total=len(rows), initial=done, desc=f"rendering {concept}", leave=False) as bar:
            for begin in range(done, len(rows), chunk):
                stop = min(begin + chunk, len(rows))
                renderer.restart()  # each chunk from a fresh synth: a resumed render equals an uninterrupted one
                waves[begin:stop] = [renderer.render(clips[row], n_samples) for row in rows[begin:stop]]
                waves.flush()
                done_path.write_text(json.dumps({"clips": stop}))
                bar.update(stop - begin)
    finally:
        renderer.close()
    labels["silent"] = np.concatenate([np.abs(waves[i:i + chunk]).max(axis=1) < 1e-4
                                       for i in range(0, len(rows), chunk)])
    del waves
    _write_table(partial / "labels.csv", labels)
    (partial / "config.json").write_text(json.dumps(
        {"concept": concept, "config": asdict(config), "sample_rate": sample_rate, "subset": subset,
         "subset_seed": subset_seed}, indent=1))
    done_path.unlink()
    partial.rename(target)
