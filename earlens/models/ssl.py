"""HuBERT-style self-supervised pretraining, framework-free: targets, masks and the music the model hears.

The targets are k-means units (`earlens.models.tokenizers.KMeansUnits`) of log-mel frames placed at the centres of the
convolutional feature extractor's frames, so target i describes what frame i of the model sees. Masks are spans
of frames, drawn from a `torch.Generator`, so a seed fixes them. The training audio is random music rendered with
FluidSynth (`earlens.stimuli.rendering`): notes, intervals, chords, scales and melodies over many General MIDI programs,
registers and tempi, each clip drawn from its own seed; no label leaves this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from earlens.frontend.spectrogram import log_mel_spectrogram
from earlens.stimuli.rendering import _Renderer
from earlens.stimuli.syntheory_concepts import CHORD_QUALITIES, MODES, SYNTHEORY_PROGRAMS
from earlens.stimuli.syntheory_events import ClipEvents

MUSIC_KINDS = ("note", "interval", "chord", "scale", "melody")


def normalize_waves(waves: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per clip: what a feature extractor with `do_normalize` does, and what
    `earlens.models.backbones.HiddenStatesBackbone` applies, so the trained and the reloaded model see the same
    input."""
    return (waves - waves.mean(1, keepdim=True)) / (waves.var(1, keepdim=True) + 1e-7).sqrt()


def conv_frame_count(n_samples, kernels: Sequence[int], strides: Sequence[int]):
    """Frames a stack of unpadded 1-D convolutions gives for `n_samples` (an int or an integer tensor)."""
    for kernel, stride in zip(kernels, strides):
        n_samples = (n_samples - kernel) // stride + 1
    return n_samples


def conv_receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(receptive field, hop) in samples of a stack of unpadded 1-D convolutions."""
    field, hop = 1, 1
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def aligned_log_mel(waves: torch.Tensor, sample_rate: int, n_frames: int, field: int, hop: int,
                    n_mels: int = 64, n_fft: int = 1024) -> torch.Tensor:
    """(B, n_frames, n_mels) log-mel frames, frame i centred where conv frame i is (sample i·hop + field // 2),
    with a window as long as the receptive field."""
    mel = log_mel_spectrogram(waves[:, field // 2:], sample_rate, win_length=field, hop_length=hop, n_fft=n_fft,
                              n_mels=n_mels)
    if mel.shape[-1] < n_frames:
        raise ValueError(f"{mel.shape[-1]} log-mel frames for {n_frames} model frames; clips too short")
    return mel[..., :n_frames].transpose(1, 2)


def nearest_units(frames: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Unit id (int64) of each (..., D) frame: the nearest centroid."""
    flat = frames.reshape(-1, frames.shape[-1])
    return torch.cdist(flat, centroids.to(flat)).argmin(dim=1).reshape(frames.shape[:-1])


def span_mask(batch: int, n_frames: int, start_prob: float, span: int, generator: torch.Generator,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, n_frames) bool: every frame starts a masked span of `span` frames with probability `start_prob`
    (HuBERT's scheme; spans may overlap); a row with no span gets one at a random start, so every clip is scored."""
    if not 0 < start_prob < 1 or span < 1 or span > n_frames:
        raise ValueError(f"span_mask: need 0 < start_prob < 1 and 1 <= span <= {n_frames}, got {start_prob}, {span}")
    starts = torch.rand(batch, n_frames - span + 1, generator=generator) < start_prob
    forced = torch.randint(0, n_frames - span + 1, (batch,), generator=generator)
    empty = ~starts.any(dim=1)
    starts[empty, forced[empty]] = True
    covered = F.conv1d(starts.float()[:, None], torch.ones(1, 1, span), padding=span - 1)[:, 0]
    return (covered > 0).to(device)


def random_music_events(rng: np.random.Generator, clip_seconds: float, programs: Sequence[int] = SYNTHEORY_PROGRAMS,
                        pitch_range: tuple[int, int] = (36, 96), kinds: Sequence[str] = MUSIC_KINDS,
                        note_seconds: tuple[float, float] = (0.12, 0.8), velocity: tuple[int, int] = (50, 110)
                        ) -> ClipEvents:
    """One clip of random music filling `clip_seconds`: a repeated note, interval, triad (any inversion), a scale of
    one of the seven modes, or a melody (random steps within an octave and a half), on a random program, register
    and tempo (`note_seconds` per note, log-uniform)."""
    unknown = set(kinds) - set(MUSIC_KINDS)
    if unknown or not kinds:
        raise ValueError(f"music kinds must be among {MUSIC_KINDS}, got {list(kinds)}")
    low, high = pitch_range
    if not 0 <= low < high - 24 <= 127 - 24:
        raise ValueError(f"pitch_range {pitch_range}: need 0 <= low and low + 24 < high <= 127")
    kind = kinds[rng.integers(len(kinds))]
    beat = float(np.exp(rng.uniform(*np.log(note_seconds))))
    n_steps = int(np.ceil(clip_seconds / beat))
    root = int(rng.integers(low, high - 12))
    if kind == "note":
        steps = [[root]] * n_steps
    elif kind == "interval":
        upper = root + int(rng.integers(1, 13))
        together = rng.random() < 0.5
        steps = [[root, upper]] * n_steps if together else [[root], [upper]] * (n_steps // 2 + 1)
    elif kind == "chord":
        pitches = [root + step for step in CHORD_QUALITIES[list(CHORD_QUALITIES)[rng.integers(4)]]]
        inversion = int(rng.integers(3))
        steps = [pitches[inversion:] + [p + 12 for p in pitches[:inversion]]] * n_steps
    elif kind == "scale":
        offsets = (*MODES[list(MODES)[rng.integers(len(MODES))]], 12)
        scale = [root + offset for offset in offsets]
        steps = [[p] for p in (scale + scale[-2::-1]) * (n_steps // 15 + 1)]
    else:
        walk = np.clip(np.cumsum(rng.integers(-4, 5, n_steps)), -9, 9)
        steps = [[root + 6 + int(step)] for step in walk]
    loudness = int(rng.integers(*velocity))
    notes = tuple((pitch, k * beat, (k + 1) * beat, loudness) for k, chord in enumerate(steps[:n_steps])
                  for pitch in chord if 0 <= pitch <= 127)
    return ClipEvents(notes, int(programs[rng.integers(len(programs))]))


class MusicRenderer:
    """Renders `random_music_events` clips; a fresh synthesizer per clip, so a clip depends on its seed alone (not
    on which clips the same process rendered before). Picklable for DataLoader workers (the synthesizer is not
    carried along)."""

    def __init__(self, sample_rate: int, clip_seconds: float, **event_options):
        self.sample_rate, self.clip_seconds, self.event_options = sample_rate, clip_seconds, event_options
        self.n_samples = round(clip_seconds * sample_rate)
        self._renderer: _Renderer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_renderer": None}

    def __call__(self, seed: int | Sequence[int]) -> np.ndarray:
        """Mono float32 clip drawn from `seed`."""
        if self._renderer is None:
            self._renderer = _Renderer(self.sample_rate)
        events = random_music_events(np.random.default_rng(seed), self.clip_seconds, **self.event_options)
        self._renderer.restart()
        wave = self._renderer.render(events, self.n_samples)
        return np.pad(wave, (0, self.n_samples - len(wave))) if len(wave) < self.n_samples else wave
