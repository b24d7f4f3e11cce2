"""musicnn (kind `musicnn`): `MTT_musicnn` (default; MagnaTagATune tags) or `MSD_musicnn` (Million Song Dataset
tags), rebuilt in torch from the musicnn wheel's TF1 checkpoints (`read_tf_checkpoint`, no TensorFlow), 16 kHz,
96-band log-mel frames of 16 ms in 3 s patches.

Layers: musicnn's own feature names, `timbral` (408), `temporal` (153), `cnn1`..`cnn3` (64 each) per frame, and per
patch `mean_pool`, `max_pool` (753 each), `penultimate` (200) and `taggram` (50 tag probabilities;
`musicnn_labels` names them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from earlens.models.base import Backbone
from earlens.models.pretrained.common import file_digest, ModuleBackbone, wheel_file
from earlens.models.pretrained.tf_checkpoint import read_tf_checkpoint


MUSICNN_INSTALL = "pip install --no-deps musicnn==0.1.0"
MUSICNN_LAYERS = ["timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "taggram"]
MUSICNN_PATCH = 187  # mel frames per 3 s input patch (librosa.time_to_frames(3, 16000, 256, 512) + 1)
MUSICNN_LABELS = {  # musicnn.configuration
    "MTT": ["guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
            "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
            "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
            "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
            "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral"],
    "MSD": ["rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
            "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
            "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
            "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s",
            "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
            "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy"],
}


class _TfBatchNorm(nn.Module):
    """TF1 `batch_normalization` at inference (moving statistics, eps 0.001) over the last axis."""

    def __init__(self, variables: dict[str, np.ndarray], name: str):
        super().__init__()
        for kind in ("gamma", "beta", "moving_mean", "moving_variance"):
            self.register_buffer(kind, torch.from_numpy(variables[f"{name}/{kind}"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.moving_mean) / (self.moving_variance + 1e-3).sqrt() * self.gamma + self.beta


class Musicnn(nn.Module):
    """musicnn (Pons & Serra 2019), the `MTT_musicnn` / `MSD_musicnn` graph of `musicnn.models.build_musicnn`
    rebuilt in torch from the TF1 checkpoint: log-mel input batch norm; timbral (7x38, 7x67 conv, max over
    frequency) and temporal (128/64/32x1 conv, max over frequency) front-end; three 7-frame 1-D convolutions
    with dense/residual connections; max- and mean-pooling over time, a 200-unit dense layer and 50 tag logits.
    Tensors run time-major `(B, T, features)` as in TF; layer names are musicnn's own feature names."""

    def __init__(self, variables: dict[str, np.ndarray]):
        super().__init__()
        def conv(name: str) -> nn.Conv2d:
            kernel = torch.from_numpy(variables[f"{name}/kernel"]).permute(3, 2, 0, 1)  # (kh, kw, in, out) -> torch
            module = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]))
            module.weight.data, module.bias.data = kernel.contiguous(), torch.from_numpy(variables[f"{name}/bias"])
            return module

        def dense(name: str) -> nn.Linear:
            kernel = torch.from_numpy(variables[f"{name}/kernel"])
            module = nn.Linear(*kernel.shape)
            module.weight.data, module.bias.data = kernel.T.contiguous(), torch.from_numpy(variables[f"{name}/bias"])
            return module

        suffix = ["", *[f"_{index}" for index in range(1, 11)]]
        self.convs = nn.ModuleList(conv(f"conv2d{suffix[index]}") for index in range(8))
        self.norms = nn.ModuleList(_TfBatchNorm(variables, f"batch_normalization{suffix[index]}")
                                   for index in range(11))
        self.dense = dense("dense")
        self.output_layer = dense("dense_1")

    @staticmethod
    def _pad_time(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
        return nn.functional.pad(x, (0, 0, before, after))

    def _branch(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Conv (ReLU), batch norm over channels, max over frequency: `(B, 1, T', F)` -> `(B, T, C)`."""
        y = torch.relu(self.convs[index](x)).permute(0, 2, 3, 1)  # (B, T, F', C)
        return self.norms[index + 1](y).amax(2)

    def _midend(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """7-frame conv over all features (ReLU) + batch norm: `(B, T, D)` -> `(B, T, 64)`."""
        y = torch.relu(self.convs[index](self._pad_time(x, 3, 3)[:, None]))  # (B, 64, T, 1)
        return self.norms[index + 1](y[..., 0].transpose(1, 2))

    def forward(self, log_mel: torch.Tensor, layers: Sequence[int] = range(9)) -> list[torch.Tensor]:
        """`log_mel (P, T, 96)` patches -> musicnn's features, frame-level `(P, T, D)` or pooled `(P, D)`."""
        x = self.norms[0](log_mel[..., None])[..., 0][:, None]  # (P, 1, T, 96)
        padded = self._pad_time(x, 3, 3)
        timbral = torch.cat([self._branch(padded, 0), self._branch(padded, 1)], 2)
        temporal = torch.cat([self._branch(self._pad_time(x, (k - 1) // 2, k // 2), index)
                              for index, k in ((2, 128), (3, 64), (4, 32))], 2)  # TF "same" padding in time
        front = torch.cat([timbral, temporal], 2)
        cnn1 = self._midend(front, 5)
        cnn2 = self._midend(cnn1, 6) + cnn1
        cnn3 = self._midend(cnn2, 7) + cnn2
        mid = torch.cat([front, cnn1, cnn2, cnn3], 2)
        max_pool, mean_pool = mid.amax(1), mid.mean(1)
        flat = self.norms[9](torch.stack([max_pool, mean_pool], 2).flatten(1))  # TF flattens (D, 2) row-major
        penultimate = self.norms[10](torch.relu(self.dense(flat)))
        taggram = torch.sigmoid(self.output_layer(penultimate))
        outputs = [timbral, temporal, cnn1, cnn2, cnn3, mean_pool, max_pool, penultimate, taggram]
        return [outputs[index] for index in layers]


class MusicnnBackbone(ModuleBackbone):
    """musicnn on musicnn's own input: librosa's mel power (16 kHz, 512-sample FFT, 256 hop, 96 bands) cast to
    float16, log10(10000 x + 1), cut into non-overlapping 187-frame (3 s) patches as `batch_data` does (only
    whole patches; a clip shorter than one patch is one patch of its own length, which musicnn's fully
    convolutional models accept). Frame-level layers are the patches' frames in a row; pooled layers and the
    taggram give one row per patch."""

    def __init__(self, module: Musicnn, layers, name: str, weights_id: str):
        super().__init__(module, MUSICNN_LAYERS, layers, name, 16000, weights_id)
        import librosa

        self.mel_basis = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=512, n_mels=96))
        self.window = torch.hann_window(512)

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(waves, 512, 256, window=self.window.to(waves.device), center=True,
                              pad_mode="constant", return_complex=True).abs() ** 2
        mel = (self.mel_basis.to(waves.device) @ spectrum).transpose(1, 2).cpu().numpy().astype(np.float16)
        return torch.from_numpy(np.log10(10000 * mel + 1).astype(np.float32)).to(waves.device)

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        log_mel = self.log_mel(waves)
        batch, n_frames = log_mel.shape[:2]
        patch = min(MUSICNN_PATCH, n_frames)
        n_patches = n_frames // patch
        patches = log_mel[:, : n_patches * patch].reshape(batch * n_patches, patch, -1)
        return [output.reshape(batch, -1, output.shape[-1]) for output in self.module(patches, self.layer_indices)]


def load_musicnn(name_or_path: str | None = None, layers=None) -> Backbone:
    """musicnn `MTT_musicnn` (default) or `MSD_musicnn` from the musicnn wheel's TF1 checkpoint (or a user
    checkpoint prefix), read without TensorFlow."""
    model = name_or_path or "MTT_musicnn"
    if model in ("MTT_musicnn", "MSD_musicnn"):
        prefix = wheel_file("musicnn", f"{model}/.index", MUSICNN_INSTALL).parent / ""
    elif Path(f"{model}.index").is_file():
        prefix = Path(model)
    else:
        raise FileNotFoundError(f"musicnn name_or_path {model!r}: not MTT_musicnn/MSD_musicnn nor a checkpoint prefix "
                                f"with a .index file (the vgg variants are not supported)")
    variables = read_tf_checkpoint(f"{prefix}/" if prefix.is_dir() else prefix)
    digest = file_digest(Path(f"{prefix}/.index" if prefix.is_dir() else f"{prefix}.index"))
    return MusicnnBackbone(Musicnn(variables), layers, f"musicnn-{Path(model).name}", f"musicnn:{model}:{digest}")


def musicnn_labels(name_or_path: str | None = None) -> list[str]:
    """The 50 tags of a musicnn model's taggram (MagnaTagATune for MTT_*, Million Song Dataset for MSD_*)."""
    return MUSICNN_LABELS["MSD" if "MSD" in (name_or_path or "") else "MTT"]
