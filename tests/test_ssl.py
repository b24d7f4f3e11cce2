"""Self-supervised HuBERT pretraining: the masked-unit loss falls, `RUN/hf` reloads through earlens' transformers
loader to the in-memory model's hidden states, and 2-process DDP logs the 1-process helicality statistics."""

import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from earlens.datamodules.music import RenderedMusicDataModule
from earlens.lightning_modules.ssl import HubertPretraining, load_unit_head
from earlens.models.backbones import load_backbone
from earlens.models.ssl import conv_frame_count, normalize_waves, span_mask

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "conv_dim": 16,
              "n_units": 20, "unit_fit_clips": 16, "lr": 3e-3, "warmup_steps": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny HuBERT before and after 30 steps on rendered music (1 s clips), and its `hf` folder."""
    pl.seed_everything(0)
    run_dir = tmp_path_factory.mktemp("run")
    hf_dir = run_dir / "hf"
    data = RenderedMusicDataModule(clip_seconds=1.0, batch_size=8, train_clips=240, val_clips=8, test_clips=8)
    model = HubertPretraining(**TINY_MODEL, hf_dir=str(hf_dir), hf_every_n_epochs=1)
    initial = copy.deepcopy(model)
    trainer = pl.Trainer(max_steps=30, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=str(run_dir))
    trainer.fit(model, datamodule=data)
    initial.unit_centroids.copy_(model.unit_centroids)
    initial.units_fitted.fill_(True)
    return initial.eval(), model.eval(), data, hf_dir


def test_span_mask_covers_spans_and_every_row():
    mask = span_mask(64, 50, 0.05, 5, torch.Generator().manual_seed(0))
    assert mask.any(dim=1).all()
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], mask[0].int().numpy(), [0]]))))[::2]
    assert (runs >= 5).all()  # overlapping spans merge, never shorter than one span
    assert 0.1 < mask.float().mean() < 0.4  # 1 - (1 - 0.05)^5 ≈ 0.23 of frames


def test_conv_frame_count_is_hubert_frame_count():
    model = HubertPretraining(**TINY_MODEL).eval()
    for n_samples in (400, 16000, 32123):
        frames = model.model(torch.zeros(1, n_samples)).last_hidden_state.shape[1]
        assert model.n_frames(n_samples) == frames == int(model.model._get_feat_extract_output_lengths(n_samples))
    assert conv_frame_count(torch.tensor([16000]), (10,), (5,)).item() == (16000 - 10) // 5 + 1


def test_training_lowers_masked_unit_loss(trained):
    initial, model, data, _ = trained
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        before, _ = initial.masked_loss(batch, torch.Generator().manual_seed(1))
        after, accuracy = model.masked_loss(batch, torch.Generator().manual_seed(1))
    assert before > np.log(20) - 0.5  # at init the head is near uniform over 20 units
    assert after < before - 0.3, (float(before), float(after))
    assert accuracy > 1 / 20


def test_save_pretrained_round_trip_gives_in_memory_hidden_states(trained):
    _, model, data, hf_dir = trained
    assert (hf_dir / "config.json").is_file() and (hf_dir / "preprocessor_config.json").is_file()
    backbone = load_backbone("hubert", str(hf_dir))
    assert backbone.normalize and backbone.layer_names == ["layer_0", "layer_1", "layer_2"]
    waves = next(iter(data.test_dataloader()))["audio"][:4]
    with torch.no_grad():
        expected = model.model(normalize_waves(waves), output_hidden_states=True).hidden_states
        loaded = backbone(waves)
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected[-1], expected[0])  # the layers differ: the comparison means something


def test_steps_are_exported_from_the_random_init_on(trained):
    initial, model, data, hf_dir = trained
    steps = sorted(path.name for path in (hf_dir.parent / "hf_steps").iterdir())
    assert steps == ["step_000000", "step_000030"]  # before the first step, after the one epoch of 30 steps
    waves = next(iter(data.test_dataloader()))["audio"][:2]
    for folder, reference in (("step_000000", initial), ("step_000030", model)):
        backbone = load_backbone("hubert", str(hf_dir.parent / "hf_steps" / folder))
        head, centroids = load_unit_head(hf_dir.parent / "hf_steps" / folder)
        with torch.no_grad():
            torch.testing.assert_close(backbone(waves)[-1], reference(waves), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(head(reference(waves)), reference.head(reference(waves)))
    torch.testing.assert_close(centroids, model.unit_centroids)


def train_ssl(cwd: Path, devices: int) -> tuple[dict[str, float], Path]:
    """`train.py --config ssl_music`, tiny and with lr 0 (weights stay at the seeded init), for one training step;
    the helicality values logged at the one validation epoch, and the run folder."""
    args = ["--config", "ssl_music", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
            "--trainer.devices", str(devices), "--model.init_args.lr", "0.0", "--model.init_args.hidden_size", "32",
            "--model.init_args.num_heads", "2",
            "--model.init_args.intermediate_size", "64", "--model.init_args.conv_dim", "16",
            "--model.init_args.unit_fit_clips", "16", "--data.init_args.clip_seconds", "1.0",
            "--data.init_args.batch_size", "4", "--data.init_args.train_clips", "8", "--data.init_args.val_clips", "8",
            "--data.init_args.test_clips", "4"]
    if devices > 1:
        args += ["--trainer.strategy", "ddp"]
    env = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"} | {"WANDB_MODE": "disabled",
                                                                             "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if k.startswith("helix/") and v} for row in csv.DictReader(f)]
    logged = [row for row in rows if row]
    assert len(logged) == 1, logged
    return logged[0], run_dir


@pytest.mark.slow
def test_two_process_ddp_logs_the_one_process_helicality(tmp_path):
    single, _ = train_ssl(tmp_path, devices=1)
    double, run_dir = train_ssl(tmp_path, devices=2)
    assert {"helix/model.encoder.layers.3/r2", "helix/model.feature_projection/score"} <= set(single)
    assert set(single) == set(double)
    for key, value in single.items():
        assert double[key] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True), key
    assert (run_dir / "hf" / "config.json").is_file()  # rank 0 wrote the model once fit ended
