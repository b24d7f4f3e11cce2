"""Zipf–Mandelbrot law of a symbol stream, P(rank r) ∝ (r + q)^(−alpha): the fit to the observed ranks, and the law
of the source the tokens were drawn from, with a confidence interval.

``fit_zipf_mandelbrot``: maximum likelihood over the ranks 1..V of the V types seen (a vectorised Newton solver over
many data sets; sums over ranks in closed form, ``earlens.stats.power_law.power_sums``). As an estimate of the source's
law it is biased: the unseen types are missing from the normaliser and the sample's ranks are ordered by sampling
noise. Tokens of a 5000-type Zipf source (alpha 1) give alpha 0.74 at 10^3 tokens and 0.93 at 10^4, far outside its
sampling spread (``bench/zipf_calibration.py``).

``zipf_mandelbrot_source``: the source's (alpha, q) by indirect inference, a parametric bootstrap. The source is a
Zipf–Mandelbrot law over P types (P ≥ V: the unseen ones included); for a candidate (alpha, q), P is the population
whose expected number of types seen in n tokens is V, and sets of n tokens (Poisson) drawn from it are fitted over
their observed ranks like the data. The candidate is moved by Newton steps until the mean of those fits equals the
data's fit; the interval maps the spread of the fits through the Jacobian of that mean. Every simulation uses the
same seed (common random numbers between steps and finite differences). ``bench/zipf_calibration.py`` prints its
coverage and bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import digamma, gammaln, logsumexp

from earlens.stats.power_law import MIN_SPAN, clean_counts, power_sums

ALPHA_BOUNDS = (1e-3, 50.0)
Q_BOUNDS = (-1.0 + 1e-6, 1e6)
U_BOUNDS = (np.log1p(Q_BOUNDS[0]), np.log1p(Q_BOUNDS[1]))  # the solver works in u = log(1 + q)
MAX_POPULATION = 10**8  # the largest source searched when the caller gives no bound
_HEAD_RANKS = 256  # ranks sampled one by one at least; beyond, log-spaced bins of ranks with a common rate
_BIN_RATIO = 1.005


@dataclass(frozen=True)
class ZipfMandelbrotFit:
    """Maximum likelihood over the observed ranks r = 1..vocab_size: P(r) ∝ (r + q)^(−alpha).

    q ≫ vocab_size with a large alpha is the family's exponential limit, (r + q)^(−alpha) ≈ e^(−r·alpha/q): the ranks
    decay exponentially and alpha is then no Zipf exponent (small codebooks, e.g. 12–16 Lyra symbols, end there).
    """

    alpha: float
    q: float
    n_tokens: int
    vocab_size: int


@dataclass(frozen=True)
class ZipfMandelbrotSource:
    """The Zipf–Mandelbrot law the tokens were drawn from, over population_size types (unseen ones included), with
    95 % intervals; observed is the fit over the observed ranks it corrects. n_draws bootstrap sets per step,
    n_steps steps; reason says why the estimate is NaN ("" when it is not)."""

    alpha: float
    alpha_low: float
    alpha_high: float
    q: float
    q_low: float
    q_high: float
    population_size: float
    observed: ZipfMandelbrotFit
    n_draws: int
    n_steps: int
    reason: str = ""


# --------------------------------------------------------------------------------------------- fits over ranks
@dataclass(frozen=True)
class _RankData:
    """Data sets as rows of count blocks, largest count first: block k of a row holds multiplicity[k] types of count
    value[k], at ranks start[k]..start[k] + multiplicity[k] − 1 (padding: multiplicity 0)."""

    value: np.ndarray
    multiplicity: np.ndarray
    start: np.ndarray
    n_tokens: np.ndarray
    vocab: np.ndarray

    def take(self, rows) -> _RankData:
        return _RankData(self.value[rows], self.multiplicity[rows], self.start[rows], self.n_tokens[rows],
                         self.vocab[rows])


def _rank_data(row, value, multiplicity, n_rows: int) -> _RankData:
    """(row, count value, multiplicity) triples (equal values of a row merged here) → _RankData."""
    row, value, multiplicity = (np.asarray(a, dtype=np.int64) for a in (row, value, multiplicity))
    keep = multiplicity > 0
    keys, inverse = np.unique(row[keep] * 2**40 + (2**40 - 1 - value[keep]), return_inverse=True)
    merged = np.bincount(inverse, weights=multiplicity[keep]).astype(np.int64)
    key_rows, key_values = keys // 2**40, 2**40 - 1 - keys % 2**40
    per_row = np.bincount(key_rows, minlength=n_rows)
    position = np.arange(keys.size) - (np.cumsum(per_row) - per_row)[key_rows]
    width = max(int(per_row.max(initial=0)), 1)
    values, counts = np.zeros((n_rows, width)), np.zeros((n_rows, width))
    values[key_rows, position], counts[key_rows, position] = key_values, merged
    start = 1.0 + np.cumsum(counts, axis=1) - counts
    return _RankData(values, counts, start, (values * counts).sum(axis=1), counts.sum(axis=1))


def _trigamma(x: np.ndarray) -> np.ndarray:
    """ψ1(x) = Σ_{j≥0} 1/(x + j)² for x > 0: eight terms, then the asymptotic series (relative error < 1e-12)."""
    shifted = x + 8.0
    inverse = 1.0 / shifted
    tail = inverse + inverse**2 / 2 + inverse**3 / 6 - inverse**5 / 30 + inverse**7 / 42 - inverse**9 / 30
    return np.sum(1.0 / (x[..., None] + np.arange(8.0)) ** 2, axis=-1) + tail


def _objective(alpha, u, data: _RankData, order: int):
    """Negative log-likelihood per token of each row at (alpha, u = log(1 + q)); with order 2 also its gradient
    (R, 2) and Hessian (R, 2, 2) in (alpha, u). Sums over a row's ranks by blocks (log-gamma, digamma and trigamma
    differences) for the data and ``power_sums`` for the model, so a row costs its distinct counts, not its ranks."""
    q = np.expm1(u)
    shares = data.value / data.n_tokens[:, None]  # of each type in a block (padding: value 0)
    low, high = data.start + q[:, None], data.start + data.multiplicity + q[:, None]
    data_log = np.sum(shares * (gammaln(high) - gammaln(low)), axis=1)
    shift = u  # log(1 + q): the first rank's log, so every scaled term is ≤ 1
    if not order:
        (s0,) = power_sums(alpha, 1.0 + q, data.vocab, shift)
        return alpha * data_log - alpha * shift + np.log(s0)
    # the sums at exponents alpha, alpha + 1 (1/(r + q)-weighted) and alpha + 2 in one call
    (s0, t0, w0), (s1, t1, _), (s2, _, _) = power_sums(alpha + np.arange(3.0)[:, None], 1.0 + q, data.vocab, shift,
                                                       order=2)
    loss = alpha * data_log - alpha * shift + np.log(s0)
    data_inverse = np.sum(shares * (digamma(high) - digamma(low)), axis=1)
    data_inverse2 = np.sum(shares * (_trigamma(low) - _trigamma(high)), axis=1)
    scale = np.exp(-shift)
    model_log = shift - s1 / s0
    variance_log = s2 / s0 - (s1 / s0) ** 2
    model_inverse = scale * t0 / s0
    model_inverse2 = scale**2 * w0 / s0
    covariance = scale * (shift * t0 - t1) / s0 - model_log * model_inverse
    grad_q = alpha * (data_inverse - model_inverse)
    h_aq = data_inverse - model_inverse + alpha * covariance
    h_qq = alpha * (model_inverse2 - data_inverse2 + alpha * (model_inverse2 - model_inverse**2))
    dq = 1.0 + q  # dq/du
    gradient = np.stack([data_log - model_log, dq * grad_q], axis=-1)
    hessian = np.stack([np.stack([variance_log, dq * h_aq], -1),
                        np.stack([dq * h_aq, dq**2 * h_qq + dq * grad_q], -1)], -2)
    return loss, gradient, hessian


def _fit_rows(data: _RankData, alpha, u, max_iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method with backtracking on every row at once, from (alpha, u), negative curvature turned positive
    (|eigenvalues| of the Hessian); bounds ALPHA_BOUNDS and U_BOUNDS by projection (steepest descent where the
    clipped Newton step would climb). A row stops when the loss per token its step expects to gain is below 1e-16
    (parameters to ~1e-8) or its step no longer lowers the loss."""
    lower, upper = np.array([ALPHA_BOUNDS[0], U_BOUNDS[0]]), np.array([ALPHA_BOUNDS[1], U_BOUNDS[1]])
    x = np.clip(np.stack(np.broadcast_arrays(alpha, u, data.vocab)[:2], -1), lower, upper).astype(float)
    active = np.ones(len(x), dtype=bool)
    for _ in range(max_iterations):
        rows = np.flatnonzero(active)
        if not rows.size:
            break
        sub = data.take(rows)
        loss, gradient, hessian = _objective(x[rows, 0], x[rows, 1], sub, order=2)
        eigenvalues, vectors = np.linalg.eigh(hessian)
        curvature = np.maximum(np.abs(eigenvalues), 1e-8 * np.abs(eigenvalues).max(axis=1, keepdims=True) + 1e-300)
        step = -np.einsum("rij,rj,rkj,rk->ri", vectors, 1.0 / curvature, vectors, gradient)
        step = np.clip(x[rows] + step, lower, upper) - x[rows]
        uphill = np.sum(gradient * step, axis=1) >= 0  # clipped at a bound: projected steepest descent instead
        descent = np.clip(x[rows] - gradient / curvature.max(axis=1, keepdims=True), lower, upper) - x[rows]
        step = np.where(uphill[:, None], descent, step)
        pending = -np.sum(gradient * step, axis=1) > 1e-16  # rows with something left to gain
        trial, scale = x[rows].copy(), np.ones(len(rows))
        for _ in range(30):  # halve the step until the loss does not rise
            trial[pending] = x[rows][pending] + scale[pending, None] * step[pending]
            rise = np.zeros(len(rows), dtype=bool)
            rise[pending] = _objective(trial[pending, 0], trial[pending, 1], sub.take(pending), 0) > loss[pending]
            scale[rise] /= 2
            if not rise.any():
                break
            pending = rise
        lowered = np.any(trial != x[rows], axis=1) & ~rise
        x[rows] = np.where(lowered[:, None], trial, x[rows])
        active[rows] = lowered
    return x[:, 0], x[:, 1]


def _counts_data(counts: np.ndarray) -> _RankData:
    """One count vector as one row of _RankData."""
    values, multiplicity = np.unique(counts, return_counts=True)
    return _rank_data(np.zeros(values.size, dtype=np.int64), values, multiplicity, 1)


def _geometric_log_likelihood(counts: np.ndarray) -> float:
    """Maximum log-likelihood of the observed ranks under P(r) ∝ e^(−λ·r), r = 1..V: the Zipf–Mandelbrot family's
    limit q → ∞ (λ = alpha/q), fitted by matching the mean rank."""
    frequencies = np.sort(counts)[::-1].astype(float)
    ranks = np.arange(1.0, frequencies.size + 1.0)
    mean_rank = frequencies @ ranks / frequencies.sum()

    def log_likelihood(rate):
        return -rate * frequencies @ ranks - frequencies.sum() * logsumexp(-rate * ranks)

    def mean_gap(rate):
        weights = np.exp(-rate * (ranks - 1.0))
        return weights @ ranks / weights.sum() - mean_rank

    if mean_gap(0.0) <= 0:
        return float(log_likelihood(0.0))
    return float(log_likelihood(brentq(mean_gap, 0.0, 50.0)))


def fit_zipf_mandelbrot(counts) -> ZipfMandelbrotFit:
    """Zipf–Mandelbrot by maximum likelihood on the tokens' ranks: P(r) = (r + q)^(−alpha) / Σ_{r'≤V} (r' + q)^(−alpha).

    Ranks are the observed frequency ranks 1..V over the whole observed vocabulary, so nothing is cut: q absorbs a
    flat head (q = 0 is pure Zipf). Newton from two starts (q = 1 and q = 0), the better optimum kept. Describes the
    sample's curve; ``zipf_mandelbrot_source`` estimates the law it was drawn from.
    """
    counts = clean_counts(counts)
    n_tokens, vocab = int(counts.sum()), int(counts.size)
    if vocab < 3:
        return ZipfMandelbrotFit(float("nan"), float("nan"), n_tokens, vocab)
    data = _counts_data(counts).take([0, 0])
    alpha, u = _fit_rows(data, 1.0, np.log([2.0, 1.0]))
    best = int(np.argmin(_objective(alpha, u, data, 0)))
    return ZipfMandelbrotFit(float(alpha[best]), float(np.expm1(u[best])), n_tokens, vocab)


# ------------------------------------------------------------------------------------------- the source's law
@dataclass(frozen=True)
class _Population:
    """A Zipf–Mandelbrot source over size types seen through n tokens: head ranks 1..len(head_rate) one by one,
    then bins of bin_types ranks sharing one rate (their mean). Rates are expected counts; mean_log and
    mean_inverse are log(r + q) and 1/(r + q) averaged over a bin's probability, model_log and model_inverse over
    the whole source."""

    head_rate: np.ndarray
    head_log: np.ndarray
    head_inverse: np.ndarray
    bin_types: np.ndarray
    bin_rate: np.ndarray
    bin_log: np.ndarray
    bin_inverse: np.ndarray
    model_log: float
    model_inverse: float


def _population(alpha: float, q: float, size: float, n_tokens: float) -> _Population:
    shift = np.log1p(q)
    (total,) = power_sums(alpha, 1.0 + q, size, shift)
    # ranks whose expected count is ≥ 30 one by one (their counts are far from a bin's common Poisson law)
    log_rank_30 = min(np.log(30.0 * total / n_tokens) / -alpha + shift, np.log(2.0**15))
    head = int(min(size, max(_HEAD_RANKS, np.exp(log_rank_30) - q)))
    ranks = np.arange(1.0, head + 1.0)
    log_rank = np.log(ranks + q)
    edges = np.unique(np.round(np.geomspace(head + 1, size + 1, max(int(np.log((size + 1) / (head + 1))
                                                                         / np.log(_BIN_RATIO)), 1) + 1)))
    lo, n_types = edges[:-1], np.diff(edges)
    s0, s1 = power_sums(alpha, lo + q, n_types, shift, order=1) if lo.size else (np.zeros(0), np.zeros(0))
    (t0,) = power_sums(alpha + 1.0, lo + q, n_types, shift) if lo.size else (np.zeros(0),)
    m0, m1 = power_sums(alpha, 1.0 + q, size, shift, order=1)
    (i0,) = power_sums(alpha + 1.0, 1.0 + q, size, shift)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_log, bin_inverse = shift - s1 / s0, np.exp(-shift) * t0 / s0
    return _Population(head_rate=n_tokens * np.exp(-alpha * (log_rank - shift)) / total, head_log=log_rank,
                       head_inverse=1.0 / (ranks + q), bin_types=n_types, bin_rate=n_tokens * s0 / total / n_types,
                       bin_log=bin_log, bin_inverse=bin_inverse, model_log=float(shift - m1 / m0),
                       model_inverse=float(np.exp(-shift) * i0 / m0))


def expected_types(alpha: float, q: float, size: float, n_tokens: float) -> float:
    """Expected number of distinct types in a Poisson(n_tokens) sample of a Zipf–Mandelbrot source of size types."""
    population = _population(alpha, q, size, n_tokens)
    return float(-np.sum(np.expm1(-population.head_rate))
                 - np.sum(population.bin_types * np.expm1(-population.bin_rate)))


def population_size(alpha: float, q: float, n_tokens: float, observed_types: int,
                    max_size: float = MAX_POPULATION) -> float:
    """The source size (observed_types..max_size) whose expected number of types seen in n_tokens is observed_types
    (the expectation grows with the size): bracketed by doubling from observed_types, then a root in log size to
    1e-3."""
    max_size = max(max_size, observed_types)

    def surplus(log_size):
        return expected_types(alpha, q, float(np.round(np.exp(log_size))), n_tokens) - observed_types

    low = np.log(observed_types)
    if surplus(low) >= 0:
        return float(observed_types)
    while True:
        high = min(low + np.log(2.0), np.log(max_size))
        if surplus(high) >= 0:
            return float(np.round(np.exp(brentq(surplus, low, high, xtol=1e-3))))
        if high >= np.log(max_size):
            return float(max_size)
        low = high


def sample_counts(population: _Population, n_sets: int, rng: np.random.Generator, budget: int = 2_000_000):
    """Count vectors of n_sets Poisson samples of a source, as (set, count value, multiplicity) triples, with each
    set's score statistics Σ count·log(r + q) and Σ count/(r + q) over the true ranks, and its token total.

    Head ranks are drawn one by one. In a bin the number of types seen is binomial and how many of them are seen k
    times multinomial over the zero-truncated Poisson law (sets in chunks of ``budget`` cells), so a set costs its
    bins and distinct counts, not its types.
    """
    head = rng.poisson(population.head_rate, size=(n_sets, population.head_rate.size))
    rate = population.bin_rate
    seen = rng.binomial(population.bin_types.astype(np.int64), -np.expm1(-rate), size=(n_sets, rate.size))
    top = int(np.ceil(rate.max(initial=0.0) + 10 * np.sqrt(rate.max(initial=0.0)) + 10))
    k = np.arange(1, top + 1)
    pmf = np.exp(k * np.log(np.maximum(rate, 1e-300))[:, None] - rate[:, None] - gammaln(k + 1.0))
    pmf /= pmf.sum(axis=1, keepdims=True)  # zero-truncated, the far tail (< 1e-20) folded in
    tail = np.zeros((n_sets, top), dtype=np.int64)  # types seen k times, summed over bins
    bin_totals = np.zeros((n_sets, rate.size))
    chunk = max(1, budget // max(rate.size * top, 1))
    for start in range(0, n_sets, chunk):
        part = slice(start, start + chunk)
        by_count = rng.multinomial(seen[part], pmf)  # (sets, bins, top)
        tail[part] = by_count.sum(axis=1)
        bin_totals[part] = by_count @ k
    ordered = np.sort(head, axis=1)  # each set's head counts as runs of equal values (a row ends every run)
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:, :-1] = ordered[:, 1:] != ordered[:, :-1]
    last = np.flatnonzero(ends)
    runs, values = np.diff(np.concatenate([[-1], last])), ordered.ravel()[last]
    seen_runs = values > 0
    tail_sets, tail_counts = np.nonzero(tail)
    triples = (np.concatenate([(last // max(ordered.shape[1], 1))[seen_runs], tail_sets]),
               np.concatenate([values[seen_runs], tail_counts + 1]),
               np.concatenate([runs[seen_runs], tail[tail_sets, tail_counts]]))
    count_log = head @ population.head_log + bin_totals @ np.nan_to_num(population.bin_log)
    count_inverse = head @ population.head_inverse + bin_totals @ np.nan_to_num(population.bin_inverse)
    return triples, count_log, count_inverse, head.sum(axis=1) + bin_totals.sum(axis=1)


def _simulated_fits(theta: np.ndarray, size: float, n_tokens: int, n_draws: int, seed: int, start: np.ndarray):
    """Fits over observed ranks (alpha, u) of n_draws Poisson samples of n_tokens from the source (theta, size), with
    each sample's score for (alpha, u) and its number of types, both at n_tokens; samples with fewer than 3 types
    are dropped."""
    alpha, q = theta[0], float(np.expm1(theta[1]))
    population = _population(alpha, q, size, n_tokens)
    triples, count_log, count_inverse, totals = sample_counts(population, n_draws, np.random.default_rng(seed))
    data = _rank_data(*triples, n_draws)
    usable = data.vocab >= 3
    fits = np.stack(_fit_rows(data.take(usable), start[0], start[1]), axis=-1)
    score = np.stack([totals * population.model_log - count_log,
                      (1 + q) * alpha * (totals * population.model_inverse - count_inverse)], -1)
    # Poisson samples have Poisson totals; the data has n_tokens: each statistic's linear trend in the total is
    # taken out (to first order, conditioning on the total, i.e. multinomial samples of n_tokens)
    totals = totals[usable]
    stats = np.column_stack([fits, data.vocab[usable]])
    centred = totals - totals.mean()
    trend = centred @ (stats - stats.mean(axis=0)) / max(centred @ centred, 1e-300)
    stats -= np.outer(totals - n_tokens, trend)
    return stats[:, :2], score[usable], stats[:, 2]


def _mean_fit(theta: np.ndarray, types_seen: float, n_tokens: int, n_draws: int, seed: int, start: np.ndarray,
              cap: float):
    """``_simulated_fits`` of the source (theta, P) whose size P explains types_seen types: (mean fit, fits, score,
    types of each sample, P)."""
    size = population_size(theta[0], float(np.expm1(theta[1])), n_tokens, types_seen, cap)
    fits, score, types = _simulated_fits(theta, size, n_tokens, n_draws, seed, start)
    return fits.mean(axis=0), fits, score, types, size


def zipf_mandelbrot_source(counts, max_population: float | None = None, n_draws: int = 200, seed: int = 0,
                           max_steps: int = 10) -> ZipfMandelbrotSource:
    """The Zipf–Mandelbrot law the tokens were drawn from, with 95 % intervals, by indirect inference.

    m(alpha, u, V) is the mean fit over observed ranks of samples of n tokens from the source (alpha, u, P), with P
    the size that explains V types seen; the estimate solves m(alpha, u, V_data) = the data's fit. Newton steps
    start from the score covariance as Jacobian, updated by Broyden's rule from the steps taken, until the mean fit
    is within a quarter of the fits' spread of the data's. There the Jacobian in (alpha, u) and the slope in V come
    from central differences (1.5 spreads of the fits, 1.5 spreads of the types seen) and give a last Newton step;
    each simulated fit's deviation, less its number of types' share of it (a sample with more types implies a
    larger P, hence another correction), is mapped through the inverse Jacobian, and its 2.5 and 97.5 % points give
    the interval (a basic bootstrap interval). max_population bounds P (e.g. the codebook's size;
    default MAX_POPULATION). Seeded: equal counts give equal results (every DDP rank).
    """
    counts = clean_counts(counts)
    observed = fit_zipf_mandelbrot(counts)

    def undefined(reason: str) -> ZipfMandelbrotSource:
        nan = float("nan")
        return ZipfMandelbrotSource(nan, nan, nan, nan, nan, nan, nan, observed, n_draws, 0, reason)

    if not np.isfinite(observed.alpha):
        return undefined("fewer than 3 types")
    if counts.max() < MIN_SPAN * counts.min():
        return undefined(f"the counts span less than a decade ({counts.min()}..{counts.max()}): too few tokens per "
                         "type to tell a law")
    if n_draws < 10:
        return undefined("fewer than 10 bootstrap draws")
    target = np.array([observed.alpha, np.log1p(observed.q)])
    lower, upper = np.array([ALPHA_BOUNDS[0], U_BOUNDS[0]]), np.array([ALPHA_BOUNDS[1], U_BOUNDS[1]])
    zipf_mandelbrot = -observed.n_tokens * _objective(np.array([observed.alpha]), np.log1p([observed.q]),
                                                      _counts_data(counts), 0)[0]
    if _geometric_log_likelihood(counts) >= zipf_mandelbrot - 1.0:
        return undefined("the ranks fall exponentially (a geometric law over ranks fits as well: the family's "
                         "q → ∞ limit), no Zipf law")
    if np.any(np.isclose(target, lower, rtol=1e-4, atol=1e-6)) or np.any(np.isclose(target, upper, rtol=1e-4)):
        return undefined("the fit over observed ranks lies at a bound of (alpha, q)")
    cap = float(max_population or MAX_POPULATION)
    seen = observed.vocab_size

    def mean_fit(theta, types=seen):
        return _mean_fit(theta, types, observed.n_tokens, n_draws, seed, target, cap)

    theta = target.copy()
    mean, fits, score, types, size = mean_fit(theta)
    jacobian = (fits - mean).T @ (score - score.mean(axis=0)) / (len(fits) - 1)
    steps = 1
    while steps < max_steps and np.any(np.abs(target - mean) > 0.25 * fits.std(axis=0) + 1e-9):
        steps += 1
        move = np.clip(np.clip(theta + np.linalg.lstsq(jacobian, target - mean, rcond=None)[0], theta - 1.0,
                               theta + 1.0), lower, upper) - theta
        theta = theta + move
        previous = mean
        mean, fits, score, types, size = mean_fit(theta)
        change = mean - previous
        jacobian += np.outer(change - jacobian @ move, move) / max(move @ move, 1e-300)
    spread = np.maximum(1.5 * fits.std(axis=0), 1e-6)
    jacobian = np.stack([(mean_fit(np.clip(theta + h, lower, upper))[0] - mean_fit(np.clip(theta - h, lower, upper))[0])
                         / (2 * h[i]) for i, h in enumerate(np.diag(spread))], axis=-1)
    types_step = max(1.5 * types.std(), 1.0)
    per_type = (mean_fit(theta, seen + types_step)[0] - mean_fit(theta, max(seen - types_step, 3))[0]) / (
        seen + types_step - max(seen - types_step, 3))
    theta = np.clip(theta + np.linalg.lstsq(jacobian, target - mean, rcond=None)[0], lower, upper)  # last step
    shifted = fits - mean - np.outer(types - types.mean(), per_type)
    deviations = np.linalg.lstsq(jacobian, shifted.T, rcond=None)[0].T
    low, high = theta - np.quantile(deviations, 0.975, axis=0), theta - np.quantile(deviations, 0.025, axis=0)
    low, high = np.clip(low, lower, upper), np.clip(high, lower, upper)
    return ZipfMandelbrotSource(float(theta[0]), float(low[0]), float(high[0]), float(np.expm1(theta[1])),
                                float(np.expm1(low[1])), float(np.expm1(high[1])), size, observed, n_draws, steps)
