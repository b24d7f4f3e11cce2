import librosa
import numpy as np
import pytest
import torch

from earlens.frontend.spectrogram import LogMel, log_mel_spectrogram, mel_filters


def _test_signal(n_samples=16000, sample_rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    chirp = np.sin(2 * np.pi * (200 * t + 1500 * t**2))
    return (0.5 * chirp + 0.05 * rng.standard_normal(n_samples)).astype(np.float32)


def _librosa_log_mel(wave, sample_rate, win_length, hop_length, n_fft, n_mels, fmin=0.0, fmax=None):
    mel = librosa.feature.melspectrogram(
        y=wave.astype(np.float64), sr=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
        window="hann", center=True, power=2.0, n_mels=n_mels, fmin=fmin, fmax=fmax,
    )
    return np.log(np.maximum(mel, 1e-6))


@pytest.mark.parametrize(
    "sample_rate,win_length,hop_length,n_fft,n_mels,fmin,fmax",
    [(16000, 400, 160, 400, 64, 0.0, None), (22050, 512, 128, 1024, 40, 50.0, 8000.0)],
)
def test_log_mel_matches_librosa(sample_rate, win_length, hop_length, n_fft, n_mels, fmin, fmax):
    wave = _test_signal(sample_rate=sample_rate)
    ours = log_mel_spectrogram(
        torch.from_numpy(wave), sample_rate=sample_rate, win_length=win_length, hop_length=hop_length,
        n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
    ).numpy()
    reference = _librosa_log_mel(wave, sample_rate, win_length, hop_length, n_fft, n_mels, fmin, fmax)
    assert ours.shape == reference.shape == (n_mels, len(wave) // hop_length + 1)
    np.testing.assert_allclose(ours, reference, atol=2e-4)


def test_batched_input_equals_per_clip():
    waves = torch.from_numpy(np.stack([_test_signal(8000, seed=s) for s in range(6)])).reshape(2, 3, 8000)
    batched = log_mel_spectrogram(waves)
    assert batched.shape == (2, 3, 64, 51)
    torch.testing.assert_close(batched[1, 2], log_mel_spectrogram(waves[1, 2]))


def test_frame_i_is_centred_at_sample_i_times_hop():
    wave = torch.zeros(16000)
    wave[37 * 160] = 1.0  # a click at frame 37's centre
    energy = log_mel_spectrogram(wave).exp().sum(0)
    assert energy.argmax().item() == 37
    # Hann window: the click sits at the window peak, neighbours see it attenuated symmetrically.
    torch.testing.assert_close(energy[36], energy[38], rtol=1e-4, atol=0)


def test_mel_filters_are_librosas():
    filters = mel_filters(16000, 400, 64)
    np.testing.assert_array_equal(filters.numpy(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=64))
    assert filters.shape == (64, 201)


def test_silence_hits_the_floor():
    assert torch.all(log_mel_spectrogram(torch.zeros(4000), floor=1e-6) == np.log(np.float32(1e-6)))


def test_logmel_module_uses_milliseconds_and_matches_function():
    module = LogMel(sample_rate=16000, n_mels=64, win_ms=25, hop_ms=10)
    assert (module.win_length, module.hop_length, module.n_fft) == (400, 160, 400)
    wave = torch.from_numpy(_test_signal()).repeat(2, 1)
    out = module(wave)
    assert out.shape == (2, 64, 101)
    torch.testing.assert_close(out[0], log_mel_spectrogram(wave[0], n_mels=64))
    assert {name for name, _ in module.named_buffers()} == {"window", "filters"}
    with pytest.raises(ValueError, match="n_fft"):
        LogMel(n_fft=256)
