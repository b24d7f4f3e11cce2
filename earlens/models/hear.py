"""A `train.py` model as a HEAR 2021 module, so hear-eval-kit (and any benchmark that runs HEAR modules) can
evaluate it: `python -m heareval.embeddings.runner earlens.models.hear --model RUN_DIR`.

`load_model(model_file_path)` takes a run folder (its best checkpoint, as `probe.py --backbone.kind run` reads it) or
a checkpoint file. Timestamp embeddings are the encoder's output frames (the classifier's input to its pooling),
scene embeddings the classifier's own pooling of them: mean and max over time, concatenated (the clip head's input;
frame-task models are pooled the same way).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class HearModel(nn.Module):
    """The trained frontend + encoder of an `AudioClassifier`, with the attributes the HEAR API asks for."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval()
        self.sample_rate = int(classifier.frontend.sample_rate)
        self.timestamp_embedding_size = int(classifier.encoder.out_channels)
        self.scene_embedding_size = 2 * self.timestamp_embedding_size

    def frame_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, T)` → encoder frames `(B, frames, D)`, as `AudioClassifier.forward` computes them (no padding)."""
        return self.classifier.encoder(self.classifier.frontend(audio)).transpose(1, 2)

    def frame_centres_ms(self, n_frames: int) -> torch.Tensor:
        """Centre of encoder frame j in ms: the middle of the frontend frames its time pools merge. STFT frames are
        centred on i·hop (`center=True`); waveform frontends' frames span [i·hop, (i+1)·hop)."""
        frontend, encoder = self.classifier.frontend, self.classifier.encoder
        stride = 2 ** sum(isinstance(layer, nn.MaxPool2d) for layer in encoder.blocks) if encoder.pool_time else 1
        first = 0.0 if hasattr(frontend, "logmel") else 0.5 * frontend.hop_length
        samples = (torch.arange(n_frames) * stride + (stride - 1) / 2) * frontend.hop_length + first
        return samples * 1000.0 / self.sample_rate


def load_model(model_file_path: str = "") -> HearModel:
    """The model of a `train.py` run folder (best checkpoint) or of one checkpoint file."""
    from earlens.lightning_modules.checkpointing import read_checkpoint
    from earlens.lightning_modules.classifier import AudioClassifier
    from earlens.lightning_modules.cli import load_run

    if not model_file_path:
        raise ValueError("earlens.models.hear.load_model needs a train.py run folder or checkpoint "
                         "(hear-validator -m PATH)")
    path = Path(model_file_path)
    if path.is_dir():
        return HearModel(load_run(path)[0])
    run_dir = path.parent.parent  # RUN_DIR/checkpoints/*.ckpt: the run's config rebuilds frontends of old runs
    if (run_dir / "config.yaml").is_file():
        return HearModel(load_run(run_dir, str(path))[0])
    read_checkpoint(path)  # one clear line for a missing or damaged file
    return HearModel(AudioClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=False))


def _check_audio(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    if audio.ndim != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    return audio.to(next(model.parameters()).device, torch.float32)


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder frames `(n_sounds, frames, timestamp_embedding_size)` and their centres in ms `(n_sounds, frames)`."""
    embeddings = model.frame_embeddings(_check_audio(audio, model))
    timestamps = model.frame_centres_ms(embeddings.shape[1]).to(embeddings.device)
    return embeddings, timestamps.expand(len(embeddings), -1)


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """Mean and max of the encoder frames over time `(n_sounds, scene_embedding_size)`: the clip head's input."""
    frames = model.frame_embeddings(_check_audio(audio, model))
    return torch.cat([frames.mean(1), frames.amax(1)], dim=1)
