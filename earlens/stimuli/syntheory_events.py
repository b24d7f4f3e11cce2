"""What each clip of a SynTheory concept plays, as MIDI notes on a GM program or the drum kit, and its labels,
following brown-palm/syntheory's generators (`dataset/synthetic/*.py`): triad voicings, scales and
progressions around middle C, click tracks in each metre (`stimulus_events` lists them without rendering)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from earlens.stimuli.syntheory_concepts import (CHORD_QUALITIES, CLICKS, MODES, PROGRESSION_NAMES, PROGRESSIONS,
                                                REVERB_SENDS, ChordProgressionsConfig, ChordsConfig, Click,
                                                IntervalsConfig, NotesConfig, ScalesConfig, TemposConfig,
                                                TimeSignaturesConfig, concept_config)


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


class ClipEvents(NamedTuple):
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
    clips = [ClipEvents(_repeat([(r["midi_pitch"], 0.0, d)], d, config.plays, config.velocity), r["program"])
             for r in rows]
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
        clips.append(ClipEvents(_repeat(pattern, 2 * d, config.plays, config.velocity), row["program"]))
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
        clips.append(ClipEvents(_repeat([(p, 0.0, d) for p in pitches], d, config.plays, config.velocity),
                                row["program"]))
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
        clips.append(ClipEvents(tuple((p, k * d, (k + 1) * d, config.velocity) for k, p in enumerate(pitches)),
                           row["program"]))
    return clips, _labels(rows)


def _progression_events(config: ChordProgressionsConfig) -> tuple[list, dict]:
    rows = [{"progression": PROGRESSION_NAMES[index], "progression_index": index, "mode": PROGRESSIONS[index][0],
             "key": key, "program": program}
            for key in config.keys for index in config.progressions for program in config.programs]
    d = config.note_seconds
    clips = [ClipEvents(tuple((p, k * d, (k + 1) * d, config.velocity)
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
            clips.append(ClipEvents(notes, click.program, click.drum, 0, float(start)))
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
            clips.append(ClipEvents(notes, click.program, click.drum, REVERB_SENDS[level], float(start)))
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
    config = concept_config(concept, options)
    return EVENT_BUILDERS[concept](config)
