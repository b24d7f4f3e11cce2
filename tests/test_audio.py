"""earlens.io.audio: decoding real files, resampling against closed forms, and clear errors on bad input."""

import numpy as np
import pytest
import soundfile as sf

from earlens.io.audio import AudioError, crop_or_pad, load_audio
from earlens.io.paths import data_root


def test_float_wav_decodes_exactly():
    """AMI's 32-bit float WAVs at 16 kHz come back sample-exact (no resampling, no rescaling)."""
    path = data_root(dataset="ami_mini") / "dev00.wav"
    reference, rate = sf.read(path, dtype="float64")
    assert sf.info(path).subtype == "FLOAT" and rate == 16000
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 480001
    np.testing.assert_array_equal(wave, reference.astype(np.float32))


def test_ogg_vorbis_resampled_like_librosa():
    """ESC-10 Ogg at 44.1 kHz -> 16 kHz matches librosa's soxr_hq path and the expected length."""
    librosa = pytest.importorskip("librosa")
    path = next(data_root(dataset="esc10").glob("001 - Dog bark/*.ogg"))
    wave = load_audio(path, 16000)
    reference, _ = librosa.load(path, sr=16000, res_type="soxr_hq")
    assert len(wave) == round(sf.info(path).frames * 16000 / 44100) == len(reference)
    np.testing.assert_allclose(wave, reference, atol=1e-5)


def test_resampled_sine_matches_closed_form(tmp_path):
    """A 440 Hz sine written at 8 kHz reads back at 16 kHz as the same sine (away from the edges)."""
    t8 = np.arange(8000) / 8000
    sf.write(tmp_path / "sine.wav", 0.5 * np.sin(2 * np.pi * 440 * t8), 8000, subtype="FLOAT")
    wave = load_audio(tmp_path / "sine.wav", 16000)
    t16 = np.arange(len(wave)) / 16000
    assert len(wave) == 16000
    np.testing.assert_allclose(wave[500:-500], 0.5 * np.sin(2 * np.pi * 440 * t16)[500:-500], atol=1e-3)


def test_stereo_mixdown_and_channel_check(tmp_path):
    left, right = np.full(1000, 0.5), np.full(1000, -0.1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), 0.2, atol=1e-7)
    np.testing.assert_allclose(load_audio(path, 16000, channels=2), 0.2, atol=1e-7)
    with pytest.raises(AudioError, match=r"stereo\.wav: has 2 channels, expected 1"):
        load_audio(path, 16000, channels=1)


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("corrupt.wav", lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "unreadable audio"),
        ("empty.wav", lambda p: sf.write(p, np.zeros(0), 16000), r"empty audio \(0 samples\)"),
        ("nan.wav", lambda p: sf.write(p, np.array([0.1, np.nan, 0.2]), 16000, subtype="FLOAT"), "NaN"),
        ("inf.wav", lambda p: sf.write(p, np.array([0.1, np.inf, 0.2]), 16000, subtype="FLOAT"), "infinite"),
        ("missing.wav", lambda p: None, "no such file"),
    ],
)
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, name, write, message):
    path = tmp_path / name
    write(path)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path, 16000)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_crop_or_pad():
    wave = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(wave, 4), [4, 5, 6, 7])  # centred crop
    np.testing.assert_array_equal(crop_or_pad(wave, 14), [*range(1, 11), 0, 0, 0, 0])  # padding after the signal
    crops = {tuple(crop_or_pad(wave, 4, np.random.default_rng(seed))) for seed in range(50)}
    assert crops == {tuple(range(start, start + 4)) for start in range(1, 8)}  # all 7 offsets, all contiguous
    pads = [crop_or_pad(wave, 14, np.random.default_rng(seed)) for seed in range(5)]
    assert all(np.array_equal(p[:10], wave) and not p[10:].any() for p in pads)  # the batch's length is 10
    np.testing.assert_array_equal(crop_or_pad(wave, 10, np.random.default_rng(0)), wave)
