"""What the stimulus-driven callbacks (helicality, partials) share: the model's input rate and hooked layer outputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch


def first_tensor(output) -> torch.Tensor:
    """The tensor a hooked module produced (the first one of a tuple/list, e.g. RNN or attention outputs)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"a hooked layer must output a tensor, got {type(output).__name__}")


def model_sample_rate(given: int | None, trainer: pl.Trainer, pl_module: pl.LightningModule, who: str) -> int:
    """`given`, else the module's, its frontend's or the datamodule's `sample_rate`."""
    for rate in (given, getattr(pl_module, "sample_rate", None),
                 getattr(getattr(pl_module, "frontend", None), "sample_rate", None),
                 getattr(getattr(trainer, "datamodule", None), "sample_rate", None)):
        if rate:
            return int(rate)
    raise ValueError(f"{who}: set sample_rate= (the model, its frontend and the datamodule have none)")


@torch.no_grad()
def capture_layers(pl_module: pl.LightningModule, layers: list[str], waves: np.ndarray, batch_size: int,
                   input_fn: str | None, transform: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Run `waves` through the model in eval mode (batches of `batch_size`, via `input_fn` or the module itself) and
    return, per layer, `transform(output)` of every batch concatenated; the training mode is restored after."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook_for(name):
        def hook(module, inputs, output):
            captured[name].append(transform(first_tensor(output).float()))
        return hook

    handles = [pl_module.get_submodule(name).register_forward_hook(hook_for(name)) for name in layers]
    forward = getattr(pl_module, input_fn) if input_fn else pl_module
    was_training = pl_module.training
    pl_module.eval()
    try:
        for start in range(0, len(waves), batch_size):
            forward(torch.as_tensor(np.asarray(waves[start:start + batch_size]), device=pl_module.device))
    finally:
        for handle in handles:
            handle.remove()
        pl_module.train(was_training)
    return [torch.cat(captured[name]) for name in layers]
