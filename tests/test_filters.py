"""earlens.frontend.filters against closed forms: mel octave geometry, Gabor MTF peaks, FIR bandwidths, conv
composition."""

import math

import librosa
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from earlens.frontend.filters import (
    MelGrid,
    compose_conv1d,
    conv_filter_stats,
    default_init_conv1d,
    frequency_response,
    gabor_movement,
    gabor_mtf,
    gabor_stats,
    quantile_summary,
    signed_rate_hz,
    tile_kernels,
)
from earlens.frontend.gabor import GaborSTRF2d
from earlens.plots import plot_conv_responses, plot_kernel_grid, plot_rate_scale

GRID = MelGrid(sample_rate=16000, hop_length=160, n_mels=64, fmin=0.0, fmax=8000.0)


def complex_gabor(sigma_t, sigma_f, omega_t, omega_f, k_f=31, k_t=41):
    """exp(-t^2/2 s_t^2 - f^2/2 s_f^2) exp(i(w_t t + w_f f)) on a centred (k_f, k_t) grid, per filter."""
    f = torch.arange(k_f, dtype=torch.float64)[:, None] - k_f // 2
    t = torch.arange(k_t, dtype=torch.float64)[None, :] - k_t // 2
    p = [torch.as_tensor(x, dtype=torch.float64)[:, None, None] for x in (sigma_t, sigma_f, omega_t, omega_f)]
    envelope = torch.exp(-(t**2) / (2 * p[0] ** 2) - f**2 / (2 * p[1] ** 2))
    phase = p[2] * t + p[3] * f
    return envelope * torch.cos(phase), envelope * torch.sin(phase)


# ------------------------------------------------------------------ mel geometry and Gabor units


def test_bins_per_octave_is_slaney_log_region_constant():
    centres = librosa.mel_frequencies(GRID.n_mels + 2, fmin=GRID.fmin, fmax=GRID.fmax)
    spacing = np.diff(librosa.hz_to_mel(centres)).mean()
    expected = 27 * math.log(2) / math.log(6.4) / spacing  # Slaney: 27 mels per factor 6.4 above 1 kHz
    for reference in (1500.0, 2000.0, 3000.0):
        assert GRID.bins_per_octave(reference) == pytest.approx(expected, rel=1e-9)
        in_octave = ((centres >= reference / math.sqrt(2)) & (centres < reference * math.sqrt(2))).sum()
        assert abs(in_octave - expected) <= 1
    # the linear (below 1 kHz) part of the scale holds fewer bins per octave
    assert GRID.bins_per_octave(300.0) < 0.6 * expected


def test_gabor_stats_units():
    bpo = GRID.bins_per_octave()
    omega_t = torch.tensor([2 * math.pi * 0.1, -2 * math.pi * 0.04])  # 0.1 and 0.04 cycles/frame at 100 frames/s
    omega_f = torch.tensor([2 * math.pi / bpo, -2 * math.pi * 0.5 / bpo])  # 1 and 0.5 cycles/octave
    stats = gabor_stats(omega_t, omega_f, sigma_t=[5.0, 2.5], sigma_f=[bpo, bpo / 4], grid=GRID)
    np.testing.assert_allclose(stats["rate_hz"], [10.0, 4.0])
    np.testing.assert_allclose(stats["scale_cyc_per_oct"], [1.0, 0.5])
    np.testing.assert_allclose(stats["sigma_t_ms"], [50.0, 25.0])
    np.testing.assert_allclose(stats["sigma_f_oct"], [1.0, 0.25])
    summary = quantile_summary(stats)
    assert summary["rate_hz_q50"] == pytest.approx(7.0)
    assert summary["sigma_f_oct_q10"] == pytest.approx(np.quantile([1.0, 0.25], 0.1))
    assert len(summary) == 4 * 3


def test_gabor_mtf_peaks_at_carrier_in_hz_and_cycles_per_octave():
    omega_t = np.array([0.9, 0.5, -1.2, 0.3])
    omega_f = np.array([0.6, -0.8, 1.1, 0.0])
    real, imag = complex_gabor([6.0, 5.0, 8.0, 7.0], [4.0, 5.0, 6.0, 4.0], omega_t, omega_f)
    rate_hz, scale, mtf = gabor_mtf(real, imag, GRID, n_fft=255)
    assert mtf.shape == (4, 128, 255)
    scale_idx, rate_idx = np.unravel_index(mtf.reshape(4, -1).argmax(-1), mtf.shape[1:])
    stats = gabor_stats(omega_t, omega_f, [6.0] * 4, [4.0] * 4, GRID)
    np.testing.assert_allclose(np.abs(rate_hz[rate_idx]), stats["rate_hz"], atol=np.diff(rate_hz)[0])
    # folding onto scale >= 0 maps a carrier (w_t, w_f < 0) to (-w_t, -w_f): the sweep direction is the sign
    # of w_t * w_f (no direction at w_f = 0, where the folded MTF is symmetric in rate)
    swept = omega_f != 0
    np.testing.assert_array_equal(np.sign(rate_hz[rate_idx])[swept], np.sign(omega_t * omega_f)[swept])
    np.testing.assert_allclose(rate_hz[rate_idx][swept], signed_rate_hz(omega_t, omega_f, GRID)[swept],
                               atol=np.diff(rate_hz)[0])
    np.testing.assert_allclose(scale[scale_idx], stats["scale_cyc_per_oct"], atol=np.diff(scale)[0])
    assert rate_hz[-1] == pytest.approx(-rate_hz[0]) and rate_hz[-1] < GRID.frames_per_second / 2


def test_gabor_strf_module_mtf_peaks_at_its_parameters():
    torch.manual_seed(0)
    bank = GaborSTRF2d(n_filters=8, kernel_size=(41, 61))
    with torch.no_grad():  # wide envelopes (sigma_t 15.5 frames, sigma_f 10.5 bins) for sharp MTF lobes
        bank.raw_sigma_t.fill_(0.0)
        bank.raw_sigma_f.fill_(0.0)
    rate_hz, scale, mtf = gabor_mtf(*bank.kernels(), GRID, n_fft=255)
    scale_idx, rate_idx = np.unravel_index(mtf.reshape(8, -1).argmax(-1), mtf.shape[1:])
    stats = gabor_stats(bank.omega_t, bank.omega_f, bank.sigma_t, bank.sigma_f, GRID)
    np.testing.assert_allclose(np.abs(rate_hz[rate_idx]), stats["rate_hz"], atol=np.diff(rate_hz)[0])
    np.testing.assert_allclose(scale[scale_idx], stats["scale_cyc_per_oct"], atol=np.diff(scale)[0])
    np.testing.assert_allclose(stats["sigma_t_ms"], 15.5 * 10.0, rtol=1e-6)  # 10 ms per frame


def test_tile_kernels_places_each_normalised_kernel():
    kernels = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(0))
    image = tile_kernels(kernels, n_cols=3)
    assert image.shape == (3 * 4, 3 * 6)
    for n in range(7):
        row, col = divmod(n, 3)
        expected = kernels[n].numpy() / np.abs(kernels[n].numpy()).max()
        np.testing.assert_allclose(image[row * 4 : row * 4 + 3, col * 6 : col * 6 + 5], expected, rtol=1e-6)
    assert np.isnan(image[2 * 4 : 2 * 4 + 3, 6:]).all()  # empty slots stay blank
    fig = plot_kernel_grid(kernels)
    assert isinstance(fig, Figure)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array().filled(np.nan), tile_kernels(kernels))


def test_plot_rate_scale_sums_peak_normalised_mtfs():
    real, imag = complex_gabor([6.0, 5.0], [4.0, 5.0], [0.9, 0.5], [0.6, 0.8])
    rate_hz, scale, mtf = gabor_mtf(real, imag, GRID, n_fft=65)
    fig = plot_rate_scale(rate_hz, scale, 3.0 * mtf)
    density = fig.axes[0].collections[0].get_array().reshape(len(scale), len(rate_hz))
    np.testing.assert_allclose(density, mtf[0] / mtf[0].max() + mtf[1] / mtf[1].max(), rtol=1e-9)


# ------------------------------------------------------------------ waveform conv filters


def test_hann_windowed_sinusoid_peak_and_q():
    sr, n_taps, f0 = 16000, 256, np.array([440.0, 1000.3, 3150.0])
    t = np.arange(n_taps) / sr
    kernels = np.hanning(n_taps + 2)[1:-1] * np.cos(2 * np.pi * f0[:, None] * t)  # Hann without its zero end taps
    window = np.hanning(n_taps + 2)[1:-1]
    enbw = sr * (window**2).sum() / window.sum() ** 2  # = 1.5 sr / N for a Hann window
    assert enbw == pytest.approx(1.5 * sr / n_taps, rel=0.01)
    stats = conv_filter_stats(kernels[:, None, :], sr)
    freqs, _ = frequency_response(kernels, sr)
    np.testing.assert_allclose(stats["peak_hz"], f0, atol=freqs[1])
    np.testing.assert_allclose(stats["bandwidth_hz"], enbw, rtol=0.02)
    np.testing.assert_allclose(stats["q"], f0 / enbw, rtol=0.03)
    np.testing.assert_allclose(stats["centroid_hz"], f0, rtol=0.02)


def test_gaussian_windowed_sinusoid_bandwidth_closed_form():
    sr, std_s = 16000, 0.004  # 4 ms envelope: ENBW = 1 / (2 sqrt(pi) std) = 70.5 Hz
    t = (np.arange(-321, 322)) / sr
    f0 = np.array([500.0, 2000.0])
    kernels = np.exp(-(t**2) / (2 * std_s**2)) * np.sin(2 * np.pi * f0[:, None] * t)
    stats = conv_filter_stats(kernels, sr, n_fft=16384)
    enbw = 1 / (2 * math.sqrt(math.pi) * std_s)
    np.testing.assert_allclose(stats["bandwidth_hz"], enbw, rtol=0.01)
    np.testing.assert_allclose(stats["q"], f0 / enbw, rtol=0.01)
    assert (stats["flatness"] < 0.05).all()


def test_white_noise_filters_are_flat_and_low_q():
    sr, n_taps = 16000, 512
    noise = torch.randn(400, 1, n_taps, generator=torch.Generator().manual_seed(1))
    stats = conv_filter_stats(noise, sr)
    # one periodogram of white noise is exponential per bin: E[geometric mean] / mean = exp(-Euler gamma)
    assert stats["flatness"].mean() == pytest.approx(math.exp(-np.euler_gamma), abs=0.02)
    # its highest of ~N/2 independent exponential bins is ~ln(N/2) + gamma times the mean
    expected_enbw = (sr / 2) / (math.log(n_taps / 2) + np.euler_gamma)
    assert 0.7 * expected_enbw < np.median(stats["bandwidth_hz"]) < 1.2 * expected_enbw
    assert np.median(stats["q"]) < 5 and (stats["q"] > 10).mean() < 0.02
    impulse = conv_filter_stats(np.eye(1, 64, 10), sr)
    assert impulse["flatness"][0] == pytest.approx(1.0, abs=1e-9)


def test_composed_kernel_equals_impulse_response_of_conv_stack():
    torch.manual_seed(0)
    layers = torch.nn.Sequential(
        torch.nn.Conv1d(2, 5, 9, stride=3, dilation=1, bias=False),
        torch.nn.Conv1d(5, 4, 4, stride=2, dilation=2, bias=False),
        torch.nn.Conv1d(4, 3, 3, stride=1, dilation=3, bias=False),
    ).double()
    kernel, stride = compose_conv1d([m.weight for m in layers], [3, 2, 1], [1, 2, 3])
    assert stride == 6
    length = kernel.shape[-1]
    assert length == 9 + 3 * 2 * (4 - 1) + 6 * 3 * (3 - 1)
    # impulse on input channel i at position p: output 0 of the stack is W[:, i, p]
    impulses = torch.eye(2 * length, dtype=torch.float64).reshape(2 * length, 2, length)
    probed = layers(impulses)[..., 0].reshape(2, length, 3).permute(2, 0, 1)
    torch.testing.assert_close(kernel, probed)
    # a second output sample is the same kernel shifted by the total stride
    shifted = torch.nn.functional.pad(impulses, (stride, 0))
    torch.testing.assert_close(layers(shifted)[..., 1].reshape(2, length, 3).permute(2, 0, 1), probed)


def test_default_init_conv1d_is_seeded_pytorch_init_and_leaves_global_rng():
    before = torch.random.get_rng_state()
    weights = default_init_conv1d((64, 1, 512), seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(weights, default_init_conv1d((64, 1, 512), seed=3))
    bound = 1 / math.sqrt(1 * 512)  # kaiming_uniform(a=sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert weights.abs().max() <= bound and weights.abs().max() > 0.99 * bound
    assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_plot_conv_responses_sorts_by_peak():
    sr, t = 8000, np.arange(128) / 8000
    f0 = np.array([3000.0, 500.0, 1500.0])
    kernels = np.hanning(128) * np.cos(2 * np.pi * f0[:, None] * t)
    freqs, power = frequency_response(kernels, sr)
    stats = conv_filter_stats(kernels, sr)
    fig = plot_conv_responses(freqs, power, stats["peak_hz"], baseline_peak_hz=np.array([100.0, 200.0]))
    image = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(freqs[image.argmax(-1)], np.sort(f0), atol=freqs[1])
    np.testing.assert_allclose(image.max(-1), 0.0, atol=1e-6)


def _bank_state(seed, n=64):
    torch.manual_seed(seed)
    bank = GaborSTRF2d(n, (9, 111), sigma_max=17.0)
    with torch.no_grad():
        return {"sigma_t": bank.sigma_t, "sigma_f": bank.sigma_f, "omega_t": bank.omega_t, "omega_f": bank.omega_f}


@pytest.mark.parametrize("seed", range(5))
def test_gabor_movement_controls(seed):
    """No movement gives exactly 0; every sigma scaled by 1.1 gives 0.1 on both measures for the sigmas and 0
    for the carriers; a permutation of the filters (the same population) or flipped carrier signs (the same
    rates and scales) move the parameters but not the distributions; a fresh bank moves both. W1 against scipy."""
    from scipy.stats import wasserstein_distance

    state = _bank_state(seed)
    assert all(v == 0 for v in gabor_movement(state, state, GRID).values())
    scaled = gabor_movement(state, state | {k: 1.1 * state[k] for k in ("sigma_t", "sigma_f")}, GRID)
    for key in ("sigma_t_rel_change", "sigma_f_rel_change", "sigma_t_ms_w1_rel", "sigma_f_oct_w1_rel"):
        assert scaled[key] == pytest.approx(0.1, rel=1e-6), key
    for key in ("omega_t_rel_change", "omega_f_rel_change", "rate_hz_w1_rel", "scale_cyc_per_oct_w1_rel"):
        assert scaled[key] == 0, key

    order = torch.randperm(64, generator=torch.Generator().manual_seed(seed))
    permuted = gabor_movement(state, {k: v[order] for k, v in state.items()}, GRID)
    assert all(permuted[f"{p}_rel_change"] > 0.1 for p in ("sigma_t", "sigma_f", "omega_t", "omega_f"))
    assert all(permuted[k] < 1e-12 for k in permuted if k.endswith("_w1_rel"))
    flipped = gabor_movement(state, state | {"omega_t": -state["omega_t"]}, GRID)
    assert flipped["omega_t_rel_change"] == pytest.approx(2.0) and flipped["rate_hz_w1_rel"] < 1e-12

    other = _bank_state(seed + 100)
    moved = gabor_movement(state, other, GRID)
    assert all(v > 0.01 for v in moved.values())
    before, after = gabor_stats(*(state[k] for k in ("omega_t", "omega_f", "sigma_t", "sigma_f")), GRID), \
        gabor_stats(*(other[k] for k in ("omega_t", "omega_f", "sigma_t", "sigma_f")), GRID)
    for name in before:
        expected = wasserstein_distance(after[name], before[name]) / np.abs(before[name]).mean()
        assert moved[f"{name}_w1_rel"] == pytest.approx(expected, rel=1e-9)
