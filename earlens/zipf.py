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
* ``gamma``, ``xmin``, ``n_tail``: Clauset, Shalizi & Newman (2009) discrete power law on the counts ≥ x_min, x_min
  chosen by the Kolmogorov–Smirnov distance between the tail's empirical and fitted CDFs. Each *type* weighs the
  same in that distance, so the few head types (the largest counts) cannot dominate it, unlike a token-weighted KS
  over ranks 1..R (which settles on the smallest R on any curved head). In rank terms the range is ranks 1..n_tail;
  ``alpha_tail = 1/(gamma − 1)`` is the rank exponent it implies.
* ``p_value``: CSN's semi-parametric bootstrap of that fit (x_min refitted on every synthetic data set); p < 0.1 rules
  the power law out. ``comparisons``: normalised log-likelihood ratios with Vuong p-values against discrete
  lognormal, exponential and stretched exponential on the same tail (``powerlaw.Fit.distribution_compare``'s
  conventions), so "not a power law" comes with what fits better.
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
from math import comb, factorial

import numpy as np
from numpy.polynomial import polynomial
from scipy.optimize import minimize, newton
from scipy.special import erfc, gammaln, log_ndtr, logsumexp
from threadpoolctl import threadpool_limits

ALTERNATIVES = ("lognormal", "exponential", "stretched_exponential")
REJECT_BELOW = 0.1  # CSN: a bootstrap p-value below 0.1 rules the power law out
GAMMA_MAX = 20.0  # steeper count distributions are reported at this bound
MIN_SPAN = 10.0  # a power law is only fitted to a tail spanning at least this factor of counts (x_min ≤ max / 10)

_HEAD = 32  # ζ(s, x) is summed exactly for x < _HEAD and by Euler–Maclaurin from _HEAD on
_EM_POWERS = np.array([1.0, 0.0, -1.0, -3.0, -5.0, -7.0])


def _rising_factorial(n: int) -> np.ndarray:
    coefficients = np.array([1.0])
    for j in range(n):
        coefficients = polynomial.polymul(coefficients, [j, 1.0])
    return coefficients


# Σ_{k≥a} k^(−s) = a^(−s) · Σ_i c_i(s) a^(p_i): the integral a/(s − 1), the boundary term 1/2, then the Bernoulli
# corrections B_2j/(2j)! · s(s+1)…(s+2j−2) · a^(1−2j) for j = 1..4 (relative error < 1e-7 for s ≤ 20, a ≥ 32).
_EM_POLYNOMIALS = [np.array([0.5])] + [
    bernoulli / factorial(2 * j) * _rising_factorial(2 * j - 1)
    for j, bernoulli in enumerate((1 / 6, -1 / 30, 1 / 42, -1 / 30), start=1)
]


def _em_coefficients(s: np.ndarray, order: int = 0) -> list[np.ndarray]:
    """The order-th s-derivatives of c_i(s), stacked on a last axis of length 6 (one per power in _EM_POWERS)."""
    gm1 = s - 1.0
    first = [1.0 / gm1, -1.0 / gm1**2, 2.0 / gm1**3][: order + 1]
    out = []
    for d in range(order + 1):
        rest = [polynomial.polyval(s, polynomial.polyder(c, d)) * np.ones_like(s) for c in _EM_POLYNOMIALS]
        out.append(np.stack([first[d], *rest], axis=-1))
    return out


def _scaled_zeta(s, x, order: int = 0) -> list[np.ndarray]:
    """x^s·ζ(s, x) = Σ_{k≥x} (k/x)^(−s) and its first ``order`` s-derivatives, for s > 1 and integer x ≥ 1.

    Scaled so it stays near 1 for any s (ζ itself underflows for steep tails). Exact sum for k < 32, Euler–Maclaurin
    beyond (tested against scipy and mpmath).
    """
    s, x = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(x, dtype=float))
    a = np.maximum(x, _HEAD)
    shift = np.log(a / x)
    weight = np.exp(-s * shift)
    powers = a[..., None] ** _EM_POWERS
    bracket = [np.sum(c * powers, axis=-1) for c in _em_coefficients(s, order)]
    # d^d/ds^d [e^(−s·shift) C(s)] by Leibniz's rule
    tail = [sum(comb(d, j) * (-shift) ** (d - j) * bracket[j] for j in range(d + 1)) for d in range(order + 1)]
    k = np.arange(1, _HEAD, dtype=float)
    log_ratio = np.log(k) - np.log(x)[..., None]
    head_terms = np.where(log_ratio >= 0, np.exp(-s[..., None] * np.maximum(log_ratio, 0.0)), 0.0)
    return [weight * tail[d] + np.sum(head_terms * (-log_ratio) ** d, axis=-1) for d in range(order + 1)]


@dataclass(frozen=True)
class PowerLawFit:
    """CSN discrete power law on the count distribution: P(count = k) = k^(−gamma) / ζ(gamma, xmin) for k ≥ xmin.

    n_tail types have count ≥ xmin (ranks 1..n_tail of the rank–frequency plot); gamma_se is the discrete MLE's
    standard error 1/sqrt(n_tail · Var[log k]); ks the KS distance at xmin.
    """

    gamma: float
    gamma_se: float
    xmin: int
    ks: float
    n_tail: int

    @property
    def alpha(self) -> float:
        """Rank–frequency exponent this tail implies for a pure Zipf law: 1/(gamma − 1)."""
        return 1.0 / (self.gamma - 1.0)

    @property
    def alpha_se(self) -> float:
        return self.gamma_se / (self.gamma - 1.0) ** 2


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
class Comparison:
    """Power law vs one alternative on the same tail: normalised log-likelihood ratio R/(σ√n) (> 0 favours the power
    law) and Vuong's p-value that its sign is not chance (p ≥ 0.1: neither is favoured)."""

    alternative: str
    normalized_llr: float
    p_value: float


@dataclass(frozen=True)
class ZipfResult:
    """Zipf/Heaps statistics of one symbol stream (see the module docstring for which exponent is which).

    alpha_zm, q_zm: Zipf–Mandelbrot MLE over ranks 1..vocab_size. gamma, xmin, n_tail, ks: CSN count-distribution tail
    (ranks 1..n_tail); alpha_tail = 1/(gamma − 1). p_value: bootstrap goodness of fit of that tail over n_bootstrap
    synthetic sets (< 0.1: not a power law). comparisons: against each alternative; preferred: the alternative that
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
    comparisons: tuple[Comparison, ...]
    preferred: str
    alpha_ls: float
    ls_rank_range: tuple[int, int]
    heaps_beta: float

    @property
    def best_alternative(self) -> Comparison | None:
        """The alternative that comes closest to (or beats) the power law: lowest normalised ratio."""
        return min(self.comparisons, key=lambda c: c.normalized_llr, default=None)


def clean_counts(counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be a 1-D vector of per-symbol counts, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be finite non-negative integers")
    return counts[counts > 0].astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Count-distribution power law, vectorised over many data sets (the observed counts and the bootstrap's).
# A data set is a row: multiplicities of the values 1.._HEAD−1 in fixed columns, then its distinct values ≥ _HEAD.
# ---------------------------------------------------------------------------------------------------------------

_PAD_VALUE = float(2**52)


def _rows(row, value, multiplicity, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, value, multiplicity) triples → head multiplicities (n_rows, _HEAD−1) and sorted distinct values ≥ _HEAD
    with their multiplicities (n_rows, width), padded with multiplicity 0. Equal values in a row are merged."""
    row, value, multiplicity = (np.asarray(a, dtype=np.int64) for a in (row, value, multiplicity))
    small = value < _HEAD
    head = np.bincount(row[small] * (_HEAD - 1) + value[small] - 1, weights=multiplicity[small],
                       minlength=n_rows * (_HEAD - 1)).reshape(n_rows, _HEAD - 1).astype(np.int64)
    keys, inverse = np.unique(row[~small] * 2**40 + value[~small], return_inverse=True)
    merged = np.bincount(inverse, weights=multiplicity[~small], minlength=keys.size).astype(np.int64)
    key_rows, key_values = keys // 2**40, keys % 2**40
    per_row = np.bincount(key_rows, minlength=n_rows)
    position = np.arange(keys.size) - (np.cumsum(per_row) - per_row)[key_rows]
    values = np.full((n_rows, max(int(per_row.max(initial=0)), 1)), _PAD_VALUE)
    counts = np.zeros(values.shape, dtype=np.int64)
    values[key_rows, position] = key_values
    counts[key_rows, position] = merged
    return head, values, counts


def _solve_gamma(xmin: np.ndarray, mean_log: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discrete power-law MLE of many tails at once: the gamma where E_gamma[log k | k ≥ xmin] = mean log k.

    Solved for u = 1/(gamma − 1) by scipy's vectorised Newton: in u the condition is nearly linear (exactly
    log xmin + u for a continuous power law), increasing and convex, so a start right of the root (above CSN's
    approximation u = mean log(k / (xmin − ½))) converges monotonically in a few steps. Tails whose root lies beyond
    GAMMA_MAX get GAMMA_MAX. Returns gamma and Var_gamma[log k] (the Fisher information per observation).
    """
    u_min = 1.0 / (GAMMA_MAX - 1.0)

    def moments(u, x):
        z, dz, d2z = _scaled_zeta(1.0 + 1.0 / u, x, order=2)
        return np.log(x) - dz / z, d2z / z - (dz / z) ** 2

    gamma = np.full(xmin.shape, GAMMA_MAX)
    free = moments(np.full(xmin.shape, u_min), xmin)[0] < mean_log
    if free.any():
        # One dummy tail keeps scipy on its array code path even for a single candidate.
        x, target = np.append(xmin[free], 1.0), np.append(mean_log[free], np.log(2.0))
        cache = {}

        def cached(u):
            key = np.asarray(u).tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = moments(np.maximum(u, u_min), x)
            return cache[key]

        start = np.maximum(1.5 * (target - np.log(x - 0.5)) + 0.5, 2 * u_min)
        u = newton(lambda v: cached(v)[0] - target, start, fprime=lambda v: cached(v)[1] / v**2,
                   tol=1e-10, maxiter=100)
        gamma[free] = 1.0 + 1.0 / np.maximum(u[:-1], u_min)
    return gamma, moments(1.0 / (gamma - 1.0), xmin)[1]


def _fit_rows(head: np.ndarray, values: np.ndarray, counts: np.ndarray, budget: int = 2_000_000):
    """CSN fit of every row: (gamma, gamma_se, xmin, ks, n_tail), each (n_rows,), NaN where no x_min qualifies.
    Candidate x_min: every distinct value but the largest (as ``powerlaw``) that lies a decade below it (MIN_SPAN);
    KS distance as ``powerlaw`` computes it: max over the tail's distinct values x of |P_data(k < x) − P_model(k < x)|.
    """
    n_rows = head.shape[0]
    out = [np.full(n_rows, np.nan) for _ in range(5)]
    width = (counts > 0).sum(axis=1)
    rows_per_chunk = max(1, budget // ((head.shape[1] + int(width.max())) * max(int(width.max()), 1)))
    for start in range(0, n_rows, rows_per_chunk):
        chunk = slice(start, start + rows_per_chunk)
        used = max(int(width[chunk].max()), 1)
        for target, result in zip(out, _fit_chunk(head[chunk], values[chunk, :used], counts[chunk, :used])):
            target[chunk] = result
    return out


def _fit_chunk(head, values, counts):
    n_rows, n_head = head.shape
    all_values = np.concatenate([np.broadcast_to(np.arange(1.0, _HEAD), head.shape), values], axis=1)
    all_counts = np.concatenate([head, counts], axis=1)
    log_values = np.log(all_values)
    n_at_least = np.cumsum(all_counts[:, ::-1], axis=1)[:, ::-1]
    log_sum = np.cumsum((all_counts * log_values)[:, ::-1], axis=1)[:, ::-1]
    present = all_counts > 0
    columns = np.arange(all_values.shape[1])
    last = all_values.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
    largest = all_values[np.arange(n_rows), last]
    candidate = present & (columns[None, :] < last[:, None]) & (all_values * MIN_SPAN <= largest[:, None])
    rows, cols = np.nonzero(candidate)
    gamma, variance, zeta_xmin = np.full(all_values.shape, 2.0), np.ones(all_values.shape), np.ones(all_values.shape)
    if rows.size:
        xmin = all_values[rows, cols]
        gamma[rows, cols], variance[rows, cols] = _solve_gamma(xmin, log_sum[rows, cols] / n_at_least[rows, cols])
        zeta_xmin[rows, cols] = _scaled_zeta(gamma[rows, cols], xmin)[0]
    tail_size = np.maximum(n_at_least, 1)[:, :, None]
    coefficients = _em_coefficients(gamma)[0]
    # Values ≥ _HEAD, every candidate: P_model(k ≥ x | k ≥ xmin) = (x/xmin)^(−s) · C(s, x) / (xmin^s ζ(s, xmin)) with
    # C(s, x) = x^s ζ(s, x) the Euler–Maclaurin bracket, for all candidates and values at once (einsum: no BLAS).
    bracket = np.einsum("bci,biv->bcv", coefficients, values[:, None, :] ** _EM_POWERS[None, :, None])
    exponent = gamma[:, :, None] * (np.log(values)[:, None, :] - log_values[:, :, None])
    model = np.exp(-np.maximum(exponent, 0.0)) * bracket / zeta_xmin[:, :, None]
    data = n_at_least[:, None, n_head:] / tail_size
    valid = (counts > 0)[:, None, :] & (columns[None, None, n_head:] >= columns[None, :, None])
    ks = np.max(np.where(valid, np.abs(model - data), 0.0), axis=2)
    # Values below _HEAD (reached only from candidates below _HEAD): exact partial sums of (k/xmin)^(−s).
    log_ratio = log_values[:, None, :n_head] - log_values[:, :n_head, None]
    terms = np.where(log_ratio >= 0, np.exp(-gamma[:, :n_head, None] * np.maximum(log_ratio, 0.0)), 0.0)
    beyond = np.exp(-gamma[:, :n_head] * (np.log(_HEAD) - log_values[:, :n_head])) * \
        np.sum(coefficients[:, :n_head] * float(_HEAD) ** _EM_POWERS, axis=-1)
    model = (np.cumsum(terms[:, :, ::-1], axis=2)[:, :, ::-1] + beyond[:, :, None]) / zeta_xmin[:, :n_head, None]
    data = n_at_least[:, None, :n_head] / tail_size[:, :n_head]
    valid = present[:, None, :n_head] & (log_ratio >= 0)
    ks[:, :n_head] = np.maximum(ks[:, :n_head], np.max(np.where(valid, np.abs(model - data), 0.0), axis=2))
    ks = np.where(candidate, ks, np.inf)
    pick = np.arange(n_rows), np.argmin(ks, axis=1)
    fitted = np.where(candidate.any(axis=1), 1.0, np.nan)
    n_tail = n_at_least[pick]
    gamma_se = 1.0 / np.sqrt(n_tail * variance[pick])
    return gamma[pick] * fitted, gamma_se * fitted, all_values[pick] * fitted, ks[pick] * fitted, n_tail * fitted


def fit_count_power_law(counts) -> PowerLawFit:
    """Clauset et al. (2009) discrete power law on the *count distribution*: P(count = k) ∝ k^(−gamma), k ≥ x_min.

    The model and conventions of ``powerlaw.Fit(counts, discrete=True, estimate_discrete=False)``: exact MLE with the
    Hurwitz-zeta normaliser for every candidate x_min, the KS distance at the tail's distinct values, x_min at its
    minimum. Two choices differ from powerlaw's defaults (tests pass the same to powerlaw and agree on x_min and
    gamma): x_min must lie a decade below the largest count (MIN_SPAN; otherwise x_min drifts into a far tail of a
    few dozen types over a factor of 2–3, where any distribution passes: geometric counts were then ruled out only
    20 % of the time), and gamma may reach GAMMA_MAX (powerlaw drops x_min whose gamma ≥ 3). powerlaw's default
    also swaps in CSN's approximate estimator for x_min ≥ 10. The issue's small-sample disagreement (x_min 1 vs 17)
    came from the former estimator's KS, a supremum over all integers (Clauset's plfit) rather than powerlaw's.
    No x_min qualifies when the counts span less than a decade: gamma is NaN, xmin and n_tail 0.
    """
    values, multiplicity = np.unique(clean_counts(counts), return_counts=True)
    gamma, gamma_se, xmin, ks, n_tail = (r[0] for r in _fit_rows(*_rows(np.zeros_like(values), values,
                                                                        multiplicity, 1)))
    if not np.isfinite(gamma):
        return PowerLawFit(float("nan"), float("nan"), 0, float("nan"), 0)
    return PowerLawFit(float(gamma), float(gamma_se), int(xmin), float(ks), int(n_tail))


def power_law_p_value(counts, fit: PowerLawFit | None = None, n_bootstrap: int = 200, seed: int = 0) -> float:
    """CSN's semi-parametric bootstrap p-value of the count-distribution power law (p < 0.1 rules it out).

    Each synthetic set has as many types as the data: with probability n_tail/n a type's count is drawn from the
    fitted power law (≥ xmin), otherwise resampled from the observed counts below xmin. Every set is refitted with
    x_min chosen anew, and p is the share of sets whose KS distance is at least the data's. All sets are drawn and
    fitted at once (see ``_synthetic_sets``; one vectorised fit of all rows), so 200 sets of 10^5 tokens take
    well under a second (``bench/zipf_fit.py``).
    """
    counts = clean_counts(counts)
    fit = fit or fit_count_power_law(counts)
    if not np.isfinite(fit.gamma) or n_bootstrap < 1:
        return float("nan")
    rows, values, multiplicity = _synthetic_sets(counts, fit, n_bootstrap, np.random.default_rng(seed))
    synthetic_ks = _fit_rows(*_rows(rows, values, multiplicity, n_bootstrap))[3]
    return float(np.mean(synthetic_ks >= fit.ks))


def _synthetic_sets(counts: np.ndarray, fit: PowerLawFit, n_sets: int, rng: np.random.Generator):
    """(set, value, multiplicity) triples of ``n_sets`` CSN synthetic data sets. The power-law part is multinomial
    over the values xmin..xmin+1023 with their exact probabilities, plus CSN's discrete approximation
    floor((v − ½)(1 − u)^(−1/(gamma−1)) + ½) from v = xmin + 1024 on, where it is exact to < 1e-6."""
    n = counts.size
    low_values, low_counts = np.unique(counts[counts < fit.xmin], return_counts=True)
    n_tail = rng.binomial(n, fit.n_tail / n, size=n_sets)
    low = rng.multinomial(n - n_tail, low_counts / low_counts.sum()) if low_values.size else np.zeros((n_sets, 0))
    grid = np.arange(fit.xmin, fit.xmin + 1024, dtype=float)
    probabilities = np.exp(-fit.gamma * np.log(grid / fit.xmin)) / _scaled_zeta(fit.gamma, fit.xmin)[0]
    probabilities = np.append(probabilities, max(1.0 - probabilities.sum(), 0.0))
    dense = rng.multinomial(n_tail, probabilities / probabilities.sum())
    beyond_sets = np.repeat(np.arange(n_sets), dense[:, -1])
    beyond = np.floor((grid[-1] + 0.5) * (1.0 - rng.random(beyond_sets.size)) ** (-1.0 / (fit.gamma - 1.0)) + 0.5)
    sets = np.concatenate([np.repeat(np.arange(n_sets), low_values.size), np.repeat(np.arange(n_sets), grid.size),
                           beyond_sets])
    values = np.concatenate([np.tile(low_values, n_sets), np.tile(grid, n_sets), np.minimum(beyond, 2.0**39)])
    multiplicity = np.concatenate([low.ravel(), dense[:, :-1].ravel(), np.ones(beyond_sets.size)])
    keep = multiplicity > 0
    return sets[keep], values[keep], multiplicity[keep]


def _log_rounded_difference(log_low, log_high):
    """log(S(x − ½) − S(x + ½)) from the logs of a decreasing function at both edges (log_low ≥ log_high)."""
    return log_low + np.log(-np.expm1(np.minimum(log_high - log_low, -1e-300)))


def _alternative_log_likelihoods(name: str, x: np.ndarray, weight: np.ndarray, xmin: int,
                                 gamma: float) -> np.ndarray:
    """Per-value log-likelihoods of the tail x ≥ xmin under the MLE of one alternative, in ``powerlaw``'s discrete
    forms: exponential with its exact discrete normaliser; lognormal and stretched exponential by rounding the
    continuous distribution (mass of [x − ½, x + ½), normalised on [xmin − ½, ∞)).

    Both continuous families hold the power law as a limit at infinity (lognormal σ → ∞ with μ/σ² fixed, stretched
    exponential β → 0 with βλ^β fixed). They are searched in coordinates where that limit is one coordinate going to
    its bound (lognormal: log-density −g·log x − c·log² x, searched over (g, log c); stretched exponential: (λx)^β =
    (τ/β)·x^β, over (log β, log τ)), so on a power-law tail Nelder–Mead ends next to the power law instead of
    stalling on a ridge; starts at the data's moments (as ``powerlaw``) and next to the fitted power law.
    """
    n = weight.sum()
    if name == "exponential":
        rate = np.log1p(1.0 / (np.sum(weight * (x - xmin)) / n))
        return np.log(-np.expm1(-rate)) - rate * (x - xmin)
    edges = [np.log(x - 0.5), np.log(x + 0.5), np.log(xmin - 0.5)]
    if name == "lognormal":
        def log_likelihoods(params):
            g, curvature = params[0], np.exp(params[1])
            sigma = 1.0 / np.sqrt(2.0 * curvature)
            mu = (1.0 - g) * sigma**2
            low, high, start = ((e - mu) / sigma for e in edges)
            upper_side = _log_rounded_difference(log_ndtr(-low), log_ndtr(-high))
            lower_side = _log_rounded_difference(log_ndtr(high), log_ndtr(low))  # Φ(high) − Φ(low) left of μ
            return np.where(low > 0, upper_side, lower_side) - log_ndtr(-start)
        log_x = np.log(x)
        mean = np.sum(weight * log_x) / n
        variance = max(np.sum(weight * (log_x - mean) ** 2) / n, 1e-6)
        starts = [(1.0 - mean / variance, np.log(0.5 / variance)), (gamma, -15.0)]
        bounds = [(-50.0, 50.0), (-25.0, 10.0)]
    else:
        def log_likelihoods(params):
            beta, tau = np.exp(params)
            scale = tau / beta
            from_start = scale * np.exp(beta * edges[2]) * np.expm1(beta * (edges[0] - edges[2]))
            across = scale * np.exp(beta * edges[0]) * np.expm1(beta * (edges[1] - edges[0]))
            return -from_start + np.log(-np.expm1(-across))
        mean_rate = n / np.sum(weight * x)
        starts = [(0.0, np.log(mean_rate)), (-15.0, np.log(max(gamma - 1.0, 1e-3)))]
        bounds = [(-30.0, 3.0), (-30.0, 10.0)]
    best = min((minimize(lambda p: -np.sum(weight * log_likelihoods(p)), s, method="Nelder-Mead", bounds=bounds,
                         options={"xatol": 1e-7, "fatol": 1e-9, "maxfev": 1000}) for s in starts),
               key=lambda r: r.fun)
    return log_likelihoods(best.x)


def compare_alternatives(counts, fit: PowerLawFit | None = None) -> tuple[Comparison, ...]:
    """Vuong tests of the count-distribution power law against lognormal, exponential and stretched exponential on
    the tail ≥ xmin, as ``powerlaw.Fit.distribution_compare(..., normalized_ratio=True)`` (non-nested)."""
    counts = clean_counts(counts)
    fit = fit or fit_count_power_law(counts)
    if not np.isfinite(fit.gamma):
        return ()
    x, weight = np.unique(counts[counts >= fit.xmin], return_counts=True)
    x = x.astype(float)
    n = weight.sum()
    power_law = -fit.gamma * np.log(x / fit.xmin) - np.log(_scaled_zeta(fit.gamma, fit.xmin)[0])
    comparisons = []
    for name in ALTERNATIVES:
        difference = power_law - _alternative_log_likelihoods(name, x, weight, fit.xmin, fit.gamma)
        ratio = np.sum(weight * difference)
        spread = np.sqrt(n * np.sum(weight * (difference - ratio / n) ** 2) / n)
        if spread > 0:
            comparisons.append(Comparison(name, float(ratio / spread), float(erfc(abs(ratio) / (np.sqrt(2) * spread)))))
        else:
            comparisons.append(Comparison(name, 0.0, 1.0))
    return tuple(comparisons)


def preferred_model(p_value: float, comparisons: tuple[Comparison, ...]) -> str:
    """The alternative that beats the power law significantly (Vuong p < 0.1, most negative ratio); otherwise
    "power_law" when the bootstrap does not rule it out, else "none" (ruled out, nothing clearly better)."""
    better = [c for c in comparisons if c.normalized_llr < 0 and c.p_value < REJECT_BELOW]
    if better:
        return min(better, key=lambda c: c.normalized_llr).alternative
    if not np.isfinite(p_value):
        return ""
    return "power_law" if p_value >= REJECT_BELOW else "none"


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
    # One BLAS thread: on a busy machine waking BLAS threads for this 2-parameter problem costs ~4 ms per iteration.
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
        p_value=p_value, n_bootstrap=n_bootstrap, comparisons=comparisons,
        preferred=preferred_model(p_value, comparisons),
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
