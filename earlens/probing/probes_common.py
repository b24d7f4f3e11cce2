"""What both probe protocols (`earlens.probing.probes`, `earlens.probing.probes_syntheory`) share: the train /
validation / test split (`split_indices`, SynTheory's `extrapolation_split`), the per-layer `ProbeResult` and the choice
on validation (`select_on_validation`), and the batched pieces both train with (input checks, `nn.Linear`'s
init, the per-model loss, accuracy and macro-F1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

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

def check_probe_inputs(features, targets, task: str, model: str = "linear"):
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if model not in PROBE_MODELS:
        raise ValueError(f"model must be one of {PROBE_MODELS}, got {model!r}")
    features = np.asarray(features)
    targets = np.asarray(targets)
    if features.ndim != 3 or len(features) != len(targets):
        raise ValueError(f"features must be (N, L, D) with N = len(targets) = {len(targets)}, got {features.shape}")
    return features, targets


def init_linears(shapes: list[tuple[int, int]], generator: torch.Generator, models: tuple,
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


def mlp_shapes(dim: int, n_outputs: int, width: int | None) -> list[tuple[int, int]]:
    return [(width, dim), (n_outputs, width)] if width else [(n_outputs, dim)]


def per_model_loss(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss of each model's outputs `(..., n, C)`: cross-entropy, or MSE (targets `(n, K)`)."""
    if task == "classification":
        lead, (n, n_classes) = outputs.shape[:-2], outputs.shape[-2:]
        flat = outputs.reshape(-1, n_classes)
        return F.cross_entropy(flat, y.repeat(flat.shape[0] // n), reduction="none").view(*lead, n).mean(-1)
    return (outputs - y).square().mean((-2, -1))


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

