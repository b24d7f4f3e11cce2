"""SynTheory's four other concepts (scales, chord progressions, tempos, time signatures): its data set sizes and
label sets from the event lists alone, the music each clip plays, and a few rendered clips measured independently
(librosa onsets, pYIN, chroma)."""

import librosa
import numpy as np
import pytest

from earlens.stimuli import rendering as stimuli
from earlens.stimuli.rendering import render_stimuli
from earlens.stimuli.syntheory_concepts import (CONCEPT_LABELS, CONFIGS, PROGRESSION_NAMES, SYNTHEORY_PROGRAMS,
                                                SYNTHEORY_SIZES, syntheory_options)
from earlens.stimuli.syntheory_events import chord_pitches, progression_pitches, stimulus_events

SR = 22050


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("syntheory")


@pytest.mark.parametrize("concept", list(CONFIGS))
def test_full_sets_have_syntheorys_sizes_and_label_classes(concept):
    clips, labels = stimulus_events(concept, **syntheory_options(concept))
    assert len(clips) == SYNTHEORY_SIZES[concept]
    for n_classes, name in CONCEPT_LABELS[concept]:
        assert len(np.unique(labels[name])) == (161 if n_classes is None else n_classes)
    if concept not in ("tempos", "time_signatures"):
        assert set(labels["program"]) == set(SYNTHEORY_PROGRAMS)
        # every label combination once per program: a balanced design
        assert len(set(np.unique(labels["program"], return_counts=True)[1])) == 1

def test_scales_play_the_mode_up_and_down_from_the_tonic_nearest_middle_c():
    clips, labels = stimulus_events("scales", roots=[0, 9], modes=["ionian", "aeolian"])
    pitches = {(r, m, s): [n[0] for n in c.notes] for c, r, m, s in
               zip(clips, labels["root"], labels["mode"], labels["play_style"])}
    assert pitches[0, "ionian", "up"] == [60, 62, 64, 65, 67, 69, 71, 72]
    assert pitches[9, "aeolian", "down"] == [69, 67, 65, 64, 62, 60, 59, 57]  # A3 natural minor, from A4 down
    onsets = [n[1] for n in clips[0].notes]
    assert onsets == pytest.approx(np.arange(8) * 0.5)  # one beat each at 120 bpm: the 4 s clip


def test_progressions_stack_thirds_of_the_mode_in_every_key():
    index = PROGRESSION_NAMES.index("ionian-1-4-5-1")
    assert progression_pitches(0, index) == [(60, 64, 67), (65, 69, 60), (67, 71, 62), (60, 64, 67)]
    minor = PROGRESSION_NAMES.index("aeolian-1-6-7-1")
    assert [sorted(p % 12 for p in chord) for chord in progression_pitches(9, minor)] == \
        [[0, 4, 9], [0, 5, 9], [2, 7, 11], [0, 4, 9]]  # Am F G Am
    transposed = np.array(progression_pitches(2, index)) - np.array(progression_pitches(0, index))
    assert (transposed == 2).all()


def test_augmented_triads_are_voiced_from_the_harmonic_minor_as_syntheory():
    assert chord_pitches(0, "augmented", 0) == (60, 64, 68)
    assert chord_pitches(7, "augmented", 0) == (67, 71, 75)  # G: III of E harmonic minor (E4), not G3
    assert chord_pitches(7, "major", 0) == (55, 59, 62)


def test_click_tracks_accent_each_bar_at_the_metres_rate():
    clips, labels = stimulus_events("time_signatures", clicks=["woodblock_light"], reverb_levels=[0], offsets=1)
    by_signature = dict(zip(labels["time_signature"], clips))
    for signature, period, beats in (("3/4", 0.5, 3), ("3/8", 0.25, 3), ("2/2", 1.0, 2), ("12/8", 0.25, 12)):
        notes = by_signature[signature].notes
        assert np.diff([n[1] for n in notes]) == pytest.approx(period)
        accented = [k for k, n in enumerate(notes) if n[3] == 100]
        assert accented == list(range(0, len(notes), beats))
        assert notes[-1][2] <= 30.0
    assert labels["subdivision"][list(labels["time_signature"]).index("6/8")] == 8


def test_rendered_tempos_click_at_their_bpm(cache):
    tempos = render_stimuli("tempos", cache, SR, bpms=[72, 150], clicks=["default", "taiko"], offsets=1)
    for wave, bpm in zip(tempos.waves, tempos.labels["bpm"]):
        onsets = librosa.onset.onset_detect(y=np.asarray(wave), sr=SR, units="time", backtrack=False)
        assert np.median(np.diff(onsets)) == pytest.approx(60 / bpm, rel=0.05)


def test_rendered_scale_and_progression_sound_their_pitches(cache):
    scale = render_stimuli("scales", cache, SR, roots=[7], modes=["mixolydian"], play_styles=["up"])
    f0 = [np.nanmedian(librosa.pyin(np.asarray(scale.waves[0, k * 11025:(k + 1) * 11025]), fmin=100, fmax=800,
                                    sr=SR)[0]) for k in range(8)]
    expected = librosa.midi_to_hz(np.array([55, 57, 59, 60, 62, 64, 65, 67]))
    assert f0 == pytest.approx(expected, rel=0.01)
    index = PROGRESSION_NAMES.index("ionian-1-6-4-5")
    progression = render_stimuli("chord_progressions", cache, SR, progressions=[index], keys=[0])
    chroma = librosa.feature.chroma_cqt(y=np.asarray(progression.waves[0]), sr=SR, tuning=0.0)  # (12, frames)
    per_chord = chroma[:, :172].reshape(12, 4, 43)[:, :, 5:38].mean(-1)  # 4 × 1 s, skipping the transitions
    top3 = [sorted(np.argsort(per_chord[:, k])[-3:]) for k in range(4)]
    assert top3 == [[0, 4, 7], [0, 4, 9], [0, 5, 9], [2, 7, 11]]  # C Am F G


def test_reverb_levels_lengthen_the_decay_and_stay_deterministic(cache):
    options = dict(time_signatures=["2/2"], clicks=["woodblock_dark"], offsets=1, seed=3)
    sets = [render_stimuli("time_signatures", cache, SR, subset=3, subset_seed=0, **options)]
    sets.append(render_stimuli("time_signatures", cache / "again", SR, subset=3, subset_seed=0, **options))
    np.testing.assert_array_equal(sets[0].waves, sets[1].waves)  # fresh synth per clip: no reverb carried over
    waves, levels = np.asarray(sets[0].waves), sets[0].labels["reverb_level"]
    onset_times = np.asarray(sets[0].labels["offset_seconds"])
    # energy in the last 0.4 s before each second's click (the clicks fall on whole seconds of the track)
    tails = []
    for wave, start in zip(waves, onset_times):
        next_click = np.ceil(start) - start + 1.0
        end = int(next_click * SR) - 200
        tails.append(np.sqrt(np.mean(wave[end - int(0.4 * SR):end] ** 2)) / np.abs(wave).max())
    assert list(levels) == [0, 1, 2]
    assert tails[0] < tails[1] < tails[2]


def test_subset_is_seeded_and_labelled_with_its_rows_in_the_full_set(cache):
    first = render_stimuli("scales", cache, SR, subset=5, subset_seed=1, programs=[0, 40])
    again = render_stimuli("scales", cache, SR, subset=5, subset_seed=1, programs=[0, 40])
    other = render_stimuli("scales", cache, SR, subset=5, subset_seed=2, programs=[0, 40])
    assert again.key == first.key != other.key
    _, full = stimulus_events("scales", programs=[0, 40])
    for name in ("root", "mode", "play_style", "program"):
        np.testing.assert_array_equal(first.labels[name], full[name][first.labels["row"]])
    with pytest.raises(ValueError, match="subset"):
        render_stimuli("scales", cache, SR, subset=10_000)


def test_interrupted_render_resumes(cache, monkeypatch):
    options = dict(roots=[0, 5], modes=["dorian"], programs=[0, 24, 40])
    render_to, render = stimuli._render_to, stimuli._Renderer.render
    monkeypatch.setattr(stimuli, "_render_to", lambda *args: render_to(*args, chunk=4))
    reference = render_stimuli("scales", cache / "reference", SR, **options)
    calls = []

    def interrupted(self, clip, n_samples):
        calls.append(clip)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return render(self, clip, n_samples)

    monkeypatch.setattr(stimuli._Renderer, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render_stimuli("scales", cache / "resumed", SR, **options)
    monkeypatch.setattr(stimuli._Renderer, "render", lambda self, clip, n: calls.append(clip) or render(self, clip, n))
    resumed = render_stimuli("scales", cache / "resumed", SR, **options)
    assert len(calls) == 7 + len(reference) - 4  # the second run started at the first unfinished chunk
    np.testing.assert_array_equal(resumed.waves, reference.waves)


def test_bad_options_name_the_option(cache):
    with pytest.raises(ValueError, match="modes"):
        stimulus_events("scales", modes=["blues"])
    with pytest.raises(ValueError, match="clicks"):
        stimulus_events("tempos", clicks=["cowbell"])
    with pytest.raises(ValueError, match="track_seconds"):
        stimulus_events("tempos", track_seconds=3.0)
