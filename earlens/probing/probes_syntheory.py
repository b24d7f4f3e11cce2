"""SynTheory's probe protocol, `fit_layer_probes(protocol="syntheory")` (described in `earlens.probing.probes`): the
Jukemir grid `SYNTHEORY_GRID` trained batched over configurations × layers, and SynTheory's own loop, one
`nn.Module` per configuration × layer (`fit_probe_per_layer_sequential`), the reference and benchmark baseline."""

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

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.m2 / self.count).sqrt()
        scale = torch.where(scale < 10 * torch.finfo(torch.float64).eps, torch.ones_like(scale), scale)
        return ((x.double() - self.mean) / scale).float()


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


def fit_syntheory_grid(features, targets, task, grid, seed, split, device, progress,
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
    params = init_linears(mlp_shapes(dim, data.n_outputs, width), generator, shape, device)
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
        loss = per_model_loss(outputs, y_train[batch], task)
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
    return best, step * batch_size // n_train


__all__ = ["SYNTHEORY_GRID", "fit_probe_per_layer_sequential", "syntheory_configs"]
