"""SynTheory-style music-theory stimuli (Wei et al. 2024) rendered from MIDI with a real soundfont synthesizer.

Notes, intervals and chords are synthesised by FluidSynth with the TimGM6mb General MIDI soundfont (the one
SynTheory uses, shipped inside the pretty-midi wheel). Rendering is deterministic (reverb and chorus off, every
voice killed between clips) and cached on disk under `earlens.paths.cache_dir("stimuli")/<key>/`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pretty_midi
from tqdm.auto import tqdm

from earlens.paths import cache_dir as default_cache_dir

SOUNDFONT = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"

# SynTheory drops 36 of the 128 GM programs (brown-palm/syntheory, dataset/synthetic/midi_instrument.py,
# get_instruments(ignore_atonal=True, ignore_polyphonic=True, ignore_highly_articulate=True)):
# atonal categories "Synth Effects" (96-103) and "Sound Effects" (112-127); programs whose overtones blur the root
# (celesta 8, glockenspiel 9, tubular bells 14, accordion 21, tango accordion 23, timpani 47, fifths lead 86); and
# very expressive voices (harmonica 22, guitar harmonics 31, orchestral hit 55, shakuhachi 77, whistle 78).
SYNTHEORY_EXCLUDED_PROGRAMS = frozenset(
    [*range(96, 104), *range(112, 128), 8, 9, 14, 21, 23, 47, 86, 22, 31, 55, 77, 78]
)
SYNTHEORY_PROGRAMS = tuple(p for p in range(128) if p not in SYNTHEORY_EXCLUDED_PROGRAMS)

CHORD_QUALITIES = {"major": (0, 4, 7), "minor": (0, 3, 7), "augmented": (0, 4, 8), "diminished": (0, 3, 6)}
PLAY_STYLES = ("up", "down", "unison")
SYNTH_GAIN = 0.5  # FluidSynth master gain: a single piano note peaks near 0.05-0.1, a triad stays below 1
RENDER_VERSION = 1  # bump when the rendering changes, so old caches are not re-used


@dataclass(frozen=True)
class NotesConfig:
    """Single notes: every `midi_pitches` × `programs`. Default: the helix paper's piano C3–B5 (36 pitches)."""

    midi_pitches: tuple[int, ...] = tuple(range(48, 84))
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 1.0
    clip_seconds: float = 1.5
    velocity: int = 100


@dataclass(frozen=True)
class IntervalsConfig:
    """Two notes `interval` semitones apart above `base_pitches` (SynTheory: C4–B4, m2..P8, up/down/unison)."""

    base_pitches: tuple[int, ...] = tuple(range(60, 72))
    intervals: tuple[int, ...] = tuple(range(1, 13))
    play_styles: tuple[str, ...] = PLAY_STYLES
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 0.5
    clip_seconds: float = 1.5
    velocity: int = 100


@dataclass(frozen=True)
class ChordsConfig:
    """Triads: 12 roots × qualities × inversions (0 root position, 1 first, 2 second), SynTheory's voicing."""

    roots: tuple[int, ...] = tuple(range(12))
    qualities: tuple[str, ...] = tuple(CHORD_QUALITIES)
    inversions: tuple[int, ...] = (0, 1, 2)
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 1.0
    clip_seconds: float = 1.5
    velocity: int = 100


CONFIGS = {"notes": NotesConfig, "intervals": IntervalsConfig, "chords": ChordsConfig}


@dataclass
class StimulusSet:
    """Clips `waves` (N, T) float32 at `sample_rate`, per-clip `labels`, their CSV and the cache key; `lengths`
    (real samples per clip, zero padding after them) when the clips differ in length (None: all are whole)."""

    waves: np.ndarray
    sample_rate: int
    labels: dict[str, np.ndarray]
    table_path: Path
    key: str
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.waves)


def load_stimuli_table(table: str | os.PathLike, sample_rate: int = 16000, clip_seconds: float | None = None,
                       path_column: str = "path") -> StimulusSet:
    """Your own recordings as stimuli: a CSV/TSV with a `path_column` (relative to the table) and label columns
    (e.g. `midi_pitch`, `instrument`; integers stay integers). Clips are resampled to `sample_rate`, centred-cropped
    to `clip_seconds` (default: the longest clip) and zero-padded after the signal, with `lengths`. Unreadable
    files stop with an error naming them (a probe on a silently shrunk set would mislead)."""
    from earlens.audio import AudioError, crop_or_pad, load_audio

    table = Path(table)
    if not table.is_file():
        raise FileNotFoundError(f"stimuli table {table} not found (a CSV with a {path_column!r} column)")
    delimiter = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    with open(table, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter=delimiter))
    if not rows or path_column not in rows[0]:
        raise ValueError(f"{table}: needs a {path_column!r} column and at least one row")
    waves, bad = [], []
    for row in tqdm(rows, desc=f"loading {table.name}", leave=False):
        path = Path(row[path_column]) if Path(row[path_column]).is_absolute() else table.parent / row[path_column]
        try:
            waves.append(load_audio(path, sample_rate))
        except AudioError as err:
            bad.append(str(err))
    if bad:
        raise AudioError(f"{table}: {len(bad)} unreadable file(s): " + "; ".join(bad[:3]))
    n_samples = round(clip_seconds * sample_rate) if clip_seconds else max(len(w) for w in waves)
    lengths = np.array([min(len(w), n_samples) for w in waves], dtype=np.int64)
    stacked = np.stack([crop_or_pad(w, n_samples) for w in waves]).astype(np.float32)
    labels = {}
    for name in (c for c in rows[0] if c != path_column):
        values = [row[name] for row in rows]
        try:
            labels[name] = np.array([int(v) for v in values], dtype=np.int64)
        except ValueError:
            labels[name] = np.array(values)
    digest = hashlib.sha1(stacked.tobytes() + lengths.tobytes()).hexdigest()[:16]
    return StimulusSet(stacked, sample_rate, labels, table, f"table-{digest}", lengths)


def chord_pitches(root: int, quality: str, inversion: int) -> tuple[int, int, int]:
    """MIDI pitches of a triad voiced as SynTheory does: root nearest middle C (F#3..F4), inverted upwards."""
    root_pitch = 60 + root if root <= 5 else 48 + root
    pitches = [root_pitch + step for step in CHORD_QUALITIES[quality]]
    return tuple(pitches[inversion:] + [p + 12 for p in pitches[:inversion]])


def _note_events(config: NotesConfig) -> tuple[list, dict]:
    rows = [(pitch, program) for pitch in config.midi_pitches for program in config.programs]
    events = [[(pitch, 0.0, config.note_seconds)] for pitch, _ in rows]
    pitch, program = np.array(rows, dtype=np.int64).reshape(-1, 2).T
    labels = {"midi_pitch": pitch, "pitch_class": pitch % 12, "octave": pitch // 12 - 1, "program": program}
    return events, labels


def _interval_events(config: IntervalsConfig) -> tuple[list, dict]:
    rows = [
        (base, interval, style, program)
        for base in config.base_pitches
        for interval in config.intervals
        for style in config.play_styles
        for program in config.programs
    ]
    d = config.note_seconds
    events = []
    for base, interval, style, _ in rows:
        upper = base + interval
        if style == "unison":
            events.append([(base, 0.0, 2 * d), (upper, 0.0, 2 * d)])
        else:
            first, second = (base, upper) if style == "up" else (upper, base)
            events.append([(first, 0.0, d), (second, d, 2 * d)])
    labels = {
        "base_pitch": np.array([r[0] for r in rows], dtype=np.int64),
        "interval": np.array([r[1] for r in rows], dtype=np.int64),
        "play_style": np.array([r[2] for r in rows]),
        "program": np.array([r[3] for r in rows], dtype=np.int64),
    }
    labels["root"] = labels["base_pitch"] % 12
    return events, labels


def _chord_events(config: ChordsConfig) -> tuple[list, dict]:
    rows = [
        (root, quality, inversion, program)
        for root in config.roots
        for quality in config.qualities
        for inversion in config.inversions
        for program in config.programs
    ]
    events = [[(p, 0.0, config.note_seconds) for p in chord_pitches(*row[:3])] for row in rows]
    labels = {
        "root": np.array([r[0] for r in rows], dtype=np.int64),
        "quality": np.array([r[1] for r in rows]),
        "inversion": np.array([r[2] for r in rows], dtype=np.int64),
        "program": np.array([r[3] for r in rows], dtype=np.int64),
        "bass_pitch": np.array([min(e[0] for e in ev) for ev in events], dtype=np.int64),
    }
    return events, labels


EVENT_BUILDERS = {"notes": _note_events, "intervals": _interval_events, "chords": _chord_events}


def _check_config(concept: str, config) -> None:
    bad_programs = [p for p in config.programs if not 0 <= p < 128]
    if bad_programs:
        raise ValueError(f"{concept}: GM programs must be in 0..127, got {bad_programs}")
    if config.clip_seconds <= 0 or config.note_seconds <= 0:
        raise ValueError(f"{concept}: note_seconds and clip_seconds must be positive")
    if concept == "chords":
        unknown = set(config.qualities) - set(CHORD_QUALITIES)
        if unknown or not set(config.inversions) <= {0, 1, 2}:
            raise ValueError(f"chords: qualities must be in {list(CHORD_QUALITIES)} and inversions in 0..2")
    if concept == "intervals" and not set(config.play_styles) <= set(PLAY_STYLES):
        raise ValueError(f"intervals: play_styles must be in {PLAY_STYLES}, got {config.play_styles}")


class _Renderer:
    """One FluidSynth instance re-used for every clip; reverb/chorus off so each clip starts from silence."""

    def __init__(self, sample_rate: int):
        import fluidsynth  # pyfluidsynth; needs libfluidsynth (apt: libfluidsynth3)

        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(
            gain=SYNTH_GAIN, samplerate=float(sample_rate), **{"synth.reverb.active": 0, "synth.chorus.active": 0}
        )
        self.soundfont_id = self.synth.sfload(str(SOUNDFONT))
        if self.soundfont_id < 0:
            raise RuntimeError(f"FluidSynth could not load the soundfont {SOUNDFONT}")

    def render(self, notes: list[tuple[int, float, float]], program: int, velocity: int, n_samples: int) -> np.ndarray:
        """Mono float32 clip of `n_samples` with `notes` = [(midi pitch, onset s, offset s)] on one GM program."""
        channel = 0
        self.synth.program_select(channel, self.soundfont_id, 0, program)
        actions = sorted(
            [(round(on * self.sample_rate), 1, pitch) for pitch, on, _ in notes]
            + [(round(off * self.sample_rate), 0, pitch) for pitch, _, off in notes]
        )
        chunks, now = [], 0
        for at, is_on, pitch in actions:
            at = min(at, n_samples)
            if at > now:
                chunks.append(self.synth.get_samples(at - now))
                now = at
            if is_on:
                self.synth.noteon(channel, pitch, velocity)
            else:
                self.synth.noteoff(channel, pitch)
        if n_samples > now:
            chunks.append(self.synth.get_samples(n_samples - now))
        self.synth.all_sounds_off(channel)
        self.synth.get_samples(64)  # let the killed voices finish their release inside the synth, not in the next clip
        stereo = np.concatenate(chunks).reshape(-1, 2).astype(np.float32) / 32768.0
        return stereo.mean(axis=1)

    def close(self) -> None:
        self.synth.delete()


def stimulus_key(concept: str, config, sample_rate: int) -> str:
    """Hash of everything that changes the audio: concept, config, sample rate, soundfont, renderer version."""
    spec = {
        "concept": concept,
        "config": asdict(config),
        "sample_rate": sample_rate,
        "soundfont": [SOUNDFONT.name, SOUNDFONT.stat().st_size],
        "version": RENDER_VERSION,
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _write_table(path: Path, labels: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *labels])
        for i, row in enumerate(zip(*labels.values())):
            writer.writerow([i, *(v.item() if hasattr(v, "item") else v for v in row)])


def _read_table(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [row[name] for row in rows] for name in rows[0] if name != "index"}
    labels = {}
    for name, values in columns.items():
        try:
            labels[name] = np.array([int(v) for v in values], dtype=np.int64)
        except ValueError:
            is_bool = set(values) <= {"True", "False"}
            labels[name] = np.array([v == "True" for v in values]) if is_bool else np.array(values)
    return labels


def render_stimuli(
    concept: str, cache_dir: str | os.PathLike | None = None, sample_rate: int = 16000, **options
) -> StimulusSet:
    """Render (or load from cache) a SynTheory concept: "notes", "intervals" or "chords".

    `options` override fields of the concept's config (`NotesConfig`, `IntervalsConfig`, `ChordsConfig`).
    Labels carry a boolean `silent` column (SynTheory also flags the few silent soundfont notes).
    """
    if concept not in CONFIGS:
        raise ValueError(f"unknown concept {concept!r}; choose from {list(CONFIGS)}")
    config_cls = CONFIGS[concept]
    unknown = set(options) - {f.name for f in fields(config_cls)}
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no option(s) {sorted(unknown)}")
    config = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    _check_config(concept, config)

    key = stimulus_key(concept, config, sample_rate)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("stimuli")
    target = folder / key
    if not (target / "waves.npy").is_file():
        _render_to(target, concept, config, sample_rate)
    return StimulusSet(
        waves=np.load(target / "waves.npy", mmap_mode="r"),
        sample_rate=sample_rate,
        labels=_read_table(target / "labels.csv"),
        table_path=target / "labels.csv",
        key=key,
    )


def _render_to(target: Path, concept: str, config, sample_rate: int) -> None:
    """Render every clip into a private temporary folder, then move it into place (safe with concurrent ranks)."""
    events, labels = EVENT_BUILDERS[concept](config)
    n_samples = round(config.clip_seconds * sample_rate)
    renderer = _Renderer(sample_rate)
    try:
        waves = np.stack(
            [
                renderer.render(notes, int(program), config.velocity, n_samples)
                for notes, program in tqdm(
                    zip(events, labels["program"]), total=len(events), desc=f"rendering {concept}", leave=False
                )
            ]
        )
    finally:
        renderer.close()
    labels["silent"] = np.abs(waves).max(axis=1) < 1e-4
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    np.save(staging / "waves.npy", waves.astype(np.float32))
    _write_table(staging / "labels.csv", labels)
    (staging / "config.json").write_text(
        json.dumps({"concept": concept, "config": asdict(config), "sample_rate": sample_rate}, indent=1)
    )
    try:
        staging.rename(target)
    except OSError:  # another process finished the same render first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
