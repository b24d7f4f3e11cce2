"""Keras functional models saved as HDF5 (`model.save("x.h5")`, Keras 2) run in torch without TensorFlow: the
graph is read from the file's `model_config` JSON, the weights from its `model_weights` group (h5py), and every
layer's output can be returned. Only the layer types tempo-cnn's models use are supported; another type raises
an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

KERAS_ACTIVATIONS = {"linear": lambda x: x, "relu": torch.relu, "elu": nn.functional.elu,
                     "softmax": lambda x: torch.softmax(x, -1), "sigmoid": torch.sigmoid}
KERAS_LAYER_TYPES = ("InputLayer", "BatchNormalization", "Conv2D", "Dense", "Concatenate", "AveragePooling2D",
                     "MaxPooling2D", "GlobalAveragePooling2D", "Activation", "Flatten", "Dropout")


class KerasGraph(nn.Module):
    """A Keras functional model (channels-last tensors, as in Keras) whose `forward(x, names)` returns the outputs
    of the named layers; `layers` lists `(name, type, config, inbound names)` in the file's (topological) order."""

    def __init__(self, path: Path):
        super().__init__()
        import h5py

        if not h5py.is_hdf5(path):
            raise ValueError(f"{path}: not an HDF5 file (a Keras .h5 model)")
        with h5py.File(path, "r") as file:
            if "model_config" not in file.attrs or "model_weights" not in file:
                raise ValueError(f"{path}: not a Keras HDF5 model (no model_config / model_weights)")
            config = json.loads(file.attrs["model_config"])
            weights = {name: {key.split("/")[-1].split(":")[0]: np.asarray(file["model_weights"][name][key])
                              for key in _datasets(file["model_weights"][name])}
                       for name in file["model_weights"]}
        if config["class_name"] not in ("Functional", "Model"):
            raise ValueError(f"{path}: only Keras functional models are supported, not {config['class_name']}")
        self.layers = []
        self.params = nn.ParameterDict()
        for layer in config["config"]["layers"]:
            kind, settings, name = layer["class_name"], layer["config"], layer["config"]["name"]
            if kind not in KERAS_LAYER_TYPES:
                raise ValueError(f"{path}: Keras layer type {kind} ({name}) is not supported")
            inbound = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            self.layers.append((name, kind, settings, inbound))
            for key, value in weights.get(name, {}).items():
                self.params[f"{name.replace('.', '_')}__{key}"] = nn.Parameter(torch.from_numpy(value),
                                                                               requires_grad=False)
        self.output_name = config["config"]["output_layers"][0][0]

    def weight(self, layer: str, key: str) -> torch.Tensor:
        return self.params[f"{layer.replace('.', '_')}__{key}"]

    def forward(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        values = {}
        for name, kind, settings, inbound in self.layers:
            inputs = [values[source] for source in inbound] or [x]
            values[name] = self._layer_output(name, kind, settings, inputs)
        return [values[name] for name in names]

    def _layer_output(self, name: str, kind: str, settings: dict, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = inputs[0]
        if kind in ("InputLayer", "Dropout"):
            return x
        if kind == "BatchNormalization":  # inference: moving statistics
            mean, variance = self.weight(name, "moving_mean"), self.weight(name, "moving_variance")
            scale = self.weight(name, "gamma") if settings.get("scale", True) else 1
            shift = self.weight(name, "beta") if settings.get("center", True) else 0
            return (x - mean) / (variance + settings["epsilon"]).sqrt() * scale + shift
        if kind == "Conv2D":
            return KERAS_ACTIVATIONS[settings["activation"]](self._conv2d(name, settings, x))
        if kind == "Dense":
            y = x @ self.weight(name, "kernel") + (self.weight(name, "bias") if settings["use_bias"] else 0)
            return KERAS_ACTIVATIONS[settings["activation"]](y)
        if kind == "Concatenate":
            return torch.cat(inputs, settings["axis"])
        if kind in ("AveragePooling2D", "MaxPooling2D"):
            if settings["padding"] != "valid":
                raise ValueError(f"Keras {kind} {name}: only 'valid' padding is supported")
            pool = nn.functional.avg_pool2d if kind == "AveragePooling2D" else nn.functional.max_pool2d
            return pool(x.permute(0, 3, 1, 2), settings["pool_size"], settings["strides"]).permute(0, 2, 3, 1)
        if kind == "GlobalAveragePooling2D":
            return x.mean((1, 2))
        if kind == "Activation":
            return KERAS_ACTIVATIONS[settings["activation"]](x)
        return x.flatten(1)  # Flatten, channels-last row-major as in Keras

    def _conv2d(self, name: str, settings: dict, x: torch.Tensor) -> torch.Tensor:
        kernel = self.weight(name, "kernel").permute(3, 2, 0, 1)  # (kh, kw, in, out) -> torch
        dilation = tuple(settings.get("dilation_rate", (1, 1)))
        if settings["padding"] == "same":  # TensorFlow puts the odd sample of padding after
            if tuple(settings["strides"]) != (1, 1):
                raise ValueError(f"Keras Conv2D {name}: 'same' padding with strides is not supported")
            kh, kw = ((size - 1) * rate for size, rate in zip(kernel.shape[2:], dilation))  # padding needed
            x = nn.functional.pad(x, (0, 0, kw // 2, kw - kw // 2, kh // 2, kh - kh // 2))
        bias = self.weight(name, "bias") if settings["use_bias"] else None
        y = nn.functional.conv2d(x.permute(0, 3, 1, 2), kernel, bias, tuple(settings["strides"]), dilation=dilation)
        return y.permute(0, 2, 3, 1)


def _datasets(group) -> list[str]:
    """Paths of every dataset under an h5py group."""
    found = []
    group.visititems(lambda path, item: found.append(path) if hasattr(item, "shape") else None)
    return found
