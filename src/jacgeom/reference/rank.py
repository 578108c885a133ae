"""Masked-row ranks in plain numpy: one numpy.linalg.matrix_rank call per mask."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..activations import Activation
from .layer import layer_derivatives, preactivations


def rank_and_values(
    A: NDArray[Any], tol: float | None, rtol: float | None, p: int
) -> tuple[int, NDArray[Any]]:
    """numpy.linalg.matrix_rank of A and its singular values padded with zeros to p.

    An A holding NaN or Inf has no rank: FloatingPointError (an integer cannot be NaN, and
    counting nothing would be a silent rank 0)."""
    s_full = np.zeros(p, dtype=A.dtype)
    if A.shape[0] == 0 or A.shape[1] == 0:
        return 0, s_full
    if not np.isfinite(A).all():
        raise FloatingPointError("the matrix holds NaN or Inf; no rank exists")
    s = np.linalg.svd(A, compute_uv=False)
    s_full[: s.size] = s
    rank = int(np.linalg.matrix_rank(A, tol=tol, rtol=rtol))
    return rank, s_full


def masked_rank(
    W: Any,
    mask: Any,
    tol: float | None = None,
    rtol: float | None = None,
    return_singular_values: bool = False,
) -> Any:
    """rank(W[mask[b]]) by numpy.linalg.matrix_rank for every mask; 0 for an empty mask.

    Returns (B,) int64 (a scalar for a 1-D mask), and with return_singular_values the
    singular values of W[mask[b]] padded with zeros to (B, min(m, n)).
    """
    W = np.asarray(W)
    mask = np.asarray(mask, dtype=bool)
    squeeze = mask.ndim == 1
    masks = mask[None, :] if squeeze else mask
    p = min(W.shape)
    ranks = np.zeros(masks.shape[0], dtype=np.int64)
    values = np.zeros((masks.shape[0], p), dtype=W.dtype)
    for b, keep in enumerate(masks):
        ranks[b], values[b] = rank_and_values(W[keep], tol, rtol, p)
    if squeeze:
        ranks, values = ranks[0], values[0]
    return (ranks, values) if return_singular_values else ranks


def active_rank(
    W: Any,
    X: Any,
    b: Any = None,
    tol: float | None = None,
    rtol: float | None = None,
    return_singular_values: bool = False,
) -> Any:
    """masked_rank with the relu active sets W x + b > 0."""
    return masked_rank(W, preactivations(W, X, b) > 0, tol, rtol, return_singular_values)


def jacobian_rank(
    W: Any,
    X: Any,
    b: Any = None,
    activation: str | Activation = "relu",
    tol: float | None = None,
    rtol: float | None = None,
    return_singular_values: bool = False,
) -> Any:
    """Numerical rank of D_phi W: matrix_rank of its non-zero rows d_i w_i."""
    W = np.asarray(W)
    d = layer_derivatives(W, X, b, activation)
    squeeze = d.ndim == 1
    D = d[None, :] if squeeze else d
    p = min(W.shape)
    ranks = np.zeros(D.shape[0], dtype=np.int64)
    values = np.zeros((D.shape[0], p), dtype=W.dtype)
    for i, di in enumerate(D):
        keep = di != 0
        ranks[i], values[i] = rank_and_values(di[keep, None] * W[keep], tol, rtol, p)
    if squeeze:
        ranks, values = ranks[0], values[0]
    return (ranks, values) if return_singular_values else ranks
