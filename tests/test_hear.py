"""HEAR 2021 modules both ways: `probe.py --backbone.kind hear` on hearbaseline's naive baseline and on
`earlens.models.hear`, and `earlens.models.hear` over a run trained here, accepted by `hear-validator` and equal to the
in-memory classifier."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from earlens.io.paths import REPO_ROOT
from earlens.lightning_modules.cli import load_run
from earlens.models.backbones import load_backbone, positional_librosa_mel
from earlens.models.base import HookBackbone

ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
# hearvalidator imports TensorFlow only to recognise TF models; a torch module never reaches it, so where TensorFlow
# is not installed an empty stand-in lets the validator's own CLI run unchanged.
VALIDATOR = """import importlib.machinery, importlib.util, sys, types
if importlib.util.find_spec("tensorflow") is None:
    tf = types.ModuleType("tensorflow")
    tf.Module = type("Module", (), {})
    tf.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
    sys.modules["tensorflow"] = tf
from hearvalidator.validate import main
sys.argv = ["hear-validator", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """`train.py --config gabor_speaker` for two batches of one epoch (Gabor frontend + encoder, 16 kHz)."""
    run_dir = tmp_path_factory.mktemp("hear") / "trained"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--config", "gabor_speaker",
                             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                             "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                             "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
                             "--trainer.callbacks", "[]", "--run_dir", str(run_dir)],
                            cwd=run_dir.parent, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_hear_validator_accepts_earlens_hear_on_a_trained_run(trained_run):
    result = subprocess.run([sys.executable, "-c", VALIDATOR, "earlens.models.hear", "-m", str(trained_run),
                             "-d", "cpu"],
                            capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Looks good!" in result.stdout and "timestamp_embedding_size: 128" in result.stdout


def test_earlens_hear_embeddings_are_the_classifier_s_own(trained_run):
    """Timestamp embeddings = the encoder's output as probe.py's `run` backbone hooks it; the classifier's head on
    the scene embeddings gives its logits; timestamps sit at the centres of the pooled STFT frames."""
    import earlens.models.hear as hear

    classifier, _ = load_run(trained_run)
    model = hear.load_model(str(trained_run))
    audio = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    hooked = HookBackbone(classifier, ["encoder"], 16000, channels_first=True)(audio)[0]
    torch.testing.assert_close(embeddings, hooked, rtol=1e-5, atol=1e-6)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and embeddings.shape[2] == model.timestamp_embedding_size
    with torch.no_grad():
        torch.testing.assert_close(classifier.head(scene), classifier(audio), rtol=1e-5, atol=1e-5)
    # 3 time pools of 2 over 10 ms STFT frames centred on i·hop: frame j spans frames 8j..8j+7, centre (8j + 3.5)·10 ms
    assert timestamps.shape == embeddings.shape[:2]
    torch.testing.assert_close(timestamps[0], 35.0 + 80.0 * torch.arange(embeddings.shape[1]).float())
    checkpoint = hear.load_model(str(next((trained_run / "checkpoints").glob("best-*.ckpt"))))
    torch.testing.assert_close(hear.get_scene_embeddings(audio, checkpoint), scene)


def test_hearbaseline_naive_loads_with_librosa_mel_taking_positions():
    """hearbaseline builds its filters with `librosa.filters.mel(44100, n_fft=4096, n_mels=256)`: inside the hear
    loader the call means what it meant before librosa 0.10, and librosa is left as it was."""
    librosa = pytest.importorskip("librosa")
    pytest.importorskip("hearbaseline")
    backbone = load_backbone("hear", "hearbaseline")
    expected = librosa.filters.mel(sr=44100, n_fft=4096, n_mels=256)
    torch.testing.assert_close(backbone.module.mel_scale, torch.from_numpy(expected))
    mel = librosa.filters.mel
    with positional_librosa_mel():
        assert librosa.filters.mel(22050, n_fft=512).shape == (128, 257)
    assert librosa.filters.mel is mel
    assert backbone.layer_names == ["timestamp_embeddings", "scene_embeddings"] and backbone.sample_rate == 44100


def test_modules_that_are_not_hear_modules_fail_in_one_line():
    with pytest.raises(ImportError, match="cannot import HEAR module 'no_such_hear_module'"):
        load_backbone("hear", "no_such_hear_module")
    with pytest.raises(ValueError, match=r"'json' is not a HEAR module \(no load_model, get_timestamp_embeddings"):
        load_backbone("hear", "json")


@pytest.mark.slow
@pytest.mark.parametrize("module", ["hearbaseline", "earlens.models.hear"])
def test_probe_py_reads_a_hear_module_layer_by_layer(module, trained_run, tmp_path):
    """Real piano notes C3-B5 through probe.py with a HEAR module as the backbone: both HEAR layers in the table."""
    if module == "hearbaseline":
        pytest.importorskip("hearbaseline")
    options = {"model_file_path": str(trained_run)} if module == "earlens.models.hear" else {}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "probe.py"), "--config", "notes_hear", "--backbone.name_or_path", module,
         "--backbone.options", json.dumps(options),
         "--stimuli.options", json.dumps({"programs": [0]}), "--probes.helix.n_surrogates", "19",
         "--probes.helix.n_bootstrap", "5", "--run_dir", str(tmp_path / "probe"), "--threads", "1",
         "--progress", "false"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["backbone"]["name"] == f"hear:{module}" and summary["stimuli"]["n_clips"] == 36
    with open(tmp_path / "probe" / "layers.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["layer_name"] for row in rows] == ["timestamp_embeddings", "scene_embeddings"]
    assert all(0 <= float(row["pitch_class/test_accuracy"]) <= 1 for row in rows)
