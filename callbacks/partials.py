"""PartialsCallback: every N validation epochs, do partials stabilise in the chosen layers of the model in training?

Synthetic stimuli with known partials (`earlens.stats.partials`: pure tones on a log grid, and band mixtures in five
contexts) go through the model; forward hooks capture the chosen layers per frame, and
`earlens.stats.partials.probe_activations` (what `bench/partials.py` runs) measures band decodability, context
invariance and selectivity. Under DDP every rank encodes an equal shard of the stimuli, the activations are
all-gathered, and every rank runs the identical (seeded, deterministic) probe, so every rank logs the same
values, as `HelicalityCallback` does.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from earlens.callbacks.capture import capture_layers, model_sample_rate
from earlens.callbacks.media import log_layer_table
from earlens.callbacks.schedule import EveryNValidationEpochs
from earlens.stats.partials import band_mean, probe_activations
from earlens.stimuli.partial_stimuli import CONTEXTS, context_stimuli, log_bands, pure_tones

LOGGED = ("band_auc", "frame_auc", "invariance", "invariance_null", "split_half", "unit_one_band_share",
          "random_direction_one_band_share", "band_direction_peak_in_band", "constant_layer")


class PartialsCallback(EveryNValidationEpochs):
    """Log `partials/{layer}/{stat}` (band means) for `LOGGED` stats, and the same as rows of `tables/partials.csv`;
    a constant (dead) layer logs `constant_layer` 1 and NaN statistics.

    layers: module names in `pl_module`. time_dim: the time axis of each layer output (-1 for (B, C, T) and
    (B, C, F, T) convolution outputs; 1 for (B, T, D)); the other non-batch axes become the feature vector.
    input_fn: name of the `pl_module` method taking raw audio (B, T); default `pl_module(audio)`.
    sample_rate: of that audio (default `pl_module.sample_rate`, its frontend's, then the datamodule's).
    """

    def __init__(self, layers: list[str], every_n_epochs: int = 1, time_dim: int = -1, input_fn: str | None = None,
                 sample_rate: int | None = None, n_bands: int = 8, fmin: float = 80.0, fmax: float | None = None,
                 n_per_context: int = 40, n_tones: int = 32, seconds: float = 0.5, frames_per_item: int = 2,
                 batch_size: int = 16, seed: int = 0):
        if not layers:
            raise ValueError("PartialsCallback needs at least one layer name")
        super().__init__(every_n_epochs)
        self.layers, self.time_dim, self.input_fn, self.sample_rate = list(layers), time_dim, input_fn, sample_rate
        self.n_bands, self.fmin, self.fmax, self.batch_size, self.seed = n_bands, fmin, fmax, batch_size, seed
        self.n_per_context, self.n_tones, self.seconds = n_per_context, n_tones, seconds
        self.frames_per_item = frames_per_item
        self.last_result: dict | None = None

    def layer_frames(self, pl_module: pl.LightningModule, waves: np.ndarray) -> list[torch.Tensor]:
        """Per layer, (N, frames, D) float32 activations of the clips (time axis moved second, the rest flattened)."""
        def frames(x):
            return (x.movedim(self.time_dim, 1) if x.ndim > 2 else x[:, None]).flatten(2)

        return capture_layers(pl_module, self.layers, waves, self.batch_size, self.input_fn, frames)

    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict]:
        """Encode this rank's shard of the stimuli, gather every rank's frames, probe them (same on all ranks)."""
        sample_rate = model_sample_rate(self.sample_rate, trainer, pl_module, "PartialsCallback")
        edges = log_bands(self.fmin, self.fmax or 0.4 * sample_rate, self.n_bands)
        tones = pure_tones(sample_rate, edges[0] * 1.01, edges[-1] / 1.01, self.n_tones, self.seconds, seed=self.seed)
        items = context_stimuli(sample_rate, edges, self.n_per_context, self.seconds, CONTEXTS, seed=self.seed)
        waves = np.concatenate([tones.waves, items.waves])
        n_clips, world = len(waves), trainer.world_size
        per_rank = -(-n_clips // world)  # equal shards (the last padded by repeating the final clip) for all_gather
        shard = np.minimum(np.arange(trainer.global_rank * per_rank, (trainer.global_rank + 1) * per_rank),
                           n_clips - 1)
        frames = self.layer_frames(pl_module, waves[shard])
        if world > 1:
            frames = [pl_module.all_gather(f).reshape(world * per_rank, *f.shape[1:])[:n_clips] for f in frames]
        arrays = {name: f.double().cpu().numpy() for name, f in zip(self.layers, frames)}
        return probe_activations({name: a[: len(tones)] for name, a in arrays.items()},
                                 {name: a[len(tones):] for name, a in arrays.items()}, tones, items, edges,
                                 self.frames_per_item, seed=self.seed)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._is_due(trainer):
            return
        result = self.last_result = self.probe(trainer, pl_module)
        means = {key: {layer: band_mean(stats[key]) for layer, stats in result.items()} for key in LOGGED}
        for key, per_layer in means.items():
            for layer, value in per_layer.items():
                pl_module.log(f"partials/{layer}/{key}", value)
        log_layer_table(trainer, "partials", means)
