"""Zipf and Heaps statistics of discrete symbols (learned audio tokens, k-means units, n-grams), with goodness of fit.

Two exponents, never to be confused:

* rank–frequency exponent ``alpha`` (often written s): the r-th most frequent symbol has frequency f(r) ∝ r^(−alpha),
  or f(r) ∝ (r + q)^(−alpha) for Zipf–Mandelbrot. This is the "Zipf α" of the learned-symbol papers (α ≈ 1 for words).
* count-distribution exponent ``gamma``: the share of symbol *types* seen k times is P(k) ∝ k^(−gamma) for k ≥ x_min.
  This is what ``powerlaw.Fit(counts, discrete=True).power_law.alpha`` estimates; its survival function
  P(count ≥ k) ∝ k^(−eta) has eta = gamma − 1 (the "α = η + 1" pair of the talk behind this feature is gamma = eta + 1).

For a pure Zipf law the number of types with frequency ≥ f is r(f) ∝ f^(−1/alpha), so eta = 1/alpha and
gamma = 1 + 1/alpha: both describe one law, and ``alpha_tail = 1/(gamma − 1)`` reads the count fit as a rank exponent.
On finite samples they are different estimators with different ranges, so every number here says which it is:

* ``alpha_zm``, ``q_zm``: the Zipf–Mandelbrot law of the source, with 95 % intervals (`earlens.stats.zipf_mandelbrot`):
  the maximum-likelihood fit over the observed ranks 1..vocab_size (``alpha_zm_observed``, ``q_zm_observed``; no floor
  or cut-off to choose, the curved head goes into q) corrected by a parametric bootstrap for the types the sample
  did not see (it reads α 0.74 for α 1 at 10^3 tokens of 5000 types).
* ``gamma``, ``xmin``, ``n_tail``: Clauset, Shalizi & Newman (2009) discrete power law (`earlens.stats.power_law`) on
  the counts ≥ x_min, x_min chosen by the Kolmogorov–Smirnov distance between the tail's empirical and fitted CDFs.
  Each *type* weighs the same in that distance, so the few head types (the largest counts) cannot dominate it,
  unlike a token-weighted KS over ranks 1..R (which settles on the smallest R on any curved head). In rank terms
  the range is ranks 1..n_tail; ``alpha_tail = 1/(gamma − 1)`` is the rank exponent it implies.
* ``p_value``: CSN's semi-parametric bootstrap of that fit (x_min refitted on every synthetic data set, sets with no
  x_min excluded and counted); p < 0.1 rules the power law out. ``comparisons``: normalised log-likelihood ratios
  with Vuong p-values against discrete lognormal, exponential and stretched exponential on the same tail
  (``powerlaw.Fit.distribution_compare``'s conventions), so "not a power law" comes with what fits better.
* ``power_lognormal``: next to a "power law" verdict, the share of samples of a matched lognormal source (as many
  types and tokens, a head that falls as steeply) that the same verdict does not call a power law; below 0.5 the
  verdict is "too_small_to_tell" (at 600 types and 67 000 tokens such lognormals pass as power laws most of the
  time).
* ``alpha_ls``: least-squares slope of log f on log r over a stated rank range, the line the papers draw.

Limits worth knowing (measured): the count test judges the *sampled* counts, and when most types are seen a few
times the unseen vocabulary bends their bottom, so it rules out even exact Zipf sources there (α = 1 over 20 000
types: 30 % of 10^5-token samples, 90 % of 10^4-token ones; 5 % over 2 000 types); bigram and trigram streams are
usually in that regime. ``alpha_tail`` includes the largest counts, so a flat Zipf–Mandelbrot head pulls it low
(0.91–0.97 for α = 1, q = 2.7–10, 10^5 tokens) and few types make it noisy; ``alpha_zm`` separates head and tail.
Coverage and bias of every interval, the size of the count test and its power: ``bench/zipf_calibration.py``.
A power law is only fitted to counts spanning a decade (MIN_SPAN).

Everything works on a vector of per-type counts, so counts summed across DDP ranks give the statistics of one
process, and the bootstrap is seeded so every rank draws the same synthetic sets. Heaps' exponent uses the expected
vocabulary growth over random orderings (rarefaction), which depends on counts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln, ndtri

from earlens.stats.power_law import (
    Comparison,
    called_power_law,
    clean_counts,
    compare_alternatives,
    fit_count_power_law,
    power_law_p_value,
    preferred_model,
)
from earlens.stats.zipf_mandelbrot import zipf_mandelbrot_source

TOO_SMALL_TO_TELL = 0.5  # a "power law" verdict whose power against a matched lognormal is below this says little
POWER_BOOTSTRAP = 50  # bootstrap sets per p-value of each lognormal sample (p resolved to 0.02 around 0.1)


@dataclass(frozen=True)
class ZipfResult:
    """Zipf/Heaps statistics of one symbol stream (see the module docstring for which exponent is which).

    alpha_zm, q_zm: the Zipf–Mandelbrot law of the source, bias-corrected for the unseen types (over an estimated
    population_size), with 95 % intervals *_low..*_high (``earlens.stats.zipf_mandelbrot.zipf_mandelbrot_source``;
    zm_reason says why they are NaN); alpha_zm_observed, q_zm_observed: the fit over the observed ranks 1..vocab_size
    that it corrects (the curve of this sample). gamma, xmin, n_tail, ks: CSN count-distribution tail (ranks
    1..n_tail); alpha_tail = 1/(gamma − 1). p_value: bootstrap goodness of fit of that tail over n_bootstrap
    synthetic sets less the n_bootstrap_unfit ones that span less than a decade (< 0.1: not a power law);
    p_value_reason says why it is NaN. comparisons: against each alternative; preferred: the alternative that fits
    significantly better (Vuong p < 0.1, most negative ratio), else "power_law" if not rejected, else "none".
    power_lognormal: where preferred is "power_law", the share of power_draws samples of a matched lognormal source
    (``lognormal_power``) that the same verdict does not call a power law (power_reason says why it is NaN).
    alpha_ls: LS slope over ls_rank_range. heaps_beta: V(n) ∝ n^beta.
    """

    n_tokens: int
    vocab_size: int
    alpha_zm: float
    alpha_zm_low: float
    alpha_zm_high: float
    q_zm: float
    q_zm_low: float
    q_zm_high: float
    population_size: float
    zm_reason: str
    alpha_zm_observed: float
    q_zm_observed: float
    gamma: float
    gamma_se: float
    xmin: int
    n_tail: int
    ks: float
    alpha_tail: float
    alpha_tail_se: float
    p_value: float
    n_bootstrap: int
    n_bootstrap_unfit: int
    p_value_reason: str
    comparisons: tuple[Comparison, ...]
    preferred: str
    power_lognormal: float
    power_draws: int
    power_reason: str
    alpha_ls: float
    ls_rank_range: tuple[int, int]
    heaps_beta: float

    @property
    def best_alternative(self) -> Comparison | None:
        """The alternative that comes closest to (or beats) the power law: lowest normalised ratio."""
        return min(self.comparisons, key=lambda c: c.normalized_llr, default=None)

    @property
    def verdict(self) -> str:
        """``preferred``, except "too_small_to_tell" where the power law stands but the test's power against a
        matched lognormal source is below TOO_SMALL_TO_TELL (or was not computed)."""
        if self.preferred == "power_law" and not self.power_lognormal >= TOO_SMALL_TO_TELL:
            return "too_small_to_tell"
        return self.preferred


def rank_frequency_slope(counts, rank_range: tuple[int, int] = (1, 100)) -> tuple[float, tuple[int, int]]:
    """−slope of the least-squares line of log frequency on log rank over ranks lo..hi (inclusive).

    ``hi`` is clipped to the vocabulary; returns (alpha_ls, (lo, hi_used)). This is the line the papers draw
    on their rank–frequency plots.
    """
    frequencies = np.sort(clean_counts(counts))[::-1]
    lo, hi = int(rank_range[0]), min(int(rank_range[1]), frequencies.size)
    if lo < 1 or hi - lo < 1:
        return float("nan"), (lo, hi)
    ranks = np.arange(lo, hi + 1)
    slope = np.polyfit(np.log(ranks), np.log(frequencies[lo - 1 : hi]), 1)[0]
    return float(-slope), (lo, hi)


def _log_positions(n_tokens: int, n_points: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, n_tokens, n_points)).astype(np.int64))


def vocabulary_growth(tokens, n_points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Observed vocabulary size V(n) after the first n tokens, at log-spaced positions n."""
    tokens = np.asarray(tokens).ravel()
    if tokens.size == 0:
        raise ValueError("vocabulary_growth needs at least one token")
    _, first_seen = np.unique(tokens, return_index=True)
    is_new = np.zeros(tokens.size, dtype=np.int64)
    is_new[first_seen] = 1
    positions = _log_positions(tokens.size, n_points)
    return positions, np.cumsum(is_new)[positions - 1]


def expected_vocabulary_growth(counts, n_points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Expected V(n) over random orderings of the tokens (rarefaction), at log-spaced positions n.

    E[V(n)] = Σ_types 1 − C(N − c, n) / C(N, n) for a type seen c times among N tokens: depends on counts only,
    so it is unchanged by how tokens were split across workers.
    """
    counts = clean_counts(counts)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("expected_vocabulary_growth needs at least one token")
    levels, n_types = np.unique(counts, return_counts=True)
    positions = _log_positions(total, n_points)
    n, c = positions[:, None].astype(float), levels[None, :].astype(float)
    feasible = n <= total - c
    safe_rest = np.where(feasible, total - c - n, 0.0)
    log_miss = gammaln(total - c + 1) - gammaln(safe_rest + 1) - gammaln(total + 1) + gammaln(total - n + 1)
    miss = np.where(feasible, np.exp(np.where(feasible, log_miss, 0.0)), 0.0)
    return positions, ((1.0 - miss) * n_types).sum(axis=1)


def heaps_exponent(positions, vocabulary, decades: float = 2.0) -> float:
    """Heaps' beta: least-squares slope of log V(n) on log n over the last ``decades`` decades of positions.

    The first tokens are almost all new (V(n) ≈ n), a start-up transient, not the growth law; fitting the last
    two decades (n ≥ N/100) leaves it out.
    """
    positions, vocabulary = np.asarray(positions, dtype=float), np.asarray(vocabulary, dtype=float)
    kept = positions >= positions.max() / 10.0**decades
    if kept.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(positions[kept]), np.log(vocabulary[kept]), 1)[0])


def collapse_repeats(sequences) -> np.ndarray:
    """Runs of one repeated symbol reduced to one symbol ("deduplicated units"), per row of a (B, T) array padded with
    negative values after each sequence; rows stay left-aligned and padded with −1. A 1-D input is one row."""
    sequences = np.atleast_2d(np.asarray(sequences))
    previous = np.concatenate([np.full((sequences.shape[0], 1), -1), sequences[:, :-1]], axis=1)
    keep = (sequences >= 0) & (sequences != previous)
    order = np.argsort(~keep, axis=1, kind="stable")
    collapsed = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(sequences, order, axis=1), -1)
    return collapsed[:, : max(int(keep.sum(axis=1).max(initial=0)), 1)]


def ngram_ids(sequences, n: int, vocab_size: int) -> np.ndarray:
    """Integer ids of all n-grams inside each sequence: id = Σ_j token_j · vocab_size^(n−1−j).

    ``sequences`` is 1-D, or 2-D with one sequence per row padded with negative values; n-grams never cross
    rows or touch padding. Ids from different batches or workers are comparable (same ``vocab_size``).
    """
    sequences = np.atleast_2d(np.asarray(sequences))
    if not np.issubdtype(sequences.dtype, np.integer):
        raise ValueError(f"token sequences must be integers, got {sequences.dtype}")
    if n < 1:
        raise ValueError(f"n-gram order must be ≥ 1, got {n}")
    if float(vocab_size) ** n >= 2.0**63:
        raise ValueError(f"{n}-grams over {vocab_size} symbols overflow int64 ids; use a smaller vocabulary")
    if sequences.size and sequences.max() >= vocab_size:
        raise ValueError(f"token {sequences.max()} is outside the vocabulary of {vocab_size} symbols")
    if sequences.shape[-1] < n:
        return np.zeros(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(sequences.astype(np.int64), n, axis=-1)
    windows = windows.reshape(-1, n)
    place_values = np.int64(vocab_size) ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return windows[(windows >= 0).all(axis=1)] @ place_values


def count_ids(ids) -> tuple[np.ndarray, np.ndarray]:
    """Sparse counts: (distinct ids, how often each occurs)."""
    return np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)


def merge_counts(*sparse_counts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum several sparse (ids, counts) pairs (from batches or DDP ranks) into one."""
    if not sparse_counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in sparse_counts])
    counts = np.concatenate([np.asarray(c, dtype=np.int64) for _, c in sparse_counts])
    merged, inverse = np.unique(ids, return_inverse=True)
    return merged, np.bincount(inverse, weights=counts, minlength=merged.size).astype(np.int64)


def matched_lognormal(vocab_size: int, n_head: int, alpha_head: float) -> np.ndarray | None:
    """Type probabilities of a lognormal source over vocab_size types (log-probabilities sigma times the standard
    normal quantiles) whose head falls like the data's: the least-squares slope of log probability on log rank over
    ranks 1..n_head is −alpha_head. sigma by root finding in [0.01, 50]; None when none there reaches it."""
    quantiles = ndtri((np.arange(vocab_size, 0, -1) - 0.5) / vocab_size)
    log_rank = np.log(np.arange(1, n_head + 1))
    centred = log_rank - log_rank.mean()

    def gap(log_sigma):  # the head's LS slope is linear in sigma
        return -np.exp(log_sigma) * (centred @ quantiles[:n_head]) / (centred @ centred) - alpha_head

    bounds = np.log([0.01, 50.0])
    if n_head < 2 or not gap(bounds[0]) < 0 < gap(bounds[1]):
        return None
    weights = np.exp(np.exp(brentq(gap, *bounds, xtol=1e-6)) * (quantiles - quantiles[0]))
    return weights / weights.sum()


def lognormal_power(counts, n_head: int, n_draws: int = 50, seed: int = 0) -> tuple[float, str]:
    """The count test's power against a lognormal source matched to the data (``matched_lognormal``: as many
    types, as many tokens, a head over ranks 1..n_head (the count tail's) that falls as steeply): the share of
    n_draws samples of that source whose verdict is not "power_law" (bootstrap p-values from POWER_BOOTSTRAP sets).
    Returns (power, why it is NaN)."""
    counts = clean_counts(counts)
    if n_draws < 1:
        return float("nan"), "no power draws requested"
    alpha_head, _ = rank_frequency_slope(counts, (1, n_head))
    probabilities = matched_lognormal(counts.size, n_head, alpha_head)
    if probabilities is None:
        return float("nan"), f"no lognormal over {counts.size} types has a head slope {alpha_head:.3g}"
    samples = np.random.default_rng(seed).multinomial(int(counts.sum()), probabilities, size=n_draws)
    return float(1.0 - called_power_law(list(samples), POWER_BOOTSTRAP, seed).mean()), ""


def zipf_statistics(counts, rank_range: tuple[int, int] = (1, 100), heaps_points: int = 50,
                    n_bootstrap: int = 200, seed: int = 0, max_population: float | None = None,
                    interval_draws: int = 200, power_draws: int = 50) -> ZipfResult:
    """All statistics of one symbol stream from its per-type counts (order of types irrelevant); seeded, so equal
    counts give equal results on every DDP rank. max_population bounds the source's size (the codebook's, when
    known); interval_draws and power_draws are the bootstrap sets of the Zipf–Mandelbrot intervals and of the power
    (0 leaves them NaN)."""
    counts = clean_counts(counts)
    if counts.size == 0:
        raise ValueError("zipf_statistics needs at least one token")
    source = zipf_mandelbrot_source(counts, max_population, interval_draws, seed)
    tail = fit_count_power_law(counts)
    p_value = power_law_p_value(counts, tail, n_bootstrap, seed)
    comparisons = compare_alternatives(counts, tail)
    preferred = preferred_model(p_value.value, comparisons)
    power, power_reason = float("nan"), "computed for a power_law verdict only"
    if preferred == "power_law":
        power, power_reason = lognormal_power(counts, tail.n_tail, power_draws, seed)
    alpha_ls, used_range = rank_frequency_slope(counts, rank_range)
    return ZipfResult(
        n_tokens=int(counts.sum()), vocab_size=int(counts.size),
        alpha_zm=source.alpha, alpha_zm_low=source.alpha_low, alpha_zm_high=source.alpha_high, q_zm=source.q,
        q_zm_low=source.q_low, q_zm_high=source.q_high, population_size=source.population_size,
        zm_reason=source.reason, alpha_zm_observed=source.observed.alpha, q_zm_observed=source.observed.q,
        gamma=tail.gamma, gamma_se=tail.gamma_se, xmin=tail.xmin, n_tail=tail.n_tail, ks=tail.ks,
        alpha_tail=tail.alpha, alpha_tail_se=tail.alpha_se,
        p_value=p_value.value, n_bootstrap=n_bootstrap, n_bootstrap_unfit=p_value.n_unfit,
        p_value_reason=p_value.reason, comparisons=comparisons, preferred=preferred,
        power_lognormal=power, power_draws=power_draws, power_reason=power_reason,
        alpha_ls=alpha_ls, ls_rank_range=used_range,
        heaps_beta=heaps_exponent(*expected_vocabulary_growth(counts, heaps_points)),
    )


def ngram_statistics(sequences, vocab_size: int, orders: tuple[int, ...] = (1, 2, 3),
                     rank_range: tuple[int, int] = (1, 100), n_bootstrap: int = 200, seed: int = 0,
                     interval_draws: int = 200, power_draws: int = 50) -> dict[int, ZipfResult]:
    """``zipf_statistics`` of the n-grams of each order (n-grams stay inside each row of ``sequences``); the
    unigram source has at most vocab_size types."""
    return {n: zipf_statistics(count_ids(ngram_ids(sequences, n, vocab_size))[1], rank_range,
                               n_bootstrap=n_bootstrap, seed=seed, max_population=vocab_size if n == 1 else None,
                               interval_draws=interval_draws, power_draws=power_draws) for n in orders}


def zipf_tokens(alpha: float, n_tokens: int, vocab_size: int, seed: int = 0, q: float = 0.0) -> np.ndarray:
    """Tokens drawn i.i.d. with P(symbol r) ∝ (r + 1 + q)^(−alpha), r = 0..vocab_size−1: a known Zipf (q = 0) or
    Zipf–Mandelbrot source whose symbol r has rank r + 1 in the population."""
    probabilities = np.exp(-alpha * np.log(np.arange(1, vocab_size + 1) + q))
    rng = np.random.default_rng(seed)
    return rng.choice(vocab_size, size=n_tokens, p=probabilities / probabilities.sum())
