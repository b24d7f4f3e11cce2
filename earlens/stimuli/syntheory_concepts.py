"""What can be asked of SynTheory's seven music-theory concepts (Wei et al. 2024): each concept's options (a
frozen `*Config` dataclass, checked on creation by `concept_config`), the music they draw on (SynTheory's 92 GM
programs, chord qualities, modes, its 19 progressions, click voices, time signatures), SynTheory's label
names (`CONCEPT_LABELS`) and the options that give its full data sets (`syntheory_options`, sizes
`SYNTHEORY_SIZES`). What each clip then plays is `earlens.stimuli.syntheory_events`; rendering is
`earlens.stimuli.rendering`."""

from __future__ import annotations

from dataclasses import dataclass, fields


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


def concept_config(concept: str, options: dict):
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
