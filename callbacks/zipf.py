"""ZipfCallback: Zipf α, Heaps β and their n-gram variants of discrete symbols, every N validation epochs.

Symbols come from (a) the validation audio through a Lyra codec, (b) k-means units over a layer's frames (forward
hook; centroids fitted once, on all ranks' frames gathered to rank 0 in an order independent of the sharding, then
broadcast so every rank shares them), or (c) the model's own quantiser codes. Sparse n-gram counts are summed over
the epoch and across DDP ranks, so the statistics (all functions of the global counts, see `earlens.zipf`) equal a
single-process run. Every rank takes part in the same collectives and logs the same values (so a `zipf/*` key can
be monitored); only rank 0 draws the plot. The schedule and the fitted units are saved in checkpoints.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytorch_lightning as pl
import soxr
import torch
from pytorch_lightning.loggers import WandbLogger

from callbacks.schedule import EveryNValidationEpochs
from earlens.tokenizers import LYRA_SAMPLE_RATE, KMeansUnits, LyraTokenizer, ModelCodes
from earlens.zipf import count_ids, merge_counts, ngram_ids, rank_frequency_plot, zipf_statistics

ORDER_PREFIX = {1: "", 2: "bigram_", 3: "trigram_"}
LOGGED_FIELDS = ("alpha_mle", "alpha_ls", "heaps_beta", "gamma_mle", "xmin", "ks", "vocab_size", "n_tokens")


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
    """Log `zipf/{,bigram_,trigram_}{alpha_mle,alpha_ls,heaps_beta,...}` and a rank–frequency plot (W&B).

    source="audio": `batch["audio"]` at the datamodule's `sample_rate` → 16 kHz → Lyra codes of the first
      `codebooks` RVQ codebooks, one symbol per 20 ms frame (padding in the batch is tokenized too).
    source="layer": output of `pl_module.get_submodule(layer)`, (B, T, D) after moving `feature_dim` last
      ((B, D) counts as T = 1) → `n_units` k-means units, fitted on the first active epoch on at most
      `max_fit_frames` frames from all ranks.
    source="codes": `getattr(pl_module, codes_method)(batch)` returns (B, T, n_codebooks) integer codes in
      [0, codebook_size).
    """

    def __init__(self, source: Literal["audio", "layer", "codes"] = "audio", every_n_epochs: int = 1,
                 orders: tuple[int, ...] = (1, 2, 3), rank_range: tuple[int, int] = (1, 100),
                 codebooks: int = 1, sample_rate: int | None = None,
                 layer: str | None = None, feature_dim: int = -1, n_units: int = 50, max_fit_frames: int = 20_000,
                 codes_method: str = "codes", codebook_size: int | None = None, n_codebooks: int = 1,
                 seed: int = 0):
        if source == "layer" and not layer:
            raise ValueError("ZipfCallback(source='layer') needs layer=<submodule name>")
        if source == "codes" and not codebook_size:
            raise ValueError("ZipfCallback(source='codes') needs codebook_size")
        if not set(orders) <= set(ORDER_PREFIX):
            raise ValueError(f"orders must be among {sorted(ORDER_PREFIX)}, got {orders}")
        super().__init__(every_n_epochs)
        self.source, self.orders, self.rank_range = source, orders, rank_range
        self.codebooks, self.sample_rate = codebooks, sample_rate
        self.layer, self.feature_dim, self.max_fit_frames, self.seed = layer, feature_dim, max_fit_frames, seed
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
        self._pending_frames: list[torch.Tensor] = []

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
            tokens = _pad_rows([self.lyra.tokenize(soxr.resample(w, rate, LYRA_SAMPLE_RATE)) for w in waves])
        elif self.source == "codes":
            tokens = self.model_codes.tokenize(batch)
        else:
            frames = self._frames(self._captured)
            self._captured = None
            if not self.units.fitted:
                self._pending_frames.append(frames)
                return
            tokens = self.units.encode(frames)
        self._count(tokens)

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
        for n in self.orders:
            self._ngram_ids[n].append(ngram_ids(tokens, n, self.vocab_size))

    def _fit_units(self, trainer: pl.Trainer) -> None:
        """k-means on frames gathered from all ranks, fitted on rank 0 and broadcast; then count this epoch.

        Which frames fit, and their order, must not depend on how the sampler dealt clips to ranks, or DDP would fit
        other units than one process: frames are ranked by their projection on a fixed random direction, at most
        `max_fit_frames` evenly spaced positions of the global order are kept (ties, such as identical padding
        frames, broken by position so no more than that are kept), and k-means sees them in that order.
        """
        local = torch.cat([f.reshape(-1, f.shape[-1]) for f in self._pending_frames]).numpy()
        direction = np.random.default_rng(self.seed).standard_normal(local.shape[1])
        scores = _all_gather_objects(local.astype(np.float64) @ direction)
        owner = np.concatenate([np.full(len(s), rank) for rank, s in enumerate(scores)])
        position = np.concatenate([np.arange(len(s)) for s in scores])
        order = np.lexsort((position, owner, np.concatenate(scores)))  # ties (e.g. padding frames) by position
        n_fit = min(self.max_fit_frames, len(order))
        kept = order[np.arange(n_fit) * len(order) // n_fit]
        gathered = _all_gather_objects(local[position[kept][owner[kept] == trainer.global_rank]])
        centroids = None
        if trainer.is_global_zero:
            frames = np.concatenate(gathered)
            order = np.argsort(frames.astype(np.float64) @ direction, kind="stable")
            centroids = self.units.fit(frames[order]).centroids
        self.units.set_centroids(trainer.strategy.broadcast(centroids, src=0))
        for frames in self._pending_frames:
            self._count(self.units.encode(frames))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.source == "layer" and not self.units.fitted:
            self._fit_units(trainer)
        local = {n: count_ids(np.concatenate(ids) if ids else np.zeros(0, np.int64))
                 for n, ids in self._ngram_ids.items()}
        gathered = _all_gather_objects(local)
        self._reset()
        self._active = False
        self.last_results = {}
        for n in self.orders:
            _, counts = merge_counts(*(g[n] for g in gathered))
            if counts.sum() == 0:
                continue
            result = zipf_statistics(counts, self.rank_range)
            self.last_results[n] = result
            for field in LOGGED_FIELDS:  # identical on every rank (the counts are gathered), so safe to monitor
                pl_module.log(f"zipf/{ORDER_PREFIX[n]}{field}", float(getattr(result, field)))
            if n == 1 and trainer.is_global_zero:
                self._log_plot(trainer, counts, result)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.units is not None and self.units.fitted:  # units stay fixed across a resume
            state["centroids"] = self.units.centroids
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "centroids" in state_dict:
            self.units.set_centroids(state_dict["centroids"])

    def _log_plot(self, trainer: pl.Trainer, counts: np.ndarray, result) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        figure = rank_frequency_plot(counts, result, title=f"{self.source} symbols, epoch {trainer.current_epoch}")
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        for logger in loggers:
            logger.log_image(key="zipf/rank_frequency", images=[image], step=trainer.global_step)
