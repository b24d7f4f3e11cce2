"""Zipf statistics of real audio tokens: Lyra SoundStream codes (first k codebooks) on FSDD and ESC-10, and k-means
units of FSDD log-mel frames, each with its goodness of fit.

    python bench/zipf_lyra.py [--codebooks 1 2 3] [--datasets fsdd esc10] [--units 50 200] [--draws 1000]

Every clip is tokenised at its own length (no padding). Lyra: one symbol per 20 ms frame (the k codes of a frame
combined into one integer; the first k codebooks of one k = max encoding, as residual VQ's first codebooks do not
depend on how many follow). Units: k-means (seeded) over all 64-band log-mel frames (10 ms hop) of FSDD, once on
the clips alone and once on the clips zero-padded to 1 s windows, as the callback counted them before clip lengths;
"dedup" rows collapse repeated consecutive units.

Columns: α ZM and q are Zipf–Mandelbrot by maximum likelihood over all ranks 1..vocab (± standard error); α tail is
1/(γ − 1) from the Clauset et al. count-distribution power law γ over counts ≥ x_min (ranks 1..n_tail); p its
bootstrap p-value (< 0.1: not a power law); "preferred" the model the likelihood-ratio tests favour (an
alternative that beats the power law at Vuong p < 0.1, else "power_law" if p ≥ 0.1, else "none"; "—" when the
counts span less than a decade), with the best alternative's normalised ratio R; α LS the least-squares slope over
the stated ranks; then Heaps' β and the bigram and trigram α ZM with their p-values.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from tqdm import tqdm

from earlens.audio import crop_or_pad, load_audio
from earlens.paths import data_root
from earlens.spectrogram import LogMel
from earlens.tokenizers import LYRA_CODEBOOK_SIZE, KMeansUnits, LyraTokenizer, codes_to_symbols
from earlens.zipf import collapse_repeats, ngram_statistics

DATASETS = {"fsdd": "recordings/*.wav", "esc10": "*/*.ogg"}
SAMPLE_RATE = 16_000


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Token rows → one (n_rows, max_len) array, -1 past each row's end (n-grams never cross rows)."""
    out = np.full((len(rows), max(map(len, rows))), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def table_row(label: str, clips: int, tokens: np.ndarray, vocab_size: int, draws: int) -> str:
    stats = ngram_statistics(tokens, vocab_size, (1, 2, 3), n_bootstrap=draws)
    u = stats[1]
    best = u.best_alternative
    verdict = (u.preferred or "—") + (f" ({best.alternative} R={best.normalized_llr:+.1f})" if best else "")
    return (f"| {label} | {clips} | {u.n_tokens} | {u.vocab_size} | {u.alpha_zm:.3f}±{u.alpha_zm_se:.3f} "
            f"| {u.q_zm:.2f} | {u.alpha_tail:.3f}±{u.alpha_tail_se:.3f} ({u.n_tail}, x≥{u.xmin}) | {u.p_value:.2f} "
            f"| {verdict} | {u.alpha_ls:.3f} ({u.ls_rank_range[0]}-{u.ls_rank_range[1]}) | {u.heaps_beta:.3f} | "
            + " | ".join(f"{stats[n].alpha_zm:.3f} (p {stats[n].p_value:.2f})" for n in (2, 3)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codebooks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--units", type=int, nargs="*", default=[50, 200], help="k-means units on FSDD log-mel")
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap sets per p-value")
    args = parser.parse_args()
    print("| stream | clips | tokens | vocab | α ZM | q | α tail (n_tail, x_min) | p | preferred (best alternative) "
          "| α LS (ranks) | Heaps β | bigram α ZM | trigram α ZM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lyra = LyraTokenizer(k=max(args.codebooks))
    for name in args.datasets:
        paths = sorted(data_root(dataset=name).glob(DATASETS[name]))
        waves = [load_audio(p, SAMPLE_RATE) for p in tqdm(paths, desc=f"decoding {name}", file=sys.stderr)]
        codes = [lyra.encode(w) for w in tqdm(waves, desc=f"Lyra k={lyra.k}", file=sys.stderr)]
        for k in args.codebooks:
            tokens = padded([codes_to_symbols(c[:, :k], LYRA_CODEBOOK_SIZE) for c in codes])
            print(table_row(f"{name} Lyra k={k}", len(paths), tokens, LYRA_CODEBOOK_SIZE**k, args.draws), flush=True)
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
                print(table_row(label, len(paths), tokens, n_units, args.draws), flush=True)


if __name__ == "__main__":
    main()
