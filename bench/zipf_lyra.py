"""Zipf statistics of real neural-codec tokens: Lyra SoundStream codes (first k codebooks) on FSDD and ESC-10.

    python bench/zipf_lyra.py [--codebooks 1 2 3] [--datasets fsdd esc10]

One symbol per 20 ms frame (the k codes of a frame combined into one integer). Prints one markdown row per
(dataset, k): the rank-frequency α by discrete MLE with its KS-chosen rank range R, the least-squares slope
over the stated rank range, the count-distribution exponent γ, Heaps' β and the bigram/trigram α.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from earlens.audio import load_audio
from earlens.paths import data_root
from earlens.tokenizers import LyraTokenizer
from earlens.zipf import ngram_statistics

DATASETS = {"fsdd": "recordings/*.wav", "esc10": "*/*.ogg"}


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Token rows → one (n_rows, max_len) array, -1 past each row's end (n-grams never cross rows)."""
    out = np.full((len(rows), max(map(len, rows))), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codebooks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    print("| data | clips | k | tokens | vocab | α MLE (R) | α LS (ranks) | γ | Heaps β | bigram α | trigram α |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        paths = sorted(data_root(dataset=name).glob(DATASETS[name]))
        waves = [load_audio(p, 16000) for p in tqdm(paths, desc=f"decoding {name}", file=sys.stderr)]
        for k in args.codebooks:
            lyra = LyraTokenizer(k=k)
            tokens = padded([lyra.tokenize(w) for w in tqdm(waves, desc=f"Lyra k={k}", file=sys.stderr)])
            stats = ngram_statistics(tokens, lyra.vocab_size, (1, 2, 3))
            u = stats[1]
            print(f"| {name} | {len(paths)} | {k} | {u.n_tokens} | {u.vocab_size} | {u.alpha_mle:.3f} ({u.max_rank}) "
                  f"| {u.alpha_ls:.3f} ({u.ls_rank_range[0]}-{u.ls_rank_range[1]}) | {u.gamma_mle:.3f} "
                  f"| {u.heaps_beta:.3f} | {stats[2].alpha_mle:.3f} | {stats[3].alpha_mle:.3f} |", flush=True)


if __name__ == "__main__":
    main()
