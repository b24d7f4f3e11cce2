"""HelicalityCallback logs exactly what `helix_probe` gives on the same activations; DDP (2 ranks) equals 1 rank."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from callbacks.helicality import HelicalityCallback
from earlens.helix import helix_probe
from earlens.stimuli import render_stimuli

REPO = Path(__file__).resolve().parent.parent


class TinyAudioModel(pl.LightningModule):
    """Audio (B, T) → strided Conv1d filter bank → log magnitude → 1×1 mix; lr 0 keeps the weights fixed."""

    sample_rate = 16000

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.filters = nn.Conv1d(1, 16, kernel_size=400, stride=160)
        self.mix = nn.Conv1d(16, 8, 1)

    def forward(self, audio):
        return self.mix(torch.log1p(self.filters(audio[:, None]).abs()))

    def training_step(self, batch, batch_idx):
        return self(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_logged_values_equal_a_direct_helix_probe(tmp_path):
    callback = HelicalityCallback(layers=["filters", "mix"], every_n_epochs=2, n_permutations=20)
    noise = torch.randn(8, 8000, generator=torch.Generator().manual_seed(0))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[callback],
                         logger=CSVLogger(tmp_path, name="csv", version=""), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    model = TinyAudioModel()
    trainer.fit(model, DataLoader(noise, batch_size=4), DataLoader(noise, batch_size=4))

    notes = render_stimuli("notes")  # the same cached piano C3–B5 set, computed here without hooks
    with torch.no_grad():
        filtered = model.filters(torch.from_numpy(np.asarray(notes.waves))[:, None])
        mixed = model.mix(torch.log1p(filtered.abs()))
    direct = helix_probe([filtered.mean(-1).double().numpy(), mixed.mean(-1).double().numpy()],
                         notes.labels["midi_pitch"], n_permutations=20)
    for i, layer in enumerate(["filters", "mix"]):
        logged = trainer.callback_metrics
        assert float(logged[f"helix/{layer}/r2"]) == pytest.approx(direct.r2[i], rel=1e-5)
        assert float(logged[f"helix/{layer}/score"]) == pytest.approx(direct.score_inv_mse[i], rel=1e-5)
        assert float(logged[f"helix/{layer}/null_z"]) == pytest.approx(direct.z[i], rel=1e-4, abs=1e-4)
        assert float(logged[f"helix/{layer}/omega_chroma"]) == pytest.approx(direct.omega_chroma[i], rel=1e-5)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("helix/mix/r2")]
    assert [row["epoch"] for row in rows] == ["1"]  # every_n_epochs=2: the second validation epoch only


def test_unknown_layer_and_missing_sample_rate_are_reported():
    with pytest.raises(ValueError, match="layer"):
        HelicalityCallback(layers=[])
    module = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="sample_rate"):
        HelicalityCallback(layers=["weight"])._model_sample_rate(pl.Trainer(logger=False), module)


def run_train(cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "EARLENS_RUN_DIR"}
    env["WANDB_MODE"] = "offline"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = Path(proc.stdout.strip().splitlines()[-1])
    with open(summary.parent / "csv" / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k.startswith("helix/") and v} for row in csv.DictReader(f)]


DDP_SCRIPT = """
import json, sys
import pytorch_lightning as pl, torch
sys.path[:0] = [{repo!r}, {tests!r}]
from test_helicality_callback import TinyAudioModel
from callbacks.helicality import HelicalityCallback
callback = HelicalityCallback(layers=["filters", "mix"], n_permutations=20)
trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=int(sys.argv[1]), strategy=sys.argv[2], logger=False,
                     callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0)
noise = torch.randn(8, 8000, generator=torch.Generator().manual_seed(0))
loader = torch.utils.data.DataLoader(noise, batch_size=2)
trainer.fit(TinyAudioModel(), loader, loader)
if trainer.is_global_zero:
    print(json.dumps({{k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("helix/")}}))
"""


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_tiny_model(tmp_path):
    """Sharded notes + all_gather under a real 2-process DDP run log what one process logs."""
    script = tmp_path / "ddp_helix.py"
    script.write_text(DDP_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    logged = []
    for devices, strategy in (("1", "auto"), ("2", "ddp")):
        proc = subprocess.run([sys.executable, str(script), devices, strategy], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr[-4000:]
        logged.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    single, double = logged
    assert len(single) == 8 and set(single) == set(double)
    for key, value in single.items():
        assert double[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path):
    """Each rank embeds half the notes; the gathered fit equals one process. lr 0 and layers before any BatchNorm
    keep the weights identical across the two runs (BatchNorm running statistics would differ per rank)."""
    pytest.importorskip("earlens.frontends", reason="train.py's configs need earlens.frontends")
    config = tmp_path / "helix.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: callbacks.helicality.HelicalityCallback\n"
                      "      init_args: {layers: [frontend, encoder.blocks.0], n_permutations: 20}\n")
    common = ["--config", "gabor_speaker", "--config", str(config), "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
              "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
              "--model.lr", "0.0", "--data.init_args.batch_size", "8", "--trainer.accelerator", "cpu"]
    single = [row for row in run_train(tmp_path, *common, "--trainer.devices", "1") if row]
    double = [row for row in run_train(tmp_path, *common, "--trainer.devices", "2", "--trainer.strategy", "ddp")
              if row]
    assert len(single) == len(double) == 1
    assert set(single[0]) == {f"helix/{layer}/{name}" for layer in ("frontend", "encoder.blocks.0")
                              for name in ("score", "r2", "null_z", "omega_chroma")}
    for key, value in single[0].items():
        assert double[0][key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
