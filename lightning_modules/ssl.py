"""`HubertPretraining`: a `transformers` HuBERT trained from scratch by masked prediction of k-means units of
log-mel frames (HuBERT's first iteration; MERT's acoustic targets). No label reaches the loss."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from earlens.models.ssl import (
    aligned_log_mel,
    conv_frame_count,
    conv_receptive_field,
    nearest_units,
    normalize_waves,
    span_mask,
)
from earlens.models.tokenizers import KMeansUnits

CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)  # HuBERT's feature extractor: 400-sample field, 320-sample hop (50 Hz at 16 kHz)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
UNIT_HEAD_FILE = "unit_head.pt"


def hubert_config(hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, conv_dim: int,
                  mask_prob: float, mask_span: int):
    """A small `HubertConfig`: HuBERT base's layout (group-norm conv stack, post-norm transformer) scaled down,
    without dropout or layer drop (layer drop would leave parameters unused under DDP)."""
    from transformers import HubertConfig

    return HubertConfig(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=intermediate_size, conv_dim=(conv_dim,) * len(CONV_KERNELS),
                        conv_kernel=CONV_KERNELS, conv_stride=CONV_STRIDES, num_conv_pos_embeddings=32,
                        num_conv_pos_embedding_groups=8, hidden_dropout=0.0, attention_dropout=0.0,
                        activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
                        mask_time_prob=mask_prob, mask_time_length=mask_span)


class HubertPretraining(pl.LightningModule):
    """Waves → HuBERT (`self.model`, a `transformers.HubertModel`) → linear head → logits over `n_units` units.

    The units are fitted once at `setup` (k-means, `seed`) on the log-mel frames of `unit_fit_clips` clips from
    the datamodule's `unit_fit_waves`, on rank 0, broadcast, and kept in the checkpoint (`unit_centroids`). Masked
    spans of the conv features are replaced by HuBERT's learned mask embedding; cross-entropy on masked frames only.
    At the end of fit the model and its feature extractor are written with `save_pretrained` to `hf_dir` (default
    `<run folder>/hf`), which `earlens.models.backbones.load_backbone("hubert", hf_dir)` loads. With `hf_every_n_epochs`
    N > 0 the same is written to `<run folder>/hf_steps/step_<global step>` before the first step (the random
    initialisation) and after every N-th training epoch: the model watched while it learns, probed afterwards.
    """

    def __init__(self, sample_rate: int = 16000, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                 intermediate_size: int = 512, conv_dim: int = 64, n_units: int = 100, n_mels: int = 64,
                 unit_fit_clips: int = 256, mask_prob: float = 0.08, mask_span: int = 5, lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 100, hf_dir: str | None = None,
                 hf_every_n_epochs: int = 0, seed: int = 0):
        super().__init__()
        if sample_rate != 16000:
            raise ValueError(f"--model.sample_rate {sample_rate}: HuBERT backbones are read at 16000 Hz")
        if min(n_units, unit_fit_clips) < 2 or min(warmup_steps, lr, hf_every_n_epochs) < 0:
            raise ValueError("--model.n_units and unit_fit_clips must be >= 2, warmup_steps, lr and hf_every_n_epochs "
                             ">= 0")
        self.save_hyperparameters()
        from transformers import HubertModel

        self.model = HubertModel(hubert_config(hidden_size, num_layers, num_heads, intermediate_size, conv_dim,
                                               mask_prob, mask_span))
        self.head = nn.Linear(hidden_size, n_units)
        self.register_buffer("unit_centroids", torch.zeros(n_units, n_mels))
        self.register_buffer("units_fitted", torch.tensor(False))
        self.sample_rate = sample_rate
        self.field, self.hop = conv_receptive_field(CONV_KERNELS, CONV_STRIDES)
        self.samples_seen = 0

    def setup(self, stage: str) -> None:
        if stage != "fit" or bool(self.units_fitted):
            return
        centroids = None
        if self.trainer.is_global_zero:
            waves = torch.as_tensor(self.trainer.datamodule.unit_fit_waves(self.hparams.unit_fit_clips))
            frames = self.log_mel_targets(waves).reshape(-1, self.hparams.n_mels)
            centroids = KMeansUnits(self.hparams.n_units, self.hparams.seed).compute_centroids(frames)
        centroids = self.trainer.strategy.broadcast(centroids, src=0)
        self.unit_centroids.copy_(centroids)
        self.units_fitted.fill_(True)

    def n_frames(self, n_samples: int) -> int:
        return conv_frame_count(n_samples, CONV_KERNELS, CONV_STRIDES)

    def frame_lengths(self, lengths: torch.Tensor, n_frames: int, n_samples: int) -> torch.Tensor:
        """Real model frames of clips with `lengths` real samples (for `ZipfCallback`)."""
        return conv_frame_count(lengths, CONV_KERNELS, CONV_STRIDES).clamp(0, n_frames)

    def log_mel_targets(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, frames, n_mels) log-mel frames aligned to the model's frames: what the units are fitted on."""
        return aligned_log_mel(waves.float(), self.sample_rate, self.n_frames(waves.shape[-1]), self.field, self.hop,
                               self.hparams.n_mels)

    def forward(self, waves: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) waves → (B, frames, hidden) last hidden states (`mask`: (B, frames) frames to mask)."""
        return self.model(normalize_waves(waves), mask_time_indices=mask).last_hidden_state

    def masked_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and accuracy of the units of the masked frames."""
        if not bool(self.units_fitted):
            raise RuntimeError("HubertPretraining: target units not fitted (setup('fit') fits them)")
        waves = batch["audio"]
        targets = nearest_units(self.log_mel_targets(waves), self.unit_centroids)
        mask = span_mask(len(waves), targets.shape[1], self.hparams.mask_prob, self.hparams.mask_span, generator,
                         waves.device)
        logits = self.head(self(waves, mask))[mask]
        loss = F.cross_entropy(logits, targets[mask])
        return loss, (logits.argmax(dim=1) == targets[mask]).float().mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(hash((self.hparams.seed, self.global_rank, self.global_step))
                                                  % 2**63)
        loss, accuracy = self.masked_loss(batch, generator)
        self.samples_seen += len(batch["audio"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc_masked", accuracy)
        return loss

    def _evaluate(self, batch: dict, batch_idx: int, split: str) -> None:
        generator = torch.Generator().manual_seed(hash((self.hparams.seed, self.global_rank, batch_idx)) % 2**63)
        loss, accuracy = self.masked_loss(batch, generator)
        self.log(f"{split}/loss", loss, sync_dist=True, prog_bar=split == "val")
        self.log(f"{split}/acc_masked", accuracy, sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    @torch.no_grad()
    def predicted_units(self, batch: dict) -> torch.Tensor:
        """(B, frames, 1) unit the head predicts at every (unmasked) frame: the symbols `ZipfCallback` counts."""
        return self.head(self(batch["audio"])).argmax(dim=-1, keepdim=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup = max(self.hparams.warmup_steps, 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            self.save_hf(self.hparams.hf_dir or Path(self.trainer.default_root_dir) / "hf")

    def on_train_start(self) -> None:
        if self.hparams.hf_every_n_epochs and self.global_step == 0:
            self._save_step()

    def on_train_epoch_end(self) -> None:
        if self.hparams.hf_every_n_epochs and (self.current_epoch + 1) % self.hparams.hf_every_n_epochs == 0:
            self._save_step()

    def _save_step(self) -> None:
        if self.trainer.is_global_zero:
            self.save_hf(Path(self.trainer.default_root_dir) / "hf_steps" / f"step_{self.global_step:06d}")

    def save_hf(self, directory: str | Path) -> Path:
        """The model and a feature extractor saying how it reads waves (16 kHz, normalised), as `from_pretrained`
        expects them, and `unit_head.pt` (the head and the unit centroids) for `load_unit_head`."""
        from transformers import Wav2Vec2FeatureExtractor

        directory = Path(directory)
        self.model.save_pretrained(directory)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=self.sample_rate, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=False).save_pretrained(directory)
        torch.save({"head": self.head.state_dict(), "unit_centroids": self.unit_centroids.cpu()},
                   directory / UNIT_HEAD_FILE)
        return directory


def load_unit_head(directory: str | Path) -> tuple[nn.Linear, torch.Tensor]:
    """(the linear head over units, the (n_units, n_mels) unit centroids) that `HubertPretraining.save_hf` wrote
    beside the model in `directory`."""
    path = Path(directory) / UNIT_HEAD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no unit head (written by HubertPretraining.save_hf)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight = state["head"]["weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict(state["head"])
    return head, state["unit_centroids"]
