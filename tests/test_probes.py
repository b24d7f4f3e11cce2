"""Batched layer probes against known ground truth, SynTheory's sequential protocol and sklearn; handcrafted
features."""

import librosa
import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import f1_score

from earlens.probing import probes_syntheory
from earlens.probing.handcrafted import HandcraftedBackbone
from earlens.probing.probes import fit_layer_probes
from earlens.probing.probes_common import classification_scores, split_indices
from earlens.probing.probes_syntheory import (
    SYNTHEORY_GRID,
    fit_probe_per_layer_sequential,
    halving_plan,
    halving_rungs,
    syntheory_configs,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread avoids the OpenMP spin cost on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def layered_features(n=480, n_layers=5, dim=24, n_classes=4, signal=None, seed=0):
    """Gaussian noise layers; layer l adds `signal[l]` × a class-mean direction (unit-norm per class)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    features = rng.normal(size=(n, n_layers, dim)).astype(np.float32)
    means = rng.normal(size=(n_classes, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    signal = np.zeros(n_layers) if signal is None else np.asarray(signal, dtype=float)
    features += (signal[None, :, None] * means[labels][:, None]).astype(np.float32)
    return features, labels


def test_split_is_disjoint_complete_seeded_and_stratified():
    labels = np.repeat(np.arange(12), [20] * 6 + [7] * 6)
    split = split_indices(labels, seed=3)
    parts = [split.train, split.val, split.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    assert all(len(np.intersect1d(a, b)) == 0 for i, a in enumerate(parts) for b in parts[i + 1:])
    for part, fraction in zip(parts, (0.7, 0.15, 0.15)):
        counts = np.bincount(labels[part], minlength=12)
        assert np.all(np.abs(counts - fraction * np.bincount(labels)) <= 1)
    again, other = split_indices(labels, seed=3), split_indices(labels, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, (again.train, again.val, again.test)))
    assert not np.array_equal(split.test, other.test)
    plain = split_indices(np.linspace(0, 1, 200), stratify=False)
    assert (len(plain.train), len(plain.val), len(plain.test)) == (140, 30, 30)
    with pytest.raises(ValueError, match="too few"):
        split_indices(np.zeros(2))


def test_macro_f1_and_accuracy_match_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, 90)
    predicted = np.stack([truth, rng.integers(0, 6, 90), np.where(truth == 5, 0, truth), np.full(90, 2)])
    accuracy, macro_f1 = classification_scores(torch.as_tensor(predicted), torch.as_tensor(truth), 6)
    for layer, pred in enumerate(predicted):
        assert accuracy[layer].item() == pytest.approx(np.mean(pred == truth))
        assert macro_f1[layer].item() == pytest.approx(f1_score(truth, pred, average="macro"))


def test_informative_layer_is_found_and_noise_layers_stay_at_chance():
    features, labels = layered_features(signal=[0, 0, 8, 0, 0])
    result = fit_layer_probes(features, labels, progress=False)
    test_accuracy = result.metrics["test_accuracy"]
    assert test_accuracy[2] == 1.0 and result.metrics["test_macro_f1"][2] == 1.0
    assert np.all(np.delete(test_accuracy, 2) < 0.25 + 0.17)  # chance 1/4; test set of 72 clips
    assert result.best_layer() == 2
    assert np.all(np.delete(result.best_epoch, 2) < 100)  # noise layers overfit early; their best weights kept
    rows = result.rows(["a", "b", "c", "d", "e"])
    assert [row["layer_name"] for row in rows] == list("abcde") and rows[2]["test_accuracy"] == 1.0


@pytest.mark.parametrize("boredom", [probes_syntheory.SYNTHEORY_BOREDOM, 3])
def test_syntheory_grid_batched_equals_one_probe_per_config_and_layer(boredom, monkeypatch):
    """All configurations x layers as one batched model give what SynTheory's one-run-per-probe loop gives, with
    early stopping too (boredom 3: most probes stop before the 100-epoch cap)."""
    monkeypatch.setattr(probes_syntheory, "SYNTHEORY_BOREDOM", boredom)
    features, labels = layered_features(n=300, n_layers=2, dim=8, signal=[0.7, 2.0], seed=1)
    grid = dict(data_standardization=[False, True], hidden_layer_sizes=[[], [16]], batch_size=[64],
                learning_rate=[1e-2], dropout_p=[0.25, 0.5], l2_weight_decay=[1e-3])
    batched = fit_layer_probes(features, labels, protocol="syntheory", grid=grid, progress=False)
    sequential = fit_probe_per_layer_sequential(features, labels, grid=grid, layers=[1], progress=False)
    assert len(batched.candidates["configs"]) == 8
    for key in ("val_score", "test_score"):
        np.testing.assert_allclose(batched.candidates[key][1], sequential.candidates[key][1], atol=1e-6)
    np.testing.assert_allclose(batched.candidates["val_loss"][1], sequential.candidates["val_loss"][1], rtol=1e-4)
    # each layer reports the test score of its configuration with the best validation score
    for layer in range(2):
        chosen = np.lexsort((batched.candidates["val_loss"][layer], -batched.candidates["val_score"][layer]))[0]
        assert batched.metrics["test_accuracy"][layer] == batched.candidates["test_score"][layer, chosen]
        assert batched.hyperparameters["learning_rate"][layer] == batched.candidates["configs"][chosen][
            "learning_rate"]
    assert batched.metrics["test_accuracy"][1] > 0.5 and batched.protocol == "syntheory"  # chance 0.25
    assert (batched.best_epoch < 100).all() if boredom == 3 else batched.epochs_run == 100


def test_syntheory_default_is_the_jukemir_grid():
    assert SYNTHEORY_GRID == {"data_standardization": (False, True), "hidden_layer_sizes": ((), (512,)),
                              "batch_size": (64, 256), "learning_rate": (1e-5, 1e-4, 1e-3),
                              "dropout_p": (0.25, 0.5, 0.75), "l2_weight_decay": (None, 1e-4, 1e-3)}
    features, labels = layered_features(n=80, n_layers=1, dim=4, n_classes=2, signal=[3.0], seed=2)
    result = fit_layer_probes(features, labels, protocol="syntheory", progress=False)
    assert len(result.candidates["configs"]) == len(syntheory_configs()) == 216
    assert np.isfinite(result.candidates["test_score"]).all()
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        syntheory_configs({"momentum": [0.9]})


def test_halving_rungs_end_at_syntheorys_100_epochs():
    assert halving_rungs(216, 3) == pytest.approx([100 / 81, 100 / 27, 100 / 9, 100 / 3, 100])
    assert halving_rungs(16, 3) == pytest.approx([100 / 9, 100 / 3, 100])
    assert halving_rungs(3, 3) == [100]
    with pytest.raises(ValueError, match="eta"):
        halving_rungs(16, 1)
    # the first rung gives every configuration >= 100 steps of batch 64: later on small training sets
    plan = halving_plan(216, 6955, {64, 256})
    assert [count for _, count in plan] == [216, 72, 24, 8, 3] and plan[0][0] == pytest.approx(100 / 81)
    assert halving_plan(216, 700, {64, 256}) == pytest.approx([(100 / 9, 216), (100 / 3, 72), (100, 24)])


def test_successive_halving_trains_survivors_as_the_full_grid_and_chooses_on_validation(monkeypatch):
    """16 configurations, rungs at 11.1, 33.3 and 100 epochs: 16 → 6 → 2 per layer. The two that reach 100 epochs
    get exactly the full grid's records; the test labels never steer a rung or the choice."""
    monkeypatch.setattr(probes_syntheory, "MIN_RUNG_STEPS", 10)  # 210 training samples: rungs from 11.1 epochs
    features, labels = layered_features(n=300, n_layers=2, dim=8, signal=[0.7, 2.0], seed=1)
    grid = dict(data_standardization=[False, True], hidden_layer_sizes=[[], [16]], batch_size=[64, 256],
                learning_rate=[1e-3, 1e-2], dropout_p=[0.25], l2_weight_decay=[None])
    full = fit_layer_probes(features, labels, protocol="syntheory", grid=grid, progress=False)
    halving = fit_layer_probes(features, labels, protocol="syntheory", grid=grid, search="halving", split=full.split,
                               progress=False)
    epochs = halving.candidates["epochs"]
    np.testing.assert_array_less(99.9, full.candidates["epochs"])
    n_train = len(full.split.train)
    for layer in range(2):
        for budget, count in ((100 / 9, 10), (100 / 3, 4), (100, 2)):  # dropped at each rung, within one step
            assert np.sum((epochs[layer] > budget) & (epochs[layer] <= budget + 256 / n_train + 1e-9)) == count
        survivors = epochs[layer] >= 100
        for key in ("val_score", "test_score"):
            np.testing.assert_allclose(halving.candidates[key][layer, survivors],
                                       full.candidates[key][layer, survivors], atol=1e-6)
        chosen = np.lexsort((halving.candidates["val_loss"][layer], -halving.candidates["val_score"][layer]))[0]
        assert halving.metrics["test_accuracy"][layer] == halving.candidates["test_score"][layer, chosen]
    assert full.candidates["epochs"].sum() / epochs.sum() > 3
    assert halving.metrics["test_accuracy"][1] > 0.5  # chance 0.25
    scrambled = labels.copy()
    scrambled[full.split.test] = np.random.default_rng(0).permutation(scrambled[full.split.test])
    again = fit_layer_probes(features, scrambled, protocol="syntheory", grid=grid, search="halving", split=full.split,
                             progress=False)
    np.testing.assert_array_equal(again.candidates["epochs"], epochs)
    np.testing.assert_array_equal(again.metrics["val_accuracy"], halving.metrics["val_accuracy"])
    with pytest.raises(ValueError, match="search must be one of"):
        fit_layer_probes(features, labels, protocol="syntheory", grid=grid, search="random", progress=False)


def test_a_group_halving_empties_stops_training_and_scores_nothing():
    features, labels = layered_features(n=200, n_layers=1, dim=5, n_classes=3, seed=2)
    data = probes_syntheory._prepare_syntheory(features, labels, "classification", None, 0, "cpu")
    configs = syntheory_configs({"hidden_layer_sizes": [[16]], "batch_size": [64]})
    group = probes_syntheory._GridGroup(data, np.arange(1), configs, list(range(len(configs))), (16,), 64,
                                        "classification", 0)
    group.train_until(2)
    group.keep(torch.zeros(group.n_models, dtype=torch.bool))
    group.train_until(5)
    assert group.n_models == 0 and group.counts == [] and all(len(v) == 0 for v in group.validate())


def test_fast_and_syntheory_protocols_agree_on_a_well_determined_problem():
    features, labels = layered_features(n=2000, n_layers=3, dim=12, n_classes=5, signal=[0.6, 1.2, 2.5], seed=3)
    fast = fit_layer_probes(features, labels, progress=False)
    grid = dict(data_standardization=[True], hidden_layer_sizes=[[]], batch_size=[64], learning_rate=[1e-3],
                dropout_p=[0.25], l2_weight_decay=[None, 1e-3])  # a reduced grid: the full one is the default
    syntheory = fit_layer_probes(features, labels, protocol="syntheory", grid=grid, progress=False)
    np.testing.assert_array_equal(fast.split.test, syntheory.split.test)
    accuracy = fast.metrics["test_accuracy"]
    assert np.all(np.diff(accuracy) > 0)  # more signal, better probes
    np.testing.assert_allclose(syntheory.metrics["test_accuracy"], accuracy, atol=0.02)  # 300 test samples
    assert fast.best_layer() == syntheory.best_layer() == 2


def test_fast_protocol_chooses_weight_decay_on_validation_only():
    features, labels = layered_features(n=240, n_layers=3, dim=60, signal=[0.5, 1.0, 1.5], seed=4)
    result = fit_layer_probes(features, labels, progress=False)
    candidates = result.candidates
    chosen = [np.lexsort((candidates["val_loss"][layer], -candidates["val_score"][layer]))[0] for layer in range(3)]
    np.testing.assert_array_equal(result.hyperparameters["weight_decay"],
                                  [candidates["configs"][c]["weight_decay"] for c in chosen])
    scrambled = labels.copy()  # test labels never influence a choice
    rng = np.random.default_rng(0)
    scrambled[result.split.test] = rng.permutation(scrambled[result.split.test])
    again = fit_layer_probes(features, scrambled, split=result.split, progress=False)
    np.testing.assert_array_equal(again.hyperparameters["weight_decay"], result.hyperparameters["weight_decay"])
    np.testing.assert_array_equal(again.metrics["val_accuracy"], result.metrics["val_accuracy"])
    assert again.best_layer() == result.best_layer()


def test_syntheory_regression_reports_r2_and_mse_in_target_units():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(1200, 2, 6)).astype(np.float32)
    target = 90 + 30 * (features[:, 1, :3] @ np.array([1.0, -0.5, 0.3])) + 3 * rng.normal(size=1200)  # "bpm"
    grid = dict(data_standardization=[True], hidden_layer_sizes=[[]], batch_size=[64], learning_rate=[1e-3],
                dropout_p=[0.25], l2_weight_decay=[None])
    result = fit_layer_probes(features, target, task="regression", protocol="syntheory", grid=grid,
                              progress=False)
    split = result.split
    reference = LinearRegression().fit(features[split.train, 1], target[split.train])
    least_squares = reference.score(features[split.test, 1], target[split.test])  # 0.99
    assert least_squares - 0.08 < result.metrics["test_r2"][1] < least_squares + 0.01  # input dropout >= 0.25
    assert result.metrics["test_r2"][0] < 0.1 and result.best_layer() == 1
    test_variance = np.var(target[split.test])  # R² = 1 − MSE / variance: the MSE is in bpm², not min-max units
    np.testing.assert_allclose(result.metrics["test_mse"], (1 - result.metrics["test_r2"]) * test_variance,
                               rtol=1e-4)


def test_linear_probe_reaches_the_regularised_optimum_of_sklearn_logistic_regression():
    """L-BFGS solves mean cross-entropy + λ/2·|W|² (bias free): sklearn's C = 1 / (λ · n_train) on the same inputs."""
    features, labels = layered_features(n=2400, n_layers=2, dim=8, n_classes=5, signal=[1.0, 3.0], seed=4)
    weight_decay = 1e-2
    result = fit_layer_probes(features, labels, weight_decay=weight_decay, progress=False)
    split = result.split
    for layer in range(2):
        train = features[split.train, layer]
        mean, std = train.mean(0), train.std(0, ddof=1)
        reference = LogisticRegression(C=1 / (weight_decay * len(split.train)), tol=1e-10, max_iter=10_000).fit(
            (train - mean) / std, labels[split.train])
        predicted = reference.predict((features[split.test, layer] - mean) / std)
        assert result.metrics["test_accuracy"][layer] == pytest.approx(np.mean(predicted == labels[split.test]),
                                                                       abs=2 / len(split.test))
        probabilities = reference.predict_proba((features[split.val, layer] - mean) / std)
        val_loss = -np.mean(np.log(probabilities[np.arange(len(split.val)), labels[split.val]]))
        assert result.metrics["val_loss"][layer] == pytest.approx(val_loss, abs=2e-3)


def test_each_layer_gets_the_probe_it_would_get_alone():
    """Per-layer L-BFGS memories, step sizes and stopping: a layer's probe does not depend on the others."""
    features, labels = layered_features(n=600, dim=20, signal=[0.0, 0.5, 1.0, 2.0, 6.0], seed=5)
    together = fit_layer_probes(features, labels, progress=False)
    alone = fit_layer_probes(features[:, 3:4], labels, progress=False)
    assert together.best_epoch[3] == alone.best_epoch[0]
    for key, values in together.metrics.items():
        assert values[3] == pytest.approx(alone.metrics[key][0], rel=1e-4, abs=1e-6), key


def test_mlp_probe_solves_what_a_linear_probe_cannot():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(600, 3, 8)).astype(np.float32)
    labels = (features[:, 1, 0] * features[:, 1, 1] > 0).astype(int)  # XOR of two signs in layer 1
    linear = fit_layer_probes(features, labels, progress=False)
    mlp = fit_layer_probes(features, labels, model="mlp", hidden_size=64, lr=3e-3, progress=False)
    assert linear.metrics["test_accuracy"][1] < 0.7
    assert mlp.metrics["test_accuracy"][1] > 0.9
    assert np.all(mlp.metrics["test_accuracy"][[0, 2]] < 0.7)


def test_regression_probe_matches_least_squares():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 3, 10)).astype(np.float32)
    target = features[:, 2, :3] @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=400) + 5.0
    result = fit_layer_probes(features, target, task="regression", lr=3e-2, weight_decay=0.0, progress=False)
    split = result.split
    reference = LinearRegression().fit(features[split.train, 2], target[split.train])
    assert result.metrics["test_r2"][2] == pytest.approx(reference.score(features[split.test, 2], target[split.test]),
                                                         abs=0.01)
    mse_from_r2 = (1 - result.metrics["test_r2"]) * np.var(target[split.test])  # MSE is in target units
    np.testing.assert_allclose(result.metrics["test_mse"], mse_from_r2, rtol=1e-4)
    assert np.all(result.metrics["test_r2"][:2] < 0.1)


def test_handcrafted_features_match_librosa_per_clip():
    sample_rate = 22050
    t = np.arange(sample_rate) / sample_rate
    waves = np.stack([np.sin(2 * np.pi * 261.63 * t), 0.01 * np.sin(2 * np.pi * 440.0 * t)]).astype(np.float32)
    backbone = HandcraftedBackbone(sample_rate=sample_rate)
    mel, chroma, mfcc, log_cqt = backbone(torch.from_numpy(waves))
    assert backbone.layer_names == ["mel", "chroma", "mfcc", "log_cqt"]
    quiet = waves[1]  # batched with a 40 dB louder clip: its own features must not change
    np.testing.assert_allclose(mfcc[1].numpy(), librosa.feature.mfcc(y=quiet, sr=sample_rate).T, atol=1e-3)
    np.testing.assert_allclose(chroma[1].numpy(), librosa.feature.chroma_cqt(y=quiet, sr=sample_rate, tuning=0.0).T,
                               atol=1e-5)
    expected_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=quiet, sr=sample_rate), top_db=80.0)
    np.testing.assert_allclose(mel[1].numpy(), expected_mel.T, atol=1e-3)
    assert chroma.mean(1).argmax(-1).tolist() == [0, 9]  # C4 and A4
    expected_cqt = np.log1p(100 * np.abs(librosa.cqt(quiet, sr=sample_rate, hop_length=512,
                                                     fmin=librosa.note_to_hz("C2"), n_bins=72)))
    np.testing.assert_allclose(log_cqt[1].numpy(), expected_cqt.T, atol=1e-4)
    assert log_cqt.mean(1).argmax(-1).tolist() == [24, 33]  # semitones above C2: C4 and A4


def test_extrapolation_split_holds_out_both_ends():
    from earlens.probing.probes_common import extrapolation_split

    bpm = np.repeat(np.arange(50, 211), 25)[np.random.default_rng(0).permutation(161 * 25)]
    split = extrapolation_split(bpm, seed=1)
    assert len(split.train) == int(0.85 * len(bpm)) - int(0.15 * len(bpm))
    assert abs(len(split.val) - len(split.test)) <= 1
    train, held = bpm[split.train], bpm[np.concatenate([split.val, split.test])]
    assert ((held <= train.min()) | (held >= train.max())).all()  # never inside the training range
    assert (bpm[split.test] < 100).any() and (bpm[split.test] > 160).any()  # both ends in the test set
    assert len(np.unique(np.concatenate([split.train, split.val, split.test]))) == len(bpm)
