"""The rendered stimuli are real: pitches measured independently (librosa pYIN), chord chroma, cache re-use."""

import librosa
import numpy as np
import pytest

from earlens.stimuli.rendering import render_stimuli
from earlens.stimuli.syntheory_concepts import SYNTHEORY_PROGRAMS
from earlens.stimuli.syntheory_events import chord_pitches


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("stimuli")


def test_syntheory_keeps_92_pitched_programs():
    assert len(SYNTHEORY_PROGRAMS) == 92
    assert 0 in SYNTHEORY_PROGRAMS and 9 not in SYNTHEORY_PROGRAMS and 120 not in SYNTHEORY_PROGRAMS


@pytest.mark.parametrize(("midi_pitch", "hz"), [(69, 440.0), (60, 261.63)])
def test_rendered_note_has_the_right_fundamental(cache, midi_pitch, hz):
    notes = render_stimuli("notes", cache_dir=cache)
    assert notes.waves.shape == (36, 24000) and notes.sample_rate == 16000
    (index,) = np.flatnonzero(notes.labels["midi_pitch"] == midi_pitch)
    assert notes.labels["pitch_class"][index] == midi_pitch % 12
    assert notes.labels["octave"][index] == midi_pitch // 12 - 1
    f0, voiced, _ = librosa.pyin(np.asarray(notes.waves[index, :16000]), fmin=80, fmax=1000, sr=16000)
    assert voiced.mean() > 0.8
    assert np.nanmedian(f0) == pytest.approx(hz, rel=0.01)


def test_note_onset_and_release_follow_the_config(cache):
    notes = render_stimuli("notes", cache_dir=cache, midi_pitches=[57], note_seconds=0.5, clip_seconds=1.5)
    rms = librosa.feature.rms(y=np.asarray(notes.waves[0]), frame_length=800, hop_length=800)[0]  # 50 ms frames
    assert rms[1:9].min() > 10 * rms[-3:].max()  # sounding while held, faded well after note-off (+ release)
    assert not notes.labels["silent"][0]


def test_chords_contain_their_three_pitch_classes(cache):
    chords = render_stimuli("chords", cache_dir=cache, inversions=[0, 2])
    assert len(chords) == 12 * 4 * 2
    chroma = librosa.feature.chroma_cqt(y=np.asarray(chords.waves[:, :16000]), sr=16000, hop_length=512).mean(-1)
    top3 = np.sort(np.argsort(chroma, axis=-1)[:, -3:], axis=-1)
    expected = np.array(
        [sorted({p % 12 for p in chord_pitches(r, q, i)}) for r, q, i in
         zip(chords.labels["root"], chords.labels["quality"], chords.labels["inversion"])]
    )
    assert (top3 == expected).mean() == 1.0


def test_chord_voicing_matches_syntheory():
    assert chord_pitches(0, "major", 0) == (60, 64, 67)
    assert chord_pitches(9, "minor", 1) == (60, 64, 69)  # A minor first inversion, root A3 moved up
    assert chord_pitches(7, "diminished", 2) == (61, 67, 70)


def test_intervals_up_down_unison(cache):
    intervals = render_stimuli("intervals", cache_dir=cache, base_pitches=[60], intervals=[7])
    assert list(intervals.labels["play_style"]) == ["up", "down", "unison"]
    up, down, unison = (np.asarray(w) for w in intervals.waves)
    half = 8000  # each melodic note lasts 0.5 s
    f_up = [np.nanmedian(librosa.pyin(up[s:s + half], fmin=100, fmax=800, sr=16000)[0]) for s in (0, half)]
    f_down = [np.nanmedian(librosa.pyin(down[s:s + half], fmin=100, fmax=800, sr=16000)[0]) for s in (0, half)]
    assert f_up == pytest.approx([261.63, 392.0], rel=0.01) and f_down == pytest.approx([392.0, 261.63], rel=0.01)
    chroma = librosa.feature.chroma_cqt(y=unison[:16000], sr=16000).mean(-1)
    assert set(np.argsort(chroma)[-2:]) == {0, 7}


def test_cache_hit_returns_identical_arrays(cache):
    first = render_stimuli("notes", cache_dir=cache, midi_pitches=[60, 61])
    mtime = (first.table_path.parent / "waves.npy").stat().st_mtime_ns
    second = render_stimuli("notes", cache_dir=cache, midi_pitches=[60, 61])
    assert second.key == first.key and (second.table_path.parent / "waves.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.waves, second.waves)
    assert all(np.array_equal(first.labels[k], second.labels[k]) for k in first.labels)
    assert render_stimuli("notes", cache_dir=cache, midi_pitches=[60, 62]).key != first.key


def test_bad_options_are_rejected(cache):
    with pytest.raises(TypeError, match="no option"):
        render_stimuli("notes", cache_dir=cache, pitch=[60])
    with pytest.raises(ValueError, match="unknown concept"):
        render_stimuli("melodies", cache_dir=cache)
