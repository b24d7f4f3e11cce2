"""HelicalityCallback logs exactly what `helix_probe` gives on the same activations (DDP: test_callbacks_ddp.py)."""

import csv

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
