import math

import numpy as np
import pytest
import torch
from torch import nn

from earlens.frontend.frontends import SpectroTemporalFrontend
from earlens.frontend.gabor import MODES, GaborSTRF2d, gabor_kernels

PARAMETERS = [  # sigma_t, sigma_f, omega_t, omega_f
    (3.0, 1.5, 0.7, -0.4),
    (0.5, 4.0, -math.pi / 2, 2.5),
    (10.0, 0.8, 0.0, 0.0),
]


def _numpy_gabor(sigma_t, sigma_f, omega_t, omega_f, k_f, k_t):
    real, imag = np.zeros((k_f, k_t)), np.zeros((k_f, k_t))
    for row in range(k_f):
        for col in range(k_t):
            f, t = row - k_f // 2, col - k_t // 2
            envelope = np.exp(-t * t / (2 * sigma_t**2) - f * f / (2 * sigma_f**2)) / (2 * np.pi * sigma_t * sigma_f)
            real[row, col] = envelope * np.cos(omega_t * t + omega_f * f)
            imag[row, col] = envelope * np.sin(omega_t * t + omega_f * f)
    return real, imag


def _bank(n_filters=6, kernel_size=(9, 25), seed=0, **kwargs):
    torch.manual_seed(seed)
    return GaborSTRF2d(n_filters, kernel_size, **kwargs)


def test_kernels_match_the_formula():
    params = torch.tensor(PARAMETERS, dtype=torch.float64).T
    real, imag = gabor_kernels(*params, kernel_size=(7, 11))
    assert real.shape == imag.shape == (len(PARAMETERS), 7, 11)
    for i, values in enumerate(PARAMETERS):
        expected_real, expected_imag = _numpy_gabor(*values, 7, 11)
        np.testing.assert_allclose(real[i].numpy(), expected_real, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(imag[i].numpy(), expected_imag, rtol=1e-12, atol=1e-15)
    # Integer grid centred at 0: the centre tap is the envelope peak, the imaginary part is odd.
    torch.testing.assert_close(real[:, 3, 5], 1 / (2 * math.pi * params[0] * params[1]))
    torch.testing.assert_close(imag, -imag.flip(-1, -2))


def test_even_kernel_size_is_refused():
    with pytest.raises(ValueError, match="odd"):
        GaborSTRF2d(4, kernel_size=(8, 25))


def test_module_kernels_follow_its_parameters():
    bank = _bank(kernel_size=(5, 9), mode="real")
    with torch.no_grad():
        expected = _numpy_gabor(
            bank.sigma_t[2].item(), bank.sigma_f[2].item(), bank.omega_t[2].item(), bank.omega_f[2].item(), 5, 9
        )
        real, imag = bank.kernels()
    np.testing.assert_allclose(real[2].numpy(), expected[0], atol=1e-6)
    np.testing.assert_allclose(imag[2].numpy(), expected[1], atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("init", ["paper", "grid"])
@pytest.mark.parametrize("shape", [(3, 1, 40, 60), (2, 5, 7)])  # second: fewer bins/frames than the kernel
def test_separable_equals_dense_conv(mode, init, shape):
    bank = _bank(n_filters=8, kernel_size=(9, 25), mode=mode, init=init, dense=False)  # 9 x 25 is dense by default
    spec = torch.randn(shape)
    separable = bank(spec)
    with torch.no_grad():  # no backward follows: the maps are not kept (several groups: the groups test)
        torch.testing.assert_close(bank(spec), separable, rtol=0, atol=0)
    bank.dense = True
    dense = bank(spec)
    assert separable.shape == dense.shape == (shape[0], bank.out_channels, *shape[-2:])
    assert ((separable - dense).abs().max() / dense.abs().max()).item() < 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(2, 1, 40, 60), (2, 5, 7), (1, 17, 30)])
@pytest.mark.parametrize("kernel_size", [(9, 25), (25, 7), (9, 111), (3, 3)])
def test_separable_gradients_equal_dense_gradients(mode, shape, kernel_size):
    """The separable path's hand-written backward against autograd through the dense conv2d."""
    bank = _bank(n_filters=5, kernel_size=kernel_size, mode=mode).double()
    spec = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    grads = {}
    for dense in (False, True):
        bank.dense = dense
        out = bank(spec)
        weight = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        grads[dense] = torch.autograd.grad((out * weight).sum(), [spec, *bank.parameters()])
    for fast, dense in zip(grads[False], grads[True]):
        torch.testing.assert_close(fast, dense, rtol=1e-9, atol=1e-12)


def test_concat_is_real_then_imag_and_magnitude_is_their_modulus():
    spec = torch.randn(2, 1, 20, 30)
    outputs = {mode: _bank(mode=mode)(spec) for mode in MODES}
    torch.testing.assert_close(outputs["concat"], torch.cat([outputs["real"], outputs["imag"]], 1))
    torch.testing.assert_close(outputs["magnitude"], torch.hypot(outputs["real"], outputs["imag"]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_every_parameter_gets_a_gradient(mode, dense):
    bank = _bank(mode=mode, dense=dense)
    bank(torch.randn(2, 1, 16, 40)).square().mean().backward()
    for name, parameter in bank.named_parameters():
        assert parameter.grad is not None and torch.all(parameter.grad != 0), name


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("raw", [1e3, -1e3, 0.0])
def test_extreme_raw_parameters_stay_finite(mode, raw, dense):
    bank = _bank(mode=mode, dense=dense)
    with torch.no_grad():
        for parameter in bank.parameters():
            parameter.fill_(raw)
    out = bank(torch.randn(2, 1, 16, 40))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in bank.parameters())
    if mode == "imag" and raw == 0.0:
        # A zero-modulation filter has an all-zero imaginary kernel, but it is not stuck there.
        assert out.abs().max() == 0 and torch.all(bank.raw_omega_t.grad != 0)
    else:
        assert out.abs().max() > 1e-4


def test_constraints_hold_for_any_raw_value():
    bank = _bank(n_filters=500, kernel_size=(9, 25))
    with torch.no_grad():
        for parameter in bank.parameters():
            parameter.copy_(20 * torch.randn_like(parameter))
    assert bank.sigma_t.min() >= 0.5 and bank.sigma_t.max() <= 12.5
    assert bank.sigma_f.min() >= 0.5 and bank.sigma_f.max() <= 4.5
    assert bank.omega_t.abs().max() < math.pi and bank.omega_f.abs().max() < math.pi


def test_paper_init_distribution():
    bank = _bank(n_filters=4000, kernel_size=(41, 41))  # wide enough that no sigma is clipped
    with torch.no_grad():
        sigmas = torch.cat([bank.sigma_t, bank.sigma_f])
        modulation = torch.hypot(bank.omega_t, bank.omega_f)
        orientation = torch.atan2(bank.omega_f, bank.omega_t)
    exponent = torch.log(sigmas / 2) / math.log(1.41)  # ~ U(0, 6)
    assert exponent.min() > -1e-3 and exponent.max() < 6 + 1e-3
    assert abs(exponent.mean().item() - 3) < 0.1 and abs(exponent.std().item() - 6 / math.sqrt(12)) < 0.1
    decay = -torch.log(modulation / (math.pi / 2)) / math.log(1.41)  # ~ U(0, 5)
    assert decay.min() > -1e-3 and decay.max() < 5 + 1e-3 and abs(decay.mean().item() - 2.5) < 0.1
    assert orientation.min() < -3 and orientation.max() > 3 and abs(orientation.mean().item()) < 0.1


def test_paper_init_clips_sigma_into_a_small_kernel():
    bank = _bank(n_filters=200, kernel_size=(9, 25))
    assert bank.sigma_f.max() < 4.5 and bank.sigma_f.min() >= 2.0 - 1e-6  # 2 * 1.41^U(0,6), capped below 4.5


def test_grid_init_spans_rates_and_scales():
    bank = _bank(n_filters=32, kernel_size=(9, 25), init="grid")
    with torch.no_grad():
        omega_t, omega_f = bank.omega_t, bank.omega_f
    assert (omega_t > 0).sum() == (omega_t < 0).sum() == 16  # upward and downward sweeps alike
    assert torch.unique(omega_f.round(decimals=4)).numel() == 4 and omega_f.min().abs() < 1e-6
    assert torch.unique(torch.stack([omega_t, omega_f], 1).round(decimals=4), dim=0).shape[0] == 32


def test_a_filter_prefers_its_own_modulation():
    """A plane-wave spectrogram cos(w t + v f) drives hardest the filter whose (omega_t, omega_f) is (w, v)."""
    bank = _bank(n_filters=16, kernel_size=(15, 31), init="grid", mode="magnitude")
    with torch.no_grad():
        bank.raw_sigma_t.fill_(10.0)  # wide envelopes: sharp modulation tuning
        bank.raw_sigma_f.fill_(10.0)
        f, t = torch.meshgrid(torch.arange(48.0), torch.arange(96.0), indexing="ij")
        for k in range(16):
            wave = torch.cos(bank.omega_t[k] * t + bank.omega_f[k] * f)
            drive = bank(wave[None, None])[0, :, 8:-8, 16:-16].mean((1, 2))
            # cos(w t) = cos(-w t): with omega_f = 0 the mirrored filter (-w, 0) is an equal best.
            best = (drive > 0.999 * drive.max()).nonzero().flatten().tolist()
            assert k in best and len(best) <= (2 if bank.omega_f[k].abs() < 1e-6 else 1)


def test_freeze_keeps_the_bank_fixed():
    bank = _bank(freeze=True)
    assert not any(p.requires_grad for p in bank.parameters())
    assert not bank(torch.randn(1, 1, 10, 20)).requires_grad


def test_input_shape_is_checked():
    bank = _bank()
    with pytest.raises(ValueError, match=r"\(B, 1, F, T\)"):
        bank(torch.randn(2, 3, 10, 20))


@pytest.mark.parametrize("kind", ["gabor", "gabor_frozen", "conv2d"])
def test_frontend_kinds(kind):
    torch.manual_seed(0)
    frontend = SpectroTemporalFrontend(kind=kind, n_filters=4, kernel_size=[5, 9])
    out = frontend(torch.randn(2, 8000))
    assert out.shape == (2, frontend.out_channels, 64, 8000 // frontend.hop_length + 1) == (2, 8, 64, 51)
    assert (frontend.sample_rate, frontend.hop_length) == (16000, 160)
    trainable = sum(p.numel() for p in frontend.filterbank.parameters() if p.requires_grad)
    assert trainable == {"gabor": 4 * 4, "gabor_frozen": 0, "conv2d": 8 * 5 * 9 + 8}[kind]
    # Batch norm in training mode: every channel standardised over batch, bins and frames.
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(8), atol=1e-4, rtol=0)


def test_frontend_filterbank_sees_the_log_mel():
    frontend = SpectroTemporalFrontend(kind="gabor", n_filters=4, kernel_size=(5, 9), mode="real").eval()
    wave = torch.randn(1, 4000)
    expected = frontend.norm(frontend.filterbank(frontend.logmel(wave)[:, None]))
    torch.testing.assert_close(frontend(wave), expected)


def test_frontend_projection_is_a_pointwise_mix_of_the_normalised_maps():
    torch.manual_seed(0)
    frontend = SpectroTemporalFrontend(kind="gabor", n_filters=4, kernel_size=(5, 9), projection_channels=3).eval()
    wave = torch.randn(2, 4000)
    maps = frontend.norm(frontend.filterbank(frontend.logmel(wave)[:, None]))  # (B, 8, F, T)
    weight, bias = frontend.projection.weight[:, :, 0, 0], frontend.projection.bias
    expected = torch.einsum("oc,bcft->boft", weight, maps) + bias[:, None, None]
    assert frontend.out_channels == 3
    torch.testing.assert_close(frontend(wave), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="projection_channels"):
        SpectroTemporalFrontend(projection_channels=0)


def test_frontend_builds_from_a_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(nn.Module, "frontend")
    config = parser.parse_object({"frontend": {
        "class_path": "earlens.frontend.frontends.SpectroTemporalFrontend",
        "init_args": {"kind": "gabor", "n_filters": 8, "kernel_size": [9, 25], "mode": "magnitude"},
    }})
    frontend = parser.instantiate_classes(config).frontend
    assert isinstance(frontend, SpectroTemporalFrontend)
    assert frontend.out_channels == 8 and frontend.filterbank.kernel_size == (9, 25)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bank_runs_under_autocast_close_to_float32(dense, dtype):
    """bf16/fp16 autocast (the log-mel then hands over a low-precision tensor) used to crash the separable path;
    both paths must run forward and backward and stay within the low precision's error of float32."""
    torch.manual_seed(0)
    bank = GaborSTRF2d(8, (9, 31), mode="concat", dense=dense)
    spec = torch.randn(2, 1, 32, 50)
    reference = bank(spec)
    with torch.autocast("cpu", dtype=dtype):
        low = bank(spec.to(dtype))
        low.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bank.parameters())
    error = (low.float() - reference).abs().max() / reference.abs().max()
    assert error < 2e-2


def test_sigma_max_leaves_the_paper_init_unclipped():
    """With the default bound (half the kernel) a 9-bin axis clips most paper-init sigma_f at 4.5; with
    sigma_max = 17 the paper's 2 * 1.41^U(0, 6) (at most 15.8) comes through whole on both axes."""
    clipped = _bank(n_filters=2000, kernel_size=(9, 111))
    assert (clipped.sigma_f > 4.4).float().mean() > 0.5
    bank = _bank(n_filters=2000, kernel_size=(9, 111), sigma_max=17.0)
    with torch.no_grad():
        exponent = torch.log(torch.cat([bank.sigma_t, bank.sigma_f]) / 2) / math.log(1.41)
    assert exponent.min() > -1e-3 and exponent.max() < 6 + 1e-3
    assert abs(exponent.mean().item() - 3) < 0.1 and abs(exponent.std().item() - 6 / math.sqrt(12)) < 0.1
    with torch.no_grad():
        for parameter in bank.parameters():
            parameter.fill_(1e3)
    assert bank.sigma_t.max() == bank.sigma_f.max() == 17.0
    with pytest.raises(ValueError, match="sigma_max"):
        GaborSTRF2d(4, (9, 25), sigma_max=0.5)


def _assert_separable_equals_dense(bank, spec):
    """The separable path's values and gradients (input and parameters) against the dense conv2d's in float64, with
    and without a backward following."""
    grads = {}
    for dense in (False, True):
        bank.dense = dense
        out = bank(spec)
        weight = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        grads[dense] = (out, *torch.autograd.grad((out * weight).sum(), [spec, *bank.parameters()]))
    for fast, dense in zip(grads[False], grads[True]):
        torch.testing.assert_close(fast, dense, rtol=1e-9, atol=1e-12)
    bank.dense = False
    with torch.no_grad():
        torch.testing.assert_close(bank(spec), grads[True][0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("clips_per_group", [1, 2, 5])
def test_separable_groups_of_clips_equal_dense(monkeypatch, clips_per_group):
    """On CPU the separable path runs cache-sized groups of clips side by side (a GPU runs the whole batch
    as one group): one clip per group, groups that split the batch unevenly and one group for all must give
    the dense values and gradients, so no clip's filtering reaches into its neighbour; without a backward
    (`torch.no_grad`) the groups share one maps buffer per group width, the last smaller group included."""
    import earlens.frontend.gabor_separable as separable

    bank = _bank(n_filters=3, kernel_size=(9, 25), mode="concat").double()
    spec = torch.randn(5, 1, 12, 30, dtype=torch.float64, requires_grad=True)
    layout = separable.FreqBlocking(3, 12, 9)
    monkeypatch.setattr(separable, "CPU_GROUP_BYTES", clips_per_group * 2 * 3 * layout.rows * 30 * 8)
    assert separable.group_size(spec, 3, layout) == clips_per_group
    _assert_separable_equals_dense(bank, spec)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_separable_worker_runs_equal_dense(monkeypatch, threads):
    """With n threads the separable path cuts the batch into n runs of clips, each on a single-threaded worker with
    its own buffers and gradient sums (one run, in the caller's thread, at one thread): values and gradients
    must equal the dense path's, each worker must run one intra-op thread, an empty batch must pass, and torch's
    thread count must be left as it was, for the caller and for threads started afterwards."""
    import threading

    import earlens.frontend.gabor_separable as separable

    bank = _bank(n_filters=3, kernel_size=(9, 25), mode="magnitude").double()
    spec = torch.randn(7, 1, 12, 30, dtype=torch.float64, requires_grad=True)
    layout = separable.FreqBlocking(3, 12, 9)
    monkeypatch.setattr(separable, "CPU_GROUP_BYTES", 2 * 2 * 3 * layout.rows * 30 * 8)  # groups of 2 clips
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = separable.clip_runs(spec, separable.group_size(spec, 3, layout))
        assert [[(g.start, g.stop) for g in run] for run in runs] == {
            1: [[(0, 2), (2, 4), (4, 6), (6, 7)]],
            2: [[(0, 2), (2, 3)], [(3, 5), (5, 7)]],
            3: [[(0, 2)], [(2, 4)], [(4, 6), (6, 7)]],
        }[threads]
        _assert_separable_equals_dense(bank, spec)
        assert torch.get_num_threads() == threads
        if threads > 1:  # each worker runs its matmuls on its own thread alone
            assert separable._workers(lambda _: torch.get_num_threads(), range(threads)) == [1] * threads
        empty = spec[:0].detach().requires_grad_()
        bank(empty).sum().backward()
        assert empty.grad.shape == empty.shape
        started = []
        thread = threading.Thread(target=lambda: started.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert started == [threads]
    finally:
        torch.set_num_threads(before)
