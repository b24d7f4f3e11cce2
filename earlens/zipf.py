"""Zipf and Heaps statistics of discrete symbols (learned audio tokens, k-means units, n-grams).

Two exponents, never to be confused:

* rank–frequency exponent ``alpha``: the r-th most frequent symbol has frequency f(r) ∝ r^(−alpha).
  This is the "Zipf α" that the learned-symbol papers report (Takamichi et al. 2024; α ≈ 1 for words).
* count-distribution exponent ``gamma``: the fraction of symbol *types* seen k times is P(k) ∝ k^(−gamma).
  This is what ``powerlaw.Fit(counts, discrete=True)`` estimates. The two are linked asymptotically by
  gamma = 1 + 1/alpha, but on finite samples 1/(gamma − 1) is a biased estimate of alpha (singletons and the
  finite vocabulary bend the count distribution), so alpha is estimated on ranks directly.

Both fits follow Clauset, Shalizi & Newman (2009): discrete maximum likelihood, with the power-law regime chosen
by minimising the Kolmogorov–Smirnov distance. For counts the regime is counts ≥ x_min (Hurwitz-zeta normaliser
ζ(gamma, x_min)); for ranks it is ranks 1..R, i.e. the same kind of cut (symbols with count ≥ x_min), with the
normaliser H_R(alpha) = Σ_{r≤R} r^(−alpha) so that alpha < 1 is allowed.

Everything works on a vector of per-type counts, so counts summed across DDP ranks give the same statistics as
one process. Heaps' exponent from counts uses the expected vocabulary growth over random orderings
(rarefaction), which depends on counts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from scipy.special import exprel, gammaln, zeta

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class PowerLawFit:
    """A discrete power-law fit: exponent, lower cut-off, KS distance, and how many observations it used."""

    exponent: float
    xmin: int
    ks: float
    n_tail: int


@dataclass(frozen=True)
class RankFit:
    """Rank–frequency fit f(r) ∝ r^(−alpha) over ranks 1..max_rank (symbols with count ≥ xmin)."""

    alpha: float
    max_rank: int
    xmin: int
    ks: float
    n_tokens: int


@dataclass(frozen=True)
class ZipfResult:
    """Zipf/Heaps statistics of one symbol stream.

    alpha_mle, xmin, ks: rank–frequency exponent by MLE over ranks 1..max_rank (KS-chosen; xmin = count of the
    rarest symbol in that regime). alpha_ls: least-squares slope of log f on log r over ls_rank_range
    (inclusive). gamma_mle, gamma_xmin, gamma_ks: count-distribution exponent (the powerlaw package's alpha).
    heaps_beta: V(n) ∝ n^beta from the expected vocabulary growth of these counts.
    """

    alpha_mle: float
    xmin: int
    max_rank: int
    ks: float
    alpha_ls: float
    ls_rank_range: tuple[int, int]
    heaps_beta: float
    n_tokens: int
    vocab_size: int
    gamma_mle: float
    gamma_xmin: int
    gamma_ks: float

    @property
    def alpha_from_gamma(self) -> float:
        """Asymptotic rank–frequency exponent implied by the count exponent: 1 / (gamma − 1)."""
        return 1.0 / (self.gamma_mle - 1.0)


def _golden_minimize(objective, lo: np.ndarray, hi: np.ndarray, iterations: int = 80) -> np.ndarray:
    """Minimise many unimodal 1-D functions at once: objective maps a (C,) array of arguments to (C,) values."""
    lo, hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
    left, right = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    f_left, f_right = objective(left), objective(right)
    for _ in range(iterations):
        go_left = f_left < f_right
        hi = np.where(go_left, right, hi)
        lo = np.where(go_left, lo, left)
        new_left, new_right = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        # The surviving interior point is reused; only the new one is evaluated.
        probe = np.where(go_left, new_left, new_right)
        f_probe = objective(probe)
        left, right = np.where(go_left, new_left, right), np.where(go_left, left, new_right)
        f_left, f_right = np.where(go_left, f_probe, f_right), np.where(go_left, f_left, f_probe)
    return (lo + hi) / 2.0


def generalized_harmonic(n, s) -> np.ndarray:
    """H_n(s) = Σ_{r=1}^{n} r^(−s) for any real s (including s ≤ 1), vectorised over broadcast n and s.

    Exact sum up to r = 32, then Euler–Maclaurin with three Bernoulli terms (relative error < 1e-12).
    """
    n, s = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(s, dtype=float))
    head_r = np.arange(1, 33, dtype=float)
    head = np.sum(np.where(head_r <= n[..., None], head_r ** -s[..., None], 0.0), axis=-1)
    a, b = 33.0, np.maximum(n, 33.0)
    log_ratio = np.log(b / a)
    integral = a ** (1 - s) * log_ratio * exprel((1 - s) * log_ratio)
    rising = [s, s * (s + 1) * (s + 2), s * (s + 1) * (s + 2) * (s + 3) * (s + 4)]
    corrections = sum(
        coef * (-rise) * (b ** (-s - order) - a ** (-s - order))
        for coef, rise, order in zip((1 / 12, -1 / 720, 1 / 30240), rising, (1, 3, 5))
    )
    tail = integral + (a**-s + b**-s) / 2 + corrections
    return head + np.where(n >= 33, tail, 0.0)


def _clean_counts(counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be a 1-D vector of per-symbol counts, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be finite non-negative integers")
    return counts[counts > 0].astype(np.int64)


def fit_count_power_law(counts) -> PowerLawFit:
    """Clauset et al. (2009) discrete power law on the *count distribution*: P(count = k) ∝ k^(−gamma), k ≥ x_min.

    Same model as ``powerlaw.Fit(counts, discrete=True).power_law``: exact MLE with the Hurwitz-zeta normaliser
    for every candidate x_min (each distinct count but the largest), x_min minimising the KS distance
    sup_x |S(x) − P(x)| between the tail's empirical and fitted CDFs.
    """
    x = np.sort(_clean_counts(counts))
    values = np.unique(x)
    if values.size < 2:
        return PowerLawFit(float("nan"), int(values[0]) if values.size else 0, float("nan"), int(x.size))
    xmins = values[:-1].astype(float)
    first = np.searchsorted(x, xmins, side="left")
    n_tail = x.size - first
    log_tail_sum = np.cumsum(np.log(x)[::-1])[::-1][first]

    def negative_log_likelihood(gamma):
        return n_tail * np.log(zeta(gamma, xmins)) + gamma * log_tail_sum

    gammas = _golden_minimize(negative_log_likelihood, np.full(xmins.size, 1.0 + 1e-6), np.full(xmins.size, 20.0))
    # The CDFs are step functions on the integers: the sup is reached at a data value or just before the next.
    points = np.unique(np.concatenate([values, values[1:] - 1]))
    in_tail = points[None, :] >= xmins[:, None]
    empirical = (np.searchsorted(x, points, side="right")[None, :] - first[:, None]) / n_tail[:, None]
    with np.errstate(invalid="ignore"):
        model = 1.0 - zeta(gammas[:, None], points[None, :] + 1.0) / zeta(gammas, xmins)[:, None]
    ks = np.max(np.where(in_tail, np.abs(empirical - model), 0.0), axis=1)
    best = int(np.argmin(ks))
    return PowerLawFit(float(gammas[best]), int(xmins[best]), float(ks[best]), int(n_tail[best]))


def fit_rank_frequency(counts, min_ranks: int = 10, max_candidates: int = 48) -> RankFit:
    """Rank–frequency MLE: tokens' ranks r follow P(r) = r^(−alpha) / H_R(alpha) on 1..R, R chosen by KS.

    Candidate cut-offs R are the ranks where a count level ends (all symbols with count ≥ c), at least
    ``min_ranks`` (or the whole vocabulary if smaller), thinned to ``max_candidates`` log-spaced ones. Each is
    fitted by exact MLE (golden section on the concave log-likelihood); the KS distance between the empirical
    and fitted rank CDFs of the tokens in 1..R picks the cut-off.
    """
    frequencies = np.sort(_clean_counts(counts))[::-1]
    vocab = frequencies.size
    if vocab < 3:
        return RankFit(float("nan"), vocab, int(frequencies[-1]) if vocab else 0, float("nan"), int(frequencies.sum()))
    level_ends = np.flatnonzero(np.diff(frequencies) != 0) + 1
    cutoffs = np.unique(np.append(level_ends, vocab))
    cutoffs = cutoffs[cutoffs >= min(min_ranks, vocab)]
    if cutoffs.size > max_candidates:
        picks = np.unique(np.round(np.geomspace(1, cutoffs.size, max_candidates)).astype(int) - 1)
        cutoffs = cutoffs[picks]
    log_rank = np.log(np.arange(1, vocab + 1, dtype=float))
    cumulative = np.cumsum(frequencies.astype(float))
    n_tokens = cumulative[cutoffs - 1]
    log_rank_sum = np.cumsum(frequencies * log_rank)[cutoffs - 1]

    def negative_log_likelihood(alpha):
        return n_tokens * np.log(generalized_harmonic(cutoffs, alpha)) + alpha * log_rank_sum

    alphas = _golden_minimize(negative_log_likelihood, np.full(cutoffs.size, 1e-3), np.full(cutoffs.size, 10.0))
    max_cut = int(cutoffs[-1])
    in_range = np.arange(1, max_cut + 1)[None, :] <= cutoffs[:, None]
    weights = np.where(in_range, np.exp(-alphas[:, None] * log_rank[None, :max_cut]), 0.0)
    model = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    empirical = cumulative[None, :max_cut] / n_tokens[:, None]
    ks = np.max(np.where(in_range, np.abs(empirical - model), 0.0), axis=1)
    best = int(np.argmin(ks))
    cut = int(cutoffs[best])
    return RankFit(float(alphas[best]), cut, int(frequencies[cut - 1]), float(ks[best]), int(n_tokens[best]))


def rank_frequency_slope(counts, rank_range: tuple[int, int] = (1, 100)) -> tuple[float, tuple[int, int]]:
    """−slope of the least-squares line of log frequency on log rank over ranks lo..hi (inclusive).

    ``hi`` is clipped to the vocabulary; returns (alpha_ls, (lo, hi_used)). This is the line the papers draw
    on their rank–frequency plots.
    """
    frequencies = np.sort(_clean_counts(counts))[::-1]
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
    counts = _clean_counts(counts)
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


def zipf_statistics(counts, rank_range: tuple[int, int] = (1, 100), heaps_points: int = 50) -> ZipfResult:
    """All statistics of one symbol stream from its per-type counts (order of types irrelevant)."""
    counts = _clean_counts(counts)
    if counts.size == 0:
        raise ValueError("zipf_statistics needs at least one token")
    rank_fit = fit_rank_frequency(counts)
    count_fit = fit_count_power_law(counts)
    alpha_ls, used_range = rank_frequency_slope(counts, rank_range)
    return ZipfResult(
        alpha_mle=rank_fit.alpha,
        xmin=rank_fit.xmin,
        max_rank=rank_fit.max_rank,
        ks=rank_fit.ks,
        alpha_ls=alpha_ls,
        ls_rank_range=used_range,
        heaps_beta=heaps_exponent(*expected_vocabulary_growth(counts, heaps_points)),
        n_tokens=int(counts.sum()),
        vocab_size=int(counts.size),
        gamma_mle=count_fit.exponent,
        gamma_xmin=count_fit.xmin,
        gamma_ks=count_fit.ks,
    )


def ngram_statistics(
    sequences, vocab_size: int, orders: tuple[int, ...] = (1, 2, 3), rank_range: tuple[int, int] = (1, 100)
) -> dict[int, ZipfResult]:
    """``zipf_statistics`` of the n-grams of each order (n-grams stay inside each row of ``sequences``)."""
    return {
        n: zipf_statistics(count_ids(ngram_ids(sequences, n, vocab_size))[1], rank_range) for n in orders
    }


def zipf_tokens(alpha: float, n_tokens: int, vocab_size: int, seed: int = 0) -> np.ndarray:
    """Tokens drawn i.i.d. with P(symbol r) ∝ (r + 1)^(−alpha), r = 0..vocab_size−1: a known-α Zipf source."""
    probabilities = np.arange(1, vocab_size + 1, dtype=float) ** -alpha
    rng = np.random.default_rng(seed)
    return rng.choice(vocab_size, size=n_tokens, p=probabilities / probabilities.sum())


def rank_frequency_plot(counts, fit: ZipfResult, title: str = "rank–frequency") -> Figure:
    """Log-log rank–frequency plot with the MLE power law (over its rank regime) and the LS line."""
    frequencies = np.sort(_clean_counts(counts))[::-1]
    ranks = np.arange(1, frequencies.size + 1)
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.loglog(ranks, frequencies, ".", markersize=3, color="0.3", label="symbols")
    if np.isfinite(fit.alpha_mle):
        fit_ranks = np.arange(1, fit.max_rank + 1)
        in_regime = frequencies[: fit.max_rank].sum()
        expected = in_regime * fit_ranks**-fit.alpha_mle / generalized_harmonic(fit.max_rank, fit.alpha_mle)
        axes.loglog(fit_ranks, expected, "-", color="C0", label=f"MLE α={fit.alpha_mle:.3f} (r≤{fit.max_rank})")
    if np.isfinite(fit.alpha_ls):
        lo, hi = fit.ls_rank_range
        ls_ranks = np.arange(lo, hi + 1)
        intercept = np.mean(np.log(frequencies[lo - 1 : hi]) + fit.alpha_ls * np.log(ls_ranks))
        axes.loglog(ls_ranks, np.exp(intercept) * ls_ranks**-fit.alpha_ls, "--", color="C1",
                    label=f"LS α={fit.alpha_ls:.3f} (r={lo}..{hi})")
    axes.set(xlabel="rank", ylabel="frequency", title=title)
    axes.legend(fontsize=8)
    return figure
