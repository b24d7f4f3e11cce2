"""Peak memory of the linear probes as the number of clips grows: in-memory fast protocol against streaming.

    python bench/probe_memory.py [--clips 4000 16000 64000] [--layers 8] [--dims 256]

Each measurement runs in its own process (peak resident set size from `getrusage`, so one run's memory never counts
against another) on a seeded memory-mapped feature array written once per size. Prints a markdown table: the
streaming path's peak should stay flat as N grows, the in-memory path's grows with N × L × D.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_features(path: Path, n: int, layers: int, dims: int, classes: int = 8, seed: int = 0) -> np.ndarray:
    """Class-dependent Gaussian features `(n, layers, dims)` written in chunks (never whole in memory)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    centres = rng.normal(size=(classes, layers, dims)).astype(np.float32)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, layers, dims))
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        array[start:stop] = 0.5 * centres[labels[start:stop]] + rng.normal(size=(stop - start, layers, dims))
    array.flush()
    return labels


def measure(path: str, labels_path: str, protocol: str) -> dict:
    """(In a child process.) Fit one protocol on the memory map; its wall time, peak RSS and best test accuracy."""
    import torch

    from earlens.lightning_modules.probes import fit_streaming_probes
    from earlens.probing.probes import fit_layer_probes
    from earlens.probing.probes_common import split_indices

    torch.set_num_threads(2)
    features = np.load(path, mmap_mode="r")
    labels = np.load(labels_path)
    split = split_indices(labels, seed=0)
    began = time.perf_counter()
    if protocol == "fast":
        result = fit_layer_probes(np.asarray(features), labels, split=split, weight_decay=1e-3, max_epochs=100,
                                  progress=False)
    else:
        result = fit_streaming_probes(features, labels, split, weight_decay=1e-3, max_epochs=3, batch_size=512)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": time.perf_counter() - began, "peak_mib": peak_mib,
            "test_accuracy": float(result.metrics["test_accuracy"][result.best_layer()])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[4000, 16000, 64000])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="earlens-probe-memory-") as folder:
        for n in args.clips:
            path, labels_path = Path(folder) / f"features_{n}.npy", Path(folder) / f"labels_{n}.npy"
            np.save(labels_path, write_features(path, n, args.layers, args.dims))
            for protocol in ("fast", "streaming"):
                out = subprocess.run([sys.executable, __file__, "--child", str(path), str(labels_path), protocol],
                                     capture_output=True, text=True, check=True)
                rows.append({"clips": n, "protocol": protocol, "array_mib": path.stat().st_size / 2 ** 20,
                             **json.loads(out.stdout.strip().splitlines()[-1])})
            path.unlink()
    print(f"\n{args.layers} layers × {args.dims} dims, float32, 8 classes; peak RSS of the whole process "
          "(Python, torch and Lightning included)\n")
    print("| clips | feature array MiB | protocol | peak RSS MiB | wall s | best-layer test acc |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clips']} | {r['array_mib']:.0f} | {r['protocol']} | {r['peak_mib']:.0f} | {r['wall_s']:.1f} | "
              f"{r['test_accuracy']:.3f} |")


if __name__ == "__main__":
    main()
