"""Padding-aware time axes: which frames of a padded batch are real, and pooling that ignores the rest.

Batches carry `length` (real samples per clip, padding after them). Every consumer of frames (the classifier's
pooling, k-means units, helix and probe features) turns lengths into frame counts here and masks with them, so a
clip padded with zeros gives the same pooled features as the clip alone.
"""

from __future__ import annotations

import torch


def proportional_frames(lengths: torch.Tensor, n_samples: int, n_frames: int) -> torch.Tensor:
    """Frames of an `n_frames` axis (computed from `n_samples` samples) inside each clip's `lengths`.

    `ceil(n_frames · length / n_samples)`, clamped to [1, n_frames]: exact for layers whose frames tile the input;
    a model that knows its own framing exposes `frame_lengths(lengths, n_frames)` instead.
    """
    lengths = torch.as_tensor(lengths)
    counts = torch.div(lengths * n_frames + n_samples - 1, n_samples, rounding_mode="floor")
    return counts.clamp(1, n_frames)


def time_mask(counts: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Boolean `(B, n_frames)`: frame t of clip b is real when t < counts[b]."""
    counts = torch.as_tensor(counts)
    return torch.arange(n_frames, device=counts.device)[None, :] < counts[:, None]


def zero_padding(x: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
    """`x (B, ..., T)` with the frames past each clip's count set to zero (unchanged when `counts` is None)."""
    if counts is None:
        return x
    mask = time_mask(counts.to(x.device), x.shape[-1])
    return x * mask.view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1]).to(x.dtype)


def masked_mean(x: torch.Tensor, counts: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Mean over the time axis `dim` of `x` counting only each clip's real frames (plain mean when None)."""
    if counts is None:
        return x.mean(dim)
    moved = zero_padding(x.movedim(dim, -1), counts)
    return moved.sum(-1) / counts.to(x.device).clamp_min(1).view(-1, *([1] * (moved.dim() - 2))).to(x.dtype)
