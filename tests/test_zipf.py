"""Zipf/Heaps statistics against known ground truth, brute force, and the `powerlaw` package (like with like)."""

import warnings
from collections import Counter

import numpy as np
import pytest
from scipy.special import zeta

from earlens.zipf import (
    expected_vocabulary_growth,
    fit_count_power_law,
    fit_rank_frequency,
    generalized_harmonic,
    heaps_exponent,
    merge_counts,
    ngram_ids,
    count_ids,
    rank_frequency_plot,
    rank_frequency_slope,
    vocabulary_growth,
    zipf_statistics,
    zipf_tokens,
)


def quiet_powerlaw_fit(data, **kwargs):
    import powerlaw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(data, discrete=True, verbose=0, **kwargs)


@pytest.mark.parametrize("s", [0.4, 1.0, 1.0 + 1e-7, 2.5])
def test_generalized_harmonic_equals_direct_sum(s):
    n = np.array([1, 7, 32, 33, 34, 500, 123_457])
    direct = np.array([np.sum(np.arange(1, k + 1, dtype=float) ** -s) for k in n])
    np.testing.assert_allclose(generalized_harmonic(n, s), direct, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.3])
def test_rank_frequency_estimators_recover_alpha(alpha):
    # Tokens with P(rank r) ∝ r^-alpha: the rank-frequency exponent is alpha by construction.
    counts = np.bincount(zipf_tokens(alpha, 100_000, vocab_size=20_000, seed=3))
    result = zipf_statistics(counts)
    assert result.alpha_mle == pytest.approx(alpha, abs=0.05)
    assert result.alpha_ls == pytest.approx(alpha, abs=0.05)
    assert result.ls_rank_range == (1, 100)
    assert result.n_tokens == 100_000 and result.vocab_size == np.count_nonzero(counts)
    assert result.xmin == np.sort(counts)[::-1][result.max_rank - 1]
    # 1/(gamma-1) from the count distribution is only asymptotic: it is the biased one of the three.
    assert abs(result.alpha_from_gamma - alpha) > abs(result.alpha_mle - alpha)


def test_count_fit_matches_powerlaw_package():
    counts = np.bincount(zipf_tokens(1.2, 100_000, vocab_size=10_000, seed=1))
    ours = fit_count_power_law(counts)
    reference = quiet_powerlaw_fit(counts[counts > 0])
    assert ours.xmin == reference.xmin  # same KS choice of x_min
    assert ours.exponent == pytest.approx(reference.power_law.alpha, abs=0.01)
    # At a fixed x_min powerlaw's exact numerical MLE is the same estimator as ours.
    fixed = quiet_powerlaw_fit(counts[counts > 0], xmin=ours.xmin, estimate_discrete=False)
    assert ours.exponent == pytest.approx(fixed.power_law.alpha, abs=2e-3)


def test_count_fit_ks_is_the_supremum_over_all_integers():
    counts = np.bincount(zipf_tokens(1.0, 30_000, vocab_size=5_000, seed=2))
    fit = fit_count_power_law(counts)
    tail = np.sort(counts[counts >= fit.xmin])
    x = np.arange(fit.xmin, tail.max() + 1)
    empirical = np.searchsorted(tail, x, side="right") / tail.size
    model = 1 - zeta(fit.exponent, x + 1.0) / zeta(fit.exponent, fit.xmin)
    assert fit.ks == pytest.approx(np.abs(empirical - model).max(), rel=1e-9)
    assert fit.n_tail == tail.size


def test_rank_fit_matches_powerlaw_on_token_ranks():
    # Like with like: powerlaw's discrete power law on the tokens' ranks, truncated to the same 1..R.
    counts = np.bincount(zipf_tokens(1.4, 50_000, vocab_size=5_000, seed=4))
    fit = fit_rank_frequency(counts)
    frequencies = np.sort(counts)[::-1]
    token_ranks = np.repeat(np.arange(1, fit.max_rank + 1), frequencies[: fit.max_rank])
    reference = quiet_powerlaw_fit(token_ranks, xmin=1, xmax=fit.max_rank, estimate_discrete=False)
    assert fit.alpha == pytest.approx(reference.power_law.alpha, abs=0.01)
    assert fit.n_tokens == token_ranks.size


def test_least_squares_slope_on_exact_power_law_and_range_clipping():
    counts = np.round(1e6 * np.arange(1, 51, dtype=float) ** -1.1)
    alpha, used = rank_frequency_slope(counts, (1, 100))
    assert used == (1, 50) and alpha == pytest.approx(1.1, abs=2e-3)
    alpha_mid, used_mid = rank_frequency_slope(counts, (5, 20))
    assert used_mid == (5, 20) and alpha_mid == pytest.approx(1.1, abs=2e-3)


def heaps_sequence(beta: float, n_tokens: int, seed: int = 0) -> np.ndarray:
    """Tokens whose vocabulary after n tokens is exactly ceil(n^beta); repeats drawn from seen types."""
    n = np.arange(1, n_tokens + 1, dtype=float)
    vocab = np.ceil(n**beta).astype(np.int64)
    previous = np.concatenate([[0], vocab[:-1]])
    repeat = np.floor(np.random.default_rng(seed).random(n_tokens) * np.maximum(previous, 1)).astype(np.int64)
    return np.where(vocab > previous, vocab - 1, repeat)


@pytest.mark.parametrize("beta", [0.5, 0.7])
def test_heaps_exponent_of_known_growth(beta):
    tokens = heaps_sequence(beta, 100_000)
    positions, vocab = vocabulary_growth(tokens)
    np.testing.assert_array_equal(vocab, np.ceil(positions.astype(float) ** beta))
    assert heaps_exponent(positions, vocab) == pytest.approx(beta, abs=0.01)


def test_expected_vocabulary_growth_equals_shuffle_average():
    tokens = zipf_tokens(1.1, 20_000, vocab_size=3_000, seed=5)
    positions, expected = expected_vocabulary_growth(np.bincount(tokens), n_points=30)
    rng = np.random.default_rng(0)
    shuffles = np.array([vocabulary_growth(rng.permutation(tokens), n_points=30)[1] for _ in range(400)])
    standard_error = shuffles.std(axis=0) / np.sqrt(len(shuffles))
    assert np.all(np.abs(expected - shuffles.mean(axis=0)) <= 4 * standard_error + 1e-6)
    assert expected[0] == pytest.approx(1) and expected[-1] == pytest.approx(np.unique(tokens).size)


def test_ngram_counts_equal_counter_reference():
    rng = np.random.default_rng(6)
    vocab = 7
    rows = [rng.integers(0, vocab, size=length) for length in (0, 1, 2, 5, 40, 23)]
    padded = np.full((len(rows), 40), -1)
    for i, row in enumerate(rows):
        padded[i, : row.size] = row
    for n in (1, 2, 3):
        reference = Counter(tuple(row[i : i + n]) for row in rows for i in range(row.size - n + 1))
        ids, counts = count_ids(ngram_ids(padded, n, vocab))
        decoded = {tuple(int(i) // vocab ** (n - 1 - j) % vocab for j in range(n)): int(c) for i, c in zip(ids, counts)}
        assert decoded == dict(reference)
    halves = [count_ids(ngram_ids(padded[:3], 2, vocab)), count_ids(ngram_ids(padded[3:], 2, vocab))]
    np.testing.assert_array_equal(np.stack(merge_counts(*halves)), np.stack(count_ids(ngram_ids(padded, 2, vocab))))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="overflow"):
        ngram_ids(np.zeros(5, dtype=int), 3, vocab_size=2**22)
    with pytest.raises(ValueError, match="integers"):
        ngram_ids(np.zeros(5), 2, vocab_size=4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ngram_ids(np.array([0, 9]), 1, vocab_size=4)
    with pytest.raises(ValueError, match="non-negative integers"):
        zipf_statistics(np.array([3, -1]))


def test_rank_frequency_plot_draws_both_fits():
    counts = np.bincount(zipf_tokens(1.0, 20_000, vocab_size=2_000, seed=7))
    result = zipf_statistics(counts)
    axes = rank_frequency_plot(counts, result).axes[0]
    assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
    data, mle_line, ls_line = axes.get_lines()
    assert data.get_xdata().size == result.vocab_size
    x, y = np.log(ls_line.get_xdata()), np.log(ls_line.get_ydata())
    assert -np.polyfit(x, y, 1)[0] == pytest.approx(result.alpha_ls, rel=1e-9)
    x, y = np.log(mle_line.get_xdata()), np.log(mle_line.get_ydata())
    assert -np.polyfit(x, y, 1)[0] == pytest.approx(result.alpha_mle, rel=1e-9)
