"""Discrete power law on a count distribution (Clauset, Shalizi & Newman 2009), vectorised over data sets.

The share of symbol *types* seen k times is P(k) = k^(−gamma) / ζ(gamma, x_min) for k ≥ x_min, the convention of
``powerlaw.Fit(counts, discrete=True)``: x_min by the Kolmogorov–Smirnov distance over types (each type weighs the
same, so a curved head cannot dominate), the MLE gamma, CSN's semi-parametric bootstrap p-value (x_min refitted on
every synthetic set; p < 0.1 rules the power law out) and Vuong comparisons against discrete lognormal, exponential
and stretched exponential on the same tail (``powerlaw.Fit.distribution_compare``'s conventions). A power law is only
fitted to counts spanning a decade (MIN_SPAN). Used by `earlens.stats.zipf`, which says how gamma relates to Zipf's α.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb, factorial

import numpy as np
from numpy.polynomial import polynomial
from scipy.optimize import minimize, newton
from scipy.special import erfc, log_ndtr

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


# the polynomials' d-th derivatives as (degree + 1, 5) coefficient matrices, evaluated by one product with powers of s
_EM_DERIVATIVES = [np.stack([np.pad(polynomial.polyder(c, d), (0, 8 - polynomial.polyder(c, d).size))
                             for c in _EM_POLYNOMIALS], axis=-1) for d in range(3)]


def _em_corrections(s: np.ndarray, order: int = 0) -> list[np.ndarray]:
    """The order-th s-derivatives of the boundary and Bernoulli coefficients c_i(s) (all but the integral's),
    stacked on a last axis of length 5 (one per power in _EM_POWERS[1:])."""
    powers = np.asarray(s, dtype=float)[..., None] ** np.arange(8.0)
    return [powers @ _EM_DERIVATIVES[d] for d in range(order + 1)]


def _em_coefficients(s: np.ndarray, order: int = 0) -> list[np.ndarray]:
    """The order-th s-derivatives of c_i(s), stacked on a last axis of length 6 (one per power in _EM_POWERS)."""
    gm1 = s - 1.0
    first = [1.0 / gm1, -1.0 / gm1**2, 2.0 / gm1**3][: order + 1]
    return [np.concatenate([first[d][..., None], rest], axis=-1)
            for d, rest in enumerate(_em_corrections(s, order))]


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


def _exp_moments(z: np.ndarray, order: int) -> list[np.ndarray]:
    """E_m(z) = ∫_0^1 τ^m e^(zτ) dτ for m = 0..order (≤ 2): closed forms, a Taylor series where |z| < 1 (where the
    closed forms cancel)."""
    small = np.abs(z) < 1.0
    zs = np.where(small, 2.0, z)
    ez = np.exp(zs)
    closed = [np.expm1(zs) / zs, (ez * (zs - 1.0) + 1.0) / zs**2, (ez * (zs * (zs - 2.0) + 2.0) - 2.0) / zs**3]
    n = np.arange(24.0)
    terms = np.where(small, z, 0.0)[..., None] ** n / np.cumprod(np.maximum(n, 1.0))  # z^n / n!
    return [np.where(small, np.sum(terms / (n + m + 1.0), axis=-1), closed[m]) for m in range(order + 1)]


def power_sums(s, start, count, shift, order: int = 0) -> list[np.ndarray]:
    """Σ_{j=0}^{count−1} e^(−s·(log(start + j) − shift)) and its first ``order`` (≤ 2) s-derivatives, elementwise.

    Finite sums of (start + j)^(−s) scaled by e^(s·shift) (shift = log(start) keeps every term ≤ 1 whatever s),
    for any real s > 0 (s ≤ 1 too, where ζ diverges), real start > 0 and integer count ≥ 1: the Zipf–Mandelbrot
    normaliser and moments over ranks 1..V are these with start = 1 + q. Exact for the first 32 terms; beyond,
    Euler–Maclaurin between a = start + 32 and b = start + count − 1, with the integral in closed form
    (``_exp_moments``) and the Bernoulli corrections at both ends (tested against brute-force sums).
    """
    shape = np.broadcast_shapes(*(np.shape(a) for a in (s, start, count, shift)))
    s, start, count, shift = (np.broadcast_to(np.asarray(a, dtype=float), shape).ravel()
                              for a in (s, start, count, shift))
    j = np.arange(_HEAD, dtype=float)
    log_ratio = np.log(start[..., None] + j) - shift[..., None]
    terms = np.where(j < count[..., None], np.exp(-s[..., None] * log_ratio), 0.0)
    sums = [np.sum(terms * (-log_ratio) ** k, axis=-1) for k in range(order + 1)]
    tail = count > _HEAD
    if not tail.any():
        return [total.reshape(shape) for total in sums]
    s, shift = s[tail], shift[tail]
    a = start[tail] + _HEAD
    b = start[tail] + count[tail] - 1.0
    span = np.log(b / a)
    d_a, d_b = np.log(a) - shift, np.log(b) - shift
    moments = [span ** (m + 1) * e for m, e in enumerate(_exp_moments((1.0 - s) * span, 2))]
    integral = [moments[0], -(d_a * moments[0] + moments[1]),
                d_a**2 * moments[0] + 2.0 * d_a * moments[1] + moments[2]]
    scale = a * np.exp(-s * d_a)
    powers_a, powers_b = a[..., None] ** _EM_POWERS[1:], b[..., None] ** _EM_POWERS[1:]
    sign_b = np.array([1.0, -1.0, -1.0, -1.0, -1.0])  # ½ − Σ corrections at the upper end
    f_a, f_b = np.exp(-s * d_a), np.exp(-s * d_b)
    corrections = _em_corrections(s, order)
    end_a = [np.sum(c * powers_a, axis=-1) for c in corrections]
    end_b = [np.sum(c * sign_b * powers_b, axis=-1) for c in corrections]
    for k in range(order + 1):
        ends = sum(comb(k, m) * (end_a[m] * (-d_a) ** (k - m) * f_a + end_b[m] * (-d_b) ** (k - m) * f_b)
                   for m in range(k + 1))
        sums[k][tail] += scale * integral[k] + ends
    return [total.reshape(shape) for total in sums]


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
class Comparison:
    """Power law vs one alternative on the same tail: normalised log-likelihood ratio R/(σ√n) (> 0 favours the power
    law) and Vuong's p-value that its sign is not chance (p ≥ 0.1: neither is favoured)."""

    alternative: str
    normalized_llr: float
    p_value: float


@dataclass(frozen=True)
class BootstrapPValue:
    """CSN's bootstrap p-value: the share of synthetic sets, among those a power law can be fitted to, whose KS
    distance is at least the data's. A synthetic set whose counts span less than a decade has no x_min (MIN_SPAN):
    it is excluded and counted in n_unfit (counted as "KS below the data's", such sets make exact power laws of 100
    types fail at 0.1 in 20 % of samples instead of 7 %). reason says why value is NaN ("" when it is not)."""

    value: float
    n_fitted: int
    n_unfit: int
    reason: str = ""


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
    few dozen types over a factor of 2–3, where any distribution passes: without it geometric counts are ruled out
    only 20 % of the time), and gamma may reach GAMMA_MAX (powerlaw drops x_min whose gamma ≥ 3). powerlaw's default
    also swaps in CSN's approximate estimator for x_min ≥ 10. The KS distance is powerlaw's: a supremum over all
    integers (Clauset's plfit) picks another x_min on small samples (1 vs 17 on ~140 types from 10^4 Zipf tokens).
    No x_min qualifies when the counts span less than a decade: gamma is NaN, xmin and n_tail 0.
    """
    values, multiplicity = np.unique(clean_counts(counts), return_counts=True)
    gamma, gamma_se, xmin, ks, n_tail = (r[0] for r in _fit_rows(*_rows(np.zeros_like(values), values,
                                                                        multiplicity, 1)))
    if not np.isfinite(gamma):
        return PowerLawFit(float("nan"), float("nan"), 0, float("nan"), 0)
    return PowerLawFit(float(gamma), float(gamma_se), int(xmin), float(ks), int(n_tail))


def power_law_p_value(counts, fit: PowerLawFit | None = None, n_bootstrap: int = 200,
                      seed: int = 0) -> BootstrapPValue:
    """CSN's semi-parametric bootstrap p-value of the count-distribution power law (p < 0.1 rules it out).

    Each synthetic set has as many types as the data: with probability n_tail/n a type's count is drawn from the
    fitted power law (≥ xmin), otherwise resampled from the observed counts below xmin. Every set is refitted with
    x_min chosen anew, and p is the share of the sets with a fit whose KS distance is at least the data's. All sets
    are drawn and fitted at once (see ``_synthetic_sets``; one vectorised fit of all rows), so 200 sets of 10^5
    tokens take well under a second (``bench/zipf_fit.py``).
    """
    counts = clean_counts(counts)
    return power_law_p_values([counts], [fit or fit_count_power_law(counts)], n_bootstrap, seed)[0]


def power_law_p_values(count_sets, fits, n_bootstrap: int = 200, seed: int = 0) -> list[BootstrapPValue]:
    """``power_law_p_value`` of several data sets (clean count vectors with their fits), every synthetic set of all
    of them fitted in one vectorised pass; the sets are drawn in turn from one generator."""
    rng = np.random.default_rng(seed)
    results: list[BootstrapPValue | None] = [None] * len(fits)
    triples = []
    for index, (counts, fit) in enumerate(zip(count_sets, fits)):
        if not np.isfinite(fit.gamma):
            results[index] = BootstrapPValue(float("nan"), 0, 0, "no power law fitted: no count lies a decade "
                                             f"(MIN_SPAN) below the largest ({int(counts.max(initial=0))})")
        elif n_bootstrap < 1:
            results[index] = BootstrapPValue(float("nan"), 0, 0, "no bootstrap sets requested")
        else:
            sets, values, multiplicity = _synthetic_sets(counts, fit, n_bootstrap, rng)
            triples.append((index, sets + len(triples) * n_bootstrap, values, multiplicity))
    if triples:
        order, sets, values, multiplicity = zip(*triples)
        synthetic_ks = _fit_rows(*_rows(np.concatenate(sets), np.concatenate(values), np.concatenate(multiplicity),
                                        len(order) * n_bootstrap))[3].reshape(len(order), n_bootstrap)
        for index, ks in zip(order, synthetic_ks):
            fitted = np.isfinite(ks)
            n_fitted = int(fitted.sum())
            results[index] = BootstrapPValue(float(np.mean(ks[fitted] >= fits[index].ks)), n_fitted,
                                             n_bootstrap - n_fitted)
            if not n_fitted:
                results[index] = BootstrapPValue(float("nan"), 0, n_bootstrap, "no synthetic set spans a decade of "
                                                                               "counts")
    return results


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


def called_power_law(count_sets, n_bootstrap: int = 200, seed: int = 0) -> np.ndarray:
    """Whether ``preferred_model`` says "power_law" for each data set (count vectors): the count fit, the bootstrap
    p-values of all sets at once, and the comparisons only where the bootstrap leaves the power law standing."""
    count_sets = [clean_counts(counts) for counts in count_sets]
    fits = [fit_count_power_law(counts) for counts in count_sets]
    p_values = power_law_p_values(count_sets, fits, n_bootstrap, seed)
    return np.array([p.value >= REJECT_BELOW and preferred_model(p.value, compare_alternatives(counts, fit))
                     == "power_law" for counts, fit, p in zip(count_sets, fits, p_values)], dtype=bool)


def preferred_model(p_value: float, comparisons: tuple[Comparison, ...]) -> str:
    """The alternative that beats the power law significantly (Vuong p < 0.1, most negative ratio); otherwise
    "power_law" when the bootstrap does not rule it out, else "none" (ruled out, nothing clearly better)."""
    better = [c for c in comparisons if c.normalized_llr < 0 and c.p_value < REJECT_BELOW]
    if better:
        return min(better, key=lambda c: c.normalized_llr).alternative
    if not np.isfinite(p_value):
        return ""
    return "power_law" if p_value >= REJECT_BELOW else "none"
