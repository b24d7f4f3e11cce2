"""ZipfCallback: Zipf, Zipf–Mandelbrot and Heaps statistics of discrete symbols, with goodness of fit, every N
validation epochs.

Symbols come from (a) the validation audio through a Lyra codec, (b) k-means units over a layer's frames (forward
hook; centroids fitted on all ranks' frames gathered to rank 0 in an order independent of the sharding, then
broadcast so every rank shares them), or (c) the model's own quantiser codes. Padding is never a symbol: batches
carry `length` (real samples per clip, padding after them; batches without it are taken as unpadded), audio is
tokenised up to it and frames are kept up to the clip's real frame count (the module's own
`frame_lengths(lengths, n_frames, n_samples)` when it has one, else `earlens.io.lengths.proportional_frames`), for
fitting units as for counting. Sparse n-gram counts are summed over the epoch and across DDP ranks, so the
statistics (functions of the global counts, seeded; see `earlens.stats.zipf`) equal a single-process run. Every rank
takes part in the same collectives and logs the same values (so a `zipf/*` key can be monitored); only rank 0 draws
the plot. The schedule and the units are saved in checkpoints.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytorch_lightning as pl
import soxr
import torch
from scipy.stats import false_discovery_control

from earlens.callbacks.media import figure_image, log_layer_table, wandb_loggers
from earlens.callbacks.schedule import EveryNValidationEpochs
from earlens.io.lengths import proportional_frames, time_mask
from earlens.models.tokenizers import LYRA_SAMPLE_RATE, KMeansUnits, LyraTokenizer, ModelCodes
from earlens.plots import rank_frequency_plot
from earlens.stats.power_law import ALTERNATIVES
from earlens.stats.zipf import (
    collapse_repeats,
    count_ids,
    merge_counts,
    ngram_ids,
    zipf_statistics,
)

ORDER_PREFIX = {1: "", 2: "bigram_", 3: "trigram_"}
LOGGED_FIELDS = ("alpha_zm", "alpha_zm_low", "alpha_zm_high", "q_zm", "q_zm_low", "q_zm_high", "population_size",
                 "alpha_zm_observed", "q_zm_observed", "alpha_tail", "gamma", "xmin", "n_tail", "ks", "p_value",
                 "n_bootstrap_unfit", "power_lognormal", "alpha_ls", "heaps_beta", "vocab_size", "n_tokens")
PREFERRED_CODES = {"power_law": 0.0, "lognormal": 1.0, "exponential": 2.0, "stretched_exponential": 3.0, "none": -1.0,
                   "too_small_to_tell": 4.0}


def _all_gather_objects(obj) -> list:
    """Every rank's `obj` (picklable), in rank order; just `[obj]` without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def _pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Variable-length token rows → one (B, T_max) int64 array padded with −1 (ignored by `ngram_ids`)."""
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class ZipfCallback(EveryNValidationEpochs):
    """Log `zipf/{,bigram_,trigram_}<statistic>` and a rank–frequency plot (W&B). Which exponent is which:

    `alpha_zm`, `q_zm` (`*_low`, `*_high`: 95 % interval): the Zipf–Mandelbrot law f(r) ∝ (r + q)^−α of the source,
      over an estimated `population_size` types (unseen ones included; `earlens.stats.zipf_mandelbrot`);
      `alpha_zm_observed`, `q_zm_observed`: the maximum-likelihood fit over the observed ranks 1..`vocab_size` it
      corrects (`interval_draws` bootstrap samples; 0 leaves the source NaN).
    `gamma`, `xmin`, `n_tail`, `ks`: Clauset et al. power law of the count distribution, counts ≥ xmin (ranks
      1..n_tail); `alpha_tail` = 1/(gamma − 1), the rank exponent it implies.
    `p_value`: bootstrap goodness of fit of that power law (`n_bootstrap` sets less `n_bootstrap_unfit` with no
      x_min; < 0.1 rules it out); `p_value_bh`: Benjamini–Hochberg adjusted over every p-value this callback has
      logged (all orders, all epochs so far); `llr_<alternative>`: normalised log-likelihood ratio against
      lognormal / exponential / stretched exponential (< 0: the alternative fits better); `preferred`: 0 power law,
      1 lognormal, 2 exponential, 3 stretched exponential, −1 none (ruled out, nothing significantly better), NaN
      when the counts span less than a decade; `power_lognormal`: where `preferred` is 0, the test's power against a
      matched lognormal source (`power_draws` samples); `verdict`: `preferred`'s code, 4 where it is 0 but that
      power is below 0.5 (too small to tell).
    `alpha_ls`: least-squares slope over ranks `rank_range`. `heaps_beta`: V(n) ∝ n^β.
    `unit_shift` (k-means units refitted): mean distance between matched old and new centroids over the old
      centroids' spread (mean distance to their mean).

    source="audio": `batch["audio"][i, :length[i]]` at the datamodule's `sample_rate` → 16 kHz → Lyra codes of the
      first `codebooks` RVQ codebooks, one symbol per 20 ms frame.
    source="layer": output of `pl_module.get_submodule(layer)`, (B, T, D) after moving `feature_dim` last
      ((B, D) counts as T = 1) → `n_units` k-means units, fitted on the first active epoch on at most
      `max_fit_frames` real frames from all ranks; with `refit_units` refitted at every active epoch (unit ids kept
      by matching the new centroids to the old ones), logging how far they moved.
    source="codes": `getattr(pl_module, codes_method)(batch)` returns (B, T, n_codebooks) integer codes in
      [0, codebook_size).
    `deduplicate`: collapse runs of one repeated symbol into one before counting (the "deduplicated units" of the
      speech-token papers), within each clip.
    """

    def __init__(self, source: Literal["audio", "layer", "codes"] = "audio", every_n_epochs: int = 1,
                 orders: tuple[int, ...] = (1, 2, 3), rank_range: tuple[int, int] = (1, 100),
                 n_bootstrap: int = 200, interval_draws: int = 100, power_draws: int = 20,
                 deduplicate: bool = False,
                 codebooks: int = 1, sample_rate: int | None = None,
                 layer: str | None = None, feature_dim: int = -1, n_units: int = 50, max_fit_frames: int = 20_000,
                 refit_units: bool = False,
                 codes_method: str = "codes", codebook_size: int | None = None, n_codebooks: int = 1,
                 seed: int = 0):
        if source == "layer" and not layer:
            raise ValueError("ZipfCallback(source='layer') needs layer=<submodule name>")
        if source == "codes" and not codebook_size:
            raise ValueError("ZipfCallback(source='codes') needs codebook_size")
        if refit_units and source != "layer":
            raise ValueError("ZipfCallback(refit_units=True) needs source='layer' (only k-means units are fitted)")
        if not set(orders) <= set(ORDER_PREFIX):
            raise ValueError(f"orders must be among {sorted(ORDER_PREFIX)}, got {orders}")
        super().__init__(every_n_epochs)
        self.source, self.orders, self.rank_range = source, orders, rank_range
        self.n_bootstrap, self.deduplicate = n_bootstrap, deduplicate
        self.interval_draws, self.power_draws = interval_draws, power_draws
        self.tested_p_values: list[float] = []  # every p-value logged so far, for the Benjamini–Hochberg adjustment
        self.codebooks, self.sample_rate = codebooks, sample_rate
        self.layer, self.feature_dim, self.max_fit_frames, self.seed = layer, feature_dim, max_fit_frames, seed
        self.refit_units = refit_units
        self.codes_method = codes_method
        self.units = KMeansUnits(n_units, seed) if source == "layer" else None
        self.model_codes = ModelCodes(None, codebook_size, n_codebooks) if source == "codes" else None
        self.lyra: LyraTokenizer | None = None
        self.last_results: dict = {}
        self._active = False
        self._hook = None
        self._captured: torch.Tensor | None = None
        self._reset()

    @property
    def vocab_size(self) -> int:
        if self.source == "audio":
            return 16**self.codebooks
        return self.units.vocab_size if self.source == "layer" else self.model_codes.vocab_size

    def _reset(self) -> None:
        self._ngram_ids: dict[int, list[np.ndarray]] = {n: [] for n in self.orders}
        self._pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # frames (B, T, D), real (B,)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if float(self.vocab_size) ** max(self.orders) >= 2.0**63:
            raise ValueError(f"{max(self.orders)}-grams over {self.vocab_size} symbols overflow int64 ids; "
                             "lower codebooks/n_units or orders")
        if self.source == "audio" and self.lyra is None:
            self.lyra = LyraTokenizer(k=self.codebooks)
        if self.source == "codes":
            self.model_codes.codes_fn = getattr(pl_module, self.codes_method)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._active = self._is_due(trainer)
        self._reset()
        if self._active and self.source == "layer":
            self._hook = pl_module.get_submodule(self.layer).register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        self._captured = (output[0] if isinstance(output, (tuple, list)) else output).detach()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._active:
            return
        if self.source == "audio":
            rate = self.sample_rate or trainer.datamodule.sample_rate
            waves = batch["audio"].detach().float().cpu().numpy()
            lengths = batch["length"].tolist() if "length" in batch else [waves.shape[-1]] * len(waves)
            self._count(_pad_rows([self.lyra.tokenize(soxr.resample(wave[:length], rate, LYRA_SAMPLE_RATE))
                                   for wave, length in zip(waves, lengths)]))
        elif self.source == "codes":
            tokens = self.model_codes.tokenize(batch)
            self._count(self._drop_padding(tokens, self._real_frames(pl_module, batch, tokens.shape[1])))
        else:
            frames = self._frames(self._captured)
            self._captured = None
            real = self._real_frames(pl_module, batch, frames.shape[1])
            if not self.units.fitted or self.refit_units:
                self._pending.append((frames, real))
            else:
                self._count(self._drop_padding(self.units.encode(frames), real))

    def _real_frames(self, pl_module: pl.LightningModule, batch, n_frames: int) -> torch.Tensor | None:
        """Real frames of each clip on an `n_frames` time axis; None (all real) when the batch carries no `length`."""
        if not isinstance(batch, dict) or "length" not in batch:
            return None
        lengths, n_samples = batch["length"], batch["audio"].shape[-1]
        if callable(getattr(pl_module, "frame_lengths", None)):
            counts = pl_module.frame_lengths(lengths, n_frames, n_samples)
        else:
            counts = proportional_frames(lengths, n_samples, n_frames)
        return torch.as_tensor(counts).detach().cpu().long()

    @staticmethod
    def _drop_padding(tokens: np.ndarray, real: torch.Tensor | None) -> np.ndarray:
        """Tokens past each clip's real frames set to −1 (what `ngram_ids` skips)."""
        return tokens if real is None else np.where(time_mask(real, tokens.shape[1]).numpy(), tokens, -1)

    @staticmethod
    def _real_rows(frames: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """The real frames of a (B, T, D) batch as (N, D), clip by clip."""
        return frames.reshape(-1, frames.shape[-1]) if real is None else frames[time_mask(real, frames.shape[1])]

    def _frames(self, activations: torch.Tensor | None) -> torch.Tensor:
        if activations is None:
            raise RuntimeError(f"ZipfCallback: layer {self.layer!r} did not run during this validation step")
        frames = activations.float().cpu().movedim(self.feature_dim, -1)
        if frames.ndim == 2:
            frames = frames[:, None, :]
        if frames.ndim != 3:
            raise ValueError(f"layer {self.layer!r} gives {tuple(activations.shape)}; need (B, T, D) once "
                             f"feature_dim={self.feature_dim} is moved last")
        return frames

    def _count(self, tokens: np.ndarray) -> None:
        if self.deduplicate:
            tokens = collapse_repeats(tokens)
        for n in self.orders:
            self._ngram_ids[n].append(ngram_ids(tokens, n, self.vocab_size))

    def _fit_units(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """k-means on real frames gathered from all ranks, fitted on rank 0 and broadcast; then count this epoch.

        Which frames fit, and their order, must not depend on how the sampler dealt clips to ranks, or DDP would fit
        other units than one process: frames are ranked by their projection on a fixed random direction, at most
        `max_fit_frames` evenly spaced positions of the global order are kept (ties broken by position so no more
        than that are kept), and k-means sees them in that order. A refit is matched to the current units and its
        shift logged.
        """
        local = torch.cat([self._real_rows(frames, real) for frames, real in self._pending]).numpy()
        direction = np.random.default_rng(self.seed).standard_normal(local.shape[1])
        scores = _all_gather_objects(local.astype(np.float64) @ direction)
        owner = np.concatenate([np.full(len(s), rank) for rank, s in enumerate(scores)])
        position = np.concatenate([np.arange(len(s)) for s in scores])
        order = np.lexsort((position, owner, np.concatenate(scores)))  # ties by position
        n_fit = min(self.max_fit_frames, len(order))
        kept = order[np.arange(n_fit) * len(order) // n_fit]
        gathered = _all_gather_objects(local[position[kept][owner[kept] == trainer.global_rank]])
        centroids = None
        if trainer.is_global_zero:
            frames = np.concatenate(gathered)
            centroids = self.units.compute_centroids(frames[np.argsort(frames.astype(np.float64) @ direction,
                                                                       kind="stable")])
        centroids = trainer.strategy.broadcast(centroids, src=0)
        if self.units.fitted:
            pl_module.log("zipf/unit_shift", self.units.move_to(centroids))
        else:
            self.units.set_centroids(centroids)
        for frames, real in self._pending:
            self._count(self._drop_padding(self.units.encode(frames), real))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._pending:
            self._fit_units(trainer, pl_module)
        local = {n: count_ids(np.concatenate(ids) if ids else np.zeros(0, np.int64))
                 for n, ids in self._ngram_ids.items()}
        gathered = _all_gather_objects(local)
        self._reset()
        self._active = False
        self.last_results = {}
        table = {}  # metric -> {"n-gram": value}: rows of `tables/zipf.csv`
        for n in self.orders:
            _, counts = merge_counts(*(g[n] for g in gathered))
            if counts.sum() == 0:
                continue
            result = zipf_statistics(counts, self.rank_range, n_bootstrap=self.n_bootstrap, seed=self.seed,
                                     max_population=self.vocab_size if n == 1 else None,
                                     interval_draws=self.interval_draws, power_draws=self.power_draws)
            self.last_results[n] = result
            prefix = f"zipf/{ORDER_PREFIX[n]}"
            # Identical on every rank (the counts are gathered, the bootstrap seeded), so safe to monitor.
            values = {field: float(getattr(result, field)) for field in LOGGED_FIELDS}
            values |= {f"llr_{c.alternative}": c.normalized_llr for c in result.comparisons}
            values |= {f"llr_{name}": float("nan") for name in ALTERNATIVES if f"llr_{name}" not in values}
            values["preferred"] = PREFERRED_CODES.get(result.preferred, float("nan"))
            values["verdict"] = PREFERRED_CODES.get(result.verdict, float("nan"))
            values["p_value_bh"] = self._adjusted(result.p_value)
            for key, value in values.items():
                pl_module.log(prefix + key, value)
                table.setdefault(key, {})[f"{n}-gram"] = value
            if n == 1 and trainer.is_global_zero:
                self._log_plot(trainer, counts, result)
        if table:
            log_layer_table(trainer, "zipf", table)

    def _adjusted(self, p_value: float) -> float:
        """This p-value Benjamini–Hochberg adjusted among every one logged so far (NaN ones are not tests)."""
        if not np.isfinite(p_value):
            return float("nan")
        self.tested_p_values.append(float(p_value))
        return float(false_discovery_control(self.tested_p_values, method="bh")[-1])

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["tested_p_values"] = list(self.tested_p_values)
        if self.units is not None and self.units.fitted:  # a resumed run keeps (or refits from) these units
            state["centroids"] = self.units.centroids
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.tested_p_values = list(state_dict.get("tested_p_values", []))
        if "centroids" in state_dict:
            self.units.set_centroids(state_dict["centroids"])

    def _log_plot(self, trainer: pl.Trainer, counts: np.ndarray, result) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        image = figure_image(rank_frequency_plot(counts, result,
                                                 title=f"{self.source} symbols, epoch {trainer.current_epoch}"))
        for logger in loggers:
            logger.log_image(key="zipf/rank_frequency", images=[image], step=trainer.global_step)
