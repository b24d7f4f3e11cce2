"""Layer-wise probes of frozen features, every layer (and every hyper-parameter candidate) trained at once.

Two protocols, both choosing hyper-parameters and the best layer on validation only:

- `"fast"` (default): one linear map per layer × weight decay, `W (L, K, C, D)`, solved full-batch by a batched
  L-BFGS (or one MLP per layer × weight decay trained by Adam), with per-model early stopping on validation
  loss; each layer keeps the weight decay of its best validation score. Layers and candidates never interact, so
  each gets the probe it would get alone.
- `"syntheory"`: SynTheory's protocol (Wei et al. 2024, brown-palm/syntheory `probe/`, adapted from Jukemir):
  every configuration of the Jukemir grid `earlens.probing.probes_syntheory.SYNTHEORY_GRID` (input standardisation,
  hidden layers [] or [512], batch 64/256, Adam lr, dropout, L2) is trained with Adam on random mini-batches for up to
  100 epochs, evaluated on validation every 8 steps and stopped after 256 evaluations without a better validation score;
  each layer reports the test score of its configuration with the best validation score. All configurations of one
  architecture and batch size are trained together as one batched model (`earlens.probing.probes_syntheory`, where
  `fit_probe_per_layer_sequential` runs the same protocol one `nn.Module` per configuration × layer, SynTheory's way:
  the reference and benchmark baseline).

Features come as the feature cache stores them, `(N, L, D)`; targets are class labels (any dtype) or, with
`task="regression"`, floats `(N,)` or `(N, K)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import trange

from earlens.probing.probes_common import (
    SPLITS,
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
from earlens.probing.probes_syntheory import fit_syntheory_grid

PROTOCOLS = ("fast", "syntheory")
FAST_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)


def fit_layer_probes(features, targets, *, task: str = "classification", protocol: str = "fast",
                     model: str = "linear", hidden_size: int = 512, dropout: float = 0.0, lr: float = 1e-2,
                     weight_decay: float | list[float] = FAST_WEIGHT_DECAYS, max_epochs: int = 500,
                     patience: int = 30, min_delta: float = 1e-4, batch_size: int | None = None,
                     grid: dict | None = None, search: str = "grid", seed: int = 0, split: ProbeSplit | None = None,
                     device: str = "cpu", progress: bool = True) -> ProbeResult:
    """Train probes on every layer at once; return per-layer train/val/test metrics of the validation choice.

    `protocol="fast"`: every probe minimises its mean training loss + `weight_decay`/2 · |weights|² (biases
    unpenalised), for every weight decay of the grid `weight_decay` (a number or a list) at once. Linear probes (a
    convex problem) are solved full-batch by L-BFGS run per model in lock-step: an epoch is one pass over the
    training set (`lr` and `batch_size` are not used). MLP probes are trained by Adam (`lr`), full-batch
    (`batch_size=None`) or on shuffled mini-batches shared by all models. Each model keeps the weights of its
    lowest validation loss and stops after `patience` epochs without lowering it by `min_delta` (a linear probe
    also stops once L-BFGS has converged); each layer then keeps the weight decay with the best validation score.

    `protocol="syntheory"`: SynTheory's grid search (module docstring) over `grid` (default
    `earlens.probing.probes_syntheory.SYNTHEORY_GRID`; a dict overriding some of its entries gives a reduced grid),
    every configuration trained to the end (`search="grid"`, SynTheory's way) or by successive halving
    (`search="halving"`: fewer configuration-epochs, `earlens.probing.probes_syntheory.fit_syntheory_grid`);
    `model`, `hidden_size`, `dropout`, `lr`, `weight_decay`, `max_epochs`, `patience`, `min_delta` and `batch_size` are
    not used.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "syntheory":
        return fit_syntheory_grid(features, targets, task, grid, seed, split, device, progress, search=search)
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
        loss = per_model_loss(logits, y_train, task).reshape(n_models)
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
            val_loss = per_model_loss(_batched_forward(layered(params), x_val), y_val, task).reshape(n_models)
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
    params = init_linears(mlp_shapes(dim, data.n_outputs, hidden_size), generator, (n_layers, n_wd),
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
            (per_model_loss(outputs, y_train[batch], task).sum() + penalty).backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = per_model_loss(_batched_forward(params, x_val), y_val, task).reshape(-1)
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


def _prepare(features, targets, task: str, model: str, split: ProbeSplit | None, seed: int, device: str,
             standardise: bool = True) -> _ProbeData:
    """Features as `(L, N, D)` float32 (standardised per layer with training statistics unless told not to) and
    targets as class codes or regression targets standardised with training statistics."""
    features, targets = check_probe_inputs(features, targets, task, model)
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


def _metrics(data: _ProbeData, outputs: torch.Tensor, task: str) -> dict[str, np.ndarray]:
    """Train/val/test metrics of outputs `(..., N, C)` of any leading model shape, as numpy arrays of that shape."""
    metrics = {}
    lead = outputs.shape[:-2]
    for name, idx in zip(SPLITS, (data.split.train, data.split.val, data.split.test)):
        idx = torch.as_tensor(idx, device=outputs.device)
        part, truth = outputs[..., idx, :], data.y[idx]
        metrics[f"{name}_loss"] = per_model_loss(part, truth, task)
        if task == "classification":
            accuracy, macro_f1 = classification_scores(part.argmax(-1).reshape(-1, len(idx)), truth, data.n_outputs)
            metrics[f"{name}_accuracy"], metrics[f"{name}_macro_f1"] = accuracy.view(lead), macro_f1.view(lead)
        else:
            residual = (part - truth).square()
            total = (truth - truth.mean(0)).square().sum(0).clamp_min(1e-12)
            metrics[f"{name}_r2"] = (1 - residual.sum(-2) / total).mean(-1)
            metrics[f"{name}_mse"] = (residual * data.target_std.square()).mean((-2, -1))
    return {key: value.detach().cpu().numpy().astype(np.float64) for key, value in metrics.items()}


__all__ = ["FAST_WEIGHT_DECAYS", "PROTOCOLS", "fit_layer_probes"]
