"""Tokenizers on real speech (Lyra codec on FSDD) and against independent references (sklearn, mixed radix)."""

import numpy as np
import pytest
import torch

from earlens.io.audio import load_audio
from earlens.io.paths import data_root
from earlens.models.tokenizers import LYRA_FRAME_SAMPLES, KMeansUnits, LyraTokenizer, ModelCodes, codes_to_symbols
from earlens.stats.zipf import zipf_statistics


@pytest.fixture(scope="module")
def fsdd_speech():
    recordings = data_root(dataset="fsdd") / "recordings"
    paths = [recordings / f"{digit}_jackson_{take}.wav" for digit in range(10) for take in (0, 1)]
    return [load_audio(path, 16_000) for path in paths]


@pytest.fixture(scope="module")
def lyra4():
    return LyraTokenizer(k=4)


def test_lyra_signatures_are_the_documented_ones(lyra4):
    text = lyra4.describe()
    assert "soundstream_encoder.serving_default: in input_audio(1, 320) float32, out output_0(1, 1, 64) float32" in text
    assert "quantizer.encode: in input_frames(1, 1, 64) float32" in text and "output_0(46, 1, 1) int32" in text


def test_lyra_codes_on_speech(fsdd_speech, lyra4):
    first, second = fsdd_speech[0], fsdd_speech[1]
    codes = lyra4.encode(first)
    # 50 Hz: one frame per 20 ms hop, the last partial frame zero-padded.
    assert codes.shape == (-(-first.size // LYRA_FRAME_SAMPLES), 4)
    assert lyra4.encode(np.zeros(16_000, np.float32)).shape == (50, 4)
    assert codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 16
    # Deterministic, and the streaming encoder's state does not leak from one clip into the next.
    lyra4.encode(second)
    np.testing.assert_array_equal(lyra4.encode(first), codes)
    # Residual VQ: the first k codebooks do not depend on how many more are asked for.
    np.testing.assert_array_equal(LyraTokenizer(k=2).encode(first), codes[:, :2])
    # Speech uses many codes; digital silence settles on one symbol per frame.
    speech_symbols = np.concatenate([lyra4.tokenize(w) for w in fsdd_speech[:4]])
    silence_symbols = lyra4.tokenize(np.zeros(16_000, np.float32))
    assert np.unique(speech_symbols).size > 50
    assert np.unique(silence_symbols[5:]).size == 1 and silence_symbols[-1] not in set(speech_symbols[:100])


def test_lyra_first_codebook_zipf_on_fsdd(fsdd_speech):
    symbols = np.concatenate([LyraTokenizer(k=1).tokenize(w) for w in fsdd_speech])
    result = zipf_statistics(np.bincount(symbols, minlength=16))
    assert result.n_tokens == symbols.size and result.vocab_size <= 16
    assert 0.2 < result.alpha_ls < 4 and np.isfinite(result.alpha_zm_observed)


def test_lyra_refuses_bad_input(lyra4):
    with pytest.raises(ValueError, match="mono"):
        lyra4.encode(np.zeros((2, 320), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        LyraTokenizer(k=47)


def test_kmeans_units_match_sklearn_and_stay_fixed():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(5, 8))
    labels = rng.integers(0, 5, size=3000)
    frames = (centres[labels] + rng.normal(size=(3000, 8))).astype(np.float32)
    units = KMeansUnits(5, seed=0).fit(frames)
    ids = units.encode(torch.from_numpy(frames).reshape(30, 100, 8))
    assert ids.shape == (30, 100)
    # Well-separated blobs: units are the true clusters up to relabelling.
    pairs = set(zip(labels.tolist(), ids.ravel().tolist()))
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5 and len({b for _, b in pairs}) == 5
    # Nearest-centroid assignment equals sklearn's on the same centroids.
    from sklearn.metrics import pairwise_distances_argmin

    np.testing.assert_array_equal(pairwise_distances_argmin(frames, units.centroids.numpy()), ids.ravel())
    with pytest.raises(RuntimeError, match="fitted once"):
        units.fit(frames)
    copy = KMeansUnits(5).set_centroids(units.centroids)
    np.testing.assert_array_equal(copy.encode(frames), ids.ravel())


def test_model_codes_adapter_and_mixed_radix():
    codes = torch.tensor([[[1, 2], [3, 0]], [[0, 0], [3, 3]]])
    adapter = ModelCodes(lambda x: x, codebook_size=4, n_codebooks=2)
    np.testing.assert_array_equal(adapter.tokenize(codes), [[1 + 2 * 4, 3], [0, 3 + 3 * 4]])
    assert adapter.vocab_size == 16
    np.testing.assert_array_equal(codes_to_symbols(np.array([[5, 1, 2]]), 10), [215])
    with pytest.raises(ValueError, match="integer"):
        ModelCodes(lambda x: x.float(), 4, 2).encode(codes)
    with pytest.raises(ValueError, match="codebooks"):
        ModelCodes(lambda x: x, 4, 3).encode(codes)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ModelCodes(lambda x: x, 3, 2).tokenize(codes)
