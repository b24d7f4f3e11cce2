"""How often does the helix probe call a layer helical, or octave-equivalent, when it is not, and how often does it
find a helix that is there? False-positive rate and power of `p_helix` (periodic likelihood ratio), `p_octave`
(d_strict), `p_rsa_chroma` and `p_octave_index` over families of generated layers with known answer.

Each layer is P per-pitch means in D dimensions (`generate`): nulls with the structures real layers have (noise;
weak pitch-height lines, log and saturating curves, cubic curves; place codes; random walks and Gaussian-process
curves, high-rank and in three dimensions) and helices at ω = π/6, π/3 and 2.2 rad/semitone with a pitch-height
trend, smooth nuisance directions of 0.5–3× the circle's size and per-coordinate noise. Every draw is one layer of a
batched `helix_probe` call (its own seed, its own null). Prints one table per measure: the rejection rate at α =
0.05 (with a 95 % Clopper–Pearson interval) and 0.01, and, under the nulls, the KS test of p-value uniformity
(discrete p-values: (1 + k)/(1 + n_surrogates) is slightly conservative, so a KS p near 0 from too many large p is
conservatism, from too many small ones miscalibration; the rejection columns tell which).

    python bench/helix_calibration.py                       # every family at 36 × 64, 100 draws
    python bench/helix_calibration.py --sizes 88x100 48x16 36x512 --draws 100
    python bench/helix_calibration.py --families line_weak helix_pi6_nuisance2 --draws 40
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import beta, kstest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from earlens.probing.helicality import helix_probe  # noqa: E402

MEASURES = ("p_helix", "p_octave", "p_rsa_chroma", "p_octave_index")
NULLS = ("noise", "line_weak", "log_curve", "saturating", "cubic", "line_and_log", "place_code", "random_walk",
         "random_walk_3d", "gp_curves", "gp_curves_clean", "gp_lowrank", "place_code_and_line")
HELICES = {  # name: (ω, nuisance size relative to the circle's radius, per-coordinate noise)
    "helix_pi6": (np.pi / 6, 0.0, 0.3), "helix_pi3": (np.pi / 3, 0.0, 0.3), "helix_2.2": (2.2, 0.0, 0.3),
    "helix_pi6_nuisance0.5": (np.pi / 6, 0.5, 0.3), "helix_pi6_nuisance1": (np.pi / 6, 1.0, 0.3),
    "helix_pi6_nuisance2": (np.pi / 6, 2.0, 0.3), "helix_pi6_nuisance3": (np.pi / 6, 3.0, 0.3),
    "helix_pi3_nuisance2": (np.pi / 3, 2.0, 0.3), "helix_2.2_nuisance2": (2.2, 2.0, 0.3),
    "helix_pi6_nuisance2_noise0.1": (np.pi / 6, 2.0, 0.1),
}
OCTAVE_EQUIVALENT = ("helix_pi6", "helix_pi3")  # 12 semitones = one or two turns; RSA's chroma: one turn only


def _orthonormal(rng: np.random.Generator, dim: int, k: int) -> np.ndarray:
    return np.linalg.qr(rng.normal(size=(dim, k)))[0]


def _gp(rng: np.random.Generator, t: np.ndarray, length: float, k: int) -> np.ndarray:
    kernel = np.exp(-0.5 * ((t[:, None] - t[None, :]) / length) ** 2) + 1e-8 * np.eye(len(t))
    return np.linalg.cholesky(kernel) @ rng.normal(size=(len(t), k))


def generate(family: str, rng: np.random.Generator, n_pitches: int, width: int) -> np.ndarray:
    """One layer's per-pitch means (P, D) of a family; nulls carry per-coordinate noise 0.3 unless noted.

    Units: the circle of a helix has radius 1; a weak line has range 1 along one direction (below the noise's
    top principal component at 0.3 noise for D ≥ 16); curves are scaled to range 1 along their directions.
    """
    t = np.arange(n_pitches, dtype=np.float64)
    unit = (t - t.min()) / (t.max() - t.min())
    noise = 0.3
    if family in HELICES:
        omega, nuisance, noise = HELICES[family]
        helix = np.stack([t / 12, np.cos(omega * t), np.sin(omega * t)], axis=1)  # one unit of height per octave
        signal = helix @ _orthonormal(rng, width, 3).T
        if nuisance:
            smooth = _gp(rng, t, 12.0, 3)
            smooth *= nuisance / np.sqrt(2) / smooth.std(axis=0)  # each direction's rms: nuisance × the circle's
            signal = signal + smooth @ _orthonormal(rng, width, 3).T
    elif family == "noise":
        signal = np.zeros((n_pitches, width))
    elif family == "line_weak":
        signal = np.outer(unit - 0.5, _orthonormal(rng, width, 1)[:, 0])
    elif family in ("log_curve", "saturating", "line_and_log"):
        curve = {"log_curve": np.log1p(t), "saturating": np.tanh((t - n_pitches / 3) / (n_pitches / 8)),
                 "line_and_log": np.log1p(t)}[family]
        curve = (curve - curve.min()) / (curve.max() - curve.min())
        directions = _orthonormal(rng, width, 2)
        signal = np.outer(curve, directions[:, 0])
        if family == "line_and_log":
            signal = signal + np.outer(unit, directions[:, 1])
    elif family == "cubic":
        centred = unit - 0.5
        signal = np.stack([centred, 2 * centred**2, 4 * centred**3], axis=1) @ _orthonormal(rng, width, 3).T
    elif family in ("place_code", "place_code_and_line"):
        centres = rng.uniform(0, n_pitches, width)
        signal = np.exp(-0.5 * ((t[:, None] - centres[None, :]) / 4.0) ** 2)
        if family == "place_code_and_line":
            signal = signal + 3 * np.outer(unit - 0.5, _orthonormal(rng, width, 1)[:, 0])
    elif family == "random_walk":
        signal = 0.3 * np.cumsum(rng.normal(size=(n_pitches, width)), axis=0)
    elif family == "random_walk_3d":
        signal = 0.3 * np.cumsum(rng.normal(size=(n_pitches, 3)), axis=0) @ _orthonormal(rng, width, 3).T
    elif family == "gp_curves":
        signal = 3 * _gp(rng, t, 6.0, width) / np.sqrt(width)
    elif family == "gp_curves_clean":  # every coordinate a unit Gaussian-process curve, little noise
        signal, noise = _gp(rng, t, 6.0, width), 0.1
    elif family == "gp_lowrank":
        signal = _gp(rng, t, 10.0, 3) @ _orthonormal(rng, width, 3).T
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(NULLS + tuple(HELICES))}")
    return signal + noise * rng.normal(size=(n_pitches, width))


def rates(p: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Rejection rate at alpha with its 95 % Clopper–Pearson interval."""
    k, n = int((p <= alpha).sum()), len(p)
    low = beta.ppf(0.025, k, n - k + 1) if k else 0.0
    high = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return k / n, low, high


def calibrate(family: str, n_pitches: int, width: int, draws: int, surrogates: int, seed: int) -> dict:
    layers = np.stack([generate(family, np.random.default_rng([seed, n_pitches, width, draw]), n_pitches, width)
                       for draw in range(draws)])
    began = time.perf_counter()
    stats = helix_probe(layers, n_surrogates=surrogates, n_components=5, n_bootstrap=0, seed=seed).layer_stats()
    return {"stats": stats, "seconds": time.perf_counter() - began}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(NULLS) + list(HELICES))
    parser.add_argument("--sizes", nargs="+", default=["36x64"], help="PITCHESxDIMS, e.g. 36x64 88x100 48x16")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--surrogates", type=int, default=99)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"# helix calibration: {args.draws} draws per cell, {args.surrogates} null draws per layer, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    results = {}
    for size in args.sizes:
        n_pitches, width = (int(x) for x in size.lower().split("x"))
        for family in args.families:
            results[family, size] = calibrate(family, n_pitches, width, args.draws, args.surrogates, args.seed)
            print(f"  {family} {size}: {results[family, size]['seconds']:.0f} s", file=sys.stderr, flush=True)
    for measure in MEASURES:
        print(f"\n## {measure}\n\n| family | P × D | kind | rejected at 0.05 (95 % CI) | at 0.01 | KS uniformity p | "
              "median p |\n|---|---|---|---|---|---|---|")
        for (family, size), result in results.items():
            p = result["stats"][measure]
            p = p[np.isfinite(p)]
            if not len(p):
                continue
            equivalent = family.startswith("helix_pi6" if measure == "p_rsa_chroma" else OCTAVE_EQUIVALENT)
            null = family in NULLS or (measure != "p_helix" and not equivalent)
            kind = "null" if null else "power"
            rate, low, high = rates(p, 0.05)
            ks = f"{kstest(p, 'uniform').pvalue:.3f}" if null else "–"
            print(f"| {family} | {size.replace('x', ' × ')} | {kind} | {rate:.3f} ({low:.3f}–{high:.3f}) | "
                  f"{rates(p, 0.01)[0]:.3f} | {ks} | {np.median(p):.3f} |")


if __name__ == "__main__":
    main()
