"""Formed products at the ends of the float range: J, its Frobenius norm and singular values
are right where they fit the float range and an error where they do not (issue 21)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jacgeom


def _scaled_identity(n: int, depth: int, c: float, dtype: Any) -> jacgeom.Network:
    return jacgeom.Network([np.eye(n, dtype=dtype) * c] * depth, activation="identity")


@pytest.mark.parametrize(
    ("dtype", "c"),
    [(np.float32, 1e10), (np.float32, 1e-12), (np.float64, 1e80), (np.float64, 1e-90)],
)
def test_frobenius_norm_beyond_the_squares_range(dtype: Any, c: float) -> None:
    # J = c^2 I: its squares overflow (1e20 in float32, 1e160 in float64) or underflow,
    # the norm c^2 sqrt(n) does not
    net = _scaled_identity(4, 2, c, dtype)
    X = np.ones((2, 4), dtype=dtype)
    expected = float(dtype(c)) ** 2 * 2.0
    for backend in jacgeom.backends():
        got = net.frobenius_norm(X, backend=backend)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, [expected] * 2, rtol=1e-6, err_msg=backend)


def test_jacobian_beyond_the_float_range_is_an_error() -> None:
    # J = 1e480 I cannot be written in float64; its spectrum can (at x = 0 the forward
    # pass stays finite)
    net = _scaled_identity(3, 3, 1e160, np.float64)
    X = np.zeros((2, 3))
    for backend in jacgeom.backends():
        for method in ("jacobian", "frobenius_norm", "singular_values"):
            with pytest.raises(FloatingPointError, match="log_singular_values"):
                getattr(net, method)(X, backend=backend)
        logs = net.log_singular_values(X, backend=backend)
        np.testing.assert_allclose(logs, np.full((2, 3), 3 * np.log(1e160)), rtol=1e-14)
    # out= as well, and the last chunk of a run of chunks
    with pytest.raises(FloatingPointError):
        net.jacobian(X, out=np.empty((2, 3, 3)))
    # non-finite inputs (check_finite=False) follow IEEE arithmetic, no error
    J = _scaled_identity(3, 1, 1.0, np.float64).jacobian(
        np.array([[np.nan, 1.0, 2.0]]), check_finite=False
    )
    assert J.shape == (1, 3, 3)


def test_overflowing_preactivations_are_an_error_everywhere() -> None:
    # at x = 1 the forward pass itself reaches 1e480: no Jacobian exists in floating point
    net = _scaled_identity(3, 3, 1e160, np.float64)
    X = np.ones((2, 3))
    for backend in jacgeom.backends():
        for method in ("jacobian", "frobenius_norm", "singular_values", "log_singular_values"):
            with pytest.raises(FloatingPointError, match="not finite"):
                getattr(net, method)(X, backend=backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pullback_metric_beyond_the_float_range_is_an_error(dtype: Any) -> None:
    # J entries of 1e25 (float32) / 1e160 (float64) are finite, J^T J is not: an error on
    # every backend; a factor 1e-3 smaller fits and is computed
    big = 1e25 if dtype == np.float32 else 1e160
    X = np.ones((2, 3), dtype=dtype)
    for backend in jacgeom.backends():
        W = np.full((4, 3), big, dtype=dtype)
        with pytest.raises(FloatingPointError, match="pullback metric"):
            jacgeom.pullback_metric(W, X, activation="identity", backend=backend)
        small = np.full((4, 3), 1e17 if dtype == np.float32 else 1e152, dtype=dtype)
        G = jacgeom.pullback_metric(small, X, activation="identity", backend=backend)
        np.testing.assert_allclose(G, 4 * float(small[0, 0]) ** 2, rtol=1e-5)
