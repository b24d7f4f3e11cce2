"""PartialsCallback logs what `earlens.stats.partials` gives on the same activations; two simulated DDP ranks (equal
shards, all-gathered) log what one process logs."""

from types import SimpleNamespace

import numpy as np
import pytest

from earlens.callbacks.capture import model_sample_rate
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from earlens.callbacks.partials import PartialsCallback
from earlens.stats.partials import probe_activations, run_encoder
from earlens.stimuli.partial_stimuli import CONTEXTS, context_stimuli, log_bands, pure_tones
from tests.test_helicality_callback import TinyAudioModel


@pytest.fixture(autouse=True)
def _run_folder(tmp_path, monkeypatch):
    """Trainers here keep Lightning's default run folder (the working directory): make it a temporary one."""
    monkeypatch.chdir(tmp_path)

OPTIONS = {"n_bands": 4, "n_per_context": 8, "n_tones": 12, "seconds": 0.25, "frames_per_item": 1, "fmin": 100.0,
           "fmax": 4000.0}


class DeadLayerModel(TinyAudioModel):
    """TinyAudioModel with a zero 1×1 convolution after `mix`: a layer whose output is always 0."""

    def __init__(self):
        super().__init__()
        self.dead = torch.nn.Conv1d(8, 4, 1)
        torch.nn.init.zeros_(self.dead.weight)
        torch.nn.init.zeros_(self.dead.bias)

    def forward(self, audio):
        return self.dead(super().forward(audio))


def test_logged_values_equal_a_direct_probe(tmp_path):
    callback = PartialsCallback(layers=["filters", "mix", "dead"], **OPTIONS)
    noise = torch.randn(4, 4000, generator=torch.Generator().manual_seed(0))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                         default_root_dir=tmp_path, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    model = DeadLayerModel()
    trainer.fit(model, DataLoader(noise, batch_size=4), DataLoader(noise, batch_size=4))

    edges = log_bands(100.0, 4000.0, 4)
    tones = pure_tones(16000, edges[0] * 1.01, edges[-1] / 1.01, 12, 0.25)
    items = context_stimuli(16000, edges, 8, 0.25, CONTEXTS)

    def encode(waves):  # the same layers, computed without hooks, (B, C, T) → (B, T, C)
        filtered = model.filters(waves[:, None])
        mixed = model.mix(torch.log1p(filtered.abs()))
        return {"filters": filtered.transpose(1, 2), "mix": mixed.transpose(1, 2),
                "dead": model.dead(mixed).transpose(1, 2)}

    # The hooks capture what the layers compute (up to float32 rounding, which depends on the batch: rank statistics
    # such as AUC can flip on it, so the logged values are compared with a probe of the captured activations).
    with torch.no_grad():
        direct = {name: np.concatenate([run[name] for run in (run_encoder(encode, tones.waves),
                                                              run_encoder(encode, items.waves))])
                  for name in callback.layers}
    captured = dict(zip(callback.layers, callback.layer_frames(model, np.concatenate([tones.waves, items.waves]))))
    for name in callback.layers:
        np.testing.assert_allclose(captured[name].numpy(), direct[name], rtol=1e-4, atol=1e-5)
    arrays = {name: value.double().numpy() for name, value in captured.items()}
    expected = probe_activations({name: a[: len(tones)] for name, a in arrays.items()},
                                 {name: a[len(tones):] for name, a in arrays.items()}, tones, items, edges,
                                 frames_per_item=1)
    for layer in ("filters", "mix"):
        for key in ("band_auc", "invariance", "unit_one_band_share"):
            assert float(trainer.callback_metrics[f"partials/{layer}/{key}"]) == pytest.approx(
                np.nanmean(expected[layer][key]), rel=1e-6, abs=1e-9)
        assert float(trainer.callback_metrics[f"partials/{layer}/constant_layer"]) == 0.0
    # a dead layer is logged as such (NaN statistics), not a crash of the validation epoch
    assert float(trainer.callback_metrics["partials/dead/constant_layer"]) == 1.0
    assert np.isnan(float(trainer.callback_metrics["partials/dead/band_auc"]))
    table = (tmp_path / "tables" / "partials.csv").read_text()
    assert "dead,constant_layer,1.0" in table


def test_two_ranks_gather_to_the_one_process_result():
    model = TinyAudioModel()
    callback = PartialsCallback(layers=["mix"], **OPTIONS)
    single = callback.probe(SimpleNamespace(world_size=1, global_rank=0), model)
    shards = {}
    n_clips = 12 + 8 * len(CONTEXTS)
    per_rank = -(-n_clips // 2)
    waves = np.concatenate([pure_tones(16000, 101.0, 4000.0 / 1.01, 12, 0.25).waves,
                            context_stimuli(16000, log_bands(100.0, 4000.0, 4), 8, 0.25).waves])
    for rank in (0, 1):  # what each rank encodes: equal shards, the last padded with the final clip
        index = np.minimum(np.arange(rank * per_rank, (rank + 1) * per_rank), n_clips - 1)
        shards[rank] = callback.layer_frames(model, waves[index])[0]
    model.all_gather = lambda tensor: torch.stack([shards[0], shards[1]])
    doubled = callback.probe(SimpleNamespace(world_size=2, global_rank=0), model)
    # Equal up to float32 rounding: shards of other sizes are encoded with another summation order (with one
    # thread an invariance of -0.03 differed by 1.2e-7).
    for key, value in single["mix"].items():
        if isinstance(value, float):
            assert doubled["mix"][key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
    np.testing.assert_allclose(doubled["mix"]["invariance"], single["mix"]["invariance"], rtol=1e-5, atol=1e-6)


def test_bad_options_are_reported():
    with pytest.raises(ValueError, match="layer"):
        PartialsCallback(layers=[])
    with pytest.raises(ValueError, match="sample_rate"):
        model_sample_rate(PartialsCallback(layers=["weight"]).sample_rate, pl.Trainer(logger=False),
                          torch.nn.Linear(2, 2), "PartialsCallback")
