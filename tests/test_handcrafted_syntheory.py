"""SynTheory's handcrafted embeddings: batched `syntheory_features` against SynTheory's own per-clip recipe
(brown-palm/syntheory embeddings/models.py, re-typed here from librosa calls), and the summary statistics in
closed form."""

import librosa
import numpy as np
import pytest

from earlens.probing.handcrafted import summary_statistics, syntheory_features
from earlens.stimuli.rendering import render_stimuli

SR = 22050


def syntheory_reference(audio: np.ndarray) -> dict[str, np.ndarray]:
    """SynTheory's audio_file_to_embedding_np_array for MELSPEC / CHROMA / MFCC / HANDCRAFT, one clip."""
    audio = audio[:int(4.0 * SR)].astype(np.float32)
    peak = np.abs(audio).max()
    if peak > 0:
        audio = audio / peak

    def concat_features(features):
        moments = []
        for i in range(3):
            f = np.diff(features, n=i, axis=1)
            moments += [f.mean(axis=1), f.std(axis=1)]
        return np.concatenate(moments)

    mel = concat_features(librosa.feature.melspectrogram(y=audio, sr=SR))
    chroma = concat_features(librosa.feature.chroma_cqt(y=audio, sr=SR))
    mfcc = concat_features(librosa.feature.mfcc(y=audio, sr=SR))
    return {"mel": mel, "chroma": chroma, "mfcc": mfcc, "aggregate": np.concatenate([mel, chroma, mfcc])}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    cache = tmp_path_factory.mktemp("handcrafted")
    chord = render_stimuli("chords", cache, SR, roots=[2], qualities=["minor"], inversions=[1], programs=[24],
                           clip_seconds=4.5, plays=4)  # longer than 4 s: the features cut it
    clicks = render_stimuli("tempos", cache, SR, bpms=[97], clicks=["taiko"], offsets=1, clip_seconds=4.5)
    return np.concatenate([np.asarray(chord.waves), np.asarray(clicks.waves), np.zeros((1, chord.waves.shape[1]))])


def test_batched_features_equal_syntheorys_per_clip_recipe(clips):
    ours = syntheory_features(clips)
    assert {name: f.shape[1] for name, f in ours.items()} == {"mel": 768, "mfcc": 120, "chroma": 72, "aggregate": 960}
    for index, clip in enumerate(clips):
        reference = syntheory_reference(clip)
        for name in ("mel", "mfcc"):
            np.testing.assert_allclose(ours[name][index], reference[name], rtol=1e-4, atol=1e-4 * np.abs(
                reference[name]).max())
        # chroma: the clip's own tuning, rounded to 1.7 cents
        np.testing.assert_allclose(ours["chroma"][index], reference["chroma"], atol=0.02)
    # the batch does not leak between clips: each clip alone gives the same features
    alone = syntheory_features(clips[:1])
    np.testing.assert_allclose(alone["aggregate"][0], ours["aggregate"][0], rtol=1e-5, atol=1e-5)


def test_summary_statistics_in_closed_form():
    t = np.arange(50, dtype=np.float64)
    frames = np.stack([3.0 * t + 1, np.full_like(t, 2.0)])[None]  # a ramp and a constant, (1, 2, 50)
    stats = summary_statistics(frames)[0].reshape(6, 2)
    np.testing.assert_allclose(stats[0], [3.0 * 24.5 + 1, 2.0])  # mean
    np.testing.assert_allclose(stats[1], [3.0 * t.std(), 0.0])  # std
    np.testing.assert_allclose(stats[2:], [[3.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], atol=1e-12)
    # control: shuffling frames in time keeps mean and std but not the deltas' statistics
    shuffled = summary_statistics(frames[..., np.random.default_rng(0).permutation(50)])[0].reshape(6, 2)
    np.testing.assert_allclose(shuffled[:2], stats[:2])
    assert shuffled[3, 0] > 10 * 3.0


def test_features_need_syntheorys_sample_rate(clips):
    with pytest.raises(ValueError, match="22050"):
        syntheory_features(clips, sample_rate=16000)
