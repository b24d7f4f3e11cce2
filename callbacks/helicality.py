"""HelicalityCallback: every N validation epochs, how helical is each chosen layer's pitch representation?

Rendered (cached) piano notes go through the model under training; forward hooks capture the chosen layers, each
output is averaged over time into one vector per note, and `earlens.probing.helicality.helix_probe` (the same function
`probe.py` uses) fits the helix. Under DDP every rank embeds an equal shard of the notes, the activations are
all-gathered, and every rank fits the identical helix, so every rank logs the same values and nobody waits on
anyone; rank 0 writes the per-layer table (`tables/helix.csv`, W&B `tables/helix`) and sends the plots
(the best layer's helix, R² over epoch × layer) to W&B. Testing every layer at every evaluation is many tests:
`q_helix_epochs` and `q_octave_epochs` are Benjamini–Hochberg q-values over every layer and evaluation so far (kept in
the callback's checkpoint state, so a resumed run continues the same family).
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from earlens.callbacks.capture import capture_layers, model_sample_rate
from earlens.callbacks.media import figure_image, log_layer_table, wandb_loggers
from earlens.callbacks.schedule import EveryNValidationEpochs
from earlens.plots import plot_epoch_layer_heatmap, plot_helix
from earlens.probing.helicality import HelixProbeResult, helix_probe
from earlens.report import read_layer_table
from earlens.stats.multiple_testing import benjamini_hochberg
from earlens.stimuli.rendering import render_stimuli

LOGGED_AS = {"score_inv_mse": "score", "z": "null_z"}  # `HelixProbeResult.layer_stats` names logged under another


class HelicalityCallback(EveryNValidationEpochs):
    """Log `helix/{layer}/{stat}` for every statistic of `HelixProbeResult.layer_stats` (`score` is the paper's
    1/MSE, `null_z` the periodic likelihood ratio's z against the smooth null, `p_helix` its p-value; NaN ones,
    such as ω's interval with one program, are not logged), `q_helix_epochs` / `q_octave_epochs` (q-values over
    every layer and evaluation so far) and (W&B) a 3-D plot of the most helical layer.

    layers: module names in `pl_module` (`pl_module.get_submodule(name)`).
    time_dim: axis of each layer output averaged away (other non-batch axes are flattened into the vector);
      -1 fits (B, C, T) and (B, C, F, T) as in `AudioClassifier`, use 1 for (B, T, D) transformer outputs.
    input_fn: name of the `pl_module` method taking raw audio (B, T); default `pl_module(audio)`.
    sample_rate: of the audio the model takes; default `pl_module.sample_rate`, then
      `pl_module.frontend.sample_rate`, then the datamodule's.
    midi_pitches / programs: the notes rendered (default piano C3–B5, the helix paper's set); with two or more
      programs every pitch has several clips and ω gets a bootstrap interval.
    n_surrogates / alpha / n_bootstrap / n_permutations / seed: as in `earlens.probing.helicality.helix_probe`; the seed
      makes every rank draw the same null; `alpha` is also the false discovery rate of the heatmap's dots.
    """

    def __init__(self, layers: list[str], every_n_epochs: int = 1, time_dim: int = -1, input_fn: str | None = None,
                 sample_rate: int | None = None, midi_pitches: list[int] | None = None,
                 programs: list[int] | None = None, n_components: int = 5, n_surrogates: int = 499,
                 alpha: float = 0.05, n_bootstrap: int = 100, n_permutations: int = 0, select_by: str = "r2",
                 batch_size: int = 12, seed: int = 0):
        if not layers:
            raise ValueError("HelicalityCallback needs at least one layer name")
        super().__init__(every_n_epochs)
        self.layers, self.time_dim = list(layers), time_dim
        self.input_fn, self.sample_rate, self.batch_size = input_fn, sample_rate, batch_size
        self.stimulus_options = {"midi_pitches": tuple(midi_pitches or range(48, 84)),
                                 "programs": tuple(programs or (0,))}
        self.probe_options = {"n_components": n_components, "n_surrogates": n_surrogates, "alpha": alpha,
                              "n_bootstrap": n_bootstrap, "n_permutations": n_permutations, "select_by": select_by,
                              "seed": seed}
        self.last_result: HelixProbeResult | None = None
        self.p_history: dict[str, list[list[float]]] = {"p_helix": [], "p_octave": []}  # evaluations × layers

    def state_dict(self) -> dict:
        return {"p_history": self.p_history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.p_history = state_dict.get("p_history", self.p_history)

    def layer_vectors(self, pl_module: pl.LightningModule, audio: np.ndarray) -> list[torch.Tensor]:
        """One time-averaged vector per clip and layer: list over layers of (N, D_layer) float32 tensors."""
        def pool(x):
            return (x.mean(dim=self.time_dim) if x.ndim > 2 else x).flatten(1)

        return capture_layers(pl_module, self.layers, audio, self.batch_size, self.input_fn, pool)

    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> HelixProbeResult:
        """Embed this rank's shard of the notes, gather every rank's vectors, fit the helix (same on all ranks)."""
        rate = model_sample_rate(self.sample_rate, trainer, pl_module, "HelicalityCallback")
        stimuli = render_stimuli("notes", sample_rate=rate,
                                 **self.stimulus_options)
        n_clips, world = len(stimuli), trainer.world_size
        per_rank = -(-n_clips // world)  # equal shards (the last padded by repeating the final clip) for all_gather
        shard = np.minimum(np.arange(trainer.global_rank * per_rank, (trainer.global_rank + 1) * per_rank), n_clips - 1)
        vectors = self.layer_vectors(pl_module, stimuli.waves[shard])
        if world > 1:
            vectors = [pl_module.all_gather(v).reshape(world * per_rank, -1)[:n_clips] for v in vectors]
        audible = ~stimuli.labels["silent"]  # some GM programs render nothing at some pitches
        features = [v.double().cpu().numpy()[audible] for v in vectors]
        return helix_probe(features, stimuli.labels["midi_pitch"][audible], **self.probe_options)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._is_due(trainer):
            return
        result = self.last_result = self.probe(trainer, pl_module)
        stats = result.layer_stats()
        for name in self.p_history:  # BH over every layer and evaluation so far; the newest row is this one
            self.p_history[name].append([float(p) for p in stats[name]])
            stats[f"q{name[1:]}_epochs"] = benjamini_hochberg(self.p_history[name])[-1]
        for name, values in stats.items():
            for layer, value in zip(self.layers, values):
                if np.isfinite(value):
                    pl_module.log(f"helix/{layer}/{LOGGED_AS.get(name, name)}", float(value))
        per_layer = {name: dict(zip(self.layers, values)) for name, values in stats.items()}
        table = log_layer_table(trainer, "helix", per_layer,
                                intervals={"omega_chroma": ("omega_ci_low", "omega_ci_high")})
        loggers = wandb_loggers(trainer)
        if loggers:
            best = int(np.argmax(result.r2))
            title = (f"{self.layers[best]} (epoch {trainer.current_epoch}): R²={result.r2[best]:.3f}, "
                     f"ω={result.omega_chroma[best]:.3f}")
            helix = figure_image(plot_helix(result, best, title=title))
            heatmap = figure_image(plot_epoch_layer_heatmap(
                read_layer_table(table), "r2", "q_helix_epochs", self.probe_options["alpha"],
                title="helix R² per layer and epoch (dots: turns beyond smooth curves, q ≤ α over layers × epochs)"))
            for logger in loggers:
                logger.log_image(key="helix/best_layer", images=[helix], caption=[self.layers[best]])
                logger.log_image(key="helix/r2_epoch_layer", images=[heatmap])
