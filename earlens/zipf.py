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

* ``alpha_zm``, ``q_zm``: Zipf–Mandelbrot maximum likelihood on the tokens' ranks over the whole observed vocabulary
  (ranks 1..vocab_size). No floor or cut-off to choose; the curved head goes into q.
* ``gamma``, ``xmin``, ``n_tail``: Clauset, Shalizi & Newman (2009) discrete power law (`earlens.power_law`) on the
  counts ≥ x_min, x_min chosen by the Kolmogorov–Smirnov distance between the tail's empirical and fitted CDFs.
  Each *type* weighs the same in that distance, so the few head types (the largest counts) cannot dominate it,
  unlike a token-weighted KS over ranks 1..R (which settles on the smallest R on any curved head). In rank terms
  the range is ranks 1..n_tail; ``alpha_tail = 1/(gamma − 1)`` is the rank exponent it implies.
* ``p_value``: CSN's semi-parametric bootstrap of that fit (x_min refitted on every synthetic data set, sets with no
  x_min excluded and counted); p < 0.1 rules the power law out. ``comparisons``: normalised log-likelihood ratios
  with Vuong p-values against discrete lognormal, exponential and stretched exponential on the same tail
  (``powerlaw.Fit.distribution_compare``'s conventions), so "not a power law" comes with what fits better.
* ``alpha_ls``: least-squares slope of log f on log r over a stated rank range, the line the papers draw.

Limits worth knowing (measured): the count test judges the *sampled* counts, and when most types are seen a few
times the unseen vocabulary bends their bottom, so it rules out even exact Zipf sources there (α = 1 over 20 000
types: 30 % of 10^5-token samples, 90 % of 10^4-token ones; 5 % over 2 000 types); bigram and trigram streams are
usually in that regime. ``alpha_tail`` includes the largest counts, so a flat Zipf–Mandelbrot head pulls it low
(0.91–0.97 for α = 1, q = 2.7–10, 10^5 tokens) and few types make it noisy; ``alpha_zm`` separates head and tail.
A power law is only fitted to counts spanning a decade (MIN_SPAN).

Everything works on a vector of per-type counts, so counts summed across DDP ranks give the statistics of one
process, and the bootstrap is seeded so every rank draws the same synthetic sets. Heaps' exponent uses the expected
vocabulary growth over random orderings (rarefaction), which depends on counts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, logsumexp
from threadpoolctl import threadpool_limits

from earlens.power_law import (
    Comparison,
    clean_counts,
    compare_alternatives,
    fit_count_power_law,
    power_law_p_value,
    preferred_model,
)


@dataclass(frozen=True)
class ZipfMandelbrotFit:
    """Tokens' ranks r = 1..vocab_size follow P(r) ∝ (r + q)^(−alpha); standard errors from the observed information.

    q ≫ vocab_size with a large alpha is the family's exponential limit, (r + q)^(−alpha) ≈ e^(−r·alpha/q): the ranks
    decay exponentially and alpha is then no Zipf exponent (small codebooks, e.g. 12–16 Lyra symbols, end there).
    """

    alpha: float
    alpha_se: float
    q: float
    q_se: float
    n_tokens: int
    vocab_size: int


@dataclass(frozen=True)
class ZipfResult:
    """Zipf/Heaps statistics of one symbol stream (see the module docstring for which exponent is which).

    alpha_zm, q_zm: Zipf–Mandelbrot MLE over ranks 1..vocab_size. gamma, xmin, n_tail, ks: CSN count-distribution tail
    (ranks 1..n_tail); alpha_tail = 1/(gamma − 1). p_value: bootstrap goodness of fit of that tail over
    n_bootstrap synthetic sets less the n_bootstrap_unfit ones that span less than a decade (< 0.1: not a power
    law); p_value_reason says why it is NaN. comparisons: against each alternative; preferred: the alternative that
    fits significantly better (Vuong p < 0.1, most negative ratio), else "power_law" if not rejected, else "none".
    alpha_ls: LS slope over ls_rank_range. heaps_beta: V(n) ∝ n^beta.
    """

    n_tokens: int
    vocab_size: int
    alpha_zm: float
    alpha_zm_se: float
    q_zm: float
    q_zm_se: float
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
    alpha_ls: float
    ls_rank_range: tuple[int, int]
    heaps_beta: float

    @property
    def best_alternative(self) -> Comparison | None:
        """The alternative that comes closest to (or beats) the power law: lowest normalised ratio."""
        return min(self.comparisons, key=lambda c: c.normalized_llr, default=None)


def fit_zipf_mandelbrot(counts) -> ZipfMandelbrotFit:
    """Zipf–Mandelbrot by maximum likelihood on the tokens' ranks: P(r) = (r + q)^(−alpha) / Σ_{r'≤V} (r' + q)^(−alpha).

    Ranks are the observed frequency ranks 1..V over the whole observed vocabulary, so nothing is cut: q absorbs a
    flat head (q = 0 is pure Zipf). scipy's L-BFGS-B with the analytic gradient; standard errors from the observed
    information (finite differences of the gradient), conditional on the ranks. Undersampling flattens the sampled
    curve's tail (types seen once or twice, unseen types missing), which pulls alpha down slightly when most of the
    vocabulary is rare (about −0.03 for alpha = 1 with 10^5 tokens over 20 000 types; tested).
    """
    frequencies = np.sort(clean_counts(counts))[::-1].astype(float)
    vocab, n_tokens = frequencies.size, int(frequencies.sum())
    if vocab < 3:
        return ZipfMandelbrotFit(float("nan"), float("nan"), float("nan"), float("nan"), n_tokens, vocab)
    ranks = np.arange(1.0, vocab + 1.0)
    shares = frequencies / n_tokens

    def objective(params):  # negative log-likelihood per token (scaled so L-BFGS-B's tolerances fit any n_tokens)
        alpha, q = params
        log_rank = np.log(ranks + q)
        log_norm = logsumexp(-alpha * log_rank)
        model = np.exp(-alpha * log_rank - log_norm)
        inverse = 1.0 / (ranks + q)
        # Elementwise sums, not BLAS dots: a threaded BLAS call costs milliseconds to wake on a busy machine.
        data_log, model_log = np.sum(shares * log_rank), np.sum(model * log_rank)
        data_inverse, model_inverse = np.sum(shares * inverse), np.sum(model * inverse)
        return alpha * data_log + log_norm, np.array([data_log - model_log, alpha * (data_inverse - model_inverse)])

    bounds = [(1e-3, 50.0), (-1.0 + 1e-6, 1e6)]
    # One BLAS thread: waking BLAS threads for this 2-parameter problem costs more than each iteration's arithmetic.
    with threadpool_limits(1, user_api="blas"):
        result = min((minimize(objective, np.array(start), jac=True, method="L-BFGS-B", bounds=bounds,
                               options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
                      for start in ((1.0, 1.0), (1.0, 0.0))), key=lambda r: r.fun)
    alpha, q = result.x
    steps = 1e-5 * np.maximum(np.abs(result.x), 1e-2)
    hessian = n_tokens * np.stack([(objective(result.x + h)[1] - objective(result.x - h)[1]) / (2 * s)
                                   for h, s in zip(np.diag(steps), steps)])
    variance = np.full(2, np.nan)
    if np.all(np.isfinite(hessian)):  # not at q's lower bound, where the finite difference leaves the domain
        variance = np.diag(np.linalg.pinv((hessian + hessian.T) / 2))
    alpha_se, q_se = np.sqrt(np.where(variance > 0, variance, np.nan))
    return ZipfMandelbrotFit(float(alpha), float(alpha_se), float(q), float(q_se), n_tokens, vocab)


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


def zipf_statistics(counts, rank_range: tuple[int, int] = (1, 100), heaps_points: int = 50,
                    n_bootstrap: int = 200, seed: int = 0) -> ZipfResult:
    """All statistics of one symbol stream from its per-type counts (order of types irrelevant); seeded, so equal
    counts give equal results on every DDP rank."""
    counts = clean_counts(counts)
    if counts.size == 0:
        raise ValueError("zipf_statistics needs at least one token")
    zm = fit_zipf_mandelbrot(counts)
    tail = fit_count_power_law(counts)
    p_value = power_law_p_value(counts, tail, n_bootstrap, seed)
    comparisons = compare_alternatives(counts, tail)
    alpha_ls, used_range = rank_frequency_slope(counts, rank_range)
    return ZipfResult(
        n_tokens=int(counts.sum()), vocab_size=int(counts.size),
        alpha_zm=zm.alpha, alpha_zm_se=zm.alpha_se, q_zm=zm.q, q_zm_se=zm.q_se,
        gamma=tail.gamma, gamma_se=tail.gamma_se, xmin=tail.xmin, n_tail=tail.n_tail, ks=tail.ks,
        alpha_tail=tail.alpha, alpha_tail_se=tail.alpha_se,
        p_value=p_value.value, n_bootstrap=n_bootstrap, n_bootstrap_unfit=p_value.n_unfit,
        p_value_reason=p_value.reason, comparisons=comparisons,
        preferred=preferred_model(p_value.value, comparisons),
        alpha_ls=alpha_ls, ls_rank_range=used_range,
        heaps_beta=heaps_exponent(*expected_vocabulary_growth(counts, heaps_points)),
    )


def ngram_statistics(sequences, vocab_size: int, orders: tuple[int, ...] = (1, 2, 3),
                     rank_range: tuple[int, int] = (1, 100), n_bootstrap: int = 200,
                     seed: int = 0) -> dict[int, ZipfResult]:
    """``zipf_statistics`` of the n-grams of each order (n-grams stay inside each row of ``sequences``)."""
    return {n: zipf_statistics(count_ids(ngram_ids(sequences, n, vocab_size))[1], rank_range,
                               n_bootstrap=n_bootstrap, seed=seed) for n in orders}


def zipf_tokens(alpha: float, n_tokens: int, vocab_size: int, seed: int = 0, q: float = 0.0) -> np.ndarray:
    """Tokens drawn i.i.d. with P(symbol r) ∝ (r + 1 + q)^(−alpha), r = 0..vocab_size−1: a known Zipf (q = 0) or
    Zipf–Mandelbrot source whose symbol r has rank r + 1 in the population."""
    probabilities = np.exp(-alpha * np.log(np.arange(1, vocab_size + 1) + q))
    rng = np.random.default_rng(seed)
    return rng.choice(vocab_size, size=n_tokens, p=probabilities / probabilities.sum())
