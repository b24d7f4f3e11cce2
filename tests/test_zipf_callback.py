"""ZipfCallback logs exactly the statistics of the tokens it saw (codes, k-means units, Lyra), never counts padding,
and refits or deduplicates units on request; DDP in test_callbacks_ddp.py."""

import numpy as np
import pytest
import pytorch_lightning as pl
import soxr
import torch
from torch import nn
from torch.utils.data import DataLoader

from earlens.callbacks.zipf import ORDER_PREFIX, PREFERRED_CODES, ZipfCallback
from earlens.io.audio import crop_or_pad, load_audio
from earlens.io.paths import data_root
from earlens.models.tokenizers import KMeansUnits, LyraTokenizer, match_centroids
from earlens.stats.zipf import collapse_repeats, ngram_statistics, zipf_tokens


@pytest.fixture(autouse=True)
def _run_folder(tmp_path, monkeypatch):
    """Trainers here keep Lightning's default run folder (the working directory): make it a temporary one."""
    monkeypatch.chdir(tmp_path)

HOP = 16  # samples per frame of FrameModule
DRAWS = {"interval_draws": 20, "power_draws": 5}  # few bootstrap samples: these tests compare logged with direct


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


class FrameModule(pl.LightningModule):
    """A framewise model of the waveform: frames of HOP samples → `proj`. Padding after a clip only adds frames after
    its real ones, so the real frames' activations equal those of the clip alone."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(HOP, 4)

    def frames(self, batch):
        audio = batch["audio"]
        return audio[:, : audio.shape[1] // HOP * HOP].reshape(audio.shape[0], -1, HOP)

    def codes(self, batch):
        return self.proj(self.frames(batch)).argmax(-1, keepdim=True)

    def training_step(self, batch, batch_idx):
        return self.proj(self.frames(batch)).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.proj(self.frames(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class ExactFrameModule(FrameModule):
    """Says how many of its frames are real: whole HOP-sample frames inside the clip (the partial last one is not)."""

    def frame_lengths(self, lengths, n_frames, n_samples):
        return torch.div(lengths, HOP, rounding_mode="floor")


def tiny_batches(n_clips=16, length=50, vocab=64, seed=0):
    tokens = torch.from_numpy(zipf_tokens(1.0, n_clips * length, vocab, seed=seed)).reshape(n_clips, length)
    centres = torch.randn(6, 8, generator=torch.Generator().manual_seed(seed)) * 5
    frames = centres[tokens % 6] + 0.3 * torch.randn(n_clips, length, 8, generator=torch.Generator().manual_seed(1))
    return [{"tokens": t, "frames": f} for t, f in zip(tokens, frames)]


def fit(callback, data, epochs=2, logger=False, model=None, batch_size=4):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    model = model or TinyModule()
    trainer.fit(model, DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size))
    return trainer, model


def assert_logged_equals(trainer, expected):
    fields = ("alpha_zm", "alpha_zm_low", "alpha_zm_high", "q_zm", "q_zm_low", "q_zm_high", "population_size",
              "alpha_zm_observed", "q_zm_observed", "alpha_tail", "gamma", "xmin", "n_tail", "p_value",
              "n_bootstrap_unfit", "power_lognormal", "alpha_ls", "heaps_beta", "vocab_size", "n_tokens")
    for n, result in expected.items():
        prefix = f"zipf/{ORDER_PREFIX[n]}"
        for field in fields:
            logged = trainer.callback_metrics[prefix + field].item()
            assert logged == pytest.approx(float(getattr(result, field)), rel=1e-6, nan_ok=True), (n, field)
        for comparison in result.comparisons:
            logged = trainer.callback_metrics[f"{prefix}llr_{comparison.alternative}"].item()
            assert logged == pytest.approx(comparison.normalized_llr, rel=1e-6), (n, comparison)
        preferred = trainer.callback_metrics[prefix + "preferred"].item()
        assert preferred == pytest.approx(PREFERRED_CODES.get(result.preferred, np.nan), nan_ok=True)
        verdict = trainer.callback_metrics[prefix + "verdict"].item()
        assert verdict == pytest.approx(PREFERRED_CODES.get(result.verdict, np.nan), nan_ok=True)


def logged_counts(trainer, orders):
    return {(n, key): trainer.callback_metrics[f"zipf/{ORDER_PREFIX[n]}{key}"].item()
            for n in orders for key in ("n_tokens", "vocab_size", "alpha_zm", "p_value")}


def benjamini_hochberg(p_values):
    """BH-adjusted p-values by their definition: min over j ≥ i of p_(j)·m/j in sorted order, capped at 1."""
    p_values = np.asarray(p_values, dtype=float)
    order = np.argsort(p_values)
    ranked = p_values[order] * len(p_values) / np.arange(1, len(p_values) + 1)
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return adjusted


def test_model_codes_statistics_equal_direct_computation():
    data = tiny_batches()
    callback = ZipfCallback(source="codes", codebook_size=64, **DRAWS)
    trainer, _ = fit(callback, data)
    tokens = torch.stack([d["tokens"] for d in data]).numpy()
    expected = ngram_statistics(tokens, 64, (1, 2, 3), **DRAWS)
    assert_logged_equals(trainer, expected)
    # p_value_bh: Benjamini–Hochberg over every p-value of both epochs (the same counts twice) and all orders
    tested = [result.p_value for _ in range(2) for result in expected.values() if np.isfinite(result.p_value)]
    assert callback.tested_p_values == pytest.approx(tested)
    last = max(n for n, result in expected.items() if np.isfinite(result.p_value))
    assert trainer.callback_metrics[f"zipf/{ORDER_PREFIX[last]}p_value_bh"].item() == pytest.approx(
        benjamini_hochberg(tested)[-1], rel=1e-6)


def test_deduplicated_units_collapse_repeats_within_each_clip():
    data = tiny_batches(vocab=3)  # three symbols: many repeats to collapse
    trainer, _ = fit(ZipfCallback(source="codes", codebook_size=3, deduplicate=True, **DRAWS), data)
    tokens = torch.stack([d["tokens"] for d in data]).numpy()
    expected = ngram_statistics(collapse_repeats(tokens), 3, (1, 2, 3), **DRAWS)
    assert_logged_equals(trainer, expected)
    assert expected[1].n_tokens < tokens.size and expected[2].n_tokens == expected[1].n_tokens - len(data)


@pytest.mark.slow
def test_layer_units_fitted_once_then_fixed():
    data = tiny_batches()
    callback = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1, 2), **DRAWS)
    trainer, model = fit(callback, data, epochs=1)
    centroids = callback.units.centroids.clone()
    trainer.fit_loop.max_epochs = 2
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert torch.equal(callback.units.centroids, centroids)
    with torch.no_grad():
        units = callback.units.encode(model.proj(torch.stack([d["frames"] for d in data])))
    assert_logged_equals(trainer, ngram_statistics(units, 6, (1, 2), **DRAWS))
    assert "zipf/trigram_alpha_zm" not in trainer.callback_metrics and "zipf/unit_shift" not in trainer.callback_metrics


def test_refit_units_follow_the_layer_and_log_how_far_they_moved():
    data = tiny_batches()
    callback = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1,), refit_units=True, **DRAWS)
    trainer, model = fit(callback, data, epochs=1)
    first = callback.units.centroids.clone()
    spread = (first - first.mean(0)).norm(dim=1).mean()
    trainer.fit_loop.max_epochs = 2  # negative control: same layer, same frames → same units, no shift
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert trainer.callback_metrics["zipf/unit_shift"].item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(callback.units.centroids, first)
    offset = torch.tensor([3.0, -4.0, 0, 0, 0, 0, 0, 0])  # the layer moves: every frame shifts by |offset| = 5
    with torch.no_grad():
        model.proj.bias += offset
    trainer.fit_loop.max_epochs = 3
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert trainer.callback_metrics["zipf/unit_shift"].item() == pytest.approx(5.0 / spread.item(), rel=1e-3)
    torch.testing.assert_close(callback.units.centroids, first + offset, atol=1e-3, rtol=0)  # ids kept by matching
    with torch.no_grad():
        units = callback.units.encode(model.proj(torch.stack([d["frames"] for d in data])))
    assert_logged_equals(trainer, ngram_statistics(units, 6, (1,), **DRAWS))


def test_match_centroids_keeps_ids_and_measures_shift():
    old = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    permutation = torch.tensor([3, 0, 4, 1, 2])
    matched, shift = match_centroids(old, old[permutation])
    assert torch.equal(matched, old) and shift == 0.0  # relabelling is no movement
    matched, shift = match_centroids(old, old[permutation] + torch.tensor([0.0, 2.0, 0.0]))
    assert torch.equal(matched, old + torch.tensor([0.0, 2.0, 0.0]))
    assert shift == pytest.approx(2.0 / (old - old.mean(0)).norm(dim=1).mean().item())
    units = KMeansUnits(5).set_centroids(old)
    assert units.move_to(old[permutation] * 2) > 0 and torch.equal(units.centroids, old * 2)
    with pytest.raises(RuntimeError, match="refit"):
        units.fit(old)


def padded_clips(lengths, seed=0):
    """Clips of the given real lengths, zero-padded to the longest, as batch items with `length`."""
    rng = np.random.default_rng(seed)
    total = max(lengths) + 3 * HOP
    clips = [rng.standard_normal(length).astype(np.float32) for length in lengths]
    padded = [{"audio": torch.from_numpy(np.pad(c, (0, total - c.size))), "length": torch.tensor(c.size)}
              for c in clips]
    return clips, padded


@pytest.mark.parametrize("module, source", [(ExactFrameModule, "layer"), (FrameModule, "layer"),
                                            (ExactFrameModule, "codes"), (FrameModule, "codes")])
def test_padding_is_never_counted(module, source):
    # FrameModule has no frame_lengths: proportional frames, exact for whole-frame clips. ExactFrameModule's clips
    # end in a partial frame that only its own frame_lengths leaves out (proportional frames would count it).
    extra = HOP // 2 if module is ExactFrameModule else 0
    clips, padded = padded_clips([HOP * n + extra for n in (20, 7, 33, 12, 25, 9, 30, 16)])
    alone = [{"audio": torch.from_numpy(c[: c.size // HOP * HOP])} for c in clips]  # each clip by itself, no padding
    options = dict(source=source, orders=(1, 2), n_bootstrap=20, **DRAWS)
    options |= dict(layer="proj", n_units=4) if source == "layer" else dict(codebook_size=4)
    padded_run, _ = fit(ZipfCallback(**options), padded, epochs=1, model=module())
    alone_run, _ = fit(ZipfCallback(**options), alone, epochs=1, model=module(), batch_size=1)
    expected = logged_counts(alone_run, (1, 2))
    assert expected[1, "n_tokens"] == sum(c.size // HOP for c in clips)
    assert logged_counts(padded_run, (1, 2)) == pytest.approx(expected, rel=1e-9, nan_ok=True)


def test_lyra_audio_statistics_skip_padding_and_wandb_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from pytorch_lightning.loggers import WandbLogger

    recordings = data_root(dataset="fsdd") / "recordings"
    waves = [load_audio(recordings / f"{d}_theo_0.wav", 8000)[:6000] for d in range(8)]  # FSDD clips, < 0.75 s
    data = [{"audio": torch.from_numpy(crop_or_pad(w, 8000)), "length": torch.tensor(w.size), **item}
            for w, item in zip(waves, tiny_batches(8, 10))]
    callback = ZipfCallback(source="audio", codebooks=2, sample_rate=8000, **DRAWS)
    trainer, _ = fit(callback, data, epochs=1, logger=WandbLogger(save_dir=tmp_path, project="zipf-test"))
    lyra = LyraTokenizer(k=2)
    rows = [lyra.tokenize(soxr.resample(w, 8000, 16000)) for w in waves]  # the clips alone: no padding tokens
    tokens = np.full((len(rows), max(map(len, rows))), -1)
    for i, row in enumerate(rows):
        tokens[i, : row.size] = row
    assert_logged_equals(trainer, ngram_statistics(tokens, 256, (1, 2, 3), **DRAWS))
    trainer.loggers[0].experiment.finish()
    (run,) = tmp_path.glob("wandb/offline-run-*")  # the plot as the offline run stores it (its history records
    assert len(list(run.glob("files/media/images/zipf/rank_frequency_*.png"))) == 1  # were not always flushed)


def test_callback_refuses_incomplete_configuration():
    with pytest.raises(ValueError, match="layer"):
        ZipfCallback(source="layer")
    with pytest.raises(ValueError, match="codebook_size"):
        ZipfCallback(source="codes")
    with pytest.raises(ValueError, match="refit_units"):
        ZipfCallback(source="codes", codebook_size=4, refit_units=True)


def test_units_and_schedule_survive_a_checkpoint_resume(tmp_path):
    data = tiny_batches()
    callback = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1,), every_n_epochs=2, **DRAWS)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, callbacks=[callback, checkpoint],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(TinyModule(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    fitted = callback.units.centroids.clone()

    resumed = ZipfCallback(source="layer", layer="proj", n_units=6, orders=(1,), every_n_epochs=2, **DRAWS)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, callbacks=[resumed],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    other = tiny_batches(seed=1)  # a refit on these frames would give other units
    trainer.fit(TinyModule(), DataLoader(data, batch_size=4), DataLoader(other, batch_size=4),
                ckpt_path=str(tmp_path / "last.ckpt"))
    assert torch.equal(resumed.units.centroids, fitted)  # restored from the checkpoint, not refitted
    assert resumed._validation_epochs == 4 and "zipf/alpha_zm" in trainer.callback_metrics  # epochs 2 and 4
    # the Benjamini–Hochberg adjustment goes on counting the p-values logged before the checkpoint
    assert resumed.tested_p_values[: len(callback.tested_p_values)] == callback.tested_p_values


def test_tied_frames_do_not_inflate_the_fitting_set():
    frames = torch.zeros(4, 50, 8)  # all-padding clips: every frame has the same projection score
    frames[:, :5] = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(0))
    callback = ZipfCallback(source="layer", layer="proj", n_units=3, max_fit_frames=20)
    callback._pending = [(frames, None)]
    fitted_on, compute = [], callback.units.compute_centroids
    callback.units.compute_centroids = lambda x: (fitted_on.append(len(x)), compute(x))[1]

    class OneRank:
        global_rank, is_global_zero = 0, True
        strategy = type("S", (), {"broadcast": staticmethod(lambda obj, src=0: obj)})()

    callback._fit_units(OneRank(), None)
    assert fitted_on == [20]  # before: every frame tied with a kept score was kept (185 here)
    callback = ZipfCallback(source="layer", layer="proj", n_units=3)
    callback._pending = [(frames, torch.full((4,), 5))]  # with lengths only the 20 real frames exist at all
    fitted_on, compute = [], callback.units.compute_centroids
    callback.units.compute_centroids = lambda x: (fitted_on.append(len(x)), compute(x))[1]
    callback._fit_units(OneRank(), None)
    assert fitted_on == [20]
