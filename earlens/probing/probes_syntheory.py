"""SynTheory's probe protocol, `fit_layer_probes(protocol="syntheory")` (described in `earlens.probing.probes`): the
Jukemir grid `SYNTHEORY_GRID` trained batched over configurations × layers, whole or by successive halving
(`fit_syntheory_grid`), and SynTheory's own loop, one `nn.Module` per configuration × layer
(`fit_probe_per_layer_sequential`), the reference and benchmark baseline."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from earlens.probing.probes_common import (
    ProbeResult,
    ProbeSplit,
    check_probe_inputs,
    classification_scores,
    init_linears,
    mlp_shapes,
    per_model_loss,
    select_on_validation,
    split_indices,
)

# brown-palm/syntheory probe/probe_config.py HYPERPARAMS, "hyperparameter grid used in Jukemir paper"
SYNTHEORY_GRID = {
    "data_standardization": (False, True),
    "hidden_layer_sizes": ((), (512,)),
    "batch_size": (64, 256),
    "learning_rate": (1e-5, 1e-4, 1e-3),
    "dropout_p": (0.25, 0.5, 0.75),
    "l2_weight_decay": (None, 1e-4, 1e-3),
}
SYNTHEORY_MAX_EPOCHS = 100  # probe/main.py: max_num_epochs=100
SYNTHEORY_EVAL_EVERY = 8  # ProbeExperimentConfig: early_stopping_eval_frequency (steps)
SYNTHEORY_BOREDOM = 256  # early_stopping_boredom (evaluations without a better validation score)
SEARCHES = ("grid", "halving")
# Successive halving's first rung: the grid's MLPs on raw (unstandardised) features start slowly, ranking ~130th of
# 216 by validation loss after 13 steps and in the top 10 after ~120 (intervals, MFCC, 700 training clips)
MIN_RUNG_STEPS = 100
RECORDS = ("val_score", "val_loss", "test_score", "test_loss", "test_extra", "best_epoch", "epochs")


def syntheory_configs(grid: dict | None = None) -> list[dict]:
    """The configurations of a (reduced) Jukemir grid, in `itertools.product` order of `SYNTHEORY_GRID`'s keys."""
    unknown = sorted(set(grid or {}) - set(SYNTHEORY_GRID))
    if unknown:
        raise ValueError(f"grid: unknown hyper-parameters {unknown}; known: {sorted(SYNTHEORY_GRID)}")
    merged = {key: tuple(tuple(v) if isinstance(v, list) else v for v in (grid or {}).get(key, values))
              for key, values in SYNTHEORY_GRID.items()}
    return [dict(zip(merged, values)) for values in itertools.product(*merged.values())]


@dataclass
class _SynTheoryData:
    x: torch.Tensor  # (L, N, D) raw features (SynTheory standardises online, per configuration)
    y: torch.Tensor  # (N,) class codes or (N, K) targets min-max scaled to [0, 1] over all samples, as SynTheory
    split: ProbeSplit
    classes: np.ndarray | None
    target_range: torch.Tensor | None  # (K,) max − min, to report MSE in target units

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else self.y.shape[1]


def _prepare_syntheory(features, targets, task, split, seed, device) -> _SynTheoryData:
    features, targets = check_probe_inputs(features, targets, task)
    split = split or split_indices(targets, seed=seed, stratify=task == "classification")
    x = torch.as_tensor(np.ascontiguousarray(features.transpose(1, 0, 2)), dtype=torch.float32, device=device)
    if task == "classification":
        classes, codes = np.unique(targets, return_inverse=True)
        return _SynTheoryData(x, torch.as_tensor(codes.reshape(-1), device=device), split, classes, None)
    y = torch.as_tensor(targets.reshape(len(targets), -1), dtype=torch.float32, device=device)
    low, high = y.min(0).values, y.max(0).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return _SynTheoryData(x, (y - low) / span, split, None, span)


class _RunningScaler:
    """`sklearn.preprocessing.StandardScaler.partial_fit` per layer: running mean and population variance of
    every sample seen (repeats counted), scale 1 where the variance is ~0."""

    def __init__(self, n_layers: int, dim: int, device):
        self.count = 0
        self.mean = torch.zeros(n_layers, 1, dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def partial_fit(self, x: torch.Tensor) -> None:  # x (L, n, D)
        x = x.double()
        n = x.shape[1]
        batch_mean = x.mean(1, keepdim=True)
        batch_m2 = (x - batch_mean).square().sum(1, keepdim=True)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta.square() * self.count * n / total
        self.count = total

    def scale(self) -> torch.Tensor:
        scale = (self.m2 / self.count).sqrt()
        return torch.where(scale < 10 * torch.finfo(torch.float64).eps, torch.ones_like(scale), scale)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.scale()).float()


def _syntheory_scores(outputs: torch.Tensor, y: torch.Tensor, task: str, n_outputs: int,
                      target_range: torch.Tensor | None = None):
    """Loss, primary score (accuracy or R²) and macro-F1 / MSE (target units) of outputs `(..., n, C)`."""
    lead = outputs.shape[:-2]
    loss = per_model_loss(outputs, y, task)
    if task == "classification":
        accuracy, macro_f1 = classification_scores(outputs.argmax(-1).reshape(-1, len(y)), y, n_outputs)
        return loss, accuracy.view(lead).float(), macro_f1.view(lead).float()
    residual = (outputs - y).square()
    total = (y - y.mean(0)).square().sum(0).clamp_min(1e-12)
    return loss, (1 - residual.sum(-2) / total).mean(-1), (residual * target_range.square()).mean((-2, -1))


def halving_rungs(n_configs: int, eta: int, min_epochs: float = 0.0) -> list[float]:
    """Epoch budgets of successive halving: SynTheory's 100 epochs at the last rung, each earlier rung 1/`eta` of
    the next, as many rungs as halvings leave at least one configuration and the first rung is at least
    `min_epochs` (216 configurations, eta 3: 1.2, 3.7, 11, 33, 100 epochs for 216, 72, 24, 8, 3 of them)."""
    if eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
    halvings = 0
    while n_configs > eta ** (halvings + 1) and SYNTHEORY_MAX_EPOCHS / eta ** (halvings + 1) >= min_epochs:
        halvings += 1
    return [SYNTHEORY_MAX_EPOCHS / eta ** k for k in range(halvings, -1, -1)]


def halving_plan(n_configs: int, n_train: int, batch_sizes, eta: int = 3) -> list[tuple[float, int]]:
    """(epochs, configurations trained to them) at each rung for a training set of `n_train` samples: the first
    rung gives every configuration at least `MIN_RUNG_STEPS` steps of the smallest batch."""
    rungs = halving_rungs(n_configs, eta, MIN_RUNG_STEPS * min(batch_sizes) / n_train)
    counts = [n_configs]
    for _ in rungs[1:]:
        counts.append(-(-counts[-1] // eta))
    return list(zip(rungs, counts))


def fit_syntheory_grid(features, targets, task, grid, seed, split, device, progress, search: str = "grid",
                       eta: int = 3, max_memory: float = 2e8) -> ProbeResult:
    """SynTheory's grid, batched: the configurations × layers of each (hidden layers, batch size) train together as
    one `_GridGroup`, layers chunked to keep about `max_memory` floats of weights, Adam state and activations.

    `search="halving"`: successive halving per layer (Jamieson & Talwalkar 2016) on the rungs of `halving_plan`:
    every configuration trains to the first rung (1.2 epochs, or `MIN_RUNG_STEPS` steps on small sets), each layer
    keeps the best third (1/eta) of its configurations by the validation loss of their current weights, and so on up
    to 100 epochs. A configuration trains exactly as in the full grid until it is dropped, and each layer reports the
    checkpoint with the best validation score of all those evaluated, as the full grid does; `candidates["epochs"]`
    holds the epochs each configuration trained.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    data = _prepare_syntheory(features, targets, task, split, seed, device)
    configs = syntheory_configs(grid)
    n_layers, _, dim = data.x.shape
    records = {key: np.full((n_layers, len(configs)), np.nan) for key in RECORDS}
    groups = {}
    for index, config in enumerate(configs):
        groups.setdefault((config["hidden_layer_sizes"], config["batch_size"]), []).append(index)
    per_layer = sum(len(indices) * _floats_per_model(dim, data.n_outputs, hidden, batch_size)
                    for (hidden, batch_size), indices in groups.items())
    chunk = max(1, int(max_memory // per_layer))
    batch_sizes = {config["batch_size"] for config in configs}
    rungs = [epochs for epochs, _ in halving_plan(len(configs), len(data.split.train), batch_sizes, eta)] \
        if search == "halving" else [float(SYNTHEORY_MAX_EPOCHS)]
    epochs_run = 0
    bar = tqdm(total=n_layers * len(rungs), desc=f"SynTheory {search} ({len(configs)} configs)", leave=False,
               disable=not progress)
    for start in range(0, n_layers, chunk):
        layers = np.arange(start, min(start + chunk, n_layers))
        trainers = [_GridGroup(data, layers, configs, indices, hidden, batch_size, task, seed)
                    for (hidden, batch_size), indices in groups.items()]
        for rung, epochs in enumerate(rungs):
            for trainer in trainers:
                trainer.train_until(epochs)
            if rung + 1 < len(rungs):
                for trainer, keep in zip(trainers, _best_per_layer(trainers, eta)):
                    trainer.record(records, ~keep)
                    trainer.keep(keep)
            bar.update(len(layers))
        for trainer in trainers:
            trainer.record(records, torch.ones(trainer.n_models, dtype=torch.bool))
            epochs_run = max(epochs_run, trainer.step * trainer.batch_size // trainer.n_train)
    bar.close()
    return _syntheory_result(data, task, configs, records, epochs_run)


def _floats_per_model(dim: int, n_outputs: int, hidden: tuple, batch_size: int) -> int:
    """Weights, gradients, Adam moments and best weights (5 copies) and a step's activations, per model."""
    shapes = mlp_shapes(dim, n_outputs, hidden[0] if hidden else None)
    return 5 * sum(fan_out * (fan_in + 1) for fan_out, fan_in in shapes) + 3 * batch_size * (dim + sum(
        fan_out for fan_out, _ in shapes))


def _best_per_layer(trainers: list[_GridGroup], eta: int) -> list[torch.Tensor]:
    """Per layer, a keep mask of each group's models: the best ⌈n/eta⌉ of the layer's n models by validation loss
    of the current weights (ties: higher validation score, then grid order). The loss, not the accuracy: after a
    few steps accuracy ranks a constant prediction that happens to match the validation set's largest class above
    probes still learning, and the loss does not."""
    current = [trainer.validate() for trainer in trainers]
    score = torch.cat([score for score, _ in current]).cpu().numpy()
    loss = torch.cat([loss for _, loss in current]).cpu().numpy()
    layer = np.concatenate([trainer.layer_id for trainer in trainers])
    config = np.concatenate([trainer.config_id for trainer in trainers])
    loss = np.nan_to_num(loss, nan=np.inf)  # a diverged model ranks last
    keep = np.zeros(len(layer), dtype=bool)
    for value in np.unique(layer):
        rows = np.flatnonzero(layer == value)
        order = np.lexsort((config[rows], -score[rows], loss[rows]))
        keep[rows[order[:-(-len(rows) // eta)]]] = True
    bounds = np.cumsum([0] + [trainer.n_models for trainer in trainers])
    return [torch.as_tensor(keep[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


class _GridGroup:
    """Every (layer, configuration) of one hidden size and batch size as one batched model, trained by SynTheory's
    loop up to any epoch (`train_until`, resumable), its models droppable between rungs (`keep`).

    As in SynTheory, where every run seeds its generators with the same seed, all models share their initial
    weights, their mini-batches and the uniform numbers behind their dropout masks (thresholded at their own p), so a
    model trains the same whatever trains beside it. Models are ordered by their input, a key (layer, standardise,
    dropout p): the models of a key read one input (`_syntheory_forward`). Each model keeps its weights and
    standardisation at its best validation score; the test set is scored once, on those (`record`).
    """

    PER_MODEL = ("layer", "std", "dropout", "lr", "l2", "best_score", "best_loss", "best_epoch", "boredom", "active",
                 "trained", "best_mean", "best_scale")

    def __init__(self, data: _SynTheoryData, layers: np.ndarray, configs: list[dict], indices: list[int],
                 hidden: tuple, batch_size: int, task: str, seed: int):
        self.data, self.task, self.batch_size = data, task, batch_size
        self.x = data.x[torch.as_tensor(layers, device=data.x.device)]  # (Lc, N, D)
        n_layers, _, dim = self.x.shape
        device = self.x.device
        self.width = hidden[0] if hidden else None
        group = [configs[i] for i in indices]
        self.stds = sorted({c["data_standardization"] for c in group})
        dropouts = sorted({c["dropout_p"] for c in group})
        self.drop = torch.tensor(dropouts, device=device)
        std_of = [self.stds.index(c["data_standardization"]) for c in group]
        dropout_of = [dropouts.index(c["dropout_p"]) for c in group]
        models = sorted((layer, std_of[j], dropout_of[j], j) for layer in range(n_layers) for j in range(len(group)))
        self.layer_id = np.array([layers[layer] for layer, *_ in models])
        self.config_id = np.array([indices[j] for *_, j in models])

        def per_model(values, dtype=torch.long):
            return torch.tensor(values, dtype=dtype, device=device)

        self.layer = per_model([m[0] for m in models])
        self.std = per_model([m[1] for m in models])
        self.dropout = per_model([m[2] for m in models])
        self.lr = per_model([group[m[3]]["learning_rate"] for m in models], torch.float32)
        self.l2 = per_model([group[m[3]]["l2_weight_decay"] or 0.0 for m in models], torch.float32)
        self.generator = torch.Generator().manual_seed(seed)
        self.params = init_linears(mlp_shapes(dim, data.n_outputs, self.width), self.generator, (len(models),),
                                   device)
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.best_params = [p.detach().clone() for p in self.params]
        self.best_score = torch.full((len(models),), -float("inf"), device=device)
        self.best_loss = torch.full((len(models),), float("nan"), device=device)
        self.best_epoch = torch.full((len(models),), float("nan"), device=device)
        self.boredom = torch.zeros(len(models), dtype=torch.long, device=device)
        self.active = torch.ones(len(models), dtype=torch.bool, device=device)
        self.trained = torch.zeros(len(models), dtype=torch.long, device=device)  # steps each model took
        self.best_mean = torch.zeros(len(models), dim, dtype=torch.float64, device=device)
        self.best_scale = torch.ones(len(models), dim, dtype=torch.float64, device=device)
        self.scaler = _RunningScaler(n_layers, dim, device)
        self.x_train, self.y_train = self.x[:, data.split.train], data.y[data.split.train]
        self.n_train = len(data.split.train)
        self.step, self.stopped = 0, False
        self._find_keys()

    @property
    def n_models(self) -> int:
        return len(self.layer)

    def _find_keys(self) -> None:
        """The runs of models with one input: `counts` models per key, and each key's layer, standardise, dropout."""
        code = (self.layer * len(self.stds) + self.std) * len(self.drop) + self.dropout
        _, counts = torch.unique_consecutive(code, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        self.counts = counts.tolist()
        self.key_layer, self.key_std, self.key_dropout = self.layer[first], self.std[first], self.dropout[first]

    def train_until(self, epochs: float) -> None:
        """SynTheory's loop (evaluate on validation every 8 steps, stop models bored for 256 evaluations, one Adam
        step on a random mini-batch) while fewer than `epochs` epochs have passed."""
        val = (self.x[:, self.data.split.val], self.data.y[self.data.split.val])
        while not self.stopped and self.n_models and self.step * self.batch_size / self.n_train <= epochs:
            if self.step % SYNTHEORY_EVAL_EVERY == 0:
                self.active &= self.boredom < SYNTHEORY_BOREDOM
                if not self.active.any():
                    self.stopped = True
                    break
                if self.scaler.count == 0:  # SynTheory's first evaluation fits the unfitted scaler on validation
                    self.scaler.partial_fit(val[0])
                self._evaluate_validation(*val)
            self._train_step()

    def _evaluate_validation(self, features: torch.Tensor, truth: torch.Tensor) -> None:
        loss, score, _ = self._scores(features, truth, self.params, self._key_inputs(features), self.counts)
        improved = self.active & (score > self.best_score)
        self.best_score = torch.where(improved, score, self.best_score)
        self.best_loss = torch.where(improved, loss, self.best_loss)
        self.best_epoch = torch.where(improved, float(self.step * self.batch_size // self.n_train), self.best_epoch)
        self.boredom = torch.where(improved, 0, self.boredom + self.active.long())
        with torch.no_grad():
            for best, param in zip(self.best_params, self.params):
                best[improved] = param[improved]
        self.best_mean[improved] = self.scaler.mean[:, 0][self.layer[improved]]
        self.best_scale[improved] = self.scaler.scale()[:, 0][self.layer[improved]]

    def _train_step(self) -> None:
        batch = torch.randperm(self.n_train, generator=self.generator)[:self.batch_size].to(self.x.device)
        features = self.x_train[:, batch]
        self.scaler.partial_fit(features)
        drop = self.drop[:, None, None]
        uniform = torch.rand(features.shape[1:], generator=self.generator).to(self.x.device)  # (b, D), shared
        keep = ((uniform >= drop) / (1 - drop))[self.key_dropout]
        x = self._standardised(features)[self.key_std, self.key_layer] * keep  # (K, b, D): every key's input
        hidden_keep = None
        if self.width:
            hidden_uniform = torch.rand((len(batch), self.width), generator=self.generator).to(self.x.device)
            hidden_keep = ((hidden_uniform.T >= drop) / (1 - drop))[self.key_dropout]  # (K, H, b)
        outputs = _syntheory_forward(self.params, x, self.counts, hidden_keep)
        loss = per_model_loss(outputs, self.y_train[batch], self.task)
        grads = torch.autograd.grad(loss.sum(), self.params)
        with torch.no_grad():
            _adam_step(self.params, grads, self.moments, self.step + 1, self.lr, self.l2, self.active)
        self.trained += self.active
        self.step += 1

    def _standardised(self, features: torch.Tensor) -> torch.Tensor:
        """`(Lc, n, D)` → `(S, Lc, n, D)`: raw and/or standardised by the running scaler, as the group's configs ask."""
        return torch.stack([self.scaler.transform(features) if s else features for s in self.stds])

    def _key_inputs(self, features: torch.Tensor):
        """Key → its input `(n, D)`: its layer of `features (Lc, n, D)`, standardised or raw (a view)."""
        stacked = self._standardised(features)
        return lambda key: stacked[self.key_std[key], self.key_layer[key]]

    def _scores(self, features, truth, params, inputs, counts: list[int], chunk_floats: int = 1 << 25):
        """Loss, score and extra score `(M,)` of `params` whose consecutive `counts[k]` models read `inputs(k)`,
        keys taken in chunks of about `chunk_floats` activations."""
        out = self.width or self.data.n_outputs
        per_model = features.shape[1] * out
        parts, key, model = [(torch.empty(0, device=features.device),) * 3], 0, 0
        with torch.no_grad():
            while key < len(counts):
                size = 1
                while key + size < len(counts) and sum(counts[key:key + size + 1]) * per_model <= chunk_floats:
                    size += 1
                m = sum(counts[key:key + size])
                outputs = _syntheory_forward([p[model:model + m] for p in params],
                                             [inputs(k) for k in range(key, key + size)], counts[key:key + size])
                parts.append(_syntheory_scores(outputs, truth, self.task, self.data.n_outputs, self.data.target_range))
                key, model = key + size, model + m
        return tuple(torch.cat(values) for values in zip(*parts))

    def validate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation score and loss `(M,)` of the current weights (ranks models at a rung; nothing recorded)."""
        features, truth = self.x[:, self.data.split.val], self.data.y[self.data.split.val]
        loss, score, _ = self._scores(features, truth, self.params, self._key_inputs(features), self.counts)
        return score, loss

    def record(self, records: dict[str, np.ndarray], models: torch.Tensor) -> None:
        """Write the records of `models` (a mask): best validation score and loss, the test scores of the weights
        and standardisation kept at it, the epoch it came from and the epochs trained."""
        index = models.nonzero()[:, 0]
        if not len(index):
            return
        features, truth = self.x[:, self.data.split.test], self.data.y[self.data.split.test]
        standardise = torch.tensor(self.stds, device=features.device)[self.std[index]]
        layer, mean, scale = self.layer[index], self.best_mean[index][:, None], self.best_scale[index][:, None]

        def inputs(row: int) -> torch.Tensor:  # each model its own input: its layer, standardised as at its best
            x = features[layer[row]]
            return ((x.double() - mean[row]) / scale[row]).float() if standardise[row] else x

        loss, score, extra = self._scores(features, truth, [p[index] for p in self.best_params], inputs,
                                          [1] * len(index))
        seen = torch.isfinite(self.best_score[index])
        cells = (self.layer_id[index.cpu().numpy()], self.config_id[index.cpu().numpy()])
        nan = float("nan")
        values = {"val_score": self.best_score[index], "val_loss": self.best_loss[index],
                  "test_score": torch.where(seen, score, nan), "test_loss": torch.where(seen, loss, nan),
                  "test_extra": torch.where(seen, extra, nan), "best_epoch": self.best_epoch[index],
                  "epochs": self.trained[index] * self.batch_size / self.n_train}
        for key, value in values.items():
            records[key][cells] = value.double().cpu().numpy()

    def keep(self, models: torch.Tensor) -> None:
        """Drop every model outside the mask `models`, with its weights, Adam state and records."""
        models = models.to(self.layer.device)
        for name in self.PER_MODEL:
            setattr(self, name, getattr(self, name)[models])
        self.params = [p.detach()[models].clone().requires_grad_() for p in self.params]
        self.moments = [(m[models], v[models]) for m, v in self.moments]
        self.best_params = [p[models] for p in self.best_params]
        numpy_mask = models.cpu().numpy()
        self.layer_id, self.config_id = self.layer_id[numpy_mask], self.config_id[numpy_mask]
        self._find_keys()


def _syntheory_forward(params: list[torch.Tensor], inputs: list[torch.Tensor], counts: list[int],
                       hidden_keep=None) -> torch.Tensor:
    """SimpleMLP outputs `(M, n, C)` of models run by key: the `counts[k]` consecutive models of key k read
    `inputs[k]` `(n, D)` (already dropped out; `inputs` a `(K, n, D)` tensor or a list of views); their hidden units
    are multiplied by `hidden_keep[k]` `(H, n)` (dropout) where given.

    Computed transposed, `W Xᵀ`, with a key's models stacked into one `(m·out, D)` matrix: each input is read once
    and every gradient comes out contiguous. Keys of equal size (the whole grid, before any halving) run as one
    batched matmul, others one matmul per key.
    """
    weight, bias = params[0], params[1]
    n_models, out, dim = weight.shape
    hidden = len(params) > 2
    if len(set(counts)) == 1:
        rows = torch.baddbmm(bias.view(len(counts), -1, 1), weight.view(len(counts), -1, dim),
                             (inputs if torch.is_tensor(inputs) else torch.stack(inputs)).transpose(1, 2))
        if hidden:  # in place, before any view (an in-place op on a view slows autograd down): baddbmm's
            rows = rows.relu_()  # backward does not need its output
        first = rows.view(len(counts), counts[0], out, -1)
        if hidden and hidden_keep is not None:
            first = first * hidden_keep[:, None]
        first = first.reshape(n_models, out, -1)
    else:
        first = []
        for key, (w, b) in enumerate(zip(torch.split(weight, counts), torch.split(bias, counts))):
            rows = torch.addmm(b.reshape(-1, 1), w.reshape(-1, dim), inputs[key].T)
            rows = (rows.relu_() if hidden else rows).view(len(w), out, -1)
            if hidden and hidden_keep is not None:
                rows = rows * hidden_keep[key]
            first.append(rows)
        first = torch.cat(first)  # (M, out, n)
    if not hidden:
        return first.transpose(1, 2)
    return torch.baddbmm(params[3], params[2], first).transpose(1, 2)


def _adam_step(params, grads, moments, step: int, lr, l2, active, betas=(0.9, 0.999), eps=1e-8,
               block: int = 1 << 18) -> None:
    """`torch.optim.Adam(weight_decay=l2)` (L2 added to the gradient, biases included) per model; models that
    stopped keep their weights and moments.

    Updated in blocks of about `block` numbers, all steps of a block while it sits in cache: whole-tensor steps
    streamed every (batched MLP) parameter through memory ~10 times per step, slower than one model at a time.
    """
    correction1, correction2 = 1 - betas[0] ** step, 1 - betas[1] ** step
    n_models = active.numel()
    rate = (lr.expand(active.shape).reshape(n_models, 1) / correction1)
    decay = l2.expand(active.shape).reshape(n_models, 1)
    live = active.reshape(n_models, 1)
    everyone = bool(active.all())
    for param, grad, (mean, square) in zip(params, grads, moments):
        param, mean, square = param.view(n_models, -1), mean.view(n_models, -1), square.view(n_models, -1)
        grad = grad.reshape(n_models, -1)
        models = max(1, block // param.shape[1])
        for start in range(0, n_models, models):
            rows = slice(start, start + models)
            p, m, v = param[rows], mean[rows], square[rows]
            g = grad[rows] + decay[rows] * p
            if everyone:  # in place, as torch.optim.Adam
                m.lerp_(g, 1 - betas[0])
                v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                p.addcdiv_(m * rate[rows], v.sqrt().div_(correction2 ** 0.5).add_(eps), value=-1.0)
                continue
            keep = live[rows]
            m.copy_(torch.where(keep, torch.lerp(m, g, 1 - betas[0]), m))
            v.copy_(torch.where(keep, betas[1] * v + (1 - betas[1]) * g.square(), v))
            p.sub_(torch.where(keep, m * rate[rows] / (v.sqrt() / correction2 ** 0.5 + eps), 0.0))


def _syntheory_result(data: _SynTheoryData, task: str, configs: list[dict], records: dict,
                      epochs_run: int) -> ProbeResult:
    """Per layer, the configuration with the best validation score (ties: lower validation loss, grid order)."""
    n_layers = records["val_score"].shape[0]
    chosen = select_on_validation(records["val_score"], records["val_loss"])
    layers = np.arange(n_layers)
    name = "accuracy" if task == "classification" else "r2"
    extra = "macro_f1" if task == "classification" else "mse"
    metrics = {f"val_{name}": records["val_score"][layers, chosen], "val_loss": records["val_loss"][layers, chosen],
               f"test_{name}": records["test_score"][layers, chosen],
               f"test_{extra}": records["test_extra"][layers, chosen],
               "test_loss": records["test_loss"][layers, chosen]}
    picked = [configs[c] for c in chosen]
    hyperparameters = {
        "data_standardization": np.array([float(c["data_standardization"]) for c in picked]),
        "hidden_size": np.array([float(c["hidden_layer_sizes"][0]) if c["hidden_layer_sizes"] else 0.0
                                 for c in picked]),
        "batch_size": np.array([float(c["batch_size"]) for c in picked]),
        "learning_rate": np.array([c["learning_rate"] for c in picked]),
        "dropout_p": np.array([c["dropout_p"] for c in picked]),
        "l2_weight_decay": np.array([c["l2_weight_decay"] or 0.0 for c in picked]),
    }
    return ProbeResult(task, "syntheory", {k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()},
                       np.nan_to_num(records["best_epoch"][layers, chosen], nan=-1).astype(int), data.split,
                       data.classes, epochs_run,
                       protocol="syntheory", hyperparameters=hyperparameters,
                       candidates={"configs": configs, "val_score": records["val_score"],
                                   "val_loss": records["val_loss"], "test_score": records["test_score"],
                                   "epochs": records["epochs"]})


def fit_probe_per_layer_sequential(features, targets, *, task: str = "classification", grid: dict | None = None,
                                   layers: list[int] | None = None, seed: int = 0, split: ProbeSplit | None = None,
                                   device: str = "cpu", progress: bool = True) -> ProbeResult:
    """SynTheory's protocol as SynTheory runs it: one `nn.Module` probe per configuration × layer, one after the
    other, with scikit-learn's `StandardScaler.partial_fit` on every mini-batch and `torch.optim.Adam`.

    The same random numbers as the batched `fit_layer_probes(protocol="syntheory")` (initial weights,
    mini-batches, dropout uniforms), so both give the same probes up to float rounding. `layers` restricts the run
    to some layers (the others are NaN): the benchmark times a subset.
    """
    data = _prepare_syntheory(features, targets, task, split, seed, device)
    configs = syntheory_configs(grid)
    n_layers, _, dim = data.x.shape
    records = {key: np.full((n_layers, len(configs)), np.nan) for key in RECORDS}
    runs = [(c, layer) for c in range(len(configs)) for layer in (range(n_layers) if layers is None else layers)]
    epochs_run = 0
    for index, layer in tqdm(runs, desc="SynTheory, one probe per config x layer", disable=not progress,
                             leave=False):
        out, epochs = _train_one_syntheory_probe(data, layer, configs[index], task, seed)
        for key, value in out.items():
            records[key][layer, index] = value
        epochs_run = max(epochs_run, epochs)
    return _syntheory_result(data, task, configs, records, epochs_run)


class _SimpleMLP(torch.nn.Module):
    """SynTheory's probe: dropout on the input, [Linear → ReLU → dropout] per hidden layer, Linear output; dropout
    masks come from given uniforms (to share them with the batched run)."""

    def __init__(self, dim: int, n_outputs: int, width: int | None, p: float, generator: torch.Generator):
        super().__init__()
        self.p = p
        shapes = mlp_shapes(dim, n_outputs, width)
        self.linears = torch.nn.ModuleList(torch.nn.Linear(fan_in, fan_out) for fan_out, fan_in in shapes)
        params = init_linears(shapes, generator, (), "cpu")  # the batched run's initial draw
        with torch.no_grad():
            for linear, weight, bias in zip(self.linears, params[0::2], params[1::2]):
                linear.weight.copy_(weight)
                linear.bias.copy_(bias[:, 0])

    def forward(self, x, input_uniform=None, hidden_uniform=None):
        if input_uniform is not None:
            x = x * (input_uniform >= self.p) / (1 - self.p)
        for linear in self.linears[:-1]:
            x = linear(x).relu()
            if hidden_uniform is not None:
                x = x * (hidden_uniform >= self.p) / (1 - self.p)
        return self.linears[-1](x)


def _train_one_syntheory_probe(data: _SynTheoryData, layer: int, config: dict, task: str, seed: int):
    """ProbeExperiment.train for one configuration and layer (brown-palm/syntheory probe/probes.py), keeping the
    weights of the best validation score."""
    generator = torch.Generator().manual_seed(seed)
    width = config["hidden_layer_sizes"][0] if config["hidden_layer_sizes"] else None
    x = data.x[layer].cpu().numpy()
    probe = _SimpleMLP(x.shape[1], data.n_outputs, width, config["dropout_p"], generator)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config["learning_rate"],
                                 weight_decay=config["l2_weight_decay"] or 0.0)
    standardise = config["data_standardization"]
    scaler = StandardScaler(with_mean=standardise, with_std=standardise)
    x_train, y_train = x[data.split.train], data.y[data.split.train].cpu()
    evaluation = {"val": (x[data.split.val], data.y[data.split.val].cpu()),
                  "test": (x[data.split.test], data.y[data.split.test].cpu())}
    n_train, batch_size = len(x_train), config["batch_size"]
    best_score, boredom, best, step = -float("inf"), 0, {}, 0
    while step * batch_size / n_train <= SYNTHEORY_MAX_EPOCHS:
        if step % SYNTHEORY_EVAL_EVERY == 0:
            if boredom >= SYNTHEORY_BOREDOM:
                break
            if not hasattr(scaler, "n_samples_seen_"):
                scaler.partial_fit(evaluation["val"][0])
            probe.eval()
            with torch.no_grad():
                scores = {name: _syntheory_scores(probe(torch.as_tensor(scaler.transform(features),
                                                                        dtype=torch.float32))[None], truth, task,
                                                  data.n_outputs, data.target_range)
                          for name, (features, truth) in evaluation.items()}
            probe.train()
            if float(scores["val"][1][0]) > best_score:
                best_score, boredom = float(scores["val"][1][0]), 0
                best = {"val_score": best_score, "val_loss": float(scores["val"][0][0]),
                        "test_loss": float(scores["test"][0][0]), "test_score": float(scores["test"][1][0]),
                        "test_extra": float(scores["test"][2][0]), "best_epoch": step * batch_size // n_train}
            else:
                boredom += 1
        batch = torch.randperm(n_train, generator=generator)[:batch_size].numpy()
        scaler.partial_fit(x_train[batch])
        features = torch.as_tensor(scaler.transform(x_train[batch]), dtype=torch.float32)
        input_uniform = torch.rand(features.shape, generator=generator)
        hidden_uniform = torch.rand((len(batch), width), generator=generator) if width else None
        optimizer.zero_grad(set_to_none=True)
        loss = per_model_loss(probe(features, input_uniform, hidden_uniform)[None], y_train[batch], task).sum()
        loss.backward()
        optimizer.step()
        step += 1
    return {**best, "epochs": step * batch_size / n_train}, step * batch_size // n_train


__all__ = ["SYNTHEORY_GRID", "fit_probe_per_layer_sequential", "syntheory_configs"]
