"""Numba masked-row rank: the singular values of every masked, scaled row set, counted with
numpy.linalg.matrix_rank's tolerance. Exact by construction; the C++ kernel adds a
certified Gram fast path on top of the same rule."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from . import lapack
from ._parallel import parallel_njit
from .layer import _gesdd

FloatArray = NDArray[np.floating[Any]]


@parallel_njit(cache=True, nogil=True)
def _masked_rank(
    W: FloatArray,
    scale: FloatArray,
    tol_mode: int,
    tol_value: float,
    eps: float,
    gesdd: Any,
    jobz: Any,
    ranks: Any,
    S: FloatArray,
) -> None:
    U, m = scale.shape
    n = W.shape[1]
    for u in numba.prange(U):
        A = np.empty((m, n), dtype=W.dtype)
        k = 0
        for i in range(m):
            si = scale[u, i]
            if si != 0:
                for j in range(n):
                    A[k, j] = si * W[i, j]
                k += 1
        S[u] = 0
        q = min(k, n)
        if q == 0:
            ranks[u] = 0
            continue
        s = np.empty(q, dtype=W.dtype)
        if lapack.svd_values(gesdd, A[:k], s, jobz) != 0:
            s[:] = np.nan
        S[u, :q] = s
        # As rank.hpp's count_above: the factor first, then one product in double, so a
        # sigma_max near the float maximum gives a finite threshold (s[0] * max(k, n) first
        # overflowed to inf and counted nothing).
        if tol_mode == 1:
            t = tol_value
        elif tol_mode == 2:
            t = float(s[0]) * tol_value
        else:
            t = float(s[0]) * (max(k, n) * eps)
        r = 0
        for i in range(q):
            if float(s[i]) > t:
                r += 1
        ranks[u] = r


def masked_rank(
    W: FloatArray, scale: FloatArray, tol_mode: int, tol_value: float
) -> tuple[NDArray[np.int64], FloatArray]:
    """Ranks (U,) and singular values (U, min(m, n)) of the rows with scale != 0, scaled."""
    ranks = np.empty(scale.shape[0], dtype=np.int64)
    S = np.empty((scale.shape[0], min(W.shape)), dtype=W.dtype)
    eps = float(np.finfo(W.dtype).eps)
    _masked_rank(
        W, scale, tol_mode, float(tol_value), eps, _gesdd(W.dtype), lapack.JOBZ_N, ranks, S
    )
    return ranks, S
