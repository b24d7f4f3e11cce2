"""Helix fit and probe against ground truth: synthetic helices with known parameters, negative controls that must
not pass as helices (weak pitch-height lines, log curves, place codes, random walks, Gaussian-process curves,
noise), helices beside smooth nuisance, the octave measures, aliasing, rendered notes. `bench/helix_calibration.py`
measures the same cases with hundreds of draws."""

import warnings

import librosa
import numpy as np
import pytest

from earlens.probing.helicality import helix_probe, octave_measures, per_pitch_means
from earlens.probing.helix import fit_helix, fold_omega, helix_curve, helix_r2_profile, pitch_step
from earlens.probing.helix_nulls import SmoothSpikedNull, double_centre, smooth_kernels
from earlens.stats.multiple_testing import benjamini_hochberg
from bench.helix_calibration import generate
from bench.helix_optuna import fit_helix_optuna
from earlens.plots import plot_helix
from earlens.stimuli.rendering import render_stimuli

P = 36
T = np.arange(P, dtype=float)
SEEDS = range(20)  # controls: each must be right in >= 19 of 20 seeded draws
CLIPS = 3  # clips per pitch in the controls (the bootstrap resamples them)


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
    assert fit.mse[0] < 1e-10 and fit.r2[0] == pytest.approx(1.0)
    assert fit.r2[1] == pytest.approx(1.0) and abs(fit.r0[1]) + abs(fit.r_slope[1]) * P < 1e-6  # radius 0


def test_probe_finds_helix_embedded_in_high_dimensions():
    rng = np.random.default_rng(2)
    helix = helix_curve(0.1, -1.8, 0.0, 1.5, np.pi / 3, 0.0, np.eye(3), T)
    embed = random_rotation(rng, 64)[:, :3]
    layers = np.stack([helix @ embed.T + rng.normal(scale=0.05, size=(P, 64)), rng.normal(size=(P, 64))])
    result = helix_probe(layers, n_surrogates=39, alpha=0.05, n_permutations=40, seed=0)
    assert result.omega_chroma[0] == pytest.approx(np.pi / 3, abs=0.02)
    assert result.omega_periodic[0] == pytest.approx(np.pi / 3, abs=np.pi / (P - 1))  # the ratio's grid
    assert result.r2[0] > 0.95 and result.p_helix[0] == pytest.approx(1 / 40) and result.z[0] > 3
    assert result.r2[0] - result.line_r2[0] > 0.5  # the circle, not just pitch height
    assert result.p_helix[1] > 0.05 and abs(result.perm_z[1]) < 3  # a random cloud sits at both nulls
    assert result.null_periodic_lr.shape == (2, 39) and result.perm_null_r2.shape == (2, 40)


def test_paper_parameter_table_recovers_the_generating_helix():
    """In PCA coordinates an orthonormally embedded helix keeps its parameters (h0 up to centring)."""
    rng = np.random.default_rng(6)
    truth = dict(h_pitch=0.1, h0=-1.8, r_slope=0.0, r0=1.5, omega=np.pi / 3)
    helix = helix_curve(truth["h_pitch"], truth["h0"], truth["r_slope"], truth["r0"], truth["omega"], 0.0,
                        np.eye(3), T)
    layer = helix @ random_rotation(rng, 16)[:, :3].T + rng.normal(scale=0.01, size=(P, 16))
    result = helix_probe(layer[None], n_components=4, n_surrogates=0)
    stats = result.layer_stats()
    for prefix in ("", "paper_"):  # noiseless enough that both selections pick the helix triple
        assert stats[f"{prefix}h_pitch"][0] == pytest.approx(truth["h_pitch"], abs=1e-3)
        assert stats[f"{prefix}r0"][0] == pytest.approx(truth["r0"], abs=0.01)
        assert stats[f"{prefix}r_slope"][0] == pytest.approx(0.0, abs=1e-3)
        assert stats[f"{prefix}h0"][0] == pytest.approx(-truth["h_pitch"] * T.mean(), abs=0.01)  # centred height
        assert stats[f"{prefix}t0"][0] == 0.0  # frame convention: u points at the lowest pitch
        assert stats[f"{prefix}axis_pitch_corr"][0] > 0.999
    assert stats["paper_omega_chroma"][0] == pytest.approx(truth["omega"], abs=0.01)
    assert stats["paper_score_inv_mse"][0] == pytest.approx(1 / result.paper_fit.mse[0])
    # the reported parameters with t0 = 0 reproduce the points: u is the radial direction of the first pitch
    np.testing.assert_allclose(result.fit[0].curve(T), result.points[0], atol=0.05)


def test_paper_selection_is_by_inverse_mse_and_may_differ():
    """1/MSE favours low-variance PCs, R² does not: both selections are reported, each the argmax of its score."""
    rng = np.random.default_rng(7)
    layers = rng.normal(size=(6, P, 12)) * np.geomspace(3, 0.3, 12)
    result = helix_probe(layers, n_surrogates=0)
    np.testing.assert_array_equal(result.triple_r2.argmax(1), [np.flatnonzero(
        (np.array(list(__import__("itertools").combinations(range(5), 3))) == triple).all(1))[0]
        for triple in result.best_triple])
    assert (result.paper_fit.score_inv_mse >= result.fit.score_inv_mse - 1e-12).all()
    assert (result.fit.r2 >= result.paper_fit.r2 - 1e-12).all()
    assert (result.paper_triple != result.best_triple).any(axis=1).any()


def test_permutation_null_is_fooled_by_a_random_walk_but_the_smooth_null_is_not():
    """36 pitches × 256 dimensions: a random walk scores R² ~0.99 and z ~20 against the shuffled-pitch null; against
    the smooth null it is ordinary."""
    walk = np.cumsum(np.random.default_rng(8).normal(size=(1, P, 256)), axis=1)
    result = helix_probe(walk, n_permutations=100, n_surrogates=99)
    assert result.r2[0] > 0.95 and result.perm_z[0] > 10
    assert result.p_helix[0] > 0.05 and result.layer_stats()["helix_beyond_smooth"][0] == 0.0


def test_null_keeps_the_layers_rank_and_its_scale():
    """A three-dimensional random walk in 64 noisy dimensions keeps low-rank spikes in the null (its strongest
    directions), pure noise has none; the draws' energy matches the data's."""
    family = smooth_kernels(T)
    for kind, spikes in (("random_walk_3d", (1, 3)), ("noise", (0, 0))):
        means = generate(kind, np.random.default_rng(3), P, 64)
        contrasts = family.basis.T @ (means - means.mean(0))
        null = SmoothSpikedNull(contrasts, smooth_kernels(T, null=True), np.eye(64)[:, :8])
        assert spikes[0] <= null.n_spikes <= spikes[1], kind
        scatter, coordinates = null.draw(200, np.random.default_rng(0))
        assert coordinates.shape == (200, P - 2, 8)
        np.testing.assert_allclose(np.trace(scatter, axis1=1, axis2=2).mean(), (contrasts**2).sum(), rtol=0.1)


def test_octave_measures_on_known_geometry():
    """A pure chroma circle is octave-equivalent by every measure; a pitch-height line by none."""
    circle = np.stack([np.cos(np.pi * T / 6), np.sin(np.pi * T / 6)], axis=1)
    line = np.stack([T, np.zeros(P)], axis=1)
    grams = double_centre(np.stack([circle @ circle.T, line @ line.T]))
    measures = octave_measures(grams, T)
    assert measures["octave_index"][0] == pytest.approx(1 - np.cos(np.pi / 6))  # cos 0 − cos(π/6)
    assert measures["d_strict"][0] == pytest.approx(1 - np.cos(np.pi / 6 * 11))  # the largest at 7–11: Δ = 11
    assert measures["rsa_chroma"][0] > 0.9 and abs(measures["rsa_height"][0]) < 0.2
    assert measures["d_strict"][1] < 0 and measures["rsa_chroma"][1] < 0.1


def test_benjamini_hochberg_matches_the_step_up_rule():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, np.nan])
    q = benjamini_hochberg(p)
    finite = p[:-1]
    ranked = np.sort(finite) * len(finite) / np.arange(1, len(finite) + 1)
    np.testing.assert_allclose(np.sort(q[:-1]), np.minimum.accumulate(ranked[::-1])[::-1])
    assert np.isnan(q[-1]) and benjamini_hochberg(p.reshape(3, 3)).shape == (3, 3)


def test_clip_features_are_averaged_per_pitch():
    rng = np.random.default_rng(4)
    pitch = np.repeat(np.arange(48, 60), 3)
    features = rng.normal(size=(2, len(pitch), 8))
    means, pitches = per_pitch_means(features, pitch)
    np.testing.assert_allclose(means[1, 5], features[1, pitch == 53].mean(0))
    np.testing.assert_array_equal(pitches, np.arange(48, 60))
    from_clips = helix_probe(features, pitch, n_surrogates=19, n_bootstrap=0, alpha=0.05)
    from_means = helix_probe(means, n_surrogates=19, alpha=0.05)
    np.testing.assert_allclose(from_clips.r2, from_means.r2)
    np.testing.assert_allclose(from_clips.null_periodic_lr, from_means.null_periodic_lr)  # same seed, same null
    again = helix_probe(features, pitch, n_surrogates=19, n_bootstrap=0, alpha=0.05)
    np.testing.assert_array_equal(again.null_periodic_lr, from_clips.null_periodic_lr)  # every DDP rank agrees
    other = helix_probe(features, pitch, n_surrogates=19, n_bootstrap=0, alpha=0.05, seed=1)
    assert not np.array_equal(other.null_periodic_lr, from_clips.null_periodic_lr)


def rbf_kernel(length):
    return np.exp(-0.5 * ((T[:, None] - T[None, :]) / length) ** 2) + 1e-8 * np.eye(P)


def control_clips(kind: str, seed: int, dim: int = 16, noise: float = 0.15) -> np.ndarray:
    """Per-pitch curve of a control, CLIPS noisy clips per pitch: (P·CLIPS, dim)."""
    rng = np.random.default_rng(seed)
    if kind == "line":
        curve = np.outer(T / 12, rng.normal(size=dim) / np.sqrt(dim))
    elif kind == "random walk":
        curve = 0.3 * np.cumsum(rng.normal(size=(P, dim)), axis=0)
    elif kind == "gp":  # Gaussian-process curves, length scale 6 semitones
        curve = np.linalg.cholesky(rbf_kernel(6.0)) @ rng.normal(size=(P, dim))
    elif kind == "noise":
        curve = np.zeros((P, dim))
    else:
        helix = helix_curve(1 / 12, -1.5, 0.0, 1.0, float(kind), 0.0, np.eye(3), T)
        curve = helix @ random_rotation(rng, dim)[:, :3].T
    return np.repeat(curve, CLIPS, axis=0) + noise * np.sqrt(CLIPS) * rng.normal(size=(P * CLIPS, dim))


CONTROL_PITCH = np.repeat(np.arange(48, 48 + P), CLIPS)
PROBE_OPTIONS = dict(n_components=4, n_surrogates=39, alpha=0.05)  # p <= 1/40: above all 39 surrogates


@pytest.mark.parametrize("omega", [np.pi / 6, np.pi / 3, 2.2])
def test_noisy_helices_are_significant_with_omega_in_its_interval(omega):
    clips = np.stack([control_clips(str(omega), seed) for seed in SEEDS])  # seeds as layers: one batched probe
    result = helix_probe(clips, CONTROL_PITCH, n_bootstrap=60, **PROBE_OPTIONS)
    stats = result.layer_stats()
    assert (stats["p_helix"] <= 0.05).sum() >= 19
    assert (stats["helix_beyond_smooth"] == 1).sum() >= 19  # q over the 20 "layers"
    low, high = result.omega_ci.T  # a 95 % interval: >= 18 of 20 with probability 0.92
    assert ((low <= omega) & (omega <= high)).sum() >= 18
    assert np.median(high - low) < 0.05
    harmonic = {np.pi / 6: stats["r2_at_pi6"], np.pi / 3: stats["r2_at_pi3"]}.get(omega, stats["r2_off_harmonic"])
    assert (harmonic >= np.maximum(stats["r2_at_pi6"], stats["r2_at_pi3"]) - 1e-9).sum() >= 19
    assert (stats["delta_r2_smooth"] > 0.2).sum() >= 19  # the helix beats a quadratic curve (nested comparison)
    if omega < 2:  # 12 semitones = one or two turns: octave equivalence
        # octave distances against smooth draws: weaker than p_helix at 39 surrogates (bench: power at 499)
        assert (stats["p_octave"] <= 0.05).sum() >= 12 and (stats["p_octave"] <= 0.15).all()
        assert (stats["d_strict"] > 0).all()
    if omega == np.pi / 6:  # one turn per octave: chroma in the RSA sense
        assert (stats["p_rsa_chroma"] <= 0.05).sum() >= 19


@pytest.mark.parametrize("kind", ["line", "random walk", "gp", "noise"])
def test_smooth_and_random_curves_are_not_helices(kind):
    clips = np.stack([control_clips(kind, seed) for seed in SEEDS])
    result = helix_probe(clips, CONTROL_PITCH, n_bootstrap=0, **PROBE_OPTIONS)
    stats = result.layer_stats()
    # p <= 0.05 is rank 1 or 2 of 40: at most 4 of 20 with probability 0.98 under a calibrated null
    assert (stats["p_helix"] <= 0.05).sum() <= 4 and stats["helix_beyond_smooth"].sum() == 0
    assert (stats["p_octave"] <= 0.05).sum() <= 4
    assert np.isnan(result.omega_ci).all()  # no bootstrap requested


@pytest.mark.parametrize("family", ["line_weak", "log_curve", "place_code", "random_walk_3d", "gp_lowrank"])
def test_pitch_height_codes_and_low_rank_curves_are_not_helices(family):
    """The structures that fooled a coordinate-by-coordinate null: weak low-rank curves below the noise's top
    principal component, place codes, three-dimensional random walks (36 pitches × 64 dimensions, noise 0.3)."""
    layers = np.stack([generate(family, np.random.default_rng([1, seed]), P, 64) for seed in range(12)])
    stats = helix_probe(layers, n_surrogates=39, n_bootstrap=0).layer_stats()
    assert (stats["p_helix"] <= 0.05).sum() <= 2 and (stats["p_octave"] <= 0.05).sum() <= 2


@pytest.mark.parametrize("family", ["helix_pi6_nuisance2", "helix_2.2_nuisance2"])
def test_helix_beside_smooth_nuisance_is_found(family):
    """A circle sharing its layer with smooth nuisance directions twice its size (and a pitch-height trend)."""
    layers = np.stack([generate(family, np.random.default_rng([2, seed]), P, 64) for seed in range(12)])
    stats = helix_probe(layers, n_surrogates=39, n_bootstrap=0).layer_stats()
    assert (stats["p_helix"] <= 0.05).sum() >= 10


def test_every_third_semitone_folds_omega_and_warns():
    """On pitches 3 semitones apart ω = 1.6 and 2π/3 − 1.6 ≈ 0.494 trace the same points."""
    keep = np.isin(CONTROL_PITCH, np.arange(48, 48 + P, 3))
    clips = np.stack([control_clips("1.6", seed)[keep] for seed in SEEDS])
    with pytest.warns(UserWarning, match="3 semitones apart"):
        result = helix_probe(clips, CONTROL_PITCH[keep], n_bootstrap=60, **PROBE_OPTIONS)
    stats = result.layer_stats()
    assert result.step == 3 and (stats["omega_aliased"] == 1).all()
    assert stats["omega_max"][0] == pytest.approx(np.pi / 3)
    folded = fold_omega(1.6, 3)
    assert folded == pytest.approx(2 * np.pi / 3 - 1.6)
    assert (np.abs(result.omega_chroma - folded) < 0.03).sum() >= 19
    assert ((result.omega_ci[:, 0] <= folded) & (folded <= result.omega_ci[:, 1])).sum() >= 18
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chromatic set does not warn
        chromatic = helix_probe(clips[:2, :, :], CONTROL_PITCH[keep] // 3, n_surrogates=0, n_components=4)
    assert chromatic.step == 1


def test_pitch_step_fold_and_fixed_omega_profile():
    assert pitch_step(np.arange(0, 36, 3)) == 3 and pitch_step([0, 2, 7]) == 1 and pitch_step([0.5, 1.0]) == 1
    np.testing.assert_allclose(fold_omega(np.array([0.3, np.pi / 3 + 0.1, -0.3]), 3), [0.3, np.pi / 3 - 0.1, 0.3])
    points = helix_curve(0.1, -1.0, 0.0, 1.0, np.pi / 6, 0.0, np.eye(3), T)
    profile = helix_r2_profile(points[None], T, np.array([np.pi / 6, np.pi / 4, np.pi / 3]))
    assert profile[0, 0] == pytest.approx(1.0) and (profile[0, 1:] < 0.9).all()
    assert fit_helix(points).r2 == pytest.approx(profile[0, 0])


def test_nested_comparison_prefers_the_quadratic_on_a_parabola():
    rng = np.random.default_rng(10)
    embed = random_rotation(rng, 16)[:, :3]
    parabola = np.stack([T / 12, (T / 12) ** 2 - 1.5 * T / 12, 0 * T], axis=1) @ embed.T
    result = helix_probe((parabola + rng.normal(scale=0.02, size=(P, 16)))[None], n_components=4, n_surrogates=0)
    stats = result.layer_stats()
    assert stats["smooth_r2"][0] > 0.99 and stats["delta_r2_smooth"][0] < 0 and stats["helix_beats_smooth"][0] == 0


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
    stats = result.layer_stats()
    for name, i in (("log-CQT", 0), ("chroma", 1)):
        print(f"{name}: " + " ".join(f"{key}={values[i]:.4g}" for key, values in stats.items())
              + f" triple={result.best_triple[i]} paper_triple={result.paper_triple[i]}")
    assert (stats["perm_z"] > 5).all()  # both beat shuffled pitch order, as any pitch-ordered curve does
    assert result.r2[0] > 0.8
    # chroma is octave-invariant: its circle turns a whole number of times per octave (k·π/6), and beats smoothness
    assert np.abs(result.omega_chroma[1] / (np.pi / 6) - np.round(result.omega_chroma[1] / (np.pi / 6))) < 0.06
    assert stats["helix_beyond_smooth"][1] == 1 and stats["octave_index"][1] > 0.5
    figure = plot_helix(result, 1)
    assert len(figure.axes[0].collections) >= 1
