"""Single-layer kernels in plain numpy: they form the (B, m, n) Jacobian and use numpy.linalg."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..activations import Activation
from ..activations import activation as _lookup

FloatArray = NDArray[np.floating[Any]]


def _batch(X: Any) -> tuple[FloatArray, bool]:
    X = np.asarray(X)
    return (X[None, :], True) if X.ndim == 1 else (X, False)


def preactivations(W: Any, X: Any, b: Any = None, activation: Any = None) -> FloatArray:
    """Z = X W^T + b, shape (B, m) (or (m,) for a 1-D X); ``activation`` is ignored."""
    W = np.asarray(W)
    X2, squeeze = _batch(X)
    Z = X2 @ W.T
    if b is not None:
        Z = Z + np.asarray(b)
    return Z[0] if squeeze else Z


def layer_derivatives(
    W: Any, X: Any, b: Any = None, activation: str | Activation = "relu"
) -> FloatArray:
    """d = phi'(W x + b) for every sample, shape (B, m)."""
    return _lookup(activation).derivative(preactivations(W, X, b))


def layer_jacobian(
    W: Any, X: Any, b: Any = None, activation: str | Activation = "relu"
) -> FloatArray:
    """J = D_phi(z) W for every sample, shape (B, m, n)."""
    d = layer_derivatives(W, X, b, activation)
    return d[..., :, None] * np.asarray(W)


def pullback_metric(
    W: Any, X: Any, b: Any = None, activation: str | Activation = "relu"
) -> FloatArray:
    """G = W^T D^2 W = J^T J for every sample, shape (B, n, n)."""
    J = layer_jacobian(W, X, b, activation)
    return np.swapaxes(J, -1, -2) @ J


def layer_singular_values(
    W: Any, X: Any, b: Any = None, activation: str | Activation = "relu"
) -> FloatArray:
    """Singular values of J for every sample, descending, shape (B, min(m, n)).

    Samples whose Jacobian holds NaN or Inf (possible with check_finite=False) get NaN.
    """
    return svd_values(layer_jacobian(W, X, b, activation))


def svd_values(J: FloatArray) -> FloatArray:
    """Singular values of a stack of matrices (..., r, c), descending; NaN for the matrices
    that hold NaN or Inf (where numpy's SVD would raise)."""
    finite = np.isfinite(J).all(axis=(-2, -1))
    s = np.full(J.shape[:-2] + (min(J.shape[-2:]),), np.nan, dtype=J.dtype)
    s[finite] = np.linalg.svd(J[finite], compute_uv=False)
    return s


def log_volume(W: Any, X: Any, b: Any = None, activation: str | Activation = "relu") -> FloatArray:
    """0.5 log det(J^T J) = sum of log singular values of J; -inf where rank(J) < n.

    The rank is numpy.linalg.matrix_rank's: singular values above
    sigma_max * max(m, n) * eps of the dtype.
    """
    W = np.asarray(W)
    m, n = W.shape
    s = layer_singular_values(W, X, b, activation)
    if n == 0:
        return np.zeros(s.shape[:-1], dtype=s.dtype)
    # The factor first: s * max(m, n) overflows when sigma_max is near the float maximum.
    tol = s[..., :1] * (max(m, n) * np.finfo(s.dtype).eps)
    full = np.sum(s > tol, axis=-1) == n
    with np.errstate(divide="ignore"):
        logs = np.sum(np.log(s), axis=-1)
    return np.where(full, logs, -np.inf).astype(s.dtype)
