"""Layer-wise probes of frozen features, every layer (and every hyper-parameter candidate) trained at once.

Two protocols, both choosing hyper-parameters and the best layer on validation only:

- `"fast"` (default): one linear map per layer × weight decay, `W (L, K, C, D)`, solved full-batch by a batched
  L-BFGS (or one MLP per layer × weight decay trained by Adam), with per-model early stopping on validation
  loss; each layer keeps the weight decay of its best validation score. Layers and candidates never interact, so
  each gets the probe it would get alone.
- `"syntheory"`: SynTheory's protocol (Wei et al. 2024, brown-palm/syntheory `probe/`, adapted from Jukemir):
  every configuration of the Jukemir grid `SYNTHEORY_GRID` (input standardisation, hidden layers [] or [512],
  batch 64/256, Adam lr, dropout, L2) is trained with Adam on random mini-batches for up to 100 epochs, evaluated
  on validation every 8 steps and stopped after 256 evaluations without a better validation score; each layer
  reports the test score of its configuration with the best validation score. All configurations of one
  architecture and batch size are trained together as one batched model; `fit_probe_per_layer_sequential` runs
  the same protocol one `nn.Module` per configuration × layer (SynTheory's way), the reference and benchmark
  baseline.

Features come as the feature cache stores them, `(N, L, D)`; targets are class labels (any dtype) or, with
`task="regression"`, floats `(N,)` or `(N, K)`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm, trange

TASKS = ("classification", "regression")
PROBE_MODELS = ("linear", "mlp")
PROTOCOLS = ("fast", "syntheory")
SPLITS = ("train", "val", "test")
FAST_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)
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


@dataclass(frozen=True)
class ProbeSplit:
    """Disjoint sample indices of the train / validation / test parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class ProbeResult:
    """Per-layer metrics of one probing task: `metrics[f"{split}_{name}"]` is an `(L,)` array.

    Classification: `accuracy`, `macro_f1`, `loss`; regression: `r2`, `mse` (target units), `loss`.
    `best_epoch[l]` is the epoch whose weights layer l kept. `hyperparameters[name]` `(L,)` are the values each
    layer chose on validation; `candidates` holds every candidate's `val_score`, `val_loss`, `test_score` `(L, K)`
    and their settings (`configs`), for audits and benchmarks.
    """

    task: str
    model: str
    metrics: dict[str, np.ndarray]
    best_epoch: np.ndarray
    split: ProbeSplit
    classes: np.ndarray | None
    epochs_run: int
    protocol: str = "fast"
    hyperparameters: dict[str, np.ndarray] = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)

    @property
    def score_name(self) -> str:
        return "accuracy" if self.task == "classification" else "r2"

    @property
    def n_layers(self) -> int:
        return len(self.best_epoch)

    def best_layer(self) -> int:
        """Layer with the best validation score (ties: lower validation loss, then earlier layer).

        Chosen on validation so that its test score is an honest estimate.
        """
        return int(select_on_validation(self.metrics[f"val_{self.score_name}"], self.metrics["val_loss"]))

    def rows(self, layer_names: list[str] | None = None) -> list[dict]:
        """One dict per layer (for CSV/JSON tables and loggers), chosen hyper-parameters included."""
        names = layer_names or [str(layer) for layer in range(self.n_layers)]
        return [
            {"layer": layer, "layer_name": names[layer], "best_epoch": int(self.best_epoch[layer]),
             **{key: float(values[layer]) for key, values in self.metrics.items()},
             **{key: float(values[layer]) for key, values in self.hyperparameters.items()}}
            for layer in range(self.n_layers)
        ]


def select_on_validation(score: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Index of the best score along the last axis; ties go to the lower loss, then the lower index."""
    score, loss = np.asarray(score), np.asarray(loss)
    index = np.broadcast_to(np.arange(score.shape[-1]), score.shape)
    order = np.lexsort((index, loss, -score), axis=-1)
    return order[..., 0]


def split_indices(targets, fractions=(0.7, 0.15, 0.15), seed: int = 0, stratify: bool = True) -> ProbeSplit:
    """Seeded train/val/test split; stratified by class so each class keeps the fractions (±1 sample).

    Each class's samples are shuffled and laid on a circle at a random phase; the arcs of length
    `fractions` pick the parts. Unstratified splits cut one permutation of all samples.
    """
    targets = np.asarray(targets)
    n = len(targets)
    rng = np.random.default_rng(seed)
    if stratify:
        _, codes, counts = np.unique(targets, axis=0 if targets.ndim > 1 else None, return_inverse=True,
                                     return_counts=True)
        codes = codes.reshape(-1)
        order = np.lexsort((rng.random(n), codes))
        rank = np.empty(n)
        rank[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        phase = rng.random(len(counts))
        position = ((rank + phase[codes]) / counts[codes]) % 1.0
    else:
        position = (rng.permutation(n) + 0.5) / n
    edges = np.cumsum(fractions)[:2] / np.sum(fractions)
    part = np.searchsorted(edges, position, side="right")
    split = ProbeSplit(*(np.flatnonzero(part == k) for k in range(3)))
    empty = [name for name, idx in zip(SPLITS, (split.train, split.val, split.test)) if len(idx) == 0]
    if empty:
        raise ValueError(f"{n} samples are too few for a {fractions} split: empty {', '.join(empty)} part")
    return split


def extrapolation_split(values, ends: float = 0.15, seed: int = 0) -> ProbeSplit:
    """SynTheory's tempo split (brown-palm/syntheory probe/probes.py): train on the middle `1 − 2·ends` of the
    samples sorted by `values`, validate and test on a seeded random half each of the lowest and highest `ends`,
    so the probe must extrapolate beyond the training range."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    low, high = int(len(values) * ends), int(len(values) * (1 - ends))
    held_out = np.random.default_rng(seed).permutation(np.concatenate([order[:low], order[high:]]))
    half = len(held_out) // 2
    return ProbeSplit(np.sort(order[low:high]), np.sort(held_out[half:]), np.sort(held_out[:half]))


def fit_layer_probes(features, targets, *, task: str = "classification", protocol: str = "fast",
                     model: str = "linear", hidden_size: int = 512, dropout: float = 0.0, lr: float = 1e-2,
                     weight_decay: float | list[float] = FAST_WEIGHT_DECAYS, max_epochs: int = 500,
                     patience: int = 30, min_delta: float = 1e-4, batch_size: int | None = None,
                     grid: dict | None = None, seed: int = 0, split: ProbeSplit | None = None, device: str = "cpu",
                     progress: bool = True) -> ProbeResult:
    """Train probes on every layer at once; return per-layer train/val/test metrics of the validation choice.

    `protocol="fast"`: every probe minimises its mean training loss + `weight_decay`/2 · |weights|² (biases
    unpenalised), for every weight decay of the grid `weight_decay` (a number or a list) at once. Linear probes (a
    convex problem) are solved full-batch by L-BFGS run per model in lock-step: an epoch is one pass over the
    training set (`lr` and `batch_size` are not used). MLP probes are trained by Adam (`lr`), full-batch
    (`batch_size=None`) or on shuffled mini-batches shared by all models. Each model keeps the weights of its
    lowest validation loss and stops after `patience` epochs without lowering it by `min_delta` (a linear probe
    also stops once L-BFGS has converged); each layer then keeps the weight decay with the best validation score.

    `protocol="syntheory"`: SynTheory's grid search (module docstring) over `grid` (default `SYNTHEORY_GRID`; a
    dict overriding some of its entries gives a reduced grid); `model`, `hidden_size`, `dropout`, `lr`,
    `weight_decay`, `max_epochs`, `patience`, `min_delta` and `batch_size` are not used.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "syntheory":
        return _fit_syntheory_batched(features, targets, task, grid, seed, split, device, progress)
    weight_decays = np.atleast_1d(np.asarray(weight_decay, dtype=np.float64))
    if weight_decays.ndim != 1 or len(weight_decays) == 0 or (weight_decays < 0).any():
        raise ValueError(f"weight_decay must be a non-negative number or list of numbers, got {weight_decay!r}")
    data = _prepare(features, targets, task, model, split, seed, device)
    if model == "linear":
        fit = _fit_linear_lbfgs(data, task, weight_decays, max_epochs, patience, min_delta, progress)
    else:
        fit = _fit_mlp_adam(data, task, hidden_size, dropout, lr, weight_decays, max_epochs, patience, min_delta,
                            batch_size, seed, progress)
    params, best_epoch, epochs_run = fit
    with torch.no_grad():
        outputs = _batched_forward(params, data.x)  # (L, K, N, C)
    per_candidate = _metrics(data, outputs, task)
    n_layers = data.x.shape[0]
    score = per_candidate[f"val_{'accuracy' if task == 'classification' else 'r2'}"]
    chosen = select_on_validation(score, per_candidate["val_loss"])  # (L,) on validation only
    layers = np.arange(n_layers)
    return ProbeResult(
        task, model, {key: values[layers, chosen] for key, values in per_candidate.items()},
        best_epoch.cpu().numpy().reshape(n_layers, -1)[layers, chosen], data.split, data.classes, epochs_run,
        protocol="fast", hyperparameters={"weight_decay": weight_decays[chosen]},
        candidates={"configs": [{"weight_decay": float(w)} for w in weight_decays], "val_score": score,
                    "val_loss": per_candidate["val_loss"],
                    "test_score": per_candidate[f"test_{'accuracy' if task == 'classification' else 'r2'}"]},
    )


class _EarlyStopping:
    """Per-model early stopping on validation loss, as a mask: keeps each model's best weights and epoch."""

    def __init__(self, params: list[torch.Tensor], patience: int, min_delta: float):
        self.best = [p.detach().clone() for p in params]
        n_models, device = params[0].shape[0], params[0].device
        self.best_loss = torch.full((n_models,), float("inf"), device=device)
        self.best_epoch = torch.zeros(n_models, dtype=torch.long, device=device)
        self.active = torch.ones(n_models, dtype=torch.bool, device=device)
        self.patience, self.min_delta = patience, min_delta

    def update(self, epoch: int, val_loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        improved = self.active & (val_loss < self.best_loss - self.min_delta)
        for kept, param in zip(self.best, params):
            kept[improved] = param.detach()[improved]
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.active &= (epoch - self.best_epoch) < self.patience


def _fit_linear_lbfgs(data: _ProbeData, task: str, weight_decays: np.ndarray, max_epochs: int, patience: int,
                      min_delta: float, progress: bool, history: int = 10, tolerance: float = 1e-6):
    """Batched L-BFGS: each model (layer × weight decay) runs its own two-loop recursion and Armijo backtracking,
    vectorised over models.

    The weights are kept as `(L·K, C, D)` and multiplied as `(L, K·C, D)` so that both products of an epoch read
    each layer's features once, row-major (`W Xᵀ` and `Gᵀ X`). A model has converged when an epoch lowers its
    objective by less than `tolerance` · (1 + objective).
    """
    x_train, y_train = data.x[:, data.split.train], data.y[data.split.train]
    x_val, y_val = data.x[:, data.split.val], data.y[data.split.val]
    n_layers, _, dim = data.x.shape
    n_wd = len(weight_decays)
    n_models = n_layers * n_wd
    decay = torch.as_tensor(weight_decays, dtype=data.x.dtype, device=data.x.device).repeat(n_layers)

    def models(tensors):  # (L, K, ...) → (L·K, ...)
        return [t.reshape(n_models, *t.shape[2:]) for t in tensors]

    def layered(tensors):  # (L·K, ...) → (L, K, ...)
        return [t.reshape(n_layers, n_wd, *t.shape[1:]) for t in tensors]

    def objective(weight, bias):
        logits = _batched_forward(layered([weight, bias]), x_train).requires_grad_()  # (L, K, n, C)
        loss = _per_model_loss(logits, y_train, task).reshape(n_models)
        (grad_logits,) = torch.autograd.grad(loss.sum(), logits)
        grad_logits = grad_logits.transpose(-1, -2)  # (L, K, C, n)
        grad_weight = torch.bmm(grad_logits.reshape(n_layers, -1, grad_logits.shape[-1]), x_train)
        loss = loss + decay / 2 * weight.square().sum((1, 2))
        return loss, (grad_weight.reshape(weight.shape) + decay[:, None, None] * weight,
                      grad_logits.sum(-1, keepdim=True).reshape(bias.shape))

    def dot(a, b):
        return sum((u * v).sum((1, 2)) for u, v in zip(a, b))

    def scaled(tensors, factor):
        return [t * factor[:, None, None] for t in tensors]

    params = [torch.zeros(n_models, data.n_outputs, dim, device=data.x.device),
              torch.zeros(n_models, data.n_outputs, 1, device=data.x.device)]
    loss, grad = objective(*params)
    stopping = _EarlyStopping(params, patience, min_delta)
    steps, slopes = [], []  # L-BFGS memory: (s, y) pairs and 1 / (s·y), zero for pairs without curvature
    scale = 1 / dot(grad, grad).sqrt().clamp_min(1e-12)  # first step: unit length along the gradient
    epochs = trange(max_epochs, desc=f"linear probes x{n_models} (L-BFGS)", disable=not progress, leave=False)
    for epoch in epochs:
        direction, alphas = grad, []
        for (s, y), rho in zip(reversed(steps), reversed(slopes)):
            alphas.append(rho * dot(s, direction))
            direction = [d - a for d, a in zip(direction, scaled(y, alphas[-1]))]
        direction = scaled(direction, scale)
        for ((s, y), rho), alpha in zip(zip(steps, slopes), reversed(alphas)):
            beta = rho * dot(y, direction)
            direction = [d + t for d, t in zip(direction, scaled(s, alpha - beta))]
        direction = scaled(direction, -stopping.active.float())
        slope = dot(grad, direction)
        step_size = torch.ones(n_models, device=data.x.device)
        for _ in range(30):  # Armijo backtracking per model
            trial = [p + d for p, d in zip(params, scaled(direction, step_size))]
            trial_loss, trial_grad = objective(*trial)
            failed = trial_loss > loss + 1e-4 * step_size * slope
            if not failed.any():
                break
            step_size = torch.where(failed, step_size / 2, step_size)
        step_size = torch.where(failed, 0.0, step_size)  # no decrease found: converged to float precision
        trial = [p + d for p, d in zip(params, scaled(direction, step_size))]
        trial_loss, trial_grad = torch.where(failed, loss, trial_loss), [
            torch.where(failed[:, None, None], g, t) for g, t in zip(grad, trial_grad)]
        s = [t - p for t, p in zip(trial, params)]
        y = [t - g for t, g in zip(trial_grad, grad)]
        curvature = dot(s, y)
        has_curvature = curvature > 1e-10 * dot(y, y).sqrt() * dot(s, s).sqrt()
        steps.append((s, y))
        slopes.append(torch.where(has_curvature, 1 / curvature, 0.0))
        scale = torch.where(has_curvature, curvature / dot(y, y).clamp_min(1e-30), scale)
        if len(steps) > history:
            steps.pop(0), slopes.pop(0)
        converged = loss - trial_loss <= tolerance * (1 + trial_loss.abs())
        params, loss, grad = trial, trial_loss, trial_grad
        with torch.no_grad():
            val_loss = _per_model_loss(_batched_forward(layered(params), x_val), y_val, task).reshape(n_models)
        stopping.update(epoch, val_loss, params)
        stopping.active &= ~converged
        epochs.set_postfix(active=int(stopping.active.sum()), val_loss=float(stopping.best_loss.mean()),
                           refresh=False)
        if not stopping.active.any():
            break
    return layered(stopping.best), stopping.best_epoch, epoch + 1


def _fit_mlp_adam(data: _ProbeData, task: str, hidden_size: int, dropout: float, lr: float,
                  weight_decays: np.ndarray, max_epochs: int, patience: int, min_delta: float,
                  batch_size: int | None, seed: int, progress: bool):
    n_layers, _, dim = data.x.shape
    n_wd = len(weight_decays)
    generator = torch.Generator().manual_seed(seed)
    params = _init_linears(_mlp_shapes(dim, data.n_outputs, hidden_size), generator, (n_layers, n_wd),
                           data.x.device)
    decay = torch.as_tensor(weight_decays, dtype=data.x.dtype, device=data.x.device)[None, :, None, None]
    optimizer = torch.optim.Adam(params, lr=lr)
    flat = [p.view(n_layers * n_wd, -1) for p in params]  # early stopping works on models (L·K,)
    stopping = _EarlyStopping(flat, patience, min_delta)
    x_train, y_train = data.x[:, data.split.train], data.y[data.split.train]
    x_val, y_val = data.x[:, data.split.val], data.y[data.split.val]
    n_train = len(data.split.train)
    step = batch_size or n_train
    epochs = trange(max_epochs, desc=f"mlp probes x{n_layers * n_wd}", disable=not progress, leave=False)
    for epoch in epochs:
        order = torch.randperm(n_train, generator=generator).to(data.x.device)
        for start in range(0, n_train, step):
            batch = order[start:start + step] if step < n_train else slice(None)
            optimizer.zero_grad(set_to_none=True)
            outputs = _batched_forward(params, x_train[:, batch], dropout, generator)
            penalty = (decay / 2 * (params[0].square().sum((-2, -1), keepdim=True)
                                    + params[2].square().sum((-2, -1), keepdim=True))).sum()
            (_per_model_loss(outputs, y_train[batch], task).sum() + penalty).backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = _per_model_loss(_batched_forward(params, x_val), y_val, task).reshape(-1)
            stopping.update(epoch, val_loss, flat)
        epochs.set_postfix(active=int(stopping.active.sum()), val_loss=float(stopping.best_loss.mean()),
                           refresh=False)
        if not stopping.active.any():
            break
    best = [kept.view_as(p) for kept, p in zip(stopping.best, params)]
    return best, stopping.best_epoch, epoch + 1


@dataclass
class _ProbeData:
    x: torch.Tensor  # (L, N, D) standardised with training statistics
    y: torch.Tensor  # (N,) class codes, or (N, K) standardised regression targets
    split: ProbeSplit
    classes: np.ndarray | None
    target_mean: torch.Tensor | None
    target_std: torch.Tensor | None

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else self.y.shape[1]


def _check(features, targets, task: str, model: str = "linear"):
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if model not in PROBE_MODELS:
        raise ValueError(f"model must be one of {PROBE_MODELS}, got {model!r}")
    features = np.asarray(features)
    targets = np.asarray(targets)
    if features.ndim != 3 or len(features) != len(targets):
        raise ValueError(f"features must be (N, L, D) with N = len(targets) = {len(targets)}, got {features.shape}")
    return features, targets


def _prepare(features, targets, task: str, model: str, split: ProbeSplit | None, seed: int, device: str,
             standardise: bool = True) -> _ProbeData:
    """Features as `(L, N, D)` float32 (standardised per layer with training statistics unless told not to) and
    targets as class codes or regression targets standardised with training statistics."""
    features, targets = _check(features, targets, task, model)
    split = split or split_indices(targets, seed=seed, stratify=task == "classification")
    x = torch.as_tensor(np.ascontiguousarray(features.transpose(1, 0, 2)), dtype=torch.float32, device=device)
    if standardise:
        train_x = x[:, split.train]
        std = train_x.std(1, keepdim=True)
        std = torch.where(std > 1e-6 * std.amax(2, keepdim=True), std, torch.ones_like(std))  # constant or padding
        x = (x - train_x.mean(1, keepdim=True)) / std
    if task == "classification":
        classes, codes = np.unique(targets, return_inverse=True)
        return _ProbeData(x, torch.as_tensor(codes.reshape(-1), device=device), split, classes, None, None)
    y = torch.as_tensor(targets.reshape(len(targets), -1), dtype=torch.float32, device=device)
    mean, std = y[split.train].mean(0), y[split.train].std(0).clamp_min(1e-12)
    return _ProbeData(x, (y - mean) / std, split, None, mean, std)


def _init_linears(shapes: list[tuple[int, int]], generator: torch.Generator, models: tuple,
                  device) -> list[torch.Tensor]:
    """Weights `(*models, out, in)` and biases `(*models, out, 1)` of a stack of `nn.Linear(in, out)` with its
    default init, U(±1/√in); every model starts from the same draw (as every SynTheory run starts from seed 0)."""
    params = []
    for fan_out, fan_in in shapes:
        bound = fan_in ** -0.5
        for shape in ((fan_out, fan_in), (fan_out, 1)):
            param = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            params.append(param.to(device).expand(*models, *shape).clone().requires_grad_())
    return params


def _mlp_shapes(dim: int, n_outputs: int, width: int | None) -> list[tuple[int, int]]:
    return [(width, dim), (n_outputs, width)] if width else [(n_outputs, dim)]


def _batched_forward(params: list[torch.Tensor], x: torch.Tensor, dropout: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(L, n, D) → (L, K, n, C) through the linear maps or MLPs `params` with weights `(L, K, out, in)`.

    Computed transposed, `W Xᵀ + b`, as `nn.Linear` stores weights `(out, in)`, with the K candidates of a layer
    stacked into one `(K·out, in)` matrix: each layer's features are read once, row-major. Dropout on the hidden
    units only when given a generator.
    """
    n_layers, n_models = params[0].shape[:2]
    weight, bias = params[0], params[1]
    hidden = torch.bmm(weight.reshape(n_layers, -1, weight.shape[-1]), x.transpose(1, 2))
    hidden = hidden.view(n_layers, n_models, weight.shape[-2], -1) + bias
    if len(params) == 2:
        return hidden.transpose(-1, -2)
    hidden = hidden.relu()
    if dropout and generator is not None:
        keep = torch.rand(hidden.shape, generator=generator).to(hidden.device) >= dropout
        hidden = hidden * keep / (1 - dropout)
    return (params[2] @ hidden + params[3]).transpose(-1, -2)


def _per_model_loss(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss of each model's outputs `(..., n, C)`: cross-entropy, or MSE (targets `(n, K)`)."""
    if task == "classification":
        lead, (n, n_classes) = outputs.shape[:-2], outputs.shape[-2:]
        flat = outputs.reshape(-1, n_classes)
        return F.cross_entropy(flat, y.repeat(flat.shape[0] // n), reduction="none").view(*lead, n).mean(-1)
    return (outputs - y).square().mean((-2, -1))


def _metrics(data: _ProbeData, outputs: torch.Tensor, task: str) -> dict[str, np.ndarray]:
    """Train/val/test metrics of outputs `(..., N, C)` of any leading model shape, as numpy arrays of that shape."""
    metrics = {}
    lead = outputs.shape[:-2]
    for name, idx in zip(SPLITS, (data.split.train, data.split.val, data.split.test)):
        idx = torch.as_tensor(idx, device=outputs.device)
        part, truth = outputs[..., idx, :], data.y[idx]
        metrics[f"{name}_loss"] = _per_model_loss(part, truth, task)
        if task == "classification":
            accuracy, macro_f1 = classification_scores(part.argmax(-1).reshape(-1, len(idx)), truth, data.n_outputs)
            metrics[f"{name}_accuracy"], metrics[f"{name}_macro_f1"] = accuracy.view(lead), macro_f1.view(lead)
        else:
            residual = (part - truth).square()
            total = (truth - truth.mean(0)).square().sum(0).clamp_min(1e-12)
            metrics[f"{name}_r2"] = (1 - residual.sum(-2) / total).mean(-1)
            metrics[f"{name}_mse"] = (residual * data.target_std.square()).mean((-2, -1))
    return {key: value.detach().cpu().numpy().astype(np.float64) for key, value in metrics.items()}


def classification_scores(predicted: torch.Tensor, truth: torch.Tensor, n_classes: int):
    """Accuracy and macro-F1 `(L,)` of per-layer predictions `(L, n)` against `truth (n,)`.

    Macro-F1 averages over classes present in the truth or the predictions (as `sklearn.metrics.f1_score`).
    """
    n_layers = predicted.shape[0]
    cells = (torch.arange(n_layers, device=truth.device)[:, None] * n_classes + truth) * n_classes + predicted
    confusion = torch.bincount(cells.reshape(-1), minlength=n_layers * n_classes ** 2).view(
        n_layers, n_classes, n_classes).double()
    true_positive = confusion.diagonal(dim1=1, dim2=2)
    marginals = confusion.sum(2) + confusion.sum(1)
    present = marginals > 0
    f1 = torch.where(present, 2 * true_positive / marginals.clamp_min(1), torch.zeros_like(marginals))
    accuracy = true_positive.sum(1) / len(truth)
    return accuracy, f1.sum(1) / present.sum(1)


# ---------------------------------------------------------------------------------------------------------------
# SynTheory's protocol


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
    features, targets = _check(features, targets, task)
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

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.m2 / self.count).sqrt()
        scale = torch.where(scale < 10 * torch.finfo(torch.float64).eps, torch.ones_like(scale), scale)
        return ((x.double() - self.mean) / scale).float()


def _syntheory_scores(outputs: torch.Tensor, y: torch.Tensor, task: str, n_outputs: int,
                      target_range: torch.Tensor | None = None):
    """Loss, primary score (accuracy or R²) and macro-F1 / MSE (target units) of outputs `(..., n, C)`."""
    lead = outputs.shape[:-2]
    loss = _per_model_loss(outputs, y, task)
    if task == "classification":
        accuracy, macro_f1 = classification_scores(outputs.argmax(-1).reshape(-1, len(y)), y, n_outputs)
        return loss, accuracy.view(lead).float(), macro_f1.view(lead).float()
    residual = (outputs - y).square()
    total = (y - y.mean(0)).square().sum(0).clamp_min(1e-12)
    return loss, (1 - residual.sum(-2) / total).mean(-1), (residual * target_range.square()).mean((-2, -1))


def _fit_syntheory_batched(features, targets, task, grid, seed, split, device, progress,
                           max_memory: float = 2e8) -> ProbeResult:
    """SynTheory's grid, batched: for each (hidden layers, batch size), all its configurations × layers in one
    model, layers chunked to keep about `max_memory` floats of weights, Adam state and activations."""
    data = _prepare_syntheory(features, targets, task, split, seed, device)
    configs = syntheory_configs(grid)
    n_layers, _, dim = data.x.shape
    records = {key: np.full((n_layers, len(configs)), np.nan) for key in
               ("val_score", "val_loss", "test_score", "test_loss", "test_extra", "best_epoch")}
    groups = {}
    for index, config in enumerate(configs):
        groups.setdefault((config["hidden_layer_sizes"], config["batch_size"]), []).append(index)
    epochs_run = 0
    bar = tqdm(total=len(groups) * n_layers, desc=f"SynTheory grid ({len(configs)} configs)", disable=not progress,
               leave=False)
    for (hidden, batch_size), indices in groups.items():
        sub = [configs[i] for i in indices]
        width = hidden[0] if hidden else data.n_outputs
        per_layer = len(sub) * (width * (dim + 1) * 4 + batch_size * (dim + width) * 3)
        chunk = max(1, int(max_memory // per_layer))
        for start in range(0, n_layers, chunk):
            layers = slice(start, min(start + chunk, n_layers))
            out, epochs = _train_syntheory_group(data, layers, sub, hidden, batch_size, task, seed)
            for key, values in out.items():
                records[key][layers, indices] = values
            epochs_run = max(epochs_run, epochs)
            bar.update(layers.stop - layers.start)
    bar.close()
    return _syntheory_result(data, task, configs, records, epochs_run)


def _train_syntheory_group(data: _SynTheoryData, layers: slice, configs: list[dict], hidden: tuple,
                           batch_size: int, task: str, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Train every configuration (same hidden layers and batch size) on `layers` at once; SynTheory's loop.

    As in SynTheory, where every run seeds its generators with the same seed, all models share their initial
    weights, their mini-batches and the uniform numbers behind their dropout masks (thresholded at their own p).
    Models are indexed (layer, standardise, dropout, lr × L2).
    """
    x = data.x[layers]
    n_layers, _, dim = x.shape
    device = x.device
    stds = sorted({c["data_standardization"] for c in configs})
    dropouts = sorted({c["dropout_p"] for c in configs})
    rates = sorted({(c["learning_rate"], c["l2_weight_decay"] or 0.0) for c in configs})
    shape = (n_layers, len(stds), len(dropouts), len(rates))
    generator = torch.Generator().manual_seed(seed)
    width = hidden[0] if hidden else None
    params = _init_linears(_mlp_shapes(dim, data.n_outputs, width), generator, shape, device)
    lr = torch.tensor([r[0] for r in rates], device=device).view(1, 1, 1, -1)
    l2 = torch.tensor([r[1] for r in rates], device=device).view(1, 1, 1, -1)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    drop = torch.tensor(dropouts, device=device)

    x_train, y_train = x[:, data.split.train], data.y[data.split.train]
    evaluation = {"val": (x[:, data.split.val], data.y[data.split.val]),
                  "test": (x[:, data.split.test], data.y[data.split.test])}
    n_train = len(data.split.train)
    scaler = _RunningScaler(n_layers, dim, device)
    best_score = torch.full(shape, -float("inf"), device=device)
    best = {key: torch.full(shape, float("nan"), device=device) for key in
            ("val_loss", "test_score", "test_loss", "test_extra", "best_epoch")}
    boredom = torch.zeros(shape, dtype=torch.long, device=device)
    active = torch.ones(shape, dtype=torch.bool, device=device)

    def inputs(features: torch.Tensor) -> torch.Tensor:  # (L, n, D) → (L, S, n, D): raw and/or standardised
        return torch.stack([scaler.transform(features) if s else features for s in stds], dim=1)

    step = 0
    while step * batch_size / n_train <= SYNTHEORY_MAX_EPOCHS:
        if step % SYNTHEORY_EVAL_EVERY == 0:
            active &= boredom < SYNTHEORY_BOREDOM
            if not active.any():
                break
            if scaler.count == 0:  # SynTheory's first evaluation fits the unfitted scaler on the validation set
                scaler.partial_fit(evaluation["val"][0])
            with torch.no_grad():
                scores = {}
                for name, (features, truth) in evaluation.items():
                    outputs = _syntheory_forward(params, inputs(features)[:, :, None], width)
                    scores[name] = _syntheory_scores(outputs, truth, task, data.n_outputs, data.target_range)
            improved = active & (scores["val"][1] > best_score)
            best_score = torch.where(improved, scores["val"][1], best_score)
            for key, value in (("val_loss", scores["val"][0]), ("test_loss", scores["test"][0]),
                               ("test_score", scores["test"][1]), ("test_extra", scores["test"][2])):
                best[key] = torch.where(improved, value, best[key])
            best["best_epoch"] = torch.where(improved, float(step * batch_size // n_train), best["best_epoch"])
            boredom = torch.where(improved, 0, boredom + active.long())
        batch = torch.randperm(n_train, generator=generator)[:batch_size].to(device)  # random.sample
        features = x_train[:, batch]
        scaler.partial_fit(features)
        uniform = torch.rand(features.shape[1:], generator=generator).to(device)  # (b, D), shared by all models
        keep = (uniform >= drop[:, None, None]) / (1 - drop[:, None, None])  # (P, b, D)
        masked = inputs(features)[:, :, None] * keep  # (L, S, P, b, D)
        hidden_uniform = torch.rand((features.shape[1], width), generator=generator).to(device) if width else None
        outputs = _syntheory_forward(params, masked, width, drop, hidden_uniform)
        loss = _per_model_loss(outputs, y_train[batch], task)
        grads = torch.autograd.grad(loss.sum(), params)
        with torch.no_grad():
            _adam_step(params, grads, moments, step + 1, lr, l2, active)
        step += 1
    result = {"val_score": best_score, **best}
    positions = [(stds.index(c["data_standardization"]) * len(dropouts) + dropouts.index(c["dropout_p"]))
                 * len(rates) + rates.index((c["learning_rate"], c["l2_weight_decay"] or 0.0)) for c in configs]
    return {key: value.reshape(n_layers, -1)[:, positions].cpu().numpy() for key, value in result.items()}, \
        int(step * batch_size // n_train)


def _syntheory_forward(params: list[torch.Tensor], x: torch.Tensor, width: int | None, dropout=None,
                       hidden_uniform=None) -> torch.Tensor:
    """SimpleMLP outputs `(L, S, P, R, n, C)` of inputs `(L, S, P or 1, n, D)` (already dropped out).

    Computed transposed, `W Xᵀ`, with the R models that share an input stacked into one `(R·out, D)` matrix: each
    input is read once and every gradient comes out contiguous. Hidden dropout thresholds the shared
    `hidden_uniform` `(n, H)` at each model's p.
    """
    weight, bias = params[0], params[1]
    n_layers, n_std, n_drop, n_rates, out, dim = weight.shape
    n = x.shape[-2]
    x = x.expand(n_layers, n_std, n_drop, n, dim).reshape(-1, n, dim)
    first = torch.bmm(weight.view(-1, n_rates * out, dim), x.transpose(1, 2))  # (L·S·P, R·out, n)
    first = first.view(n_layers, n_std, n_drop, n_rates, out, n) + bias
    if not width:
        return first.transpose(-1, -2)
    hidden = first.relu()
    if hidden_uniform is not None:
        keep = (hidden_uniform.T >= dropout[:, None, None]) / (1 - dropout[:, None, None])  # (P, H, n)
        hidden = hidden * keep[None, None, :, None]
    return (params[2] @ hidden + params[3]).transpose(-1, -2)


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
                                   "val_loss": records["val_loss"], "test_score": records["test_score"]})


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
    records = {key: np.full((n_layers, len(configs)), np.nan) for key in
               ("val_score", "val_loss", "test_score", "test_loss", "test_extra", "best_epoch")}
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
        shapes = _mlp_shapes(dim, n_outputs, width)
        self.linears = torch.nn.ModuleList(torch.nn.Linear(fan_in, fan_out) for fan_out, fan_in in shapes)
        params = _init_linears(shapes, generator, (), "cpu")  # the batched run's initial draw
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
        loss = _per_model_loss(probe(features, input_uniform, hidden_uniform)[None], y_train[batch], task).sum()
        loss.backward()
        optimizer.step()
        step += 1
    return best, step * batch_size // n_train


__all__ = ["FAST_WEIGHT_DECAYS", "PROTOCOLS", "ProbeResult", "ProbeSplit", "SYNTHEORY_GRID",
           "classification_scores", "fit_layer_probes", "fit_probe_per_layer_sequential", "split_indices",
           "syntheory_configs"]
