"""`AudioClassifier`: frontend → small CNN encoder → clip-level or frame-level head."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
)

from earlens.io.lengths import masked_mean, proportional_frames, zero_padding
from earlens.lightning_modules.checkpointing import current_class_path

IGNORE = -1


class DetectionErrorRate(Metric):
    """(missed speech + false-alarm speech) / total speech, counted in frames (the VAD detection error rate)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("missed", "false_alarm", "speech"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, speech_prob: torch.Tensor, target: torch.Tensor) -> None:
        pred = (speech_prob >= 0.5).long()
        self.missed += ((pred == 0) & (target == 1)).sum()
        self.false_alarm += ((pred == 1) & (target == 0)).sum()
        self.speech += (target == 1).sum()

    def compute(self) -> torch.Tensor:
        return (self.missed + self.false_alarm).float() / self.speech.clamp_min(1).float()


class ConvEncoder(nn.Module):
    """Conv2d blocks that pool frequency (and time, for clip tasks), then a temporal Conv1d over frames."""

    def __init__(self, in_channels: int, n_freq: int, channels=(16, 32, 64), hidden: int = 128,
                 pool_time: bool = True, dropout: float = 0.1):
        super().__init__()
        blocks, c_in = [], in_channels
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d((2, 2 if pool_time else 1), ceil_mode=True)]
            c_in = c_out
            n_freq = -(-n_freq // 2)
        self.blocks = nn.Sequential(*blocks)
        self.temporal = nn.Sequential(nn.Conv1d(c_in * n_freq, hidden, 5, padding=2), nn.ReLU(), nn.Dropout(dropout))
        self.out_channels = hidden
        self.pool_time = pool_time

    def frame_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Output frames of clips with `frames` real input frames (each time pool halves them, rounding up)."""
        n_pools = sum(isinstance(layer, nn.MaxPool2d) for layer in self.blocks) if self.pool_time else 0
        for _ in range(n_pools):
            frames = torch.div(frames + 1, 2, rounding_mode="floor")
        return frames

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, F, T) → (B, hidden, T'); with `frames` (real frames per clip) padding is zeroed after every
        ReLU, so it acts as the convolutions' zero padding and never wins a max-pool (ReLU outputs are ≥ 0)."""
        for layer in self.blocks:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                x = zero_padding(x, frames)
            elif isinstance(layer, nn.MaxPool2d) and self.pool_time and frames is not None:
                frames = torch.div(frames + 1, 2, rounding_mode="floor")
        return zero_padding(self.temporal(x.flatten(1, 2)), frames)


def check_hyperparameters(lr: float = 2e-3, weight_decay: float = 1e-4, frontend_lr: float | None = None,
                          dropout: float = 0.1, **_) -> None:
    """Refuse, in one line naming the option, values the optimiser would reject only at the first training step
    (after the data are decoded); `train.py` calls it on the parsed config before anything is built."""
    problems = [f"--model.{name} {value}: must be >= 0 (e.g. --model.{name} 0.002; 0 keeps those weights fixed)"
                for name, value in (("lr", lr), ("frontend_lr", frontend_lr)) if value is not None and not value >= 0]
    if not weight_decay >= 0:
        problems.append(f"--model.weight_decay {weight_decay}: must be >= 0")
    if not 0 <= dropout < 1:
        problems.append(f"--model.dropout {dropout}: must be in [0, 1)")
    if problems:
        raise ValueError("; ".join(problems))


class AudioClassifier(pl.LightningModule):
    """Waveform → `frontend` (B, C, F, T) → `ConvEncoder` → logits per clip (B, K) or per frame (B, K, T).

    `task` and `num_classes` come from the datamodule (linked by `train.py`). Frame labels arrive per sample
    and are read at the frontend's frame centres (`label[:, ::hop]`), so datamodules need not know the hop.
    """

    def __init__(self, frontend: nn.Module | None = None, num_classes: int = 2, task: str = "clip",
                 channels: tuple[int, ...] = (16, 32, 64), hidden: int = 128, dropout: float = 0.1,
                 lr: float = 2e-3, weight_decay: float = 1e-4, frontend_lr: float | None = None,
                 class_names: list[str] | None = None, frontend_spec: dict | None = None):
        """`frontend` is a module (configs give its class_path); checkpoints store it as `frontend_spec`
        (class path + init args) so `AudioClassifier.load_from_checkpoint(path)` rebuilds it on its own.
        `class_names` (linked from the datamodule) names the outputs for `predict.py`."""
        super().__init__()
        check_hyperparameters(lr=lr, weight_decay=weight_decay, frontend_lr=frontend_lr, dropout=dropout)
        if task not in ("clip", "frame"):
            raise ValueError(f"task must be 'clip' or 'frame', got {task!r}")
        if frontend is None:
            if frontend_spec is None:
                raise ValueError("AudioClassifier needs a frontend (or the frontend_spec a checkpoint stores)")
            module, name = current_class_path(frontend_spec["class_path"]).rsplit(".", 1)
            frontend = getattr(importlib.import_module(module), name)(**frontend_spec["init_args"])
        elif hasattr(frontend, "init_args"):
            frontend_spec = {"class_path": f"{type(frontend).__module__}.{type(frontend).__qualname__}",
                             "init_args": dict(frontend.init_args)}
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.save_hyperparameters(ignore=["frontend"])
        self.hparams["frontend_spec"] = frontend_spec
        self.frontend = frontend
        self.encoder = ConvEncoder(frontend.out_channels, frontend.n_mels, channels, hidden,
                                   pool_time=task == "clip", dropout=dropout)
        head_in = 2 * hidden if task == "clip" else hidden
        self.head = nn.Linear(head_in, num_classes) if task == "clip" else nn.Conv1d(hidden, num_classes, 1)
        self.samples_seen = 0
        stages = ("val", "test")
        self.class_metrics = nn.ModuleDict({s: MetricCollection({
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_macro": MulticlassAccuracy(num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        }, prefix=f"{s}/") for s in stages})
        # VAD: speech metrics on P(speech) of the scored frames.
        self.speech_metrics = nn.ModuleDict({s: MetricCollection({
            "frame_f1": BinaryF1Score(), "auroc": BinaryAUROC(thresholds=256), "der": DetectionErrorRate(),
        }, prefix=f"{s}/") for s in stages}) if task == "frame" else None

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "sample_rate", None) not in (None, self.frontend.sample_rate):
            raise ValueError(f"data sample_rate {dm.sample_rate} != frontend sample_rate {self.frontend.sample_rate}; "
                             "set --data.sample_rate or --model.frontend.init_args.sample_rate to match")

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits `(B, K)` (clip) or `(B, K, frames)` (frame); `lengths` (real samples per clip) keeps padding out
        of every convolution's view and of the pooling."""
        if lengths is None:
            z = self.encoder(self.frontend(audio))  # (B, hidden, T')
            counts = None
        else:
            frames = self.frontend.frame_lengths(lengths)
            z = self.encoder(self.frontend(audio, lengths), frames)
            counts = self.encoder.frame_lengths(frames)
        if self.hparams.task == "clip":
            return self.head(torch.cat([masked_mean(z, counts), z.amax(-1)], dim=1))  # padding is 0 ≤ ReLU outputs
        return self.head(z)  # (B, K, frames)

    @torch.no_grad()
    def frame_probabilities(self, wave: np.ndarray, chunk_seconds: float = 60.0,
                            context_seconds: float = 2.0) -> np.ndarray:
        """Class probabilities `(frames, K)` of a whole recording, frame i at sample i·hop, computed in chunks with
        `context_seconds` on each side (dropped afterwards) so memory stays bounded on hour-long files."""
        rate, hop = self.frontend.sample_rate, self.frontend.hop_length
        n_frames = len(wave) // hop + 1
        chunk, context = round(chunk_seconds * rate / hop), round(context_seconds * rate / hop)
        out = np.zeros((n_frames, self.hparams.num_classes), dtype=np.float32)
        for first in range(0, n_frames, chunk):
            start = max(first - context, 0)
            stop = min(first + chunk + context, n_frames)
            piece = torch.from_numpy(np.ascontiguousarray(wave[start * hop: (stop - 1) * hop + 1]))[None]
            probs = self(piece, torch.tensor([piece.shape[1]])).softmax(1)[0].T.numpy()
            keep = slice(first - start, first - start + min(chunk, n_frames - first))
            out[first: first + min(chunk, n_frames - first)] = probs[keep]
        return out

    def frame_lengths(self, lengths: torch.Tensor, n_frames: int, n_samples: int) -> torch.Tensor:
        """Real frames of a hooked layer's time axis of `n_frames` (from `n_samples`-sample clips): exact for the
        frontend's and the encoder's axes, proportional otherwise. Used by the callbacks to skip padding."""
        total = torch.tensor([n_samples], device=lengths.device)
        frames, total_frames = self.frontend.frame_lengths(lengths), self.frontend.frame_lengths(total)
        if int(total_frames) == n_frames:
            return frames
        if int(self.encoder.frame_lengths(total_frames)) == n_frames:
            return self.encoder.frame_lengths(frames)
        return proportional_frames(lengths, n_samples, n_frames)

    def _logits_and_target(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, target = self(batch["audio"], batch.get("length")), batch["label"]
        if self.hparams.task == "frame":
            target = target[:, :: self.frontend.hop_length]
            n = min(logits.shape[-1], target.shape[-1])
            logits = logits[..., :n].transpose(1, 2).reshape(-1, logits.shape[1])
            target = target[:, :n].reshape(-1)
        return logits, target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, target = self._logits_and_target(batch)
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE)
        self.samples_seen += batch["audio"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["audio"].shape[0])
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits, target = self._logits_and_target(batch)
        scored = target != IGNORE
        n_scored = int(scored.sum())
        # logged on every batch, even one with nothing scored, so DDP ranks always sync the same keys
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum") / max(n_scored, 1)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=n_scored)
        logits, target = logits[scored], target[scored]
        self.class_metrics[stage].update(logits, target)
        self.log_dict(self.class_metrics[stage])
        if self.speech_metrics is not None:
            self.speech_metrics[stage].update(logits.softmax(-1)[:, 1], target)
            self.log_dict(self.speech_metrics[stage])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        """AdamW (the frontend's trainable parameters, its batch norm included, may have their own `frontend_lr`;
        0 keeps them at init) with a cosine decay over every optimiser step of the run, so `max_epochs` and
        `max_steps` both give a schedule that ends at the end of training."""
        frontend_lr = self.hparams.lr if self.hparams.frontend_lr is None else self.hparams.frontend_lr
        groups = [{"params": [p for p in self.frontend.parameters() if p.requires_grad], "lr": frontend_lr},
                  {"params": [*self.encoder.parameters(), *self.head.parameters()]}]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps) or total_steps < 1:
            raise ValueError(f"the cosine schedule needs a finite run, got {total_steps} steps: set "
                             "--trainer.max_epochs or --trainer.max_steps")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
