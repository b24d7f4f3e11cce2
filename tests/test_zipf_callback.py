"""ZipfCallback logs exactly the statistics of the tokens it saw (codes, k-means units, Lyra); DDP in
test_callbacks_ddp.py."""

import numpy as np
import pytest
import pytorch_lightning as pl
import soxr
import torch
from torch import nn
from torch.utils.data import DataLoader

from callbacks.zipf import ORDER_PREFIX, ZipfCallback
from earlens.audio import crop_or_pad, load_audio
from earlens.paths import data_root
from earlens.tokenizers import LyraTokenizer
from earlens.zipf import ngram_statistics, zipf_tokens


class TinyModule(pl.LightningModule):
    """Exposes its batch's tokens as quantiser codes and runs `proj` on its frames; lr 0 keeps it fixed."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def codes(self, batch):
        return batch["tokens"][..., None]

    def training_step(self, batch, batch_idx):
        return self.proj(batch["frames"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.proj(batch["frames"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def tiny_batches(n_clips=16, length=50, vocab=64, seed=0):
    tokens = torch.from_numpy(zipf_tokens(1.0, n_clips * length, vocab, seed=seed)).reshape(n_clips, length)
    centres = torch.randn(6, 8, generator=torch.Generator().manual_seed(seed)) * 5
    frames = centres[tokens % 6] + 0.3 * torch.randn(n_clips, length, 8, generator=torch.Generator().manual_seed(1))
    return [{"tokens": t, "frames": f} for t, f in zip(tokens, frames)]


def fit(callback, data, epochs=2, logger=False):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    model = TinyModule()
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return trainer, model


def assert_logged_equals(trainer, expected):
    for n, result in expected.items():
        for field in ("alpha_mle", "alpha_ls", "heaps_beta", "gamma_mle", "xmin", "vocab_size", "n_tokens"):
            logged = trainer.callback_metrics[f"zipf/{ORDER_PREFIX[n]}{field}"].item()
            assert logged == pytest.approx(float(getattr(result, field)), rel=1e-6), (n, field)


def test_model_codes_statistics_equal_direct_computation():
    data = tiny_batches()
    trainer, _ = fit(ZipfCallback(source="codes", codebook_size=64), data)
    tokens = torch.stack([d["tokens"] for d in data]).numpy()
    assert_logged_equals(trainer, ngram_statistics(tokens, 64, (1, 2, 3)))


def test_layer_units_fitted_once_then_fixed():
    data = tiny_batches()
    callback = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1, 2))
    trainer, model = fit(callback, data, epochs=1)
    centroids = callback.units.centroids.clone()
    trainer.fit_loop.max_epochs = 2
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert torch.equal(callback.units.centroids, centroids)
    with torch.no_grad():
        units = callback.units.encode(model.proj(torch.stack([d["frames"] for d in data])))
    assert_logged_equals(trainer, ngram_statistics(units, 6, (1, 2)))
    assert "zipf/trigram_alpha_mle" not in trainer.callback_metrics


def test_lyra_audio_statistics_and_wandb_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from pytorch_lightning.loggers import WandbLogger

    from lightning_modules.cli import read_offline_wandb_history

    recordings = data_root(dataset="fsdd") / "recordings"
    waves = [crop_or_pad(load_audio(recordings / f"{d}_theo_0.wav", 8000), 6000) for d in range(8)]
    data = [{"audio": torch.from_numpy(w), **item} for w, item in zip(waves, tiny_batches(8, 10))]
    callback = ZipfCallback(source="audio", codebooks=2, sample_rate=8000)
    trainer, _ = fit(callback, data, epochs=1, logger=WandbLogger(save_dir=tmp_path, project="zipf-test"))
    lyra = LyraTokenizer(k=2)
    tokens = np.stack([lyra.tokenize(soxr.resample(w, 8000, 16000)) for w in waves])
    assert_logged_equals(trainer, ngram_statistics(tokens, 256, (1, 2, 3)))
    trainer.loggers[0].experiment.finish()
    history = read_offline_wandb_history(tmp_path)
    images = [row for row in history if row.get("zipf/rank_frequency/_type") == "images/separated"]
    assert len(images) == 1 and images[0]["zipf/rank_frequency/count"] == 1


def test_callback_refuses_incomplete_configuration():
    with pytest.raises(ValueError, match="layer"):
        ZipfCallback(source="layer")
    with pytest.raises(ValueError, match="codebook_size"):
        ZipfCallback(source="codes")


def test_units_and_schedule_survive_a_checkpoint_resume(tmp_path):
    data = tiny_batches()
    callback = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1,), every_n_epochs=2)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, callbacks=[callback, checkpoint],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(TinyModule(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    fitted = callback.units.centroids.clone()

    resumed = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1,), every_n_epochs=2)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, callbacks=[resumed],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    other = tiny_batches(seed=1)  # a refit on these frames would give other units
    trainer.fit(TinyModule(), DataLoader(data, batch_size=4), DataLoader(other, batch_size=4),
                ckpt_path=str(tmp_path / "last.ckpt"))
    assert torch.equal(resumed.units.centroids, fitted)  # restored from the checkpoint, not refitted
    assert resumed._validation_epochs == 4 and "zipf/alpha_mle" in trainer.callback_metrics  # epochs 2 and 4


def test_tied_frames_do_not_inflate_the_fitting_set():
    frames = torch.zeros(4, 50, 8)  # all-padding clips: every frame has the same projection score
    frames[:, :5] = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(0))
    callback = ZipfCallback(source="layer", layer="proj", n_units=3, max_fit_frames=20)
    callback._pending_frames = [frames]
    fitted_on, fit = [], callback.units.fit
    callback.units.fit = lambda x: (fitted_on.append(len(x)), fit(x))[1]

    class OneRank:
        global_rank, is_global_zero = 0, True
        strategy = type("S", (), {"broadcast": staticmethod(lambda obj, src=0: obj)})()

    callback._fit_units(OneRank())
    assert fitted_on == [20]  # before: every frame tied with a kept score was kept (185 here)
