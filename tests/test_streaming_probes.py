"""Streaming linear probes (`earlens.lightning_modules.probes`): the in-memory fast protocol's choices from a memory
map, in one process and under 2-process DDP."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from earlens.io.paths import REPO_ROOT
from earlens.lightning_modules.probes import fit_streaming_probes, training_moments
from earlens.probing.probes import fit_layer_probes
from earlens.probing.probes_common import split_indices


def layered_problem(path, n=2400, dims=8, classes=4, seed=0):
    """Three layers as a memory map: class means far apart (layer 0), close (layer 1), absent (layer 2)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    centres = rng.normal(size=(classes, dims))
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, dims))
    for layer, separation in enumerate((2.0, 0.6, 0.0)):
        features[:, layer] = separation * centres[labels] + rng.normal(size=(n, dims)) + 5.0 * layer
    features.flush()
    return np.load(path, mmap_mode="r"), labels


def test_moments_equal_numpy_over_the_training_rows(tmp_path):
    features, labels = layered_problem(tmp_path / "f.npy", n=3000)
    rows = np.random.default_rng(1).choice(3000, 2100, replace=False)
    mean, std = training_moments(features, rows)  # 3 chunks of 1024 rows
    exact = np.asarray(features, dtype=np.float64)[rows]
    assert mean.numpy() == pytest.approx(exact.mean(0), abs=1e-5)
    assert std.numpy() == pytest.approx(exact.std(0, ddof=1), rel=1e-4)


def test_streaming_probes_agree_with_the_in_memory_fast_protocol(tmp_path):
    features, labels = layered_problem(tmp_path / "f.npy")
    split = split_indices(labels, seed=0)
    in_memory = fit_layer_probes(np.asarray(features), labels, split=split, progress=False)
    streamed = fit_streaming_probes(features, labels, split, max_epochs=20, batch_size=128)
    assert streamed.protocol == "streaming" and streamed.best_layer() == in_memory.best_layer() == 0
    informative = slice(0, 2)  # where the optimum is well determined; the noise layer's accuracy is chance's noise
    assert streamed.metrics["test_accuracy"][informative] == pytest.approx(
        in_memory.metrics["test_accuracy"][informative], abs=0.02)
    assert max(streamed.metrics["test_accuracy"][2], in_memory.metrics["test_accuracy"][2]) < 0.35  # chance 0.25
    assert streamed.metrics["test_accuracy"][0] > 0.9


@pytest.mark.slow
def test_two_ddp_ranks_give_the_one_process_choices(tmp_path):
    features, labels = layered_problem(tmp_path / "f.npy")
    np.save(tmp_path / "labels.npy", labels)
    script = tmp_path / "ddp_probe.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from earlens.probing.probes_common import split_indices
        from earlens.lightning_modules.probes import fit_streaming_probes
        features = np.load({str(tmp_path / "f.npy")!r}, mmap_mode="r")
        labels = np.load({str(tmp_path / "labels.npy")!r})
        result = fit_streaming_probes(features, labels, split_indices(labels, seed=0), max_epochs=20, batch_size=64,
                                      trainer_options=dict(devices=2, strategy="ddp", accelerator="cpu"))
        if result is not None:
            print(json.dumps(result.metrics["test_accuracy"].tolist()))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(proc.stdout.strip().splitlines()[-1])
    one = fit_streaming_probes(features, labels, split_indices(labels, seed=0), max_epochs=20, batch_size=128)
    assert ddp[:2] == pytest.approx(one.metrics["test_accuracy"][:2], abs=0.02)  # 2 ranks × 64 rows = a batch of 128
    assert ddp[2] < 0.35


def test_regression_targets_are_refused_with_a_pointer(tmp_path):
    features, labels = layered_problem(tmp_path / "f.npy", n=200)
    with pytest.raises(ValueError, match="protocol fast"):
        fit_streaming_probes(features, labels.astype(float), split_indices(labels, seed=0))
