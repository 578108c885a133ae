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

from scipy.stats import beta

from . import _validation

__all__ = [
    "binomial_cdf_below",
    "clopper_pearson",
    "he_relu_log_gain",
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

    Examples
    --------
    >>> round(linear_log_cond(2, 1), 4)  # ln 2: E log(s1 / s2) of one 2 x 2 Gaussian
    0.6931
    """
    from scipy.special import digamma

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
        (n_0, n_1, ..., n_L), each >= 1.
    scale2 : float, default 2.0
        Variance of the weights times the fan-in.

    Returns
    -------
    dict
        ``mean`` and ``var`` of the natural log of ||J u||^2 / ||u||^2 given J u != 0, and
        ``p_zero`` = P(J u = 0) = 1 - prod_l (1 - 2^-n_l).

    Examples
    --------
    >>> law = he_relu_log_gain([4, 1])  # (2 / 4) chi^2_1 with probability 1/2, else 0
    >>> round(law["p_zero"], 4), round(law["mean"], 4)  # log(1/2) + psi(1/2) + log 2
    (0.5, -1.9635)
    """
    from scipy.special import digamma, polygamma
    from scipy.stats import binom

    ws = [int(w) for w in widths]
    if len(ws) < 2 or min(ws) < 1:
        raise ValueError(f"widths must be at least two positive ints, got {list(widths)!r}")
    if not (math.isfinite(scale2) and scale2 > 0):
        raise ValueError(f"scale2 must be a finite number > 0, got {scale2!r}")
    mean = var = 0.0
    p_alive = 1.0
    for n_in, n in zip(ws[:-1], ws[1:], strict=True):
        k = list(range(1, n + 1))
        p = binom.pmf(k, n, 0.5)
        p_alive *= float(p.sum())
        p = p / p.sum()
        psi = digamma([x / 2 for x in k])
        m_psi = float(p @ psi)
        mean += math.log(scale2 / n_in) + math.log(2.0) + m_psi
        var += float(p @ polygamma(1, [x / 2 for x in k])) + float(p @ (psi - m_psi) ** 2)
    return {"mean": mean, "var": var, "p_zero": 1.0 - p_alive}
