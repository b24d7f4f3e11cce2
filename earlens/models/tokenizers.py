"""Turn audio or activations into discrete symbols for Zipf statistics.

(a) ``LyraTokenizer``: the Lyra v2 SoundStream encoder + residual vector quantizer (TFLite), a real neural codec;
(b) ``KMeansUnits``: HuBERT-style k-means units over frames of a layer, fixed once fitted unless refitted (ids
    kept by matching the new centroids to the old);
(c) ``ModelCodes``: a model's own quantiser codes, from any callable that returns them.
Multi-codebook codes (frames, k) become one symbol per frame with ``codes_to_symbols`` (mixed radix).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from earlens.io.paths import data_root
from earlens.models.base import Backbone

LYRA_SAMPLE_RATE = 16_000
LYRA_FRAME_SAMPLES = 320  # 20 ms hop: 50 frames per second
LYRA_CODEBOOK_SIZE = 16
LYRA_MAX_CODEBOOKS = 46


def codes_to_symbols(codes, codebook_size: int) -> np.ndarray:
    """One integer per frame from (..., k) codes: Σ_j code_j · codebook_size^j (codebook 0 least significant)."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    if float(codebook_size) ** codes.shape[-1] >= 2.0**63:
        raise ValueError(f"{codes.shape[-1]} codebooks of {codebook_size} entries overflow int64 symbols")
    place_values = np.int64(codebook_size) ** np.arange(codes.shape[-1], dtype=np.int64)
    return codes.astype(np.int64) @ place_values


class LyraTokenizer:
    """Lyra v2 SoundStream codes: 16 kHz audio → (n_frames, k) codes of the first k RVQ codebooks (16 entries each).

    The encoder is a streaming TFLite model (320 samples in, one 64-d frame out) that keeps its convolution
    state in resource variables, so each clip gets a fresh encoder interpreter: codes depend on the clip only.
    The last partial frame is zero-padded, so a clip of T samples gives ceil(T / 320) frames.
    """

    def __init__(self, k: int = 1, model_dir: str | Path | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if not 1 <= k <= LYRA_MAX_CODEBOOKS:
            raise ValueError(f"k must be in 1..{LYRA_MAX_CODEBOOKS}, got {k}")
        self.k = k
        self.model_dir = Path(model_dir) if model_dir else data_root(dataset="models/lyra")
        self._encoder_path = self.model_dir / "soundstream_encoder.tflite"
        quantizer_path = self.model_dir / "quantizer.tflite"
        for path in (self._encoder_path, quantizer_path):
            if not path.is_file():
                raise FileNotFoundError(f"Lyra model file {path} missing; copy model_coeffs/{path.name} from "
                                        "https://github.com/google/lyra into that folder")
        self._interpreter_class = Interpreter
        self._quantizer = Interpreter(model_path=str(quantizer_path))
        self._quantize = self._quantizer.get_signature_runner("encode")

    @property
    def codebook_size(self) -> int:
        return LYRA_CODEBOOK_SIZE

    @property
    def vocab_size(self) -> int:
        """Number of distinct frame symbols (``codes_to_symbols`` of k codebooks)."""
        return LYRA_CODEBOOK_SIZE**self.k

    def describe(self) -> str:
        """The TFLite signatures (inputs/outputs with shapes and dtypes) of the encoder and quantizer."""
        encoder = self._interpreter_class(model_path=str(self._encoder_path))
        lines = []
        for name, interpreter in (("soundstream_encoder", encoder), ("quantizer", self._quantizer)):
            for signature in interpreter.get_signature_list():
                runner = interpreter.get_signature_runner(signature)
                io = [(kind, key, tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)
                      for kind, details in (("in", runner.get_input_details()), ("out", runner.get_output_details()))
                      for key, d in details.items()]
                lines.append(f"{name}.{signature}: " + ", ".join(f"{k} {n}{s} {t}" for k, n, s, t in io))
        return "\n".join(lines)

    def latents(self, wave_16k) -> np.ndarray:
        """(n_frames, 64) float32 SoundStream encoder outputs (what the RVQ quantises) of a mono 16 kHz waveform."""
        wave = np.asarray(wave_16k, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0 or not np.all(np.isfinite(wave)):
            raise ValueError(f"Lyra needs a non-empty finite mono waveform, got shape {wave.shape}")
        n_frames = -(-wave.size // LYRA_FRAME_SAMPLES)
        frames = np.zeros(n_frames * LYRA_FRAME_SAMPLES, dtype=np.float32)
        frames[: wave.size] = wave
        frames = frames.reshape(n_frames, 1, LYRA_FRAME_SAMPLES)
        # Fixed (1, 320) input shape: the streaming encoder is stepped frame by frame.
        encoder = self._interpreter_class(model_path=str(self._encoder_path)).get_signature_runner("serving_default")
        return np.stack([encoder(input_audio=frame)["output_0"].reshape(-1) for frame in frames])

    def quantize(self, latents) -> np.ndarray:
        """(n_frames, k) int64 RVQ codes in [0, 16) of (n_frames, 64) encoder latents."""
        num_quantizers = np.array(self.k, dtype=np.int32)
        codes = np.stack([
            self._quantize(input_frames=np.asarray(frame, dtype=np.float32).reshape(1, 1, -1),
                           num_quantizers=num_quantizers)["output_0"].reshape(-1)[: self.k]
            for frame in latents
        ])
        return codes.astype(np.int64)

    def encode(self, wave_16k) -> np.ndarray:
        """(n_frames, k) int64 codes in [0, 16) of a mono 16 kHz waveform in [-1, 1]."""
        return self.quantize(self.latents(wave_16k))

    def tokenize(self, wave_16k) -> np.ndarray:
        """(n_frames,) symbols: the k codes of each frame combined into one integer in [0, 16^k)."""
        return codes_to_symbols(self.encode(wave_16k), LYRA_CODEBOOK_SIZE)


class KMeansUnits:
    """k-means units over activation frames (HuBERT-style): fitted on (N, D) frames, then fixed unless refitted.

    A refit (``refit``, or ``move_to`` for centroids fitted elsewhere) keeps unit ids comparable: the new centroids
    are matched one-to-one to the old ones (Hungarian assignment on Euclidean distance) and take their ids, and it
    reports how far they moved (``centroid_shift``).
    """

    def __init__(self, n_units: int, seed: int = 0):
        self.n_units = n_units
        self.seed = seed
        self.centroids: torch.Tensor | None = None

    @property
    def vocab_size(self) -> int:
        return self.n_units

    @property
    def fitted(self) -> bool:
        return self.centroids is not None

    def compute_centroids(self, frames) -> torch.Tensor:
        """k-means centroids of (N, D) frames (sklearn MiniBatchKMeans, fixed seed), without adopting them."""
        from sklearn.cluster import MiniBatchKMeans

        frames = np.asarray(torch.as_tensor(frames, dtype=torch.float32).cpu())
        if frames.ndim != 2 or frames.shape[0] < self.n_units:
            raise ValueError(f"need (N ≥ {self.n_units}, D) frames to fit {self.n_units} units, got {frames.shape}")
        kmeans = MiniBatchKMeans(n_clusters=self.n_units, random_state=self.seed, n_init=3, batch_size=4096)
        return torch.as_tensor(kmeans.fit(frames).cluster_centers_, dtype=torch.float32)

    def fit(self, frames) -> KMeansUnits:
        """Fit the centroids on (N, D) frames; refuses once fitted (``refit`` moves fitted units on purpose)."""
        if self.fitted:
            raise RuntimeError("KMeansUnits are fitted once and then fixed; use refit() to move them on new frames")
        return self.set_centroids(self.compute_centroids(frames))

    def refit(self, frames) -> float:
        """Refit on new frames, keep each unit's id (matched centroids) and return ``centroid_shift``."""
        return self.move_to(self.compute_centroids(frames))

    def move_to(self, centroids) -> float:
        """Adopt new centroids (e.g. refitted on DDP rank 0) matched to the current ids; returns how far they moved."""
        if not self.fitted:
            raise RuntimeError("KMeansUnits.move_to needs fitted units to match against; call fit or set_centroids")
        matched, shift = match_centroids(self.centroids, torch.as_tensor(centroids, dtype=torch.float32).cpu())
        self.set_centroids(matched)
        return shift

    def set_centroids(self, centroids) -> KMeansUnits:
        """Adopt centroids fitted elsewhere as they are (e.g. broadcast from DDP rank 0, or from a checkpoint)."""
        centroids = torch.as_tensor(centroids, dtype=torch.float32).cpu()
        if centroids.shape[0] != self.n_units:
            raise ValueError(f"expected {self.n_units} centroids, got {centroids.shape[0]}")
        self.centroids = centroids
        return self

    def encode(self, frames) -> np.ndarray:
        """Nearest-centroid unit id (int64) of each frame; frames (..., D)."""
        if not self.fitted:
            raise RuntimeError("KMeansUnits.encode called before fit")
        frames = torch.as_tensor(frames, dtype=torch.float32).detach().cpu()
        flat = frames.reshape(-1, frames.shape[-1])
        ids = torch.cdist(flat, self.centroids).argmin(dim=1)
        return ids.reshape(frames.shape[:-1]).numpy().astype(np.int64)


def match_centroids(old: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``new`` reordered so that row i is the centroid matched to ``old[i]`` (minimum total Euclidean distance), and
    the centroid shift: mean distance between matched pairs over the spread of the old centroids (mean distance to
    their mean). 0 = unchanged; ~1 = moved as far as the units are spread; unit relabelling alone gives 0."""
    from scipy.optimize import linear_sum_assignment

    if old.shape != new.shape:
        raise ValueError(f"centroids of shape {tuple(new.shape)} cannot be matched to {tuple(old.shape)}")
    old64, new64 = old.double(), new.double()
    _, columns = linear_sum_assignment(torch.cdist(old64, new64).numpy())
    matched = new[torch.as_tensor(columns)]
    spread = (old64 - old64.mean(dim=0)).norm(dim=1).mean()
    moved = (matched.double() - old64).norm(dim=1).mean()
    return matched, float(moved / spread) if spread > 0 else float("nan")


class ModelCodes:
    """Adapter for a model's own quantiser: ``codes_fn(x)`` returns integer codes (..., k) in [0, codebook_size)."""

    def __init__(self, codes_fn: Callable, codebook_size: int, n_codebooks: int = 1):
        self.codes_fn = codes_fn
        self.codebook_size = codebook_size
        self.n_codebooks = n_codebooks

    @property
    def vocab_size(self) -> int:
        return self.codebook_size**self.n_codebooks

    def encode(self, x) -> np.ndarray:
        """(…, k) codes from ``codes_fn`` as int64, checked for integer type, codebook count and range."""
        codes = self.codes_fn(x)
        codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes_fn must return integer codes, got {codes.dtype}")
        if codes.shape[-1] != self.n_codebooks:
            raise ValueError(f"codes_fn returned {codes.shape[-1]} codebooks, expected {self.n_codebooks}")
        return codes.astype(np.int64)

    def tokenize(self, x) -> np.ndarray:
        """One symbol per frame: the codes combined with ``codes_to_symbols``."""
        return codes_to_symbols(self.encode(x), self.codebook_size)


class LyraBackbone(Backbone):
    """Lyra v2 SoundStream as a probe backbone: layer `latent` (B, frames, 64) floats and `rvq` (B, frames, k) codes.

    A TFLite graph: no torch parameters, so it has no random-initialisation counterpart (`random_init` gives None).
    """

    def __init__(self, k: int = 4, model_dir: str | Path | None = None, layers=None):
        self.tokenizer = LyraTokenizer(k=k, model_dir=model_dir)
        self.name, self.sample_rate = "lyra-soundstream", LYRA_SAMPLE_RATE
        self.layer_names = list(layers or ["latent", "rvq"])
        unknown = sorted(set(self.layer_names) - {"latent", "rvq"})
        if unknown:
            raise ValueError(f"lyra has layers latent and rvq, not {unknown}")
        self.weights_id = f"lyra-v2-soundstream-k{k}"
        self.module = torch.nn.Module()

    def forward(self, waves: torch.Tensor) -> list[torch.Tensor]:
        latents = [self.tokenizer.latents(wave) for wave in waves.cpu().numpy()]
        outputs = {"latent": torch.from_numpy(np.stack(latents)),
                   "rvq": torch.from_numpy(np.stack([self.tokenizer.quantize(lat) for lat in latents]))}
        return [outputs[name] for name in self.layer_names]
