"""tempo-cnn (kind `tempocnn`; Schreiber & Müller's tempo networks, AGPL-3.0): the tempocnn wheel's Keras `.h5`
models (`fcn`, its default; `cnn`, `ismir2018`, `deeptemp_k*`, ...) run in torch by `keras_h5.KerasGraph`, no
TensorFlow, on tempo-cnn's input: 40 mel bands (20-5000 Hz, magnitude) of 1024-sample frames every 512 samples at
11025 Hz (21.5 frames per second), in windows of 256 frames (11.9 s) every 128, scaled by the clip's maximum
(`fcn`, `cnn`, `ismir2018`) or to zero mean and unit variance (the others), as tempo-cnn's `TempoClassifier` reads
a file; a clip shorter than one window is zero-padded to one.

Layers: `mel` (40 bands), every convolution and concatenation not merged into a later concatenation, by its Keras
name (per frame: the bands x channels at each of the window's 256 frames, frequency-major; a clip shorter than a
window keeps its real frames), the dense layers (per window) and `tempo` (per window: the 256-class tempo
distribution, class i = 30 + i BPM; `tempocnn_bpm` reads it).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import file_digest, ModuleBackbone, weights_path, wheel_file
from earlens.models.pretrained.keras_h5 import KerasGraph


TEMPOCNN_INSTALL = "pip install --no-deps tempocnn==0.0.8 && pip install h5py"
TEMPOCNN_RATE = 11025
TEMPOCNN_FFT = 1024
TEMPOCNN_HOP = 512
TEMPOCNN_WINDOW = 256  # frames the network reads
TEMPOCNN_WINDOW_HOP = 128
TEMPOCNN_MIN_BPM = 30
EXPOSED_TYPES = ("Conv2D", "Concatenate", "Dense")


class TempoCnn(nn.Module):
    """A tempo-cnn model on waves: mel, windows, normalisation, then the Keras graph read out at every exposed
    layer."""

    def __init__(self, graph: KerasGraph, standardize: bool):
        super().__init__()
        self.graph = graph
        self.standardize = standardize
        self.register_buffer("window", torch.hann_window(TEMPOCNN_FFT))
        self.register_buffer("mel_basis", torch.from_numpy(librosa.filters.mel(
            sr=TEMPOCNN_RATE, n_fft=TEMPOCNN_FFT, n_mels=40, fmin=20, fmax=5000)))
        merged = {source for _, kind, _, inbound in graph.layers if kind == "Concatenate" for source in inbound}
        self.graph_layers = [name for name, kind, _, _ in graph.layers
                             if kind in EXPOSED_TYPES and name not in merged and name != graph.output_name]
        self.frame_level = {name for name, kind, _, _ in graph.layers if kind != "Dense"}

    @property
    def layer_names(self) -> list[str]:
        return ["mel", *self.graph_layers, "tempo"]

    def mel(self, waves: torch.Tensor) -> torch.Tensor:
        """librosa's `melspectrogram(power=1)` as tempo-cnn calls it: `(B, frames, 40)`."""
        spectrum = torch.stft(waves, TEMPOCNN_FFT, TEMPOCNN_HOP, window=self.window, center=True,
                              pad_mode="constant", return_complex=True).abs()
        return (self.mel_basis @ spectrum).transpose(1, 2)

    def windows(self, mel: torch.Tensor) -> torch.Tensor:
        """`(B, frames, 40)` -> normalised `(B, windows, 40, 256, 1)`, the network's input."""
        padded = nn.functional.pad(mel, (0, 0, 0, max(0, TEMPOCNN_WINDOW - mel.shape[1])))
        windows = padded.unfold(1, TEMPOCNN_WINDOW, TEMPOCNN_WINDOW_HOP)  # (B, windows, 40, 256)
        flat = windows.flatten(1)
        if self.standardize:
            mean, std = flat.mean(1), flat.std(1, unbiased=False)
            windows = (windows - mean[:, None, None, None]) / torch.where(std > 0, std, 1)[:, None, None, None]
        else:
            peak = flat.amax(1)
            windows = windows / torch.where(peak != 0, peak, 1)[:, None, None, None]
        return windows[..., None]

    def forward(self, waves: torch.Tensor, layers: list[int] | None = None) -> list[torch.Tensor]:
        names = [self.layer_names[index] for index in (range(len(self.layer_names)) if layers is None else layers)]
        mel = self.mel(waves)
        windows = self.windows(mel)
        batch, n_windows = windows.shape[:2]
        wanted = [self.graph.output_name if name == "tempo" else name for name in names if name != "mel"]
        outputs = dict(zip(wanted, self.graph(windows.flatten(0, 1), wanted)))
        real_frames = min(mel.shape[1], TEMPOCNN_WINDOW)
        layers_out = []
        for name in names:
            if name == "mel":
                layers_out.append(mel)
                continue
            output = outputs[self.graph.output_name if name == "tempo" else name]
            if name in self.frame_level:  # (B * W, F, 256, C) -> (B, W * frames, F * C)
                output = output[:, :, :real_frames].permute(0, 2, 1, 3).flatten(2)
            layers_out.append(output.reshape(batch, -1, output.shape[-1]))
        return layers_out


def tempocnn_bpm(tempo: torch.Tensor) -> torch.Tensor:
    """The BPM of the most likely class of tempo-cnn's `tempo` distribution (tempo-cnn's `estimate_tempo` of one
    window; average the windows first for a clip's)."""
    return (tempo.argmax(-1) + TEMPOCNN_MIN_BPM).float()


def load_tempocnn(name_or_path: str | None = None, layers=None) -> Backbone:
    """A tempo-cnn model by name from the tempocnn wheel's `models/` (default `fcn`) or a user `.h5` path."""
    model = name_or_path or "fcn"
    if model.endswith(".h5"):
        path = weights_path(model, "tempocnn", "", TEMPOCNN_INSTALL)
    else:
        models = wheel_file("tempocnn", "models/fcn.h5", TEMPOCNN_INSTALL).parent
        path = models / f"{model}.h5"
        if not path.is_file():
            raise FileNotFoundError(f"tempocnn name_or_path {model!r}: not a .h5 path nor one of the wheel's models "
                                    f"{sorted(file.stem for file in models.glob('*.h5'))}")
    standardize = any(kind in Path(path).stem for kind in ("dt_maz", "deeptemp", "deepsquare", "shallowtemp"))
    module = TempoCnn(KerasGraph(path), standardize)
    return ModuleBackbone(module, module.layer_names, layers, f"tempocnn-{Path(path).stem}", TEMPOCNN_RATE,
                          f"tempocnn:{file_digest(path)}")
