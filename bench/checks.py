"""The checks of every kernel: its result on a few samples against jacgeom.reference.

One ``compare_<kernel>`` per kernel (actual, expected, dtype), raising AssertionError with
the worst entry; the tolerances are relative to the reference's scale and depend on dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_float32(dtype: np.dtype[Any]) -> bool:
    return np.dtype(dtype) == np.float32


def assert_within(actual: np.ndarray, expected: np.ndarray, atol: Any, what: str) -> None:
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= atol)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), err.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(bad)} entries off; worst at {worst}: "
            f"{actual[worst]!r} vs reference {expected[worst]!r}"
        )


def check_dtype(actual: np.ndarray, dtype: np.dtype[Any]) -> None:
    assert actual.dtype == dtype, f"result dtype {actual.dtype}, expected {dtype}"


# The single-layer kernels.


def compare_jacobian(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    check_dtype(actual, dtype)
    tol = 1e-5 if is_float32(dtype) else 1e-12
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    assert_within(actual, expected, tol * scale, "layer_jacobian")


def compare_metric(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    check_dtype(actual, dtype)
    tol = 1e-4 if is_float32(dtype) else 1e-11
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    assert_within(actual, expected, tol * scale, "pullback_metric")


def compare_singular_values(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    check_dtype(actual, dtype)
    tol = 1e-4 if is_float32(dtype) else 1e-11
    assert_within(actual, expected, tol * expected[:, :1], "layer_singular_values")


def _log_volume_tolerance(dtype: np.dtype[Any], expected: np.ndarray) -> np.ndarray:
    tol = 2e-2 if is_float32(dtype) else 1e-8
    return tol * np.maximum(1.0, np.abs(expected))


def compare_log_volume(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    check_dtype(actual, dtype)
    singular_a, singular_e = np.isneginf(actual), np.isneginf(expected)
    assert np.array_equal(singular_a, singular_e), (
        f"log_volume: -inf (rank < n) at samples {np.flatnonzero(singular_a).tolist()}, "
        f"reference at {np.flatnonzero(singular_e).tolist()}"
    )
    finite = ~singular_e
    assert_within(
        actual[finite],
        expected[finite],
        _log_volume_tolerance(dtype, expected[finite]),
        "log_volume",
    )


def compare_slogdet(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Where the reference is finite only: slogdet cannot detect rank (see diagnose)."""
    check_dtype(actual, dtype)
    finite = np.isfinite(expected)
    # G = J^T J squares the condition number; float32 loses correspondingly more.
    tol = (5e-2 if is_float32(dtype) else 1e-6) * np.maximum(1.0, np.abs(expected[finite]))
    assert_within(actual[finite], expected[finite], tol, "log_volume via slogdet")


# masked_rank and Network.rank.


def compare_ranks(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Ranks are integers: equal, sample by sample (peers may return int32)."""
    actual = np.asarray(actual)
    assert np.issubdtype(actual.dtype, np.integer), f"ranks of dtype {actual.dtype}"
    bad = np.flatnonzero(actual.astype(np.int64) != expected)
    assert bad.size == 0, (
        f"rank differs from the reference at {bad.size} of {expected.size} checked samples; "
        f"first: {actual[bad[0]]} vs {expected[bad[0]]}"
    )


# Network.jacobian and Network.singular_values.


def compare_network_jacobian(
    actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]
) -> None:
    check_dtype(actual, dtype)
    tol = 1e-4 if is_float32(dtype) else 1e-10
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    assert_within(actual, expected, tol * scale, "Network.jacobian")


def compare_network_singular_values(
    actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]
) -> None:
    check_dtype(actual, dtype)
    tol = 1e-4 if is_float32(dtype) else 1e-10
    assert_within(actual, expected, tol * expected[:, :1], "Network.singular_values")
