"""FilterStatsCallback: what the learned frontend filters are tuned to, logged every N validation epochs.

The numbers come from `earlens.frontend.filters`; this file only finds the modules and logs. Parameters are identical
on every DDP rank (DDP keeps the replicas in sync), so each rank computes and logs the same scalars with
no gather or sync; only rank 0 draws and uploads histograms and images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import wandb
from matplotlib.figure import Figure

from earlens.callbacks.media import figure_image, log_layer_table, save_figures, wandb_loggers
from earlens.callbacks.schedule import EveryNValidationEpochs
from earlens.frontend.filters import (
    DEFAULT_QUANTILES,
    DEFAULT_REFERENCE_HZ,
    GABOR_PARAMETERS,
    MelGrid,
    conv_filter_stats,
    default_init_conv1d,
    frequency_response,
    gabor_movement,
    gabor_mtf,
    gabor_stats,
    quantile_summary,
    signed_rate_hz,
)
from earlens.frontend.gabor import GaborSTRF2d
from earlens.plots import plot_conv_responses, plot_kernel_grid, plot_rate_scale


def _bank_parameters(filterbank: GaborSTRF2d) -> dict[str, torch.Tensor]:
    """The bank's constrained parameters per filter, detached float64 copies on CPU."""
    return {name: getattr(filterbank, name).detach().to("cpu", torch.float64).clone() for name in GABOR_PARAMETERS}


def gabor_filterbanks(module: torch.nn.Module) -> dict[str, tuple[GaborSTRF2d, MelGrid]]:
    """`{name: (filterbank, grid)}` for every frontend holding a `logmel` and a `GaborSTRF2d` `filterbank`
    (e.g. `SpectroTemporalFrontend`), with the mel grid of that `logmel`."""
    found = {}
    for name, frontend in module.named_modules():
        filterbank, logmel = getattr(frontend, "filterbank", None), getattr(frontend, "logmel", None)
        if logmel is None or not isinstance(filterbank, GaborSTRF2d):
            continue
        grid = MelGrid(logmel.sample_rate, logmel.hop_length, logmel.n_mels,
                       logmel.fmin, logmel.fmax)
        found[f"{name}.filterbank" if name else "filterbank"] = (filterbank, grid)
    return found


class FilterStatsCallback(EveryNValidationEpochs):
    """Log `filters/{module}/{stat}_q{10,50,90}` and, with a WandbLogger, histograms and images.

    Gabor filterbanks (found automatically, see `gabor_filterbanks`): `rate_hz`, `scale_cyc_per_oct`,
    `sigma_t_ms`, `sigma_f_oct` (`earlens.frontend.filters.gabor_stats`); images: kernel grid and rate-scale MTF; and
    how far the bank moved since the start of training, `filters/{module}/move/{p}_rel_change` per parameter
    and `.../move/{stat}_w1_rel` per statistic (`earlens.frontend.filters.gabor_movement`; the initial bank is kept in
    the callback's checkpoint state, so a resumed run still measures from the first start).
    `conv_modules`: names of Conv1d layers on raw audio at `sample_rate` (default: the datamodule's):
    `peak_hz`, `centroid_hz`, `bandwidth_hz`, `q`, `flatness` (`earlens.frontend.filters.conv_filter_stats`) and
    `narrowband_frac` (Q > `q_threshold`); image: sorted responses and peak histogram against the same
    layer at PyTorch's default init (`seed`). Cost per call: one FFT of the weights per module.
    """

    def __init__(self, every_n_epochs: int = 1, conv_modules: Sequence[str] = (), sample_rate: int | None = None,
                 quantiles: Sequence[float] = DEFAULT_QUANTILES, reference_hz: float = DEFAULT_REFERENCE_HZ,
                 q_threshold: float = 8.0, images: bool = True, seed: int = 0):
        super().__init__(every_n_epochs)
        self.conv_modules, self.sample_rate = list(conv_modules), sample_rate
        self.quantiles, self.reference_hz, self.q_threshold = tuple(quantiles), reference_hz, q_threshold
        self.images, self.seed = images, seed
        self._init_peaks: dict[str, np.ndarray] = {}
        self._initial_banks: dict[str, dict[str, torch.Tensor]] = {}
        self._table: dict[str, dict[str, float]] = {}  # this epoch's {stat: {module: value}}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for name in self.conv_modules:
            if not isinstance(pl_module.get_submodule(name), torch.nn.Conv1d):
                raise TypeError(f"FilterStatsCallback: {name!r} is {type(pl_module.get_submodule(name)).__name__}, "
                                "not a Conv1d")
        if self.conv_modules and self.sample_rate is None and getattr(trainer.datamodule, "sample_rate", None) is None:
            raise ValueError("FilterStatsCallback(conv_modules=...) needs sample_rate (no datamodule provides one)")
        if not self.conv_modules and not gabor_filterbanks(pl_module):
            raise ValueError("FilterStatsCallback found no Gabor filterbank in the model and got no conv_modules")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, (filterbank, _) in gabor_filterbanks(pl_module).items():
            self._initial_banks.setdefault(name, _bank_parameters(filterbank))

    def state_dict(self) -> dict:
        return {"initial_banks": self._initial_banks}

    def load_state_dict(self, state_dict: dict) -> None:
        self._initial_banks = state_dict["initial_banks"]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._is_due(trainer):
            return
        loggers = wandb_loggers(trainer)
        media, self._table = {}, {}
        for name, (filterbank, grid) in gabor_filterbanks(pl_module).items():
            stats = gabor_stats(filterbank.omega_t, filterbank.omega_f, filterbank.sigma_t, filterbank.sigma_f,
                                grid, self.reference_hz)
            self._log_scalars(pl_module, name, quantile_summary(stats, self.quantiles))
            if name in self._initial_banks:
                movement = gabor_movement(self._initial_banks[name], _bank_parameters(filterbank), grid,
                                          self.reference_hz)
                self._log_scalars(pl_module, name, {f"move/{k}": v for k, v in movement.items()})
            if loggers:
                media |= self._histograms(name, stats)
            if self.images and trainer.is_global_zero:
                real, imag = filterbank.kernels()
                centres = (signed_rate_hz(filterbank.omega_t, filterbank.omega_f, grid),
                           stats["scale_cyc_per_oct"])
                mtf_plot = plot_rate_scale(*gabor_mtf(real, imag, grid, reference_hz=self.reference_hz),
                                           centres=centres, title=f"{name} MTF")
                media[f"filters/{name}/kernels"] = plot_kernel_grid(real, title=f"{name} kernels (real)")
                media[f"filters/{name}/rate_scale"] = mtf_plot
        for name in self.conv_modules:
            sample_rate = self.sample_rate or trainer.datamodule.sample_rate
            weight = pl_module.get_submodule(name).weight
            stats = conv_filter_stats(weight, sample_rate)
            scalars = quantile_summary(stats, self.quantiles)
            scalars["narrowband_frac"] = float((stats["q"] > self.q_threshold).mean())
            self._log_scalars(pl_module, name, scalars)
            if loggers:
                media |= self._histograms(name, stats)
            if self.images and trainer.is_global_zero:
                if name not in self._init_peaks:
                    init = default_init_conv1d(weight.shape, self.seed)
                    self._init_peaks[name] = conv_filter_stats(init, sample_rate)["peak_hz"]
                media[f"filters/{name}/responses"] = plot_conv_responses(
                    *frequency_response(weight, sample_rate), stats["peak_hz"], self._init_peaks[name],
                    title=name)
        log_layer_table(trainer, "filters", self._table)
        save_figures(trainer, {key: value for key, value in media.items() if isinstance(value, Figure)})
        if media and loggers:
            logged = {k: wandb.Image(figure_image(v)) if isinstance(v, Figure) else v for k, v in media.items()}
            for logger in loggers:
                logger.log_metrics(logged, step=trainer.global_step)

    def _log_scalars(self, pl_module: pl.LightningModule, name: str, scalars: dict[str, float]) -> None:
        """Log each scalar and keep it for this epoch's rows of `tables/filters.csv` (layer = module)."""
        for key, value in scalars.items():
            pl_module.log(f"filters/{name}/{key}", value)
            self._table.setdefault(key, {})[name] = float(value)

    @staticmethod
    def _histograms(name: str, stats: dict[str, np.ndarray]) -> dict:
        return {f"filters/{name}/{key}": wandb.Histogram(values) for key, values in stats.items()}
