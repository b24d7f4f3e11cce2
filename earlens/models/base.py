"""The backbone interface, which the loaders (`backbones`, `tokenizers`, `pretrained/`) implement and
`earlens.probing.features` reads.

A `Backbone` is a frozen model (eval mode, no gradients) mapping waves `(B, T)` at `sample_rate` to one `(B, T_l, D_l)`
tensor per selected layer; it exposes `name`, `sample_rate`, `layer_names` (the selected layers, in output order),
`weights_id` (a fingerprint of the weights, for cache keys) and `to(device)`. `HookBackbone` reads any `nn.Module` out
at named submodules through forward hooks. `select_layers`, `freeze_module` and `weights_fingerprint` are what every
backbone builds on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def weights_fingerprint(module: nn.Module) -> str:
    """Short hash of a module's parameter names, shapes and a sample of their values (cheap for big models)."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:1024], flat[-1024:]]).float().cpu().numpy()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.tobytes())
        digest.update(np.float64(flat.double().sum().item()).tobytes())
    return digest.hexdigest()[:16]


def select_layers(all_names: list[str], layers: Sequence[str | int] | None) -> list[int]:
    """Indices of the requested layers (names or positions) in `all_names`; all when `layers` is None."""
    if layers is None:
        return list(range(len(all_names)))
    unknown = [layer for layer in layers if not isinstance(layer, int) and layer not in all_names]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; this backbone has {all_names}")
    return [layer if isinstance(layer, int) else all_names.index(layer) for layer in layers]


def freeze_module(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


class Backbone:
    """A frozen model mapping waves `(B, T)` at `sample_rate` to one `(B, T_l, D_l)` tensor per selected layer."""

    name: str
    sample_rate: int
    layer_names: list[str]
    weights_id: str
    module: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters(), torch.empty(0)).device

    def to(self, device: str | torch.device) -> Backbone:
        self.module.to(device)
        return self

    def __call__(self, waves: torch.Tensor) -> list[torch.Tensor]:
        if waves.ndim != 2:
            raise ValueError(f"{self.name}: expected waves (B, T), got shape {tuple(waves.shape)}")
        with torch.no_grad():
            return self.forward(waves.to(self.device, torch.float32))

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.sample_rate} Hz, layers={self.layer_names})"


def _to_time_major(output, channels_first: bool) -> torch.Tensor:
    """A hooked module's output as `(B, T, D)`: first tensor of a tuple/ModelOutput; `(B, D)` gets T = 1."""
    if not torch.is_tensor(output):
        output = next(item for item in (output.values() if isinstance(output, dict) else output)
                      if torch.is_tensor(item))
    if output.ndim == 2:
        return output[:, None]
    if output.ndim != 3:
        raise ValueError(f"hooked output has shape {tuple(output.shape)}; expected (B, D) or (B, T, D)")
    return output.transpose(1, 2) if channels_first else output


class HookBackbone(Backbone):
    """Any `nn.Module` read out at named submodules through forward hooks.

    `forward(module, waves)` runs the model (default `module(waves)`); `channels_first` says hooked outputs
    are `(B, D, T)` (convolutions) rather than `(B, T, D)`.
    """

    def __init__(self, module: nn.Module, layer_names: Sequence[str], sample_rate: int, name: str = "module",
                 forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
                 channels_first: bool = False, weights_id: str | None = None):
        self.module = freeze_module(module)
        self.layer_names = list(layer_names)
        self.submodules = [module.get_submodule(layer) for layer in self.layer_names]
        self.sample_rate = int(sample_rate)
        self.name = name
        self.run = forward or (lambda model, waves: model(waves))
        self.channels_first = channels_first
        self.weights_id = weights_id or f"{name}:{weights_fingerprint(module)}"

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        captured: dict[int, torch.Tensor] = {}
        handles = [sub.register_forward_hook(lambda _m, _i, out, index=index: captured.__setitem__(index, out))
                   for index, sub in enumerate(self.submodules)]
        try:
            self.run(self.module, waves)
        finally:
            for handle in handles:
                handle.remove()
        return [_to_time_major(captured[index], self.channels_first) for index in range(len(self.submodules))]
