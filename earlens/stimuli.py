"""SynTheory's seven music-theory concepts (Wei et al. 2024) rendered from MIDI with a real soundfont synthesizer.

Notes, intervals, scales, chords, chord progressions, tempos and time signatures follow brown-palm/syntheory's
generators (`dataset/synthetic/*.py`) and are synthesised by FluidSynth with the TimGM6mb General MIDI soundfont
(the one SynTheory uses, shipped inside the pretty-midi wheel). Rendering is deterministic (reverb and chorus off
except for time signatures' reverb levels, every voice killed between clips) and cached on disk under
`earlens.paths.cache_dir("stimuli")/<key>/`.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

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
FLUID_BLOCK = 64  # FluidSynth renders (and applies MIDI events) in blocks of this many samples
RENDER_VERSION = 2  # bump when the rendering changes, so old caches are not re-used
SYNTHEORY_VELOCITY = 64  # brown-palm/syntheory dataset/music/midi.py write_melody / write_progression
SYNTHEORY_BEAT_SECONDS = 0.5  # every pitched SynTheory clip is written at 120 bpm

# brown-palm/syntheory dataset/music/constants.py, in get_all_scales' order
MODES = {
    "ionian": (0, 2, 4, 5, 7, 9, 11), "dorian": (0, 2, 3, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11), "mixolydian": (0, 2, 4, 5, 7, 9, 10), "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
}
SCALE_PLAY_STYLES = ("up", "down")
# brown-palm/syntheory dataset/synthetic/chord_progressions.py PROGRESSIONS: (mode, scale degrees of 4 triads)
PROGRESSIONS = (
    ("ionian", (1, 4, 5, 1)), ("ionian", (1, 4, 6, 5)), ("ionian", (1, 5, 6, 4)), ("ionian", (1, 6, 4, 5)),
    ("ionian", (2, 5, 1, 6)), ("ionian", (4, 1, 5, 6)), ("ionian", (4, 5, 3, 6)), ("ionian", (5, 4, 1, 5)),
    ("ionian", (5, 6, 4, 1)), ("ionian", (6, 4, 1, 5)), ("aeolian", (1, 2, 5, 1)), ("aeolian", (1, 3, 4, 1)),
    ("aeolian", (1, 4, 5, 1)), ("aeolian", (1, 6, 3, 7)), ("aeolian", (1, 6, 7, 1)), ("aeolian", (1, 6, 7, 3)),
    ("aeolian", (1, 7, 6, 4)), ("aeolian", (4, 7, 1, 1)), ("aeolian", (7, 6, 7, 1)),
)
PROGRESSION_NAMES = tuple(f"{mode}-{'-'.join(map(str, degrees))}" for mode, degrees in PROGRESSIONS)


@dataclass(frozen=True)
class Click:
    """A metronome voice (brown-palm/syntheory dataset/synthetic/metronome_configs.py): a GM program (or the drum
    kit, `drum`) with an accented downbeat pitch and a softer off-beat pitch."""

    program: int
    drum: bool
    downbeat_pitch: int
    offbeat_pitch: int
    downbeat_velocity: int = 100
    offbeat_velocity: int = 75


CLICKS = {
    "default": Click(0, True, 37, 31),  # SheetSage's drum click: side stick / sticks on the standard kit
    "woodblock_dark": Click(115, False, 37, 31),
    "woodblock_light": Click(115, False, 52, 48),
    "taiko": Click(116, False, 52, 48),
    "synth_drum": Click(118, False, 52, 48),
}
TIME_SIGNATURES = ("2/2", "2/4", "3/4", "3/8", "4/4", "6/8", "9/8", "12/8")
REVERB_SENDS = (0, 63, 127)  # MIDI CC 91 of SynTheory's reverb levels 0, 1, 2


@dataclass(frozen=True)
class NotesConfig:
    """Single notes: every `midi_pitches` × `programs`, played `plays` times back to back. Default: the helix
    paper's piano C3–B5 (36 pitches) once; `syntheory_options("notes")` gives SynTheory's set."""

    midi_pitches: tuple[int, ...] = tuple(range(48, 84))
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 1.0
    clip_seconds: float = 1.5
    velocity: int = 100
    plays: int = 1


@dataclass(frozen=True)
class IntervalsConfig:
    """Two notes `interval` semitones apart above `base_pitches` (SynTheory: C4–B4, m2..P8, up/down/unison); the
    pair (melodic: one note after the other; unison: together for both slots) is played `plays` times."""

    base_pitches: tuple[int, ...] = tuple(range(60, 72))
    intervals: tuple[int, ...] = tuple(range(1, 13))
    play_styles: tuple[str, ...] = PLAY_STYLES
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 0.5
    clip_seconds: float = 1.5
    velocity: int = 100
    plays: int = 1


@dataclass(frozen=True)
class ChordsConfig:
    """Triads: 12 roots × qualities × inversions (0 root position, 1 first, 2 second), SynTheory's voicing,
    played `plays` times."""

    roots: tuple[int, ...] = tuple(range(12))
    qualities: tuple[str, ...] = tuple(CHORD_QUALITIES)
    inversions: tuple[int, ...] = (0, 1, 2)
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 1.0
    clip_seconds: float = 1.5
    velocity: int = 100
    plays: int = 1


@dataclass(frozen=True)
class ScalesConfig:
    """Seven-note modes plus the octave, one note a beat, up or down, tonic nearest middle C (SynTheory)."""

    roots: tuple[int, ...] = tuple(range(12))
    modes: tuple[str, ...] = tuple(MODES)
    play_styles: tuple[str, ...] = SCALE_PLAY_STYLES
    programs: tuple[int, ...] = (0,)
    note_seconds: float = SYNTHEORY_BEAT_SECONDS
    clip_seconds: float = 4.0
    velocity: int = SYNTHEORY_VELOCITY


@dataclass(frozen=True)
class ChordProgressionsConfig:
    """SynTheory's 19 four-triad progressions (index into `PROGRESSIONS`) in every key, two beats per chord."""

    progressions: tuple[int, ...] = tuple(range(len(PROGRESSIONS)))
    keys: tuple[int, ...] = tuple(range(12))
    programs: tuple[int, ...] = (0,)
    note_seconds: float = 2 * SYNTHEORY_BEAT_SECONDS
    clip_seconds: float = 4.0
    velocity: int = SYNTHEORY_VELOCITY


@dataclass(frozen=True)
class TemposConfig:
    """4/4 click tracks at every `bpms` on every click voice, `track_seconds` long; each gives `offsets` clips
    of `clip_seconds` starting at seeded uniform random times (SynTheory's random_trim, which it leaves unseeded)."""

    bpms: tuple[int, ...] = tuple(range(50, 211))
    clicks: tuple[str, ...] = tuple(CLICKS)
    offsets: int = 5
    track_seconds: float = 20.0
    clip_seconds: float = 4.0
    seed: int = 0


@dataclass(frozen=True)
class TimeSignaturesConfig:
    """Click tracks at 120 bpm in each time signature (downbeat accented; compound metres click in eighths),
    at three reverb sends, on every click voice; `offsets` random `clip_seconds` clips of each `track_seconds`."""

    time_signatures: tuple[str, ...] = TIME_SIGNATURES
    reverb_levels: tuple[int, ...] = (0, 1, 2)
    clicks: tuple[str, ...] = tuple(CLICKS)
    offsets: int = 10
    bpm: int = 120
    track_seconds: float = 30.0
    clip_seconds: float = 4.0
    seed: int = 0


CONFIGS = {"notes": NotesConfig, "intervals": IntervalsConfig, "scales": ScalesConfig, "chords": ChordsConfig,
           "chord_progressions": ChordProgressionsConfig, "tempos": TemposConfig,
           "time_signatures": TimeSignaturesConfig}
# brown-palm/syntheory probe/probe_config.py CONCEPT_LABELS in our label names: (classes, label), primary first;
# classes None marks a regression target
CONCEPT_LABELS = {
    "notes": [(12, "pitch_class"), (9, "octave")],
    "intervals": [(12, "interval"), (12, "root")],
    "scales": [(7, "mode"), (12, "root")],
    "chords": [(4, "quality"), (3, "inversion"), (12, "root")],
    "chord_progressions": [(19, "progression"), (12, "key")],
    "tempos": [(None, "bpm")],
    "time_signatures": [(8, "time_signature"), (6, "beats"), (3, "subdivision")],
}
SYNTHEORY_SIZES = {"notes": 9936, "intervals": 39744, "scales": 15456, "chords": 13248, "chord_progressions": 20976,
                   "tempos": 4025, "time_signatures": 1200}


def syntheory_options(concept: str) -> dict:
    """`render_stimuli` options that give SynTheory's full data set of `concept` (sizes `SYNTHEORY_SIZES`): its 92
    programs, 120 bpm timing (notes and chords: four 2-beat plays; intervals: four up/down pairs), velocity 64."""
    if concept not in CONFIGS:
        raise ValueError(f"unknown concept {concept!r}; choose from {list(CONFIGS)}")
    pitched = {"programs": SYNTHEORY_PROGRAMS, "velocity": SYNTHEORY_VELOCITY, "clip_seconds": 4.0}
    return {
        "notes": {**pitched, "midi_pitches": tuple(range(108)), "note_seconds": 1.0, "plays": 4},
        "intervals": {**pitched, "note_seconds": 0.5, "plays": 4},
        "chords": {**pitched, "note_seconds": 1.0, "plays": 4},
        "scales": {"programs": SYNTHEORY_PROGRAMS},
        "chord_progressions": {"programs": SYNTHEORY_PROGRAMS},
        "tempos": {},
        "time_signatures": {},
    }[concept]


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
    """MIDI pitches of a triad voiced as SynTheory does: major, minor, diminished from the root nearest middle C
    (F#3..F4); augmented as the third degree of the harmonic minor a minor third below (so F#, G, G# sit an octave
    higher); inverted upwards."""
    if quality == "augmented":
        root_pitch = tonic_pitch((root - 3) % 12) + 3
    else:
        root_pitch = tonic_pitch(root)
    pitches = [root_pitch + step for step in CHORD_QUALITIES[quality]]
    return tuple(pitches[inversion:] + [p + 12 for p in pitches[:inversion]])


def tonic_pitch(pitch_class: int) -> int:
    """SynTheory's key centre: the pitch of `pitch_class` nearest middle C (C4..F4 above it, F#3..B3 below)."""
    return 60 + pitch_class if pitch_class <= 5 else 48 + pitch_class


def progression_pitches(key: int, progression: int) -> list[tuple[int, int, int]]:
    """The four triads of `PROGRESSIONS[progression]` in `key`, as SynTheory voices them: stacked thirds of the
    mode, each note's pitch its scale offset above the tonic (so every chord stays within one octave of it)."""
    mode, degrees = PROGRESSIONS[progression]
    offsets = MODES[mode]
    return [tuple(tonic_pitch(key) + offsets[(degree - 1 + 2 * k) % 7] for k in range(3)) for degree in degrees]


def time_signature_parts(signature: str) -> tuple[int, int, bool]:
    """(beats, subdivision, compound) of "6/8": compound when the beats divide by 3 and the unit is not a
    quarter (SynTheory's is_compound_time_signature, so 3/8 counts as compound)."""
    beats, subdivision = (int(part) for part in signature.split("/"))
    return beats, subdivision, beats % 3 == 0 and subdivision != 4


class _Clip(NamedTuple):
    """What one clip plays: notes (pitch, onset s, offset s, velocity) on a GM program or the drum kit, with a
    reverb send (MIDI CC 91), rendered from `start` seconds of the performance on."""

    notes: tuple
    program: int
    drum: bool = False
    reverb_send: int = 0
    start: float = 0.0


def _repeat(pattern: list[tuple[int, float, float]], period: float, plays: int, velocity: int) -> tuple:
    return tuple((pitch, on + k * period, off + k * period, velocity)
                 for k in range(plays) for pitch, on, off in pattern)


def _labels(rows: list[dict]) -> dict[str, np.ndarray]:
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


def _note_events(config: NotesConfig) -> tuple[list, dict]:
    rows = [{"midi_pitch": pitch, "pitch_class": pitch % 12, "octave": pitch // 12 - 1, "program": program}
            for pitch in config.midi_pitches for program in config.programs]
    d = config.note_seconds
    clips = [_Clip(_repeat([(r["midi_pitch"], 0.0, d)], d, config.plays, config.velocity), r["program"]) for r in rows]
    return clips, _labels(rows)


def _interval_events(config: IntervalsConfig) -> tuple[list, dict]:
    rows = [{"base_pitch": base, "interval": interval, "play_style": style, "program": program, "root": base % 12}
            for base in config.base_pitches for interval in config.intervals for style in config.play_styles
            for program in config.programs]
    d = config.note_seconds
    clips = []
    for row in rows:
        lower, upper = row["base_pitch"], row["base_pitch"] + row["interval"]
        if row["play_style"] == "unison":
            pattern = [(lower, 0.0, 2 * d), (upper, 0.0, 2 * d)]
        else:
            first, second = (lower, upper) if row["play_style"] == "up" else (upper, lower)
            pattern = [(first, 0.0, d), (second, d, 2 * d)]
        clips.append(_Clip(_repeat(pattern, 2 * d, config.plays, config.velocity), row["program"]))
    return clips, _labels(rows)


def _chord_events(config: ChordsConfig) -> tuple[list, dict]:
    rows = [{"root": root, "quality": quality, "inversion": inversion, "program": program}
            for root in config.roots for quality in config.qualities for inversion in config.inversions
            for program in config.programs]
    d = config.note_seconds
    clips = []
    for row in rows:
        pitches = chord_pitches(row["root"], row["quality"], row["inversion"])
        row["bass_pitch"] = min(pitches)
        clips.append(_Clip(_repeat([(p, 0.0, d) for p in pitches], d, config.plays, config.velocity), row["program"]))
    return clips, _labels(rows)


def _scale_events(config: ScalesConfig) -> tuple[list, dict]:
    rows = [{"root": root, "mode": mode, "play_style": style, "program": program}
            for root in config.roots for mode in config.modes for style in config.play_styles
            for program in config.programs]
    d = config.note_seconds
    clips = []
    for row in rows:
        pitches = [tonic_pitch(row["root"]) + offset for offset in (*MODES[row["mode"]], 12)]
        if row["play_style"] == "down":
            pitches.reverse()
        clips.append(_Clip(tuple((p, k * d, (k + 1) * d, config.velocity) for k, p in enumerate(pitches)),
                           row["program"]))
    return clips, _labels(rows)


def _progression_events(config: ChordProgressionsConfig) -> tuple[list, dict]:
    rows = [{"progression": PROGRESSION_NAMES[index], "progression_index": index, "mode": PROGRESSIONS[index][0],
             "key": key, "program": program}
            for key in config.keys for index in config.progressions for program in config.programs]
    d = config.note_seconds
    clips = [_Clip(tuple((p, k * d, (k + 1) * d, config.velocity)
                         for k, chord in enumerate(progression_pitches(row["key"], row["progression_index"]))
                         for p in chord), row["program"]) for row in rows]
    return clips, _labels(rows)


def _click_track(click: Click, beats_per_bar: int, period: float, n_clicks: int, track_seconds: float) -> tuple:
    """SynTheory's write_click: `n_clicks` clicks a `period` apart, each held one period, the first of every bar
    accented; cut at `track_seconds` (its trim)."""
    notes = []
    for b in range(n_clicks):
        if b * period >= track_seconds:
            break
        downbeat = b % beats_per_bar == 0
        pitch = click.downbeat_pitch if downbeat else click.offbeat_pitch
        velocity = click.downbeat_velocity if downbeat else click.offbeat_velocity
        notes.append((pitch, b * period, min((b + 1) * period, track_seconds), velocity))
    return tuple(notes)


def _offsets(seed: int, n_tracks: int, per_track: int, track_seconds: float, clip_seconds: float) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, track_seconds - clip_seconds, size=(n_tracks, per_track))


def _tempo_events(config: TemposConfig) -> tuple[list, dict]:
    tracks = [(bpm, name) for bpm in config.bpms for name in config.clicks]
    starts = _offsets(config.seed, len(tracks), config.offsets, config.track_seconds, config.clip_seconds)
    clips, rows = [], []
    for (bpm, name), track_starts in zip(tracks, starts):
        click = CLICKS[name]
        notes = _click_track(click, 4, 60.0 / bpm, bpm // 3 + 1, config.track_seconds)
        for start in track_starts:
            clips.append(_Clip(notes, click.program, click.drum, 0, float(start)))
            rows.append({"bpm": bpm, "click": name, "program": click.program, "offset_seconds": float(start)})
    return clips, _labels(rows)


def _time_signature_events(config: TimeSignaturesConfig) -> tuple[list, dict]:
    tracks = [(sig, level, name) for sig in config.time_signatures for level in config.reverb_levels
              for name in config.clicks]
    starts = _offsets(config.seed, len(tracks), config.offsets, config.track_seconds, config.clip_seconds)
    clips, rows = [], []
    for (signature, level, name), track_starts in zip(tracks, starts):
        beats, subdivision, compound = time_signature_parts(signature)
        quarter = 60.0 / config.bpm
        period = quarter / 2 if compound else quarter * 4 / subdivision
        n_clicks = int(subdivision / 4 * (config.bpm // 2)) + 1
        click = CLICKS[name]
        notes = _click_track(click, beats, period, n_clicks, config.track_seconds)
        for start in track_starts:
            clips.append(_Clip(notes, click.program, click.drum, REVERB_SENDS[level], float(start)))
            rows.append({"time_signature": signature, "beats": beats, "subdivision": subdivision,
                         "compound": compound, "reverb_level": level, "click": name, "program": click.program,
                         "offset_seconds": float(start)})
    return clips, _labels(rows)


EVENT_BUILDERS = {"notes": _note_events, "intervals": _interval_events, "scales": _scale_events,
                  "chords": _chord_events, "chord_progressions": _progression_events, "tempos": _tempo_events,
                  "time_signatures": _time_signature_events}


def stimulus_events(concept: str, **options) -> tuple[list, dict[str, np.ndarray]]:
    """The clips a concept would render (what each plays) and their labels, without rendering: for counting and
    inspecting SynTheory's data sets cheaply."""
    config = _config(concept, options)
    return EVENT_BUILDERS[concept](config)


def _config(concept: str, options: dict):
    if concept not in CONFIGS:
        raise ValueError(f"unknown concept {concept!r}; choose from {list(CONFIGS)}")
    config_cls = CONFIGS[concept]
    unknown = set(options) - {f.name for f in fields(config_cls)}
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no option(s) {sorted(unknown)}")
    config = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    _check_config(concept, config)
    return config


def _check_config(concept: str, config) -> None:
    def fail(message):
        raise ValueError(f"{concept}: {message}")

    bad_programs = [p for p in getattr(config, "programs", ()) if not 0 <= p < 128]
    if bad_programs:
        fail(f"GM programs must be in 0..127, got {bad_programs}")
    if config.clip_seconds <= 0 or getattr(config, "note_seconds", 1.0) <= 0:
        fail("note_seconds and clip_seconds must be positive")
    if getattr(config, "plays", 1) < 1 or getattr(config, "offsets", 1) < 1:
        fail("plays and offsets must be at least 1")
    if concept == "chords":
        unknown = set(config.qualities) - set(CHORD_QUALITIES)
        if unknown or not set(config.inversions) <= {0, 1, 2}:
            fail(f"qualities must be in {list(CHORD_QUALITIES)} and inversions in 0..2")
    if concept == "intervals" and not set(config.play_styles) <= set(PLAY_STYLES):
        fail(f"play_styles must be in {PLAY_STYLES}, got {config.play_styles}")
    if concept == "scales" and not (set(config.modes) <= set(MODES)
                                    and set(config.play_styles) <= set(SCALE_PLAY_STYLES)):
        fail(f"modes must be in {list(MODES)} and play_styles in {SCALE_PLAY_STYLES}")
    if concept == "chord_progressions" and not set(config.progressions) <= set(range(len(PROGRESSIONS))):
        fail(f"progressions are indices 0..{len(PROGRESSIONS) - 1} into PROGRESSIONS")
    if concept in ("tempos", "time_signatures"):
        if not set(config.clicks) <= set(CLICKS):
            fail(f"clicks must be in {list(CLICKS)}, got {config.clicks}")
        if config.track_seconds <= config.clip_seconds:
            fail("track_seconds must exceed clip_seconds (clips are cut from the track)")
    if concept == "time_signatures" and not (set(config.time_signatures) <= set(TIME_SIGNATURES)
                                             and set(config.reverb_levels) <= {0, 1, 2}):
        fail(f"time_signatures must be in {TIME_SIGNATURES} and reverb_levels in 0..2")


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

    def render(self, clip: _Clip, n_samples: int) -> np.ndarray:
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
    """A rendered set's labels.csv as columns (integers, floats, booleans, strings)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [row[name] for row in rows] for name in rows[0] if name != "index"}
    labels = {}
    for name, values in columns.items():
        try:
            labels[name] = np.array([int(v) for v in values], dtype=np.int64)
        except ValueError:
            try:
                labels[name] = np.array([float(v) for v in values])
            except ValueError:
                is_bool = set(values) <= {"True", "False"}
                labels[name] = np.array([v == "True" for v in values]) if is_bool else np.array(values)
    return labels


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
    """Render (or load from cache) a SynTheory concept (`CONFIGS`: notes, intervals, scales, chords,
    chord_progressions, tempos, time_signatures).

    `options` override fields of the concept's config (`syntheory_options(concept)` gives SynTheory's full set);
    `subset` renders only a seeded random `subset` of its clips (label `row`: the clip's index in the full set).
    Labels carry a boolean `silent` column (SynTheory also flags the few silent soundfont notes). Rendering
    resumes where an interrupted one stopped; waves are memory-mapped from the cache.
    """
    config = _config(concept, options)
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
