"""Helix fit and probe against ground truth: synthetic helices with known parameters, nulls, rendered notes."""

import librosa
import numpy as np
import pytest

from earlens.helix import fit_helix, fit_helix_optuna, helix_curve, helix_probe, per_pitch_means, plot_helix
from earlens.stimuli import render_stimuli

P = 36
T = np.arange(P, dtype=float)


def random_rotation(rng, dim=3):
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q


def test_fit_recovers_known_helices_batched():
    rng = np.random.default_rng(0)
    truth = {  # one turn per octave, the paper's π/3, and an arbitrary rate; all with a phase offset t0
        "omega": np.array([np.pi / 6, np.pi / 3, 2.2]),
        "h_pitch": np.array([0.10, 0.05, 0.20]),
        "h0": np.array([-1.5, 0.3, -3.0]),
        "r_slope": np.array([0.01, -0.02, 0.0]),
        "r0": np.array([1.0, 1.2, 0.8]),
        "t0": np.array([2.0, -1.0, 0.5]),
    }
    basis = np.stack([random_rotation(rng) for _ in range(3)])
    clean = helix_curve(*(truth[k] for k in ("h_pitch", "h0", "r_slope", "r0", "omega", "t0")), basis, T)
    fit = fit_helix(clean + rng.normal(scale=0.02, size=clean.shape))
    np.testing.assert_allclose(fit.omega, truth["omega"], atol=0.02)
    np.testing.assert_allclose(fit.h_pitch, truth["h_pitch"], atol=0.005)
    np.testing.assert_allclose(fit.r_slope, truth["r_slope"], atol=0.005)
    np.testing.assert_allclose(fit.r0, truth["r0"], atol=0.05)
    assert (fit.r2 > 0.99).all()
    assert (np.abs((fit.basis[..., 0] * basis[..., 0]).sum(-1)) > 0.999).all()  # the axis c is found
    np.testing.assert_allclose(fit.basis.swapaxes(-1, -2) @ fit.basis, np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-9)
    # the reported parameters (with t0 = 0, u = first pitch's radial direction) reproduce the data
    np.testing.assert_allclose(fit.curve(T), clean, atol=0.05)


def test_noiseless_helix_is_fitted_exactly_and_line_is_all_height():
    rng = np.random.default_rng(1)
    helix = helix_curve(0.2, -3.0, 0.0, 1.0, np.pi / 6, 0.0, random_rotation(rng), T)
    line = np.outer(T - T.mean(), rng.normal(size=3))
    fit = fit_helix(np.stack([helix, line]))
    assert fit.mse[0] < 1e-12 and fit.r2[0] == pytest.approx(1.0)
    assert fit.r2[1] == pytest.approx(1.0) and abs(fit.r0[1]) + abs(fit.r_slope[1]) * P < 1e-6  # radius 0


def test_probe_finds_helix_embedded_in_high_dimensions():
    rng = np.random.default_rng(2)
    helix = helix_curve(0.1, -1.8, 0.0, 1.5, np.pi / 3, 0.0, np.eye(3), T)
    embed = random_rotation(rng, 64)[:, :3]
    layers = np.stack([helix @ embed.T + rng.normal(scale=0.05, size=(P, 64)), rng.normal(size=(P, 64))])
    result = helix_probe(layers, n_permutations=60, seed=0)
    assert result.omega_chroma[0] == pytest.approx(np.pi / 3, abs=0.02)
    assert result.r2[0] > 0.95 and result.z[0] > 10
    assert result.r2[0] - result.line_r2[0] > 0.5  # the circle, not just pitch height
    assert abs(result.z[1]) < 3  # random cloud sits at the null
    assert result.null_std[0] > 0 and result.null_r2.shape == (2, 60)


def test_probe_on_a_line_is_explained_by_pitch_height():
    rng = np.random.default_rng(3)
    line = np.outer(T, rng.normal(size=32)) / P + rng.normal(scale=0.05, size=(P, 32))
    result = helix_probe(line[None], n_permutations=40)
    # a shuffle null cannot separate a line from a helix (both are ordered); line_r2 can
    assert result.r2[0] - result.line_r2[0] < 0.1


def test_clip_features_are_averaged_per_pitch():
    rng = np.random.default_rng(4)
    pitch = np.repeat(np.arange(48, 60), 3)
    features = rng.normal(size=(2, len(pitch), 8))
    means, pitches = per_pitch_means(features, pitch)
    np.testing.assert_allclose(means[1, 5], features[1, pitch == 53].mean(0))
    np.testing.assert_array_equal(pitches, np.arange(48, 60))
    from_clips = helix_probe(features, pitch, n_permutations=10)
    from_means = helix_probe(means, n_permutations=10)
    np.testing.assert_allclose(from_clips.r2, from_means.r2)
    np.testing.assert_allclose(from_clips.z, from_means.z)


def test_closed_form_fit_beats_the_optuna_protocol_at_equal_model():
    rng = np.random.default_rng(5)
    points = helix_curve(0.1, -1.5, 0.01, 1.0, np.pi / 6, 1.0, random_rotation(rng), T)
    points = points + rng.normal(scale=0.05, size=(P, 3))
    ours = fit_helix(points)
    theirs = fit_helix_optuna(points, n_trials=200, n_restarts=1)
    assert ours.mse <= theirs.mse * (1 + 1e-9)
    np.testing.assert_allclose(((theirs.curve(T) - points) ** 2).sum(-1).mean(), theirs.mse)


@pytest.fixture(scope="module")
def piano_notes(tmp_path_factory):
    return render_stimuli("notes", cache_dir=tmp_path_factory.mktemp("stimuli"))


def test_reference_rows_on_rendered_piano_notes(piano_notes):
    """Constant-Q and chroma of C3–B5 piano notes: measured, printed, and only robust facts asserted."""
    waves = np.asarray(piano_notes.waves)
    cqt = np.abs(librosa.cqt(waves, sr=16000, fmin=librosa.note_to_hz("C2"), n_bins=72)).mean(-1)
    chroma = librosa.feature.chroma_cqt(y=waves, sr=16000).mean(-1)
    result = helix_probe([np.log1p(100 * cqt), chroma], piano_notes.labels["midi_pitch"], n_permutations=100)
    for name, i in (("log-CQT", 0), ("chroma", 1)):
        print(f"{name}: omega={result.omega_chroma[i]:.4f} R2={result.r2[i]:.4f} line_R2={result.line_r2[i]:.4f} "
              f"null={result.null_mean[i]:.3f}±{result.null_std[i]:.3f} z={result.z[i]:.1f} "
              f"triple={result.best_triple[i]}")
    assert (result.z > 5).all()
    assert result.r2[0] > 0.8
    # chroma is octave-invariant, so its circle must turn a whole number of times per octave (k·π/6)
    assert np.abs(result.omega_chroma[1] / (np.pi / 6) - np.round(result.omega_chroma[1] / (np.pi / 6))) < 0.06
    figure = plot_helix(result, 1)
    assert len(figure.axes[0].collections) >= 1
