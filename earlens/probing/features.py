"""Feature cache: run a frozen backbone over a stimulus set once, probe the activations many times.

`extract_features` writes one shard per batch (to a temporary name, then `os.replace`, so a shard that
exists is complete) with a checksum beside it, assembles the shards into one `.npy` opened as a memory map, and
writes `manifest.json` (with the final array's size and checksum) last to mark the entry complete. A crashed run
resumes at the missing shards; a shard or final array whose bytes no longer match its checksum (zeroed, truncated),
or an entry whose manifest cannot be read, is rebuilt with a warning naming the file. Entries are keyed by the
audio's content, never by a caller's label.

Layout: pooling `"mean"` (over time) gives `(N, L, D)`; `"none"` keeps time as `(N, L, T, D)`. Layers of
different width (EnCodec, CREPE) are zero-padded to the widest selected layer, and with `"none"` layers of
different frame rate are zero-padded to the longest; `manifest.json` records each layer's true
`layer_dims` and `layer_frames`, so `features[:, l, ..., :layer_dims[l]]` is layer l exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
from tqdm.auto import tqdm

from earlens.io.audio import audio_fingerprint
from earlens.io.lengths import masked_mean, proportional_frames
from earlens.io.paths import cache_dir as default_cache_dir
from earlens.models.base import Backbone

POOLINGS = ("mean", "none")


def checksum(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """BLAKE2b digest of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def feature_key(backbone: Backbone, audio_key: str, pooling: str, sample_rate: int,
                precision: str = "float32") -> str:
    """Cache key: hash of backbone weights id × selected layers × audio content × pooling × input rate × precision
    (bf16/fp16 autocast on GPU gives other numbers than float32 on CPU, so they never share an entry).
    `audio_key` is `audio_fingerprint(waves)`."""
    fields = {"weights_id": backbone.weights_id, "layers": list(backbone.layer_names),
              "audio": audio_key, "pooling": pooling, "sample_rate": int(sample_rate)}
    if precision != "float32":  # keeps the keys of existing float32 entries
        fields["precision"] = precision
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def resample(waves: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample clips `(B, T)` together (soxr treats them as channels)."""
    if sample_rate == target_rate:
        return np.ascontiguousarray(waves, dtype=np.float32)
    return np.ascontiguousarray(soxr.resample(waves.T.astype(np.float32), sample_rate, target_rate).T)


def pool_layers(outputs: list[torch.Tensor], pooling: str, lengths: torch.Tensor | None = None,
                n_samples: int | None = None, frame_lengths=None) -> tuple[torch.Tensor, list[int], list[int]]:
    """Per-layer `(B, T_l, D_l)` → `(B, L, D)` (mean over time) or `(B, L, T, D)`, zero-padded; also the
    true `D_l` and `T_l` of each layer. With `lengths` (real samples of clips `n_samples` long), the mean counts
    only each clip's real frames of each layer, so padding never enters a feature: `frame_lengths(lengths, n_frames,
    n_samples)` of the backbone where it knows its framing, else `proportional_frames`."""
    dims = [output.shape[-1] for output in outputs]
    frames = [output.shape[1] for output in outputs]
    count = frame_lengths or (lambda lengths, n_frames, n_samples: proportional_frames(lengths, n_samples, n_frames))
    if pooling == "mean":
        pooled = [masked_mean(output.float(), None if lengths is None else count(lengths, output.shape[1], n_samples),
                              dim=1) for output in outputs]
        return torch.stack([torch.nn.functional.pad(p, (0, max(dims) - p.shape[-1])) for p in pooled], 1), \
            dims, frames
    padded = [torch.nn.functional.pad(output.float(), (0, max(dims) - output.shape[-1],
                                                       0, max(frames) - output.shape[1])) for output in outputs]
    return torch.stack(padded, 1), dims, frames


def _atomic_write(path: Path, write) -> None:
    """Write through `write(file)` to a temporary sibling, then rename: readers never see a partial file."""
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(temporary, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _shard_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"shard_{start:08d}_{stop:08d}.npy"


def _complete_shard(path: Path, n_clips: int) -> bool:
    """A shard counts as done if its bytes match the checksum written beside it and it holds `n_clips` clips; a
    shard whose bytes changed is deleted with a warning (it is then recomputed)."""
    sidecar = path.with_name(path.name + ".b2")
    if not (path.is_file() and sidecar.is_file()):
        return False
    if checksum(path) != sidecar.read_text().strip():
        warnings.warn(f"feature cache: {path} does not match its checksum (corrupted); recomputing it", stacklevel=3)
        path.unlink(missing_ok=True)
        return False
    try:
        return np.load(path, mmap_mode="r").shape[0] == n_clips
    except (OSError, ValueError):
        return False


def _verified_entry(final_path: Path, manifest_path: Path) -> np.memmap | None:
    """The finished array if its size and checksum match the manifest; else None (entry removed, with a warning)."""
    if not (manifest_path.is_file() and final_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        expected_size, expected_sum = manifest.get("bytes"), manifest.get("checksum")
    except (ValueError, AttributeError, UnicodeDecodeError) as err:  # emptied, cut short, not an object
        damaged, problem = manifest_path, f"is unreadable ({type(err).__name__})"
    else:
        damaged = final_path
        problem = ("is truncated or grown" if final_path.stat().st_size != expected_size else
                   "does not match its checksum" if checksum(final_path) != expected_sum else None)
    if problem is None:
        return np.load(final_path, mmap_mode="r")
    warnings.warn(f"feature cache: {damaged} {problem} (corrupted); rebuilding the entry", stacklevel=3)
    manifest_path.unlink(missing_ok=True)
    final_path.unlink(missing_ok=True)
    return None


def load_manifest(features: np.memmap) -> dict:
    """The manifest of a cached feature array (backbone, layers, layer_dims, layer_frames, key, ...)."""
    return json.loads((Path(features.filename).parent / "manifest.json").read_text())


def _autocast_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype | None:
    """bf16 (or fp16 where bf16 is unsupported) autocast on GPU; None (full precision) on CPU."""
    if device.type != "cuda":
        return None
    return dtype or (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@dataclass
class ExtractionPlan:
    """One cache entry to fill: where it lives, the clips, and the shards `(start, stop)` still missing.

    `extract_features` runs it in one process; `earlens.lightning_modules.extraction` runs the missing shards as
    `Trainer.predict` over any number of devices and nodes, each rank writing its own shards. Either way
    `assemble` then joins the shards into one array, only once all exist.
    """

    folder: Path
    waves: np.ndarray
    sample_rate: int
    lengths: np.ndarray | None
    pooling: str
    precision: str
    spans: list[tuple[int, int]]
    missing: list[tuple[int, int]]
    manifest_fields: dict
    entry_bytes: int = 0  # N × L × D × 4 of the final array, when the widest layer is known before extraction

    @property
    def bytes_needed(self) -> int:
        """Disk the entry needs while it is built: the shards and the final array coexist before clean-up (×2)."""
        return 2 * self.entry_bytes


def precision_name(dtype: torch.dtype | None) -> str:
    """The cache key's precision part: `float32`, or the autocast dtype (`bfloat16`, `float16`)."""
    return str(dtype).removeprefix("torch.") if dtype else "float32"


def plan_extraction(backbone: Backbone, waves: np.ndarray, sample_rate: int, stimulus_key: str = "",
                    pooling: str = "mean", batch_size: int = 8, cache_dir: str | os.PathLike | None = None,
                    precision: str = "float32", lengths: np.ndarray | None = None,
                    layer_width: int | None = None) -> ExtractionPlan:
    """Validate the inputs, find (or verify) the cache entry and list the shards still to compute.

    `layer_width` (the widest selected layer, if known) lets `bytes_needed` be exact before anything runs."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    waves = np.asarray(waves)
    if waves.ndim != 2 or len(waves) == 0:
        raise ValueError(f"waves must be (N, T) with N > 0, got shape {waves.shape}")
    folder = Path(cache_dir) if cache_dir else default_cache_dir("features")
    audio_key = audio_fingerprint(waves)
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (len(waves),) or (lengths < 1).any() or (lengths > waves.shape[1]).any():
            raise ValueError(f"lengths must be (N,) = ({len(waves)},) values in 1..{waves.shape[1]}")
        audio_key = hashlib.blake2b((audio_key + lengths.tobytes().hex()).encode(), digest_size=16).hexdigest()
    folder = folder / feature_key(backbone, audio_key, pooling, sample_rate, precision)
    spans = [(start, min(start + batch_size, len(waves))) for start in range(0, len(waves), batch_size)]
    done = _verified_entry(folder / "features.npy", folder / "manifest.json") is not None
    missing = [] if done else [span for span in spans
                               if not _complete_shard(_shard_path(folder, *span), span[1] - span[0])]
    fields = {"backbone": backbone.name, "weights_id": backbone.weights_id, "layers": backbone.layer_names,
              "stimulus_key": stimulus_key, "audio_key": audio_key, "pooling": pooling,
              "sample_rate": int(sample_rate), "backbone_sample_rate": backbone.sample_rate, "precision": precision}
    plan = ExtractionPlan(folder, waves, int(sample_rate), lengths, pooling, precision, spans, missing, fields)
    if layer_width:
        plan.entry_bytes = 4 * len(waves) * len(backbone.layer_names) * layer_width
    return plan


def check_disk_space(plan: ExtractionPlan) -> None:
    """Refuse, in one line, a job whose cache cannot fit on the disk that would hold it."""
    if not plan.missing or not plan.bytes_needed:
        return
    probe = plan.folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if plan.bytes_needed > free:
        raise OSError(f"feature cache {plan.folder} needs {plan.bytes_needed / 1e9:.2f} GB while it is built "
                      f"(shards + final array) but {probe} has {free / 1e9:.2f} GB free: set --features.cache_dir "
                      "(or $EARLENS_CACHE) to a larger disk")


def encode_span(backbone: Backbone, plan: ExtractionPlan, start: int, stop: int,
                autocast_dtype: torch.dtype | None = None) -> tuple[np.ndarray, list[int], list[int]]:
    """Pooled activations of clips `start:stop` (float32 numpy) and each layer's true width and frame count."""
    device = backbone.device
    batch = torch.from_numpy(resample(plan.waves[start:stop], plan.sample_rate, backbone.sample_rate)).to(device)
    batch_lengths = None if plan.lengths is None else torch.from_numpy(plan.lengths[start:stop])
    with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext():
        pooled, dims, frames = pool_layers(backbone(batch), plan.pooling, batch_lengths, plan.waves.shape[1],
                                           getattr(backbone, "frame_lengths", None))
    return pooled.float().cpu().numpy(), dims, frames


def write_shard(plan: ExtractionPlan, start: int, stop: int, array: np.ndarray, dims: list[int],
                frames: list[int]) -> None:
    """Write one shard (atomically, with its checksum beside it) and the layer layout, once."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    layout_path = plan.folder / "layout.json"
    if not layout_path.is_file():
        layout = json.dumps({"layer_dims": dims, "layer_frames": frames}).encode()
        _atomic_write(layout_path, lambda file: file.write(layout))
    shard = _shard_path(plan.folder, start, stop)
    _atomic_write(shard, lambda file: np.save(file, array))
    digest = checksum(shard).encode()
    _atomic_write(shard.with_name(shard.name + ".b2"), lambda file: file.write(digest))


def assemble(plan: ExtractionPlan) -> np.memmap:
    """Join the shards into `features.npy`, write `manifest.json` last, delete the shards; return the memory map."""
    final_path, manifest_path = plan.folder / "features.npy", plan.folder / "manifest.json"
    cached = _verified_entry(final_path, manifest_path)
    if cached is not None:
        return cached
    absent = [span for span in plan.spans if not _complete_shard(_shard_path(plan.folder, *span), span[1] - span[0])]
    if absent:
        raise RuntimeError(f"feature cache {plan.folder}: {len(absent)} shard(s) missing, first {absent[0]}")
    first = np.load(_shard_path(plan.folder, *plan.spans[0]), mmap_mode="r")
    shape = (len(plan.waves), *first.shape[1:])
    assembling = plan.folder / f"features.npy.tmp{os.getpid()}"
    features = np.lib.format.open_memmap(assembling, mode="w+", dtype=np.float32, shape=shape)
    for start, stop in plan.spans:
        features[start:stop] = np.load(_shard_path(plan.folder, start, stop), mmap_mode="r")
    features.flush()
    del features
    os.replace(assembling, final_path)
    manifest = {**plan.manifest_fields, **json.loads((plan.folder / "layout.json").read_text()),
                "shape": list(shape), "bytes": final_path.stat().st_size, "checksum": checksum(final_path)}
    _atomic_write(manifest_path, lambda file: file.write(json.dumps(manifest, indent=1).encode()))
    for span in plan.spans:
        shard = _shard_path(plan.folder, *span)
        shard.unlink(missing_ok=True)
        shard.with_name(shard.name + ".b2").unlink(missing_ok=True)
    for leftover in plan.folder.glob("*.tmp*"):
        leftover.unlink(missing_ok=True)
    return np.load(final_path, mmap_mode="r")


def extract_features(backbone: Backbone, waves: np.ndarray, sample_rate: int, stimulus_key: str = "",
                     pooling: str = "mean", batch_size: int = 8, cache_dir: str | os.PathLike | None = None,
                     device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                     lengths: np.ndarray | None = None) -> np.memmap:
    """Per-layer activations of `backbone` for clips `waves (N, T)` at `sample_rate`, cached on disk, in this process.

    Returns a read-only memory map `(N, L, D)` (`pooling="mean"`) or `(N, L, T, D)` (`"none"`); see the
    module docstring for padding. The cache entry lives in `cache_dir / feature_key(...)` (default
    `earlens.io.paths.cache_dir("features")`), keyed by the audio's content; `stimulus_key` is only a label recorded
    in the manifest. `lengths` (real samples per clip, padding after them) keeps padding out of the mean. A finished
    entry whose checksum still matches is returned without running the backbone. On GPU it runs under bf16 (or
    fp16) autocast unless `dtype` says otherwise. Many devices: `earlens.lightning_modules.extraction`.
    """
    if device is not None:
        backbone.to(device)
    autocast_dtype = _autocast_dtype(backbone.device, dtype)
    plan = plan_extraction(backbone, waves, sample_rate, stimulus_key, pooling, batch_size, cache_dir,
                           precision_name(autocast_dtype), lengths)
    for start, stop in tqdm(plan.missing, desc=f"{backbone.name} features", unit="batch",
                            initial=len(plan.spans) - len(plan.missing), total=len(plan.spans),
                            disable=not plan.missing):
        write_shard(plan, start, stop, *encode_span(backbone, plan, start, stop, autocast_dtype))
    return assemble(plan)
