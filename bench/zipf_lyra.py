"""Zipf statistics of real audio tokens: Lyra SoundStream codes (first k codebooks) on FSDD and ESC-10, and k-means
units of FSDD log-mel frames, each with its goodness of fit and the power behind it.

    python bench/zipf_lyra.py [--codebooks 1 2 3] [--datasets fsdd esc10] [--units 50 200] [--draws 1000]
                              [--interval-draws 200] [--power-draws 100]

Every clip is tokenised at its own length (no padding). Lyra: one symbol per 20 ms frame (the k codes of a frame
combined into one integer; the first k codebooks of one k = max encoding, as residual VQ's first codebooks do not
depend on how many follow). Units: k-means (seeded) over all 64-band log-mel frames (10 ms hop) of FSDD, once on
the clips alone and once on the clips zero-padded to 1 s windows, as the callback would count them without clip
lengths; "dedup" rows collapse repeated consecutive units.

Columns: types seen (and the source's estimated size); α ZM and q: the source's Zipf–Mandelbrot law with its 95 %
interval (the fit over observed ranks corrected for unseen types, at most the codebook's size; "—" with the reason
below the table where it is undefined); α obs: the fit over the observed ranks; α tail: 1/(γ − 1) from the Clauset
et al. count-distribution power law over counts ≥ x_min (ranks 1..n_tail); p: its bootstrap p-value (< 0.1: not a
power law) and p BH: Benjamini–Hochberg adjusted over every p-value of the table (all streams and n-gram orders);
verdict: the model the tests favour (an alternative that beats the power law at Vuong p < 0.1, else "power_law" if
p ≥ 0.1, else "none"; "—" when the counts span less than a decade), "too_small_to_tell" where it is "power_law" but
the test's power against a matched lognormal (in brackets) is below 0.5; R: the best alternative's normalised
ratio; α LS over the stated ranks; Heaps' β; bigram and trigram α obs with their p-values.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.stats import false_discovery_control
from tqdm import tqdm

from earlens.frontend.spectrogram import LogMel
from earlens.io.audio import crop_or_pad, load_audio
from earlens.io.paths import data_root
from earlens.models.tokenizers import LYRA_CODEBOOK_SIZE, KMeansUnits, LyraTokenizer, codes_to_symbols
from earlens.stats.zipf import collapse_repeats, ngram_statistics

DATASETS = {"fsdd": "recordings/*.wav", "esc10": "*/*.ogg"}
SAMPLE_RATE = 16_000


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Token rows → one (n_rows, max_len) array, -1 past each row's end (n-grams never cross rows)."""
    out = np.full((len(rows), max(map(len, rows))), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def stream_statistics(tokens: np.ndarray, vocab_size: int, args) -> dict:
    return ngram_statistics(tokens, vocab_size, (1, 2, 3), n_bootstrap=args.draws, interval_draws=args.interval_draws,
                            power_draws=args.power_draws)


def interval(value: float, low: float, high: float, digits: int) -> str:
    return "—" if value != value else f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table(rows: list[tuple[str, int, dict]]) -> str:
    """The markdown table of every stream, p-values adjusted together, then the reasons behind the "—"."""
    p_values = [stats[n].p_value for _, _, stats in rows for n in (1, 2, 3)]
    tested = np.isfinite(p_values)
    adjusted = np.full(len(p_values), np.nan)
    adjusted[tested] = false_discovery_control(np.asarray(p_values)[tested], method="bh")
    adjusted = adjusted.reshape(len(rows), 3)
    lines = ["| stream | clips | tokens | types (source) | α ZM [95 %] | q [95 %] | α obs | α tail (n_tail, x_min) | p "
             "| p BH | verdict (power) | best alternative R | α LS (ranks) | Heaps β | bigram α obs (p, p BH) "
             "| trigram α obs (p, p BH) |", "|" + "---|" * 16]
    notes = []
    for (label, clips, stats), bh in zip(rows, adjusted):
        u = stats[1]
        best = u.best_alternative
        power = f" ({u.power_lognormal:.2f})" if np.isfinite(u.power_lognormal) else ""
        size = f" ({u.population_size:.0f})" if np.isfinite(u.population_size) else ""
        if u.zm_reason:
            notes.append(f"- {label}: {u.zm_reason}")
        lines.append(
            f"| {label} | {clips} | {u.n_tokens} | {u.vocab_size}{size} "
            f"| {interval(u.alpha_zm, u.alpha_zm_low, u.alpha_zm_high, 3)} "
            f"| {interval(u.q_zm, u.q_zm_low, u.q_zm_high, 2)} "
            f"| {u.alpha_zm_observed:.3f} | {u.alpha_tail:.3f}±{u.alpha_tail_se:.3f} ({u.n_tail}, x≥{u.xmin}) "
            f"| {u.p_value:.2f} | {bh[0]:.2f} | {(u.verdict or '—') + power} "
            f"| {f'{best.alternative} {best.normalized_llr:+.1f}' if best else '—'} "
            f"| {u.alpha_ls:.3f} ({u.ls_rank_range[0]}-{u.ls_rank_range[1]}) | {u.heaps_beta:.3f} | "
            + " | ".join(f"{stats[n].alpha_zm_observed:.3f} (p {stats[n].p_value:.2f}, {bh[n - 1]:.2f})"
                         for n in (2, 3)) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codebooks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--units", type=int, nargs="*", default=[50, 200], help="k-means units on FSDD log-mel")
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap sets per p-value")
    parser.add_argument("--interval-draws", type=int, default=200, help="bootstrap samples per Zipf–Mandelbrot step")
    parser.add_argument("--power-draws", type=int, default=100, help="matched-lognormal samples per power")
    args = parser.parse_args()
    rows = []
    lyra = LyraTokenizer(k=max(args.codebooks))
    for name in args.datasets:
        paths = sorted(data_root(dataset=name).glob(DATASETS[name]))
        waves = [load_audio(p, SAMPLE_RATE) for p in tqdm(paths, desc=f"decoding {name}", file=sys.stderr)]
        codes = [lyra.encode(w) for w in tqdm(waves, desc=f"Lyra k={lyra.k}", file=sys.stderr)]
        for k in args.codebooks:
            tokens = padded([codes_to_symbols(c[:, :k], LYRA_CODEBOOK_SIZE) for c in codes])
            rows.append((f"{name} Lyra k={k}", len(paths), stream_statistics(tokens, LYRA_CODEBOOK_SIZE**k, args)))
            print(f"{rows[-1][0]} done", file=sys.stderr, flush=True)
        if name != "fsdd" or not args.units:
            continue
        logmel = LogMel(sample_rate=SAMPLE_RATE, n_mels=64)
        with torch.no_grad():
            alone = [logmel(torch.from_numpy(w)[None])[0].T for w in waves]
            windows = [logmel(torch.from_numpy(crop_or_pad(w, SAMPLE_RATE))[None])[0].T for w in waves]
        for n_units in args.units:
            units = KMeansUnits(n_units, seed=0).fit(torch.cat(alone))
            padded_units = KMeansUnits(n_units, seed=0).fit(torch.cat(windows))
            for label, tokens in ((f"fsdd log-mel {n_units} units", padded([units.encode(f) for f in alone])),
                                  (f"fsdd log-mel {n_units} units, dedup",
                                   collapse_repeats(padded([units.encode(f) for f in alone]))),
                                  (f"fsdd log-mel {n_units} units, padded to 1 s",
                                   padded([padded_units.encode(f) for f in windows]))):
                rows.append((label, len(paths), stream_statistics(tokens, n_units, args)))
                print(f"{label} done", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
