"""Are the Zipf statistics calibrated? Size and power of the count power-law test, coverage of the Zipf–Mandelbrot
intervals, on sources whose truth is known.

    python bench/zipf_calibration.py [--tables size zipf lognormal coverage] [--draws 100] [--bootstrap 200]
                                     [--interval-draws 200] [--seed 0]

(from the repository root with earlens installed, or `PYTHONPATH=.`)

Prints one markdown table per part, each cell over `--draws` independent samples:

* size: exact discrete power laws (gamma, x_min 1) with as many types as stated. The test is at its nominal size when
  10 % of samples are rejected at 0.1 and the p-values are uniform (KS test against U(0, 1); p-values take values
  k/n_fitted, so a large KS p-value is what uniformity looks like here). Shown twice: synthetic sets with no x_min
  excluded (`power_law_p_value`) and counted as "KS below the data's" (the plain mean over all sets).
* zipf: tokens of a Zipf source (alpha 1) over V types: how often the verdict is "power_law", how often the bootstrap
  rules it out, uniformity of the p-values.
* lognormal: for each zipf cell, a lognormal source matched to its first sample (`earlens.stats.zipf.matched_lognormal`:
  as many types and tokens, a head over the count tail's ranks that falls as steeply); the share of its samples the
  full verdict (`--bootstrap` sets) calls "power_law" is 1 − power, next to `lognormal_power` as `zipf_statistics`
  computes it (50 samples, 50 bootstrap sets) on the first Zipf sample.
* coverage: Zipf–Mandelbrot sources (alpha 1, q 0 or 10, V types): the fit over observed ranks (its mean: the bias),
  the source's estimate (`zipf_mandelbrot_source`, `--interval-draws` samples per step) with its mean, spread and
  the share of 95 % intervals that cover the truth, for alpha and q, and the median population size found.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.stats import kstest
from tqdm import tqdm

from earlens.stats.power_law import called_power_law, fit_count_power_law, power_law_p_values
from earlens.stats.zipf import lognormal_power, matched_lognormal, rank_frequency_slope
from earlens.stats.zipf_mandelbrot import zipf_mandelbrot_source

SIZE_CELLS = [(gamma, n_types) for gamma in (2.0, 2.5, 3.0) for n_types in (100, 400, 2000)]
ZIPF_CELLS = [(600, 67_000), (600, 10_000), (5000, 10_000), (5000, 100_000), (20_000, 100_000)]
COVERAGE_CELLS = [(q, 5000, n) for q in (0.0, 10.0) for n in (1000, 10_000, 100_000, 1_000_000)] + \
                 [(0.0, 20_000, 10_000), (0.0, 20_000, 100_000)]


def machine_line() -> str:
    threads = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, threads {threads}, load average {load}"


def power_law_counts(gamma: float, n_types: int, rng: np.random.Generator) -> np.ndarray:
    """Counts of n_types types drawn from the discrete power law P(k) ∝ k^(−gamma), k ≥ 1 (support to 10^6)."""
    support = np.arange(1, 1_000_001, dtype=float)
    cdf = np.cumsum(support**-gamma)
    return 1 + np.searchsorted(cdf / cdf[-1], rng.random(n_types))


def zipf_counts(n_types: int, n_tokens: int, rng: np.random.Generator, alpha: float = 1.0, q: float = 0.0):
    probabilities = (np.arange(1, n_types + 1) + q) ** -alpha
    counts = rng.multinomial(n_tokens, probabilities / probabilities.sum())
    return counts[counts > 0]


def uniformity(p_values) -> float:
    p_values = np.asarray([p for p in p_values if np.isfinite(p)])
    return float(kstest(p_values, "uniform").pvalue) if p_values.size > 1 else float("nan")


def size_table(args) -> None:
    print("| gamma | types | samples | with a p-value | synthetic sets unfit | rejected at 0.1 (unfit excluded) "
          "| KS uniformity p | rejected at 0.1 (unfit counted below) | KS uniformity p | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell, (gamma, n_types) in enumerate(tqdm(SIZE_CELLS, desc="size", file=sys.stderr)):
        start = time.perf_counter()
        rng = np.random.default_rng(args.seed + cell)
        samples = [power_law_counts(gamma, n_types, rng) for _ in range(args.draws)]
        results = power_law_p_values(samples, [fit_count_power_law(c) for c in samples], args.bootstrap,
                                     args.seed + cell)
        fitted = [r for r in results if np.isfinite(r.value)]
        excluded = np.array([r.value for r in fitted])
        counted = np.array([r.value * r.n_fitted / (r.n_fitted + r.n_unfit) for r in fitted])
        unfit = np.mean([r.n_unfit / (r.n_fitted + r.n_unfit) for r in fitted])
        print(f"| {gamma} | {n_types} | {args.draws} | {len(fitted) / args.draws:.2f} | {unfit:.2f} "
              f"| {np.mean(excluded < 0.1):.3f} | {uniformity(excluded):.3f} | {np.mean(counted < 0.1):.3f} "
              f"| {uniformity(counted):.3f} | {time.perf_counter() - start:.0f} |", flush=True)


def zipf_and_lognormal_tables(args, parts) -> None:
    zipf_rows, lognormal_rows = [], []
    for cell, (n_types, n_tokens) in enumerate(tqdm(ZIPF_CELLS, desc="zipf", file=sys.stderr)):
        rng = np.random.default_rng(args.seed + 100 + cell)
        start = time.perf_counter()
        samples = [zipf_counts(n_types, n_tokens, rng) for _ in range(args.draws)]
        fits = [fit_count_power_law(c) for c in samples]
        p_values = [r.value for r in power_law_p_values(samples, fits, args.bootstrap, args.seed + cell)]
        called = called_power_law(samples, args.bootstrap, args.seed + cell)
        zipf_rows.append(f"| {n_types} | {n_tokens} | {args.draws} | {np.mean(called):.2f} "
                         f"| {np.mean(np.array(p_values) < 0.1):.2f} | {uniformity(p_values):.3f} "
                         f"| {time.perf_counter() - start:.0f} |")
        if "lognormal" not in parts:
            continue
        start = time.perf_counter()
        first, tail = samples[0], fits[0]
        probabilities = matched_lognormal(first.size, tail.n_tail, rank_frequency_slope(first, (1, tail.n_tail))[0])
        lognormal = [c[c > 0] for c in rng.multinomial(n_tokens, probabilities, size=args.draws)]
        called_lognormal = called_power_law(lognormal, args.bootstrap, args.seed + cell)
        estimate, _ = lognormal_power(first, tail.n_tail, 50, args.seed)
        lognormal_rows.append(f"| {n_types} | {n_tokens} | {first.size} | {tail.n_tail} | {args.draws} "
                              f"| {np.mean(called_lognormal):.2f} | {1 - np.mean(called_lognormal):.2f} "
                              f"| {estimate:.2f} | {time.perf_counter() - start:.0f} |")
    if "zipf" in parts:
        print("| types | tokens | samples | called power_law | ruled out (p < 0.1) | KS uniformity p | s |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(zipf_rows) + "\n", flush=True)
    if lognormal_rows:
        print("| Zipf types | tokens | types seen | n_tail | lognormal samples | called power_law | power "
              "| lognormal_power (50 samples) | s |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(lognormal_rows) + "\n", flush=True)


def coverage_table(args) -> None:
    print("| q | types | tokens | samples | α observed (mean) | α source (mean ± sd) | α covered | α width (median) "
          "| q source (median) | q covered | population (median) | s per interval |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell, (q, n_types, n_tokens) in enumerate(COVERAGE_CELLS):
        rng = np.random.default_rng(args.seed + 200 + cell)
        rows, start = [], time.perf_counter()
        for draw in tqdm(range(args.draws), desc=f"coverage q={q} V={n_types} n={n_tokens}", file=sys.stderr):
            source = zipf_mandelbrot_source(zipf_counts(n_types, n_tokens, rng, q=q), n_draws=args.interval_draws,
                                            seed=args.seed + draw)
            rows.append((source.observed.alpha, source.alpha, source.alpha_low, source.alpha_high, source.q,
                         source.q_low, source.q_high, source.population_size))
        r = np.array(rows)
        defined = np.isfinite(r[:, 1])
        r = r[defined]
        print(f"| {q:g} | {n_types} | {n_tokens} | {defined.sum()} | {r[:, 0].mean():.3f} "
              f"| {r[:, 1].mean():.4f} ± {r[:, 1].std():.4f} | {np.mean((r[:, 2] <= 1) & (1 <= r[:, 3])):.2f} "
              f"| {np.median(r[:, 3] - r[:, 2]):.4f} | {np.median(r[:, 4]):.2f} "
              f"| {np.mean((r[:, 5] <= q) & (q <= r[:, 6])):.2f} | {np.median(r[:, 7]):.0f} "
              f"| {(time.perf_counter() - start) / len(rows):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=["size", "zipf", "lognormal", "coverage"],
                        choices=["size", "zipf", "lognormal", "coverage"])
    parser.add_argument("--draws", type=int, default=100, help="samples per cell")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap sets per p-value")
    parser.add_argument("--interval-draws", type=int, default=200, help="bootstrap samples per Zipf–Mandelbrot step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"start: {machine_line()}\n", flush=True)
    if "size" in args.tables:
        size_table(args)
        print()
    if {"zipf", "lognormal"} & set(args.tables):
        zipf_and_lognormal_tables(args, set(args.tables))
    if "coverage" in args.tables:
        coverage_table(args)
    print(f"\nend: {machine_line()}")


if __name__ == "__main__":
    main()
