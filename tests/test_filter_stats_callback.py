"""FilterStatsCallback in a real 1-process fit logs exactly what earlens.frontend.filters computes on the final
weights."""

import csv
import re

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from earlens.callbacks.filter_stats import FilterStatsCallback
from earlens.frontend.filters import MelGrid, conv_filter_stats, gabor_movement, gabor_stats, quantile_summary
from earlens.frontend.frontends import SpectroTemporalFrontend
from earlens.report import read_layer_table

SAMPLE_RATE = 8000


@pytest.fixture(autouse=True)
def _run_folder(tmp_path, monkeypatch):
    """Trainers here keep Lightning's default run folder (the working directory): make it a temporary one."""
    monkeypatch.chdir(tmp_path)


class NoiseClips(Dataset):
    """White-noise clips labelled by whether they were low-passed: enough signal for filters to move."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        noise = torch.randn(2048, generator=torch.Generator().manual_seed(i))
        label = i % 2
        audio = F.avg_pool1d(noise[None, None], 8, 1, padding=4)[0, 0, :2048] if label else noise
        return {"audio": audio, "label": torch.tensor(label)}


class TwoFrontendModel(pl.LightningModule):
    """Gabor STRF frontend on log-mel and a Conv1d on raw audio -> pooled energies -> logits."""

    def __init__(self, kind="gabor"):
        super().__init__()
        self.frontend = SpectroTemporalFrontend(kind=kind, n_filters=6, kernel_size=(5, 9), mode="magnitude",
                                                sample_rate=SAMPLE_RATE, n_mels=24)
        self.wave_conv = nn.Conv1d(1, 16, 64, stride=8)
        self.head = nn.Linear(6 + 16, 2)

    def forward(self, audio):
        gabor = self.frontend(audio).mean((-2, -1))
        wave = self.wave_conv(audio[:, None]).relu().mean(-1)
        return self.head(torch.cat([gabor, wave], 1))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["audio"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.cross_entropy(self(batch["audio"]), batch["label"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(tmp_path, callback, loggers):
    torch.manual_seed(0)
    model = TwoFrontendModel()
    initial = [p.detach().clone() for p in (model.wave_conv.weight, model.frontend.filterbank.omega_t)]
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=loggers, callbacks=[callback],
                         default_root_dir=tmp_path, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=1, log_every_n_steps=1)
    loader = DataLoader(NoiseClips(), batch_size=8)
    trainer.fit(model, loader, loader)
    for before, after in zip(initial, (model.wave_conv.weight, model.frontend.filterbank.omega_t)):
        assert not torch.equal(before, after)  # the filters did train
    return model


def test_logged_quantiles_equal_direct_computation(tmp_path):
    callback = FilterStatsCallback(every_n_epochs=2, conv_modules=["wave_conv"], sample_rate=SAMPLE_RATE)
    model = fit(tmp_path, callback, CSVLogger(tmp_path, name="csv"))
    rows = list(csv.DictReader(open(next(tmp_path.glob("csv/*/metrics.csv")))))
    logged = [r for r in rows if r.get("filters/wave_conv/q_q50")]
    assert [r["epoch"] for r in logged] == ["1"]  # every 2nd validation epoch; sanity check skipped

    conv = conv_filter_stats(model.wave_conv.weight, SAMPLE_RATE)
    expected = {f"wave_conv/{k}": v for k, v in quantile_summary(conv).items()}
    expected["wave_conv/narrowband_frac"] = float((conv["q"] > 8.0).mean())
    bank, logmel = model.frontend.filterbank, model.frontend.logmel
    grid = MelGrid(SAMPLE_RATE, logmel.hop_length, 24)
    assert grid.frames_per_second == 100.0
    gabor = gabor_stats(bank.omega_t, bank.omega_f, bank.sigma_t, bank.sigma_f, grid)
    expected |= {f"frontend.filterbank/{k}": v for k, v in quantile_summary(gabor).items()}
    assert len(expected) == 5 * 3 + 1 + 4 * 3
    for key, value in expected.items():
        assert float(logged[0][f"filters/{key}"]) == pytest.approx(value, rel=1e-6, abs=1e-6), key
    table = {(row["layer"], row["metric"]): float(row["value"])  # the same numbers as rows (layer = module)
             for row in read_layer_table(tmp_path / "tables" / "filters.csv")}
    for key, value in expected.items():
        assert table[tuple(key.split("/"))] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_wandb_gets_histograms_and_images(tmp_path):
    callback = FilterStatsCallback(every_n_epochs=1, conv_modules=["wave_conv"], sample_rate=SAMPLE_RATE)
    fit(tmp_path, callback, WandbLogger(offline=True, save_dir=str(tmp_path), project="earlens-test"))
    (run,) = tmp_path.glob("wandb/offline-run-*")
    images = run / "files/media/images/filters"
    for name in ("wave_conv/responses", "frontend.filterbank/kernels", "frontend.filterbank/rate_scale"):
        assert len(list(images.glob(f"{name}_*.png"))) == 2, name  # one per validation epoch
    # the offline run log holds protobuf history items: nested key (name, "_type") -> JSON '"histogram"'
    record = next(run.glob("run-*.wandb")).read_bytes()
    for key in ("wave_conv/peak_hz", "wave_conv/q", "frontend.filterbank/rate_hz", "frontend.filterbank/sigma_f_oct"):
        assert re.search(rf'filters/{key}\W{{1,4}}_type\W{{1,6}}"histogram"'.encode(), record), key


def test_rejects_models_without_filters(tmp_path):
    with pytest.raises(TypeError, match="head.*not a Conv1d"):
        fit(tmp_path, FilterStatsCallback(conv_modules=["head"]), False)
    model = TwoFrontendModel()
    model.frontend = SpectroTemporalFrontend(kind="conv2d", n_filters=6, kernel_size=(5, 9), sample_rate=SAMPLE_RATE)
    trainer = pl.Trainer(max_epochs=1, logger=False, callbacks=[FilterStatsCallback()], enable_progress_bar=False)
    with pytest.raises(ValueError, match="no Gabor filterbank"):
        trainer.fit(model, DataLoader(NoiseClips(), batch_size=8))


@pytest.mark.parametrize("kind", ["gabor", "gabor_frozen"])
def test_movement_from_the_initial_bank(tmp_path, kind):
    """`move/*` equals `gabor_movement` between the bank before fit and after it; a frozen bank logs exactly 0,
    a trained one more than 0 on every parameter."""
    torch.manual_seed(0)
    model = TwoFrontendModel(kind)
    bank, grid = model.frontend.filterbank, MelGrid(SAMPLE_RATE, model.frontend.hop_length, 24)
    names = ("sigma_t", "sigma_f", "omega_t", "omega_f")
    initial = {name: getattr(bank, name).detach().double().clone() for name in names}
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="csv"),
                         callbacks=[FilterStatsCallback(images=False)], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    loader = DataLoader(NoiseClips(), batch_size=8)
    trainer.fit(model, loader, loader)
    rows = [r for r in csv.DictReader(open(next(tmp_path.glob("csv/*/metrics.csv")))) if r.get("epoch") == "1"]
    logged = {k.split("/move/")[1]: float(v) for r in rows for k, v in r.items() if "/move/" in k and v}
    expected = gabor_movement(initial, {name: getattr(bank, name).detach() for name in names}, grid)
    assert logged.keys() == expected.keys() and len(logged) == 8
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    if kind == "gabor_frozen":
        assert all(v == 0 for v in logged.values())
    else:
        assert all(logged[f"{p}_rel_change"] > 0 for p in names) and max(logged.values()) > 1e-3
