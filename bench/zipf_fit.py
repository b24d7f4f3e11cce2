"""Speed of the Zipf estimators and the goodness-of-fit bootstrap, as a callback pays for them once per n-gram order.

    python bench/zipf_fit.py [--tokens 10000 100000 1000000] [--draws 200 1000] [--repeats 3]

Tokens from a Zipf law (α = 1 over 20 000 types, an undersampled regime). Prints one markdown row per
(tokens, bootstrap draws): types and distinct counts (the sizes the count fit works on), then the median wall time
of the count-distribution fit (CSN, x_min scan), the bootstrap p-value (all draws refitted with x_min chosen anew),
the three likelihood-ratio comparisons, the Zipf–Mandelbrot fit over the observed ranks, the source's law with its
interval (200 bootstrap samples), and the whole `zipf_statistics` call (interval 200 samples, power 50 where the
verdict is a power law).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from earlens.stats.power_law import compare_alternatives, fit_count_power_law, power_law_p_value
from earlens.stats.zipf import zipf_statistics, zipf_tokens
from earlens.stats.zipf_mandelbrot import fit_zipf_mandelbrot, zipf_mandelbrot_source


def median_seconds(repeats: int, function, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--draws", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| tokens | types | distinct counts | bootstrap draws | count fit (s) | p-value (s) | comparisons (s) "
          "| Zipf–Mandelbrot (s) | ZM source + interval (s) | zipf_statistics (s) | p |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n_tokens in args.tokens:
        counts = np.bincount(zipf_tokens(1.0, n_tokens, 20_000, seed=0))
        counts = counts[counts > 0]
        fit = fit_count_power_law(counts)
        for draws in args.draws:
            p_value = power_law_p_value(counts, fit, draws).value
            row = [median_seconds(args.repeats, fit_count_power_law, counts),
                   median_seconds(args.repeats, power_law_p_value, counts, fit, draws),
                   median_seconds(args.repeats, compare_alternatives, counts, fit),
                   median_seconds(args.repeats, fit_zipf_mandelbrot, counts),
                   median_seconds(args.repeats, zipf_mandelbrot_source, counts),
                   median_seconds(args.repeats, zipf_statistics, counts, n_bootstrap=draws)]
            print(f"| {n_tokens} | {counts.size} | {np.unique(counts).size} | {draws} | "
                  + " | ".join(f"{t:.3f}" for t in row) + f" | {p_value:.2f} |", flush=True)


if __name__ == "__main__":
    main()
