"""Closed forms of jacgeom.theory against direct simulation in numpy (independent of
jacgeom's kernels): each estimate must fall within five standard errors."""

from __future__ import annotations

import numpy as np
import pytest

from jacgeom.theory import clopper_pearson, he_relu_log_gain


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
