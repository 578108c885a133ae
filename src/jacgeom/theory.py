"""Closed forms of relu rank collapse and exact binomial confidence intervals.

The derivations are in docs/theory.md, section "Closed forms for relu rank collapse"; the
Monte Carlo (jacgeom.montecarlo.Result.theory) prints them beside its estimates. Model: W
with iid N(0, s^2) entries (fresh for every sample), x fixed non-zero or random and
independent of W, zero-mean symmetric biases. Then the number of active relu units of a
layer of width m is Binomial(m, 1/2) and rank(D W) = min(|S|, n) almost surely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import beta, binom

from . import _validation

__all__ = [
    "binomial_cdf_below",
    "clopper_pearson",
    "he_relu_log_gain",
    "linear_log_cond",
    "median_order_statistics",
    "p_any_zeroed",
    "p_rank_at_least",
    "p_rank_below",
    "p_rank_deficient",
    "relu_mean_active_fraction",
]


def binomial_cdf_below(m: int, k: int) -> float:
    """P(Binomial(m, 1/2) < k).

    Parameters
    ----------
    m : int
        Trials, >= 0.
    k : int
        Any integer: 0 for k <= 0, 1 for k > m.

    Returns
    -------
    float
        From scipy.stats.binom (the regularised incomplete beta function): relative error
        below 1e-12 at every m, no overflow (``sum(comb(m, j)) / 2.0**m`` overflows from
        m = 1024 on), and tiny tails as they are, down to float64's smallest numbers.

    Raises
    ------
    TypeError
        Where ``m`` or ``k`` is not an int.
    ValueError
        Where ``m`` is negative.

    Examples
    --------
    >>> binomial_cdf_below(10, 10) == 1 - 2.0**-10
    True
    >>> binomial_cdf_below(1024, 512) < 0.5
    True
    """
    m = _count("m", m, 0)
    k = _validation.integer("k", k)
    return _cdf_below(m, k)


def p_any_zeroed(n: int) -> float:
    """P(at least one of n relu coordinates is zeroed) = 1 - 2^-n.

    Parameters
    ----------
    n : int
        Units of the layer, >= 1.

    Raises
    ------
    TypeError
        Where ``n`` is not an int.
    ValueError
        Where ``n`` < 1.

    Examples
    --------
    >>> round(p_any_zeroed(10), 5)
    0.99902
    """
    n = _count("n", n, 1)
    return 1.0 - math.ldexp(1.0, -n)  # 2^-n exactly, 0.0 beyond float64 (never overflows)


def p_rank_deficient(m: int, n: int) -> float:
    """P(rank(D W) < n) for one relu layer with W (m, n): P(Binomial(m, 1/2) < n).

    Parameters
    ----------
    m, n : int
        Units (rows of W) and inputs (columns), each >= 1.

    Raises
    ------
    TypeError
        Where ``m`` or ``n`` is not an int.
    ValueError
        Where one is < 1.

    Examples
    --------
    >>> p_rank_deficient(4, 4) == 1 - 2.0**-4
    True
    """
    m = _count("m", m, 1)
    n = _count("n", n, 1)
    return _cdf_below(m, n)


def p_rank_at_least(widths: Sequence[int], r: int) -> float:
    """P(rank(J) >= r) through depth: prod_l P(Binomial(n_l, 1/2) >= r), for r <= n_0.

    The exact rank of a relu network's end-to-end Jacobian with fresh Gaussian weights is
    min(n_0, k_1, ..., k_L), k_l ~ Binomial(n_l, 1/2) the active units of layer l
    (docs/theory.md, "Closed forms for relu rank collapse", through depth). With zero
    biases a layer with no active unit kills every later one; rank >= r >= 1 excludes that,
    so the product holds for any biases.

    Parameters
    ----------
    widths : sequence of int
        [n_0, n_1, ..., n_L], at least two, each >= 1.
    r : int
        >= 0; 0 for r > n_0.

    Returns
    -------
    float
        Each factor is a binomial upper tail from scipy.stats.binom (accurate where it is
        tiny, unlike 1 - its cdf); :func:`p_rank_below` gives the complement accurately.

    Raises
    ------
    TypeError
        Where ``widths`` is not a sequence of ints or ``r`` not an int.
    ValueError
        Where fewer than two widths are given, one is < 1, or ``r`` < 0.

    Examples
    --------
    >>> p_rank_at_least([4, 4], 4) == 2.0**-4
    True
    """
    ws = _widths(widths)
    r = _count("r", r, 0)
    if r > ws[0]:
        return 0.0
    return math.prod(_sf_at_least(n, r) for n in ws[1:])


def p_rank_below(widths: Sequence[int], r: int) -> float:
    """P(rank(J) < r) = 1 - :func:`p_rank_at_least`, accurate where it is tiny.

    Computed as -expm1(sum_l log P(Binomial(n_l, 1/2) >= r)), each logarithm from the
    smaller of the binomial's two tails: 1 - prod_l (1 - c_l) rounds to 0 once every c_l is
    below 1e-16 (widths [16, 1024] and r = 16: about 1e-270).

    Parameters
    ----------
    widths : sequence of int
        [n_0, n_1, ..., n_L], at least two, each >= 1.
    r : int
        >= 0; 1 for r > n_0.

    Raises
    ------
    TypeError
        Where ``widths`` is not a sequence of ints or ``r`` not an int.
    ValueError
        Where fewer than two widths are given, one is < 1, or ``r`` < 0.

    Examples
    --------
    >>> p_rank_below([4, 4], 4) == 1 - 2.0**-4
    True
    >>> 0.0 < p_rank_below([16, 1024], 16) < 1e-250
    True
    """
    ws = _widths(widths)
    r = _count("r", r, 0)
    if r > ws[0]:
        return 1.0
    return -math.expm1(math.fsum(_log_sf_at_least(n, r) for n in ws[1:]))


def relu_mean_active_fraction(widths: Sequence[int], zero_bias: bool) -> float:
    """E[(1 / L) sum_l k_l / n_l]: the expected active fraction of a relu network with fresh
    zero-mean Gaussian weights, averaged over its L layers.

    With symmetric biases that are non-zero almost surely, every unit is active with
    probability 1/2 whatever the layer below does: 1/2. With zero biases, a layer whose
    units are all inactive (probability 2^-n_l given an input that is not zero) passes
    h = 0 on, and every later layer then has z = 0 and relu'(0) = 0, so

        E[k_l / n_l] = 1/2 prod_(j < l) (1 - 2^-n_j),

    for an input x that is not zero (docs/theory.md, "Closed forms for relu rank
    collapse").

    Parameters
    ----------
    widths : sequence of int
        [n_0, n_1, ..., n_L], at least two, each >= 1.
    zero_bias : bool
        Whether the biases are zero (sigma_b = 0).

    Raises
    ------
    TypeError
        Where ``widths`` is not a sequence of ints or ``zero_bias`` not a bool.
    ValueError
        Where fewer than two widths are given or one is < 1.

    Examples
    --------
    >>> relu_mean_active_fraction([4, 2, 2], zero_bias=False)
    0.5
    >>> relu_mean_active_fraction([4, 2, 2], zero_bias=True)  # (1/2 + 1/2 * 3/4) / 2
    0.4375
    """
    ws = _widths(widths)
    if not _validation.flag("zero_bias", zero_bias):
        return 0.5
    alive, total = 1.0, 0.0
    for n in ws[1:]:
        total += 0.5 * alive
        alive *= 1.0 - math.ldexp(1.0, -n)
    return total / (len(ws) - 1)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a binomial probability.

    Parameters
    ----------
    successes : int
        Between 0 and ``trials``.
    trials : int
        At least 0; with none, the interval is [0, 1].
    level : float, default 0.95
        The confidence level, strictly between 0 and 1.

    Returns
    -------
    (lo, hi) : tuple of float

    Raises
    ------
    TypeError
        Where a count is not an integer or ``level`` not a real number.
    ValueError
        Where the counts are out of range or ``level`` is not in (0, 1).

    Examples
    --------
    >>> lo, hi = clopper_pearson(50, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.3983, 0.6017)
    """
    level = confidence_level(level)
    successes = _validation.integer("successes", successes)
    trials = _validation.integer("trials", trials)
    if not 0 <= successes <= trials:
        # beta.ppf would answer NaN, or an interval about nothing
        raise ValueError(
            f"successes must be between 0 and trials, got successes={successes}, trials={trials}"
        )
    if trials == 0:
        return 0.0, 1.0
    a = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(a / 2, successes, trials - successes + 1))
    hi = (
        1.0
        if successes == trials
        else float(beta.ppf(1 - a / 2, successes + 1, trials - successes))
    )
    return lo, hi


def median_order_statistics(n: int, level: float = 0.95) -> tuple[int, int]:
    """The distribution-free confidence interval for a median from n samples: the 0-based
    ranks (lo, hi) of the order statistics x_(lo) <= x_(hi) that cover the median with
    probability at least ``level``, as close together as that allows.

    For continuous x, P(x_(lo) <= median <= x_(hi)) = 1 - 2 P(Binomial(n, 1/2) <= lo) with
    hi = n - 1 - lo; lo is the largest rank with P(Binomial(n, 1/2) <= lo) <= (1 - level) / 2
    (with ties the coverage only grows). Where even the sample's extremes cover the median
    less often (1 - 2^(1 - n) < level: n <= 5 at 95%), the answer is (-1, n), read as an
    interval from -inf to inf.

    Parameters
    ----------
    n : int
        Samples, >= 1.
    level : float, default 0.95
        The confidence level, strictly between 0 and 1.

    Returns
    -------
    (lo, hi) : tuple of int

    Raises
    ------
    TypeError
        Where ``n`` is not an int or ``level`` not a real number.
    ValueError
        Where ``n`` < 1 or ``level`` is not in (0, 1).

    Examples
    --------
    >>> median_order_statistics(100)  # x_(39) and x_(60) of x_(0) <= ... <= x_(99)
    (39, 60)
    >>> median_order_statistics(5)
    (-1, 5)
    """
    level = confidence_level(level)
    n = _count("n", n, 1)
    half_alpha = (1.0 - level) / 2
    lo = int(binom.ppf(half_alpha, n, 0.5))  # the smallest rank whose cdf reaches it
    while lo >= 0 and binom.cdf(lo, n, 0.5) > half_alpha:
        lo -= 1
    return lo, n - 1 - lo


def confidence_level(level: object) -> float:
    """``level`` checked as a confidence level: a real number strictly between 0 and 1 (not
    bool, not text), as float. Outside (0, 1) beta.ppf answers NaN, or an interval that
    excludes its own estimate; every function that takes a ``level`` checks it here first.

    Raises
    ------
    TypeError
        Where ``level`` is not a real number.
    ValueError
        Where it is not in (0, 1) (NaN included).
    """
    value = _validation.real("level", level)
    if not 0.0 < value < 1.0:  # NaN fails this too
        raise ValueError(
            f"level must be a confidence level strictly between 0 and 1, got "
            f"{_validation.shown(level)}"
        )
    return value


def linear_log_cond(d: int, depth: int) -> float:
    """Large-depth limit of the natural log condition number of a product of ``depth`` iid
    Gaussian d x d matrices: depth (mu_1 - mu_d), mu_i = (ln 2 + digamma((d - i + 1) / 2)) / 2
    - ln(d) / 2 (the Lyapunov exponents; the entries' scale cancels; docs/theory.md,
    "Closed forms for relu rank collapse", linear networks).

    Parameters
    ----------
    d : int
        Size of the matrices, >= 1.
    depth : int
        Number of factors, >= 0.

    Raises
    ------
    TypeError
        Where ``d`` or ``depth`` is not an int.
    ValueError
        Where ``d`` < 1 or ``depth`` < 0.

    Examples
    --------
    >>> round(linear_log_cond(2, 1), 4)  # ln 2: E log(s1 / s2) of one 2 x 2 Gaussian
    0.6931
    """
    from scipy.special import digamma

    d = _count("d", d, 1)
    depth = _count("depth", depth, 0)
    return depth * float(digamma(d / 2) - digamma(0.5)) / 2


def he_relu_log_gain(widths: Sequence[int], scale2: float = 2.0) -> dict[str, float]:
    """Exact finite-width law of the log gain of a relu network in one direction.

    For W_l with iid N(0, scale2 / n_(l-1)) entries (He: scale2 = 2), zero-mean symmetric
    biases and any fixed input x and direction u,
    ||J u||^2 / ||u||^2 = prod_l (scale2 / n_(l-1)) chi^2_(K_l), the chi^2 independent
    given K_l ~ Binomial(n_l, 1/2) independent (flipping a row's signs keeps (w . u)^2 and
    flips the unit's state, so the two are independent). J u = 0 when some K_l = 0; given
    that none is,

    E log = sum_l [log(scale2 / n_(l-1)) + log 2 + E psi(K_l / 2)],
    Var log = sum_l [E psi'(K_l / 2) + Var psi(K_l / 2)],

    psi the digamma function, the expectations over K_l >= 1 (docs/theory.md, "Closed
    forms for relu rank collapse"). Hanin and Nica's large-width limit N(-b / 2, b),
    b = 5 sum 1 / n_l, approximates it.

    Parameters
    ----------
    widths : sequence of int
        (n_0, n_1, ..., n_L), at least two, each >= 1.
    scale2 : float, default 2.0
        Variance of the weights times the fan-in, a finite real number > 0. The law's
        mean is linear in log(scale2) and its variance does not depend on it.

    Returns
    -------
    dict
        ``mean`` and ``var`` of the natural log of ||J u||^2 / ||u||^2 given J u != 0, and
        ``p_zero`` = P(J u = 0) = 1 - prod_l (1 - 2^-n_l).

    Raises
    ------
    TypeError
        Where ``widths`` is not a sequence of ints or ``scale2`` not a real number.
    ValueError
        Where fewer than two widths are given, one is < 1, or ``scale2`` is not finite
        and > 0.

    Examples
    --------
    >>> law = he_relu_log_gain([4, 1])  # (2 / 4) chi^2_1 with probability 1/2, else 0
    >>> round(law["p_zero"], 4), round(law["mean"], 4)  # log(1/2) + psi(1/2) + log 2
    (0.5, -1.9635)
    """
    from scipy.special import digamma, polygamma

    ws = _widths(widths)
    value = _validation.real("scale2", scale2)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"scale2 must be a finite number > 0, got {_validation.shown(scale2)}")
    mean = var = log_alive = 0.0
    for n_in, n in zip(ws[:-1], ws[1:], strict=True):
        k = np.arange(1, n + 1)
        p = binom.pmf(k, n, 0.5)
        p = p / p.sum()
        psi = digamma(k / 2)
        m_psi = float(p @ psi)
        # log(scale2) and log(n_in) apart: their ratio can leave the float range
        mean += math.log(value) - math.log(n_in) + math.log(2.0) + m_psi
        var += float(p @ polygamma(1, k / 2)) + float(p @ (psi - m_psi) ** 2)
        log_alive += math.log1p(-math.ldexp(1.0, -n))
    # 1 - prod_l (1 - 2^-n_l) without the rounding of 1 - (something near 1)
    return {"mean": mean, "var": var, "p_zero": -math.expm1(log_alive)}


# ------------------------------------------------------------------------ checks and tails


def _count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``: TypeError naming ``name`` for a float (4.7 is not
    truncated), text or bool, ValueError below the minimum."""
    out = _validation.integer(name, value)
    if out < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {out}")
    return out


def _widths(widths: Any) -> list[int]:
    """``widths`` as a list of at least two ints >= 1 (TypeError or ValueError naming
    ``widths``, or ``widths[i]`` for a bad entry)."""
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"widths must be a sequence of ints, got {type(widths).__name__}")
    ws = [_validation.integer(f"widths[{i}]", w) for i, w in enumerate(widths)]
    if len(ws) < 2 or min(ws) < 1:
        raise ValueError(f"widths must be at least two positive ints, got {ws}")
    return ws


def _cdf_below(m: int, k: int) -> float:
    """P(Binomial(m, 1/2) < k) of checked m >= 0 and any int k."""
    if k <= 0:
        return 0.0
    if k > m:
        return 1.0
    return float(binom.cdf(k - 1, m, 0.5))


def _sf_at_least(m: int, k: int) -> float:
    """P(Binomial(m, 1/2) >= k), its own tail (1 - cdf loses it once the cdf is near 1)."""
    if k <= 0:
        return 1.0
    if k > m:
        return 0.0
    return float(binom.sf(k - 1, m, 0.5))


def _log_sf_at_least(m: int, k: int) -> float:
    """log P(Binomial(m, 1/2) >= k) from the smaller tail: log1p(-cdf) where the cdf is
    small (the tail near 1 is then exact to rounding), log(sf) elsewhere."""
    below = _cdf_below(m, k)
    if below < 0.5:
        return math.log1p(-below)
    above = _sf_at_least(m, k)
    return math.log(above) if above > 0.0 else -math.inf
