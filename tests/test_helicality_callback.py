"""HelicalityCallback logs exactly what `helix_probe` gives on the same activations (DDP: test_callbacks_ddp.py)."""

import csv
import json

import numpy as np
import pytest

from earlens.callbacks.capture import model_sample_rate
import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch import nn
from torch.utils.data import DataLoader

from earlens.callbacks.helicality import HelicalityCallback
from earlens.probing.helicality import helix_probe
from earlens.report import read_layer_table
from earlens.stimuli.rendering import render_stimuli


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
    options = dict(n_surrogates=19, alpha=0.05, n_bootstrap=20, n_permutations=10)
    callback = HelicalityCallback(layers=["filters", "mix"], every_n_epochs=2, programs=[0, 24], **options)
    noise = torch.randn(8, 8000, generator=torch.Generator().manual_seed(0))
    loggers = [CSVLogger(tmp_path, name="csv", version=""), WandbLogger(save_dir=tmp_path, offline=True)]
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[callback], logger=loggers,
                         default_root_dir=tmp_path, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    model = TinyAudioModel()
    trainer.fit(model, DataLoader(noise, batch_size=4), DataLoader(noise, batch_size=4))

    notes = render_stimuli("notes", programs=(0, 24))  # the same cached set, computed here without hooks
    audible = ~notes.labels["silent"]
    with torch.no_grad():
        filtered = model.filters(torch.from_numpy(np.asarray(notes.waves))[:, None])
        mixed = model.mix(torch.log1p(filtered.abs()))
    direct = helix_probe([filtered.mean(-1).double().numpy()[audible], mixed.mean(-1).double().numpy()[audible]],
                         notes.labels["midi_pitch"][audible], **options)
    logged = trainer.callback_metrics
    renamed = {"score_inv_mse": "score", "z": "null_z"}
    for name, values in direct.layer_stats().items():  # every statistic, line_r2 and ω's interval included
        for i, layer in enumerate(["filters", "mix"]):
            key = f"helix/{layer}/{renamed.get(name, name)}"
            if np.isfinite(values[i]):
                assert float(logged[key]) == pytest.approx(values[i], rel=1e-4, abs=1e-6), key
            else:
                assert key not in logged, key
    assert {"helix/mix/line_r2", "helix/mix/p_helix", "helix/mix/omega_ci_low", "helix/mix/perm_z"} <= set(logged)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("helix/mix/r2")]
    assert [row["epoch"] for row in rows] == ["1"]  # every_n_epochs=2: the second validation epoch only

    table = read_layer_table(tmp_path / "tables" / "helix.csv")  # the same numbers as long rows, ω with its CI
    stats = direct.layer_stats()
    stats.update(q_helix_epochs=stats["q_helix"], q_octave_epochs=stats["q_octave"])  # BH over one evaluation
    for row in table:
        assert row["epoch"] == "1"
        i = ["filters", "mix"].index(row["layer"])
        assert float(row["value"]) == pytest.approx(stats[row["metric"]][i], rel=1e-4, abs=1e-6, nan_ok=True)
        if row["metric"] == "omega_chroma":
            assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(
                (stats["omega_ci_low"][i], stats["omega_ci_high"][i]), rel=1e-4)
    assert {row["metric"] for row in table} == set(stats) and len(table) == 2 * len(stats)
    wandb.finish()
    (run,) = tmp_path.glob("wandb/offline-run-*")  # the W&B table and the heatmap, as the offline run stores them
    (logged_table,) = run.glob("files/media/table/tables/helix_*.table.json")
    assert len(json.loads(logged_table.read_text())["data"]) == len(table)
    assert len(list(run.glob("files/media/images/helix/r2_epoch_layer_*.png"))) == 1


def test_unknown_layer_and_missing_sample_rate_are_reported():
    with pytest.raises(ValueError, match="layer"):
        HelicalityCallback(layers=[])
    module = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="sample_rate"):
        model_sample_rate(HelicalityCallback(layers=["weight"]).sample_rate, pl.Trainer(logger=False), module, "x")
