"""Closed forms of jacgeom.theory against direct simulation in numpy (independent of
jacgeom's kernels; each estimate must fall within five standard errors) and against exact
rational arithmetic."""

from __future__ import annotations

from fractions import Fraction
from math import comb
from typing import Any

import numpy as np
import pytest

from jacgeom.theory import (
    binomial_cdf_below,
    clopper_pearson,
    he_relu_log_gain,
    linear_log_cond,
    median_order_statistics,
    p_any_zeroed,
    p_rank_at_least,
    p_rank_below,
    p_rank_deficient,
    relu_mean_active_fraction,
)


def _simulate_log_gain(widths: list[int], n: int, seed: int) -> np.ndarray:
    """log ||J e_1||^2 of n He relu networks with symmetric biases (-inf where J e_1 = 0)."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, widths[0]))
    u = np.zeros((n, widths[0]))
    u[:, 0] = 1.0
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        W = rng.standard_normal((n, b, a)) * np.sqrt(2.0 / a)
        z = np.einsum("nij,nj->ni", W, h) + 0.3 * rng.standard_normal((n, b))
        u = np.einsum("nij,nj->ni", W, u) * (z > 0)
        h = np.maximum(z, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(u * u, axis=1))


@pytest.mark.parametrize("widths", [[6, 8, 5, 7, 4], [3, 2, 2], [16, 16, 16]])
def test_he_relu_log_gain_matches_simulation(widths: list[int]) -> None:
    n = 100_000
    g = _simulate_log_gain(widths, n, seed=sum(widths))
    law = he_relu_log_gain(widths)
    zero = np.isinf(g)
    p = law["p_zero"]
    assert abs(zero.mean() - p) <= 5 * np.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12
    x = g[~zero]
    assert abs(x.mean() - law["mean"]) <= 5 * x.std() / np.sqrt(x.size)
    # Standard error of the sample variance from the fourth central moment.
    se_var = np.sqrt((np.mean((x - x.mean()) ** 4) - x.var() ** 2) / x.size)
    assert abs(x.var() - law["var"]) <= 5 * se_var


def test_he_relu_log_gain_single_unit_closed_form() -> None:
    # One unit after a width-4 input: (2 / 4) chi^2_1 with probability 1/2. E log chi^2_1
    # = psi(1/2) + log 2 = -gamma - log 2 and Var = psi'(1/2) = pi^2 / 2.
    law = he_relu_log_gain([4, 1])
    assert law["p_zero"] == pytest.approx(0.5)
    assert law["mean"] == pytest.approx(np.log(0.5) - np.euler_gamma - np.log(2.0), rel=1e-12)
    assert law["var"] == pytest.approx(np.pi**2 / 2, rel=1e-12)


@pytest.mark.parametrize("widths", [[4], [4, 0], [0, 3], []])
def test_he_relu_log_gain_rejects_bad_widths(widths: list[int]) -> None:
    with pytest.raises(ValueError, match="widths"):
        he_relu_log_gain(widths)


@pytest.mark.parametrize("level", [0.5, 0.9, np.float32(0.99), 0.999999])
def test_clopper_pearson_closed_forms_at_the_ends(level: float) -> None:
    # k = 0: hi = 1 - (a/2)^(1/n); k = n: lo = (a/2)^(1/n), a = 1 - level (the beta
    # quantiles in closed form)
    n, a = 7, 1.0 - float(level)
    lo, hi = clopper_pearson(0, n, level)
    assert lo == 0.0 and hi == pytest.approx(1.0 - (a / 2) ** (1 / n), rel=1e-9)
    lo, hi = clopper_pearson(n, n, level)
    assert hi == 1.0 and lo == pytest.approx((a / 2) ** (1 / n), rel=1e-9)
    assert clopper_pearson(0, 0, level) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("level", "error", "match"),
    [
        (1.5, ValueError, r"level must be a confidence level strictly between 0 and 1, got 1.5"),
        (-0.5, ValueError, r"strictly between 0 and 1, got -0.5"),
        (0.0, ValueError, r"strictly between 0 and 1, got 0.0"),
        (1, ValueError, r"strictly between 0 and 1, got 1"),
        (float("nan"), ValueError, r"strictly between 0 and 1, got nan"),
        ("0.9", TypeError, r"level must be a real number, got str '0.9'"),
        (True, TypeError, r"level must be a real number, got bool"),
        (None, TypeError, r"level must be a real number, got NoneType"),
    ],
)
def test_clopper_pearson_level_is_checked(level: object, error: type, match: str) -> None:
    # 1.5 and NaN gave NaN bounds, -0.5 an interval excluding its own estimate 19/20
    with pytest.raises(error, match=match):
        clopper_pearson(19, 20, level)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        clopper_pearson(0, 0, level)  # checked before the empty case answers


@pytest.mark.parametrize(
    ("successes", "trials", "error", "match"),
    [
        (5, 3, ValueError, r"successes must be between 0 and trials, got successes=5, trials=3"),
        (-1, 3, ValueError, r"successes must be between 0 and trials"),
        (0, -2, ValueError, r"successes must be between 0 and trials"),
        (1.5, 3, TypeError, r"successes must be an int, got float"),
        (1, "3", TypeError, r"trials must be an int, got str"),
    ],
)
def test_clopper_pearson_counts_are_checked(
    successes: object, trials: object, error: type, match: str
) -> None:
    # 5 of 3 gave (nan, 1.0)
    with pytest.raises(error, match=match):
        clopper_pearson(successes, trials)  # type: ignore[arg-type]


# ----------------------------------------------------------- binomial tails, exactly


def _exact_below(m: int, k: int) -> Fraction:
    """P(Binomial(m, 1/2) < k) in rational arithmetic."""
    return Fraction(sum(comb(m, j) for j in range(max(0, min(k, m + 1)))), 2**m)


def _close(got: float, want: Fraction) -> bool:
    """got within 1e-11 (relative) of the exact value rounded to float64; where that
    underflows, got must be 0 or below float64's smallest normal number too."""
    w = float(want)
    if w == 0.0:
        return got < 2.3e-308
    return abs(got - w) <= 1e-11 * w


_TAIL_CASES = [
    (m, k)
    for m in (1, 2, 7, 30, 64, 1023, 1024, 2048, 3001)
    for k in sorted({0, 1, 2, m // 4, m // 2, m // 2 + 1, 3 * m // 4, m - 1, m, m + 1, m + 5})
]


@pytest.mark.parametrize(("m", "k"), _TAIL_CASES)
def test_binomial_tails_match_exact_fractions(m: int, k: int) -> None:
    # 2.0**m overflowed from m = 1024 on (binomial_cdf_below(1024, 512), p_rank_deficient
    # (2048, 1024)); the tails must hold their relative accuracy down to the smallest ones.
    want = _exact_below(m, k)
    assert _close(binomial_cdf_below(m, k), want), (m, k)
    if k >= 1:
        assert _close(p_rank_deficient(m, k), want), (m, k)
    # P(rank >= k) of one layer: the upper tail, exact where 1 - cdf would round to 0
    if 0 <= k <= 4096:
        assert _close(p_rank_at_least([4096, m], k), 1 - want), (m, k)
        assert _close(p_rank_below([4096, m], k), want), (m, k)


@pytest.mark.parametrize(
    ("widths", "r"),
    [([16, 1024], 8), ([16, 1024], 16), ([6, 8, 5, 7, 4], 3), ([3, 2048, 2, 1024], 2)],
)
def test_rank_laws_through_depth_match_exact_fractions(widths: list[int], r: int) -> None:
    # p_rank_at_least([16, 1024], 8) overflowed; 1 - p_rank_at_least rounded a tail of
    # 1e-270 to 0, which p_rank_below keeps.
    at_least = Fraction(1)
    for n in widths[1:]:
        at_least *= 1 - _exact_below(n, r)
    assert _close(p_rank_at_least(widths, r), at_least)
    assert _close(p_rank_below(widths, r), 1 - at_least)


def test_rank_laws_at_the_ends() -> None:
    assert p_rank_at_least([3, 5], 4) == 0.0 and p_rank_below([3, 5], 4) == 1.0
    assert p_rank_at_least([3, 5], 0) == 1.0 and p_rank_below([3, 5], 0) == 0.0
    assert p_any_zeroed(10**6) == 1.0 and p_any_zeroed(1) == 0.5
    assert he_relu_log_gain([2, 1100])["p_zero"] == pytest.approx(2.0**-1100, rel=1e-12)


# ------------------------------------------------------------------ input validation


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: binomial_cdf_below(4.7, 2), TypeError, r"m must be an int, got float 4.7"),
        (lambda: binomial_cdf_below("4", 2), TypeError, r"m must be an int, got str '4'"),
        (lambda: binomial_cdf_below(4, True), TypeError, r"k must be an int, got bool"),
        (lambda: binomial_cdf_below(-1, 2), ValueError, r"m must be an int >= 0, got -1"),
        (lambda: p_any_zeroed(-1), ValueError, r"n must be an int >= 1, got -1"),
        (lambda: p_any_zeroed(2.0), TypeError, r"n must be an int, got float"),
        (lambda: p_rank_deficient(-3, 2), ValueError, r"m must be an int >= 1, got -3"),
        (lambda: p_rank_deficient(3, 0), ValueError, r"n must be an int >= 1, got 0"),
        (lambda: p_rank_deficient(3, None), TypeError, r"n must be an int, got NoneType"),
        (lambda: p_rank_at_least([4, 4.7], 2), TypeError, r"widths\[1\] must be an int"),
        (lambda: p_rank_at_least("44", 2), TypeError, r"widths must be a sequence of ints"),
        (lambda: p_rank_at_least([4], 2), ValueError, r"widths must be at least two"),
        (lambda: p_rank_at_least([4, -4], 2), ValueError, r"widths must be at least two"),
        (lambda: p_rank_at_least([4, 4], -1), ValueError, r"r must be an int >= 0, got -1"),
        (lambda: p_rank_below([4, 4], 1.0), TypeError, r"r must be an int, got float"),
        (lambda: p_rank_below(4, 1), TypeError, r"widths must be a sequence of ints, got int"),
        (lambda: linear_log_cond(-2, 3), ValueError, r"d must be an int >= 1, got -2"),
        (lambda: linear_log_cond(2.5, 3), TypeError, r"d must be an int, got float"),
        (lambda: linear_log_cond(2, -1), ValueError, r"depth must be an int >= 0, got -1"),
        (lambda: he_relu_log_gain([4, 4], scale2="2"), TypeError, r"scale2 must be a real"),
        (lambda: he_relu_log_gain([4, 4], scale2=True), TypeError, r"scale2 must be a real"),
        (lambda: he_relu_log_gain([4, 4], scale2=0.0), ValueError, r"scale2 must be a finite"),
        (lambda: he_relu_log_gain([4, 4], scale2=np.inf), ValueError, r"scale2 must be a fin"),
        (lambda: he_relu_log_gain([4, "4"], 2.0), TypeError, r"widths\[1\] must be an int"),
        (lambda: he_relu_log_gain([4, 4.7], 2.0), TypeError, r"widths\[1\] must be an int"),
        (lambda: relu_mean_active_fraction([4, 4], 0), TypeError, r"zero_bias must be a bool"),
        (lambda: relu_mean_active_fraction([4], True), ValueError, r"widths must be at least"),
        (lambda: median_order_statistics(0), ValueError, r"n must be an int >= 1, got 0"),
        (lambda: median_order_statistics(10.0), TypeError, r"n must be an int, got float"),
        (lambda: median_order_statistics(10, 1.0), ValueError, r"level must be a confidence"),
    ],
)
def test_every_function_checks_its_arguments(call: Any, error: type, match: str) -> None:
    # int(w) truncated 4.7 and read '4' and True; p_any_zeroed(-1) answered -1.0,
    # p_rank_deficient(-3, 2) 0.0, linear_log_cond(-2, 3) nan
    with pytest.raises(error, match=match):
        call()


def test_numpy_integers_are_counts() -> None:
    assert p_rank_deficient(np.int64(4), np.int32(4)) == pytest.approx(1 - 2.0**-4)
    assert p_rank_at_least(np.array([4, 4]), np.int64(4)) == pytest.approx(2.0**-4)


# ---------------------------------------------------------- relu's active fraction


def _simulate_active_fraction(widths: list[int], sigma_b: float, n: int, seed: int) -> float:
    """Mean over n fresh He relu networks of (1 / L) sum_l (active units / n_l), in numpy."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, widths[0]))
    total = np.zeros(n)
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        W = rng.standard_normal((n, b, a)) * np.sqrt(2.0 / a)
        z = np.einsum("nij,nj->ni", W, h) + sigma_b * rng.standard_normal((n, b))
        total += np.count_nonzero(z > 0, axis=1) / b
        h = np.maximum(z, 0.0)
    return float(np.mean(total / (len(widths) - 1)))


@pytest.mark.parametrize(
    ("widths", "sigma_b"),
    [([3, 2, 2, 2, 2, 2, 2], 0.0), ([5, 1, 3, 1], 0.0), ([3, 2, 2, 2, 2, 2, 2], 0.5)],
)
def test_relu_mean_active_fraction_matches_simulation(widths: list[int], sigma_b: float) -> None:
    # With zero biases a dead layer passes h = 0 on and every later unit sits at z = 0:
    # the fraction falls below 1/2 with depth; a bias keeps it at 1/2.
    n = 200_000
    got = _simulate_active_fraction(widths, sigma_b, n, seed=len(widths))
    want = relu_mean_active_fraction(widths, zero_bias=sigma_b == 0)
    # the per-network fraction lies in [0, 1]: standard deviation at most 1/2
    assert abs(got - want) <= 5 * 0.5 / np.sqrt(n)
    if sigma_b == 0:
        assert want < 0.45


# ----------------------------------------------------------- the median's interval


def _coverage(n: int, lo: int, hi: int) -> Fraction:
    """P(x_(lo) <= median <= x_(hi)) of n continuous samples (0-based ranks): the number of
    samples below the median is between lo + 1 and hi, Binomial(n, 1/2)."""
    return Fraction(sum(comb(n, j) for j in range(lo + 1, hi + 1)), 2**n)


@pytest.mark.parametrize("n", [1, 5, 6, 7, 20, 101, 1000])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.999])
def test_median_order_statistics_is_the_narrowest_symmetric_interval(n: int, level: float) -> None:
    lo, hi = median_order_statistics(n, level)
    assert hi == n - 1 - lo
    if lo < 0:  # even the extremes cover the median less often
        assert (lo, hi) == (-1, n) and (n == 1 or _coverage(n, 0, n - 1) < level)
        return
    assert _coverage(n, lo, hi) >= level
    # one step narrower on both sides no longer reaches the level
    assert lo + 1 > hi - 1 or _coverage(n, lo + 1, hi - 1) < level
