"""Closed forms of relu rank collapse and exact binomial confidence intervals.

The derivations are in docs/theory.md, section "Closed forms for relu rank collapse"; the
Monte Carlo (jacgeom.montecarlo.Result.theory) prints them beside its estimates. Model: W with iid N(0, s^2) entries (fresh for every sample), x fixed non-zero or random
and independent of W, zero-mean symmetric biases. Then the number of active relu units of a
layer of width m is Binomial(m, 1/2) and rank(D W) = min(|S|, n) almost surely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import beta

__all__ = [
    "binomial_cdf_below",
    "clopper_pearson",
    "linear_log_cond",
    "p_any_zeroed",
    "p_rank_at_least",
    "p_rank_deficient",
]


def binomial_cdf_below(m: int, k: int) -> float:
    """P(Binomial(m, 1/2) < k), exactly (integer arithmetic).

    Examples
    --------
    >>> binomial_cdf_below(10, 10) == 1 - 2.0**-10
    True
    """
    if k <= 0:
        return 0.0
    return sum(math.comb(m, j) for j in range(min(k, m + 1))) / 2.0**m


def p_any_zeroed(n: int) -> float:
    """P(at least one of n relu coordinates is zeroed) = 1 - 2^-n.

    Examples
    --------
    >>> round(p_any_zeroed(10), 5)
    0.99902
    """
    return 1.0 - 2.0**-n


def p_rank_deficient(m: int, n: int) -> float:
    """P(rank(D W) < n) for one relu layer with W (m, n): P(Binomial(m, 1/2) < n).

    Examples
    --------
    >>> p_rank_deficient(4, 4) == 1 - 2.0**-4
    True
    """
    return binomial_cdf_below(m, n)


def p_rank_at_least(widths: Sequence[int], r: int) -> float:
    """P(rank(J) >= r) through depth: prod_l P(Binomial(n_l, 1/2) >= r), for r <= n_0.

    The exact rank of a relu network's end-to-end Jacobian with fresh Gaussian weights is
    min(n_0, k_1, ..., k_L), k_l ~ Binomial(n_l, 1/2) the active units of layer l
    (docs/theory.md, "Closed forms for relu rank collapse", through depth).

    Parameters
    ----------
    widths : sequence of int
        [n_0, n_1, ..., n_L].
    r : int

    Examples
    --------
    >>> p_rank_at_least([4, 4], 4) == 2.0**-4
    True
    """
    if r > widths[0]:
        return 0.0
    out = 1.0
    for n in widths[1:]:
        out *= 1.0 - binomial_cdf_below(n, r)
    return out


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a binomial probability.

    Examples
    --------
    >>> lo, hi = clopper_pearson(50, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.3983, 0.6017)
    """
    if trials <= 0:
        return 0.0, 1.0
    a = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(a / 2, successes, trials - successes + 1))
    hi = (
        1.0
        if successes == trials
        else float(beta.ppf(1 - a / 2, successes + 1, trials - successes))
    )
    return lo, hi


def linear_log_cond(d: int, depth: int) -> float:
    """Large-depth limit of the natural log condition number of a product of ``depth`` iid
    Gaussian d x d matrices: depth (mu_1 - mu_d), mu_i = (ln 2 + digamma((d - i + 1) / 2)) / 2
    - ln(d) / 2 (the Lyapunov exponents; the entries' scale cancels; docs/theory.md,
    "Closed forms for relu rank collapse", linear networks).

    Examples
    --------
    >>> round(linear_log_cond(2, 1), 4)  # ln 2: E log(s1 / s2) of one 2 x 2 Gaussian
    0.6931
    """
    from scipy.special import digamma

    return depth * float(digamma(d / 2) - digamma(0.5)) / 2
