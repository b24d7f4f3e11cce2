"""Rendered notes (earlens.stimuli.rendering, TimGM6mb) as a training set: pitch class, octave or instrument family,
with General MIDI programs disjoint between train, validation and test (a model must generalise across timbres)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from earlens.datamodules.base import SPLITS, AudioDataModule, natural_key
from earlens.io.paths import cache_dir
from earlens.stimuli.rendering import render_stimuli
from earlens.stimuli.syntheory_concepts import SYNTHEORY_PROGRAMS

TARGETS = ("pitch_class", "octave", "family")
GM_FAMILIES = ("piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass", "reed",
               "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects")
VAL_PROGRAMS = (1, 25, 41, 57, 65, 74)  # one per family of the test programs, never the same program
TEST_PROGRAMS = (0, 24, 40, 56, 66, 73)  # acoustic grand, nylon guitar, violin, trumpet, tenor sax, flute


class RenderedNotesDataModule(AudioDataModule):
    """Notes `midi_pitches` × `programs`, one `note_seconds` note per `clip_seconds` clip (rendered and cached by
    `earlens.stimuli.rendering.render_stimuli("notes")`), labelled by `target`: pitch_class, octave or GM family.

    `val_programs` and `test_programs` are held out (default six each, one instrument per common family; piano
    is a test program, so the helicality callback's piano notes are a timbre the model never trained on); every
    other of `programs` (default SynTheory's 92) trains. Silent renders are skipped. `root` is the render cache.
    """

    dataset = "rendered_notes"
    task = "clip"

    def __init__(self, root: str | None = None, sample_rate: int = 16000, batch_size: int = 32, num_workers: int = 0,
                 seed: int = 0, target: str = "pitch_class", midi_pitches: Sequence[int] = tuple(range(48, 84)),
                 programs: Sequence[int] = SYNTHEORY_PROGRAMS, val_programs: Sequence[int] = VAL_PROGRAMS,
                 test_programs: Sequence[int] = TEST_PROGRAMS, note_seconds: float = 0.75,
                 clip_seconds: float = 1.0):
        if target not in TARGETS:
            raise ValueError(f"--data.init_args.target must be one of {TARGETS}, got {target!r}")
        held_out = set(val_programs) | set(test_programs)
        if set(val_programs) & set(test_programs) or not set(programs) - held_out:
            raise ValueError("--data.init_args.val_programs and test_programs must be disjoint and leave "
                             "training programs in --data.init_args.programs")
        super().__init__(root, sample_rate, batch_size, num_workers, seed)
        self.target, self.midi_pitches = target, tuple(midi_pitches)
        self.programs = {"train": tuple(p for p in programs if p not in held_out), "val": tuple(val_programs),
                         "test": tuple(test_programs)}
        self.note_seconds, self.clip_seconds = note_seconds, clip_seconds

    def _resolve_root(self, root: str | None) -> Path:
        return Path(root) if root is not None else cache_dir("stimuli")

    def _build_splits(self):
        clips, waves = [], {}
        for split in SPLITS:
            notes = render_stimuli("notes", self.root, self.sample_rate, midi_pitches=self.midi_pitches,
                                   programs=self.programs[split], note_seconds=self.note_seconds,
                                   clip_seconds=self.clip_seconds)
            labels = notes.labels
            names = ([GM_FAMILIES[p // 8] for p in labels["program"]] if self.target == "family"
                     else [str(v) for v in labels[self.target]])
            for index in range(len(notes)):
                source = f"{notes.key}/program{labels['program'][index]}-pitch{labels['midi_pitch'][index]}"
                if labels["silent"][index]:
                    self._skip(source, "renders silent")
                    continue
                waves[source] = notes.waves[index]
                clips.append((source, names[index], split))
        n_samples = round(self.clip_seconds * self.sample_rate)
        return self._clip_datasets(clips, dict.fromkeys(SPLITS, n_samples), waves=waves,
                                   order_key=GM_FAMILIES.index if self.target == "family" else natural_key)
