"""Layer-wise probes of frozen features: every layer's probe is trained at once as one batched map.

`fit_layer_probes` holds one linear map `W (L, C, D)` (or one MLP per layer, hidden 512 as in SynTheory)
and trains all layers in a single loop with batched matrix products; layers never interact (per-layer
losses over disjoint parameters; L-BFGS keeps per-layer memories and step sizes, Adam is per-parameter),
so each layer gets the probe it would get alone, with per-layer early stopping on its validation loss.
`fit_probe_per_layer_sequential` is the SynTheory/MARBLE protocol (one `nn.Module` probe per layer,
mini-batches of 64, run layer after layer), kept as the reference and benchmark baseline.

Features come as the feature cache stores them, `(N, L, D)`; targets are class labels (any dtype) or, with
`task="regression"`, floats `(N,)` or `(N, K)`. Inputs are standardised per layer with training statistics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import trange

TASKS = ("classification", "regression")
PROBE_MODELS = ("linear", "mlp")
SPLITS = ("train", "val", "test")


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
    `best_epoch[l]` is the epoch whose weights layer l kept (lowest validation loss).
    """

    task: str
    model: str
    metrics: dict[str, np.ndarray]
    best_epoch: np.ndarray
    split: ProbeSplit
    classes: np.ndarray | None
    epochs_run: int

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
        score, loss = self.metrics[f"val_{self.score_name}"], self.metrics["val_loss"]
        order = np.lexsort((np.arange(self.n_layers), loss, -score))
        return int(order[0])

    def rows(self, layer_names: list[str] | None = None) -> list[dict]:
        """One dict per layer (for CSV/JSON tables and loggers)."""
        names = layer_names or [str(layer) for layer in range(self.n_layers)]
        return [
            {"layer": layer, "layer_name": names[layer], "best_epoch": int(self.best_epoch[layer]),
             **{key: float(values[layer]) for key, values in self.metrics.items()}}
            for layer in range(self.n_layers)
        ]


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


def fit_layer_probes(features, targets, *, task: str = "classification", model: str = "linear",
                     hidden_size: int = 512, dropout: float = 0.0, lr: float = 1e-2, weight_decay: float = 1e-4,
                     max_epochs: int = 500, patience: int = 30, min_delta: float = 1e-4,
                     batch_size: int | None = None, seed: int = 0, split: ProbeSplit | None = None,
                     device: str = "cpu", progress: bool = True) -> ProbeResult:
    """Train one probe per layer, all layers at once; return per-layer train/val/test metrics.

    Every probe minimises its mean training loss + `weight_decay`/2 · |weights|² (biases unpenalised).
    Linear probes (a convex problem) are solved full-batch by L-BFGS run per layer in lock-step: an epoch
    is one pass over the training set (`lr` and `batch_size` are not used). MLP probes are trained by Adam
    (`lr`), full-batch (`batch_size=None`) or on shuffled mini-batches shared by all layers.
    Each layer keeps the weights of its lowest validation loss and stops after `patience` epochs without
    lowering it by `min_delta` (a linear probe also stops once L-BFGS has converged, as its weights can no
    longer change); the loop ends when every layer has stopped.
    """
    data = _prepare(features, targets, task, model, split, seed, device)
    if model == "linear":
        fit = _fit_linear_lbfgs(data, task, weight_decay, max_epochs, patience, min_delta, progress)
    else:
        fit = _fit_mlp_adam(data, task, hidden_size, dropout, lr, weight_decay, max_epochs, patience, min_delta,
                            batch_size, seed, progress)
    params, best_epoch, epochs_run = fit
    with torch.no_grad():
        outputs = _batched_forward(params, data.x)
    return _result(data, outputs, task, model, best_epoch.cpu().numpy(), epochs_run)


class _EarlyStopping:
    """Per-layer early stopping on validation loss, as a mask: keeps each layer's best weights and epoch."""

    def __init__(self, params: list[torch.Tensor], patience: int, min_delta: float):
        self.best = [p.detach().clone() for p in params]
        n_layers, device = params[0].shape[0], params[0].device
        self.best_loss = torch.full((n_layers,), float("inf"), device=device)
        self.best_epoch = torch.zeros(n_layers, dtype=torch.long, device=device)
        self.active = torch.ones(n_layers, dtype=torch.bool, device=device)
        self.patience, self.min_delta = patience, min_delta

    def update(self, epoch: int, val_loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        improved = self.active & (val_loss < self.best_loss - self.min_delta)
        for kept, param in zip(self.best, params):
            kept[improved] = param.detach()[improved]
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.active &= (epoch - self.best_epoch) < self.patience


def _fit_linear_lbfgs(data: _ProbeData, task: str, weight_decay: float, max_epochs: int, patience: int,
                      min_delta: float, progress: bool, history: int = 10, tolerance: float = 1e-6):
    """Batched L-BFGS: each layer runs its own two-loop recursion and Armijo backtracking, vectorised over layers.

    The weights are kept as `(L, C, D)` so that both products of an epoch read the features row-major
    (`W Xᵀ` and `Gᵀ X`), twice as fast on CPU as `X W` and `Xᵀ G`. A layer has converged when an epoch
    lowers its objective by less than `tolerance` · (1 + objective).
    """
    x_train, y_train = data.x[:, data.split.train], data.y[data.split.train]
    x_val, y_val = data.x[:, data.split.val], data.y[data.split.val]
    n_layers, _, dim = data.x.shape

    def objective(weight, bias):
        logits = _batched_forward([weight, bias], x_train).requires_grad_()
        loss = _per_layer_loss(logits, y_train, task)
        (grad_logits,) = torch.autograd.grad(loss.sum(), logits)
        grad_logits = grad_logits.transpose(1, 2)
        loss = loss + weight_decay / 2 * weight.square().sum((1, 2))
        return loss, (torch.bmm(grad_logits, x_train) + weight_decay * weight, grad_logits.sum(2, keepdim=True))

    def dot(a, b):
        return sum((u * v).sum((1, 2)) for u, v in zip(a, b))

    def scaled(tensors, factor):
        return [t * factor[:, None, None] for t in tensors]

    params = [torch.zeros(n_layers, data.n_outputs, dim, device=data.x.device),
              torch.zeros(n_layers, data.n_outputs, 1, device=data.x.device)]
    loss, grad = objective(*params)
    stopping = _EarlyStopping(params, patience, min_delta)
    steps, slopes = [], []  # L-BFGS memory: (s, y) pairs and 1 / (s·y), zero for pairs without curvature
    scale = 1 / dot(grad, grad).sqrt().clamp_min(1e-12)  # first step: unit length along the gradient
    epochs = trange(max_epochs, desc=f"linear probes x{n_layers} layers (L-BFGS)", disable=not progress, leave=False)
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
        step_size = torch.ones(n_layers, device=data.x.device)
        for _ in range(30):  # Armijo backtracking per layer
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
            val_loss = _per_layer_loss(_batched_forward(params, x_val), y_val, task)
        stopping.update(epoch, val_loss, params)
        stopping.active &= ~converged
        epochs.set_postfix(active=int(stopping.active.sum()), val_loss=float(stopping.best_loss.mean()),
                           refresh=False)
        if not stopping.active.any():
            break
    return stopping.best, stopping.best_epoch, epoch + 1


def _fit_mlp_adam(data: _ProbeData, task: str, hidden_size: int, dropout: float, lr: float, weight_decay: float,
                  max_epochs: int, patience: int, min_delta: float, batch_size: int | None, seed: int,
                  progress: bool):
    n_layers, _, dim = data.x.shape
    generator = torch.Generator().manual_seed(seed)
    params = _init_batched_params(n_layers, dim, data.n_outputs, hidden_size, generator, data.x.device)
    optimizer = torch.optim.Adam([{"params": params[0::2], "weight_decay": weight_decay},
                                  {"params": params[1::2], "weight_decay": 0.0}], lr=lr)
    stopping = _EarlyStopping(params, patience, min_delta)
    x_train, y_train = data.x[:, data.split.train], data.y[data.split.train]
    x_val, y_val = data.x[:, data.split.val], data.y[data.split.val]
    n_train = len(data.split.train)
    step = batch_size or n_train
    epochs = trange(max_epochs, desc=f"mlp probes x{n_layers} layers", disable=not progress, leave=False)
    for epoch in epochs:
        order = torch.randperm(n_train, generator=generator).to(data.x.device)
        for start in range(0, n_train, step):
            batch = order[start:start + step] if step < n_train else slice(None)
            optimizer.zero_grad(set_to_none=True)
            outputs = _batched_forward(params, x_train[:, batch], dropout, generator)
            _per_layer_loss(outputs, y_train[batch], task).sum().backward()
            optimizer.step()
        with torch.no_grad():
            stopping.update(epoch, _per_layer_loss(_batched_forward(params, x_val), y_val, task), params)
        epochs.set_postfix(active=int(stopping.active.sum()), val_loss=float(stopping.best_loss.mean()),
                           refresh=False)
        if not stopping.active.any():
            break
    return stopping.best, stopping.best_epoch, epoch + 1


def fit_probe_per_layer_sequential(features, targets, *, task: str = "classification", model: str = "linear",
                                   hidden_size: int = 512, dropout: float = 0.0, lr: float = 1e-3,
                                   weight_decay: float = 1e-4, max_epochs: int = 500, patience: int = 30,
                                   min_delta: float = 1e-4, batch_size: int | None = 64, seed: int = 0,
                                   split: ProbeSplit | None = None, device: str = "cpu",
                                   progress: bool = True) -> ProbeResult:
    """The SynTheory/MARBLE protocol: an `nn.Linear` (or MLP) probe per layer, trained layer after layer.

    Adam on mini-batches of `batch_size`; the same objective (weight decay on weights, not biases), early
    stopping and metrics as `fit_layer_probes`. Only the benchmark and tests use it.
    """
    data = _prepare(features, targets, task, model, split, seed, device)
    n_layers, _, dim = data.x.shape
    n_train = len(data.split.train)
    step = batch_size or n_train
    outputs, best_epochs, epochs_run = [], [], 0
    for layer in trange(n_layers, desc=f"{model} probe per layer", disable=not progress, leave=False):
        torch.manual_seed(seed)
        if model == "linear":
            net = torch.nn.Linear(dim, data.n_outputs)
        else:
            net = torch.nn.Sequential(torch.nn.Linear(dim, hidden_size), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                                      torch.nn.Linear(hidden_size, data.n_outputs))
        net = net.to(data.x.device)
        weights = [param for name, param in net.named_parameters() if name.endswith("weight")]
        biases = [param for name, param in net.named_parameters() if name.endswith("bias")]
        optimizer = torch.optim.Adam([{"params": weights, "weight_decay": weight_decay},
                                      {"params": biases, "weight_decay": 0.0}], lr=lr)
        x_train, y_train = data.x[layer, data.split.train], data.y[data.split.train]
        x_val, y_val = data.x[layer, data.split.val], data.y[data.split.val]
        best_state, best_loss, best_epoch = copy.deepcopy(net.state_dict()), float("inf"), 0
        for epoch in range(max_epochs):
            net.train()
            for batch in torch.randperm(n_train, device=data.x.device).split(step):
                optimizer.zero_grad(set_to_none=True)
                _per_layer_loss(net(x_train[batch])[None], y_train[batch], task).sum().backward()
                optimizer.step()
            net.eval()
            with torch.no_grad():
                val_loss = float(_per_layer_loss(net(x_val)[None], y_val, task)[0])
            if val_loss < best_loss - min_delta:
                best_state, best_loss, best_epoch = copy.deepcopy(net.state_dict()), val_loss, epoch
            elif epoch - best_epoch >= patience:
                break
        epochs_run = max(epochs_run, epoch + 1)
        net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():
            outputs.append(net(data.x[layer]))
        best_epochs.append(best_epoch)
    return _result(data, torch.stack(outputs), task, model, np.array(best_epochs), epochs_run)


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


def _prepare(features, targets, task: str, model: str, split: ProbeSplit | None, seed: int, device: str) -> _ProbeData:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if model not in PROBE_MODELS:
        raise ValueError(f"model must be one of {PROBE_MODELS}, got {model!r}")
    features = np.asarray(features)
    targets = np.asarray(targets)
    if features.ndim != 3 or len(features) != len(targets):
        raise ValueError(f"features must be (N, L, D) with N = len(targets) = {len(targets)}, got {features.shape}")
    split = split or split_indices(targets, seed=seed, stratify=task == "classification")
    x = torch.as_tensor(np.ascontiguousarray(features.transpose(1, 0, 2)), dtype=torch.float32, device=device)
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


def _init_batched_params(n_layers: int, dim: int, n_outputs: int, hidden_size: int, generator: torch.Generator,
                         device) -> list[torch.Tensor]:
    """MLP probes with `nn.Linear`'s default init, U(±1/√fan_in): weights `(L, out, in)`, biases `(L, out, 1)`."""
    params = []
    for fan_in, fan_out in ((dim, hidden_size), (hidden_size, n_outputs)):
        bound = fan_in ** -0.5
        for shape in ((n_layers, fan_out, fan_in), (n_layers, fan_out, 1)):
            param = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            params.append(param.to(device).requires_grad_())
    return params


def _batched_forward(params: list[torch.Tensor], x: torch.Tensor, dropout: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(L, n, D) → (L, n, C) through each layer's own linear map or MLP (dropout only when given a generator).

    Computed transposed, `W Xᵀ + b`, as `nn.Linear` stores weights `(out, in)`: the features are read row-major.
    """
    hidden = torch.baddbmm(params[1], params[0], x.transpose(1, 2))
    if len(params) == 2:
        return hidden.transpose(1, 2)
    hidden = hidden.relu()
    if dropout and generator is not None:
        keep = torch.rand(hidden.shape, generator=generator).to(hidden.device) >= dropout
        hidden = hidden * keep / (1 - dropout)
    return torch.baddbmm(params[3], params[2], hidden).transpose(1, 2)


def _per_layer_loss(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss of each layer's outputs `(L, n, C)`: cross-entropy, or MSE on standardised targets."""
    if task == "classification":
        n_layers, n, n_classes = outputs.shape
        return F.cross_entropy(outputs.reshape(-1, n_classes), y.repeat(n_layers), reduction="none").view(
            n_layers, n).mean(1)
    return (outputs - y).square().mean((1, 2))


def _result(data: _ProbeData, outputs: torch.Tensor, task: str, model: str, best_epoch: np.ndarray,
            epochs_run: int) -> ProbeResult:
    metrics = {}
    for name, idx in zip(SPLITS, (data.split.train, data.split.val, data.split.test)):
        idx = torch.as_tensor(idx, device=outputs.device)
        part, truth = outputs[:, idx], data.y[idx]
        metrics[f"{name}_loss"] = _per_layer_loss(part, truth, task)
        if task == "classification":
            accuracy, macro_f1 = classification_scores(part.argmax(-1), truth, data.n_outputs)
            metrics[f"{name}_accuracy"], metrics[f"{name}_macro_f1"] = accuracy, macro_f1
        else:
            residual = (part - truth).square()
            total = (truth - truth.mean(0)).square().sum(0).clamp_min(1e-12)
            metrics[f"{name}_r2"] = (1 - residual.sum(1) / total).mean(-1)
            metrics[f"{name}_mse"] = (residual * data.target_std.square()).mean((1, 2))
    metrics = {key: value.detach().cpu().numpy().astype(np.float64) for key, value in metrics.items()}
    return ProbeResult(task, model, metrics, best_epoch, data.split, data.classes, epochs_run)


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


__all__ = ["ProbeResult", "ProbeSplit", "classification_scores", "fit_layer_probes",
           "fit_probe_per_layer_sequential", "split_indices"]
