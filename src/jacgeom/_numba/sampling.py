"""Numba helper of the Monte Carlo's conditional sampler (jacgeom.montecarlo): the rows of
live units placed from their exact law given the pre-activations, in one pass without the
GIL, so that chunks running in threads overlap (the numpy twin takes several passes, all
holding the GIL).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(cache=True, nogil=True)
def place_live_rows(
    h: NDArray[np.float64],
    cols: NDArray[np.bool_],
    u: NDArray[np.float64],
    live: NDArray[np.bool_],
    G: NDArray[np.float64],
    B: NDArray[np.float64],
    fill_rest: bool,
    std: float,
    W: NDArray[np.float64],
) -> None:
    """Rows of live units given their pre-activations; the numpy twin,
    jacgeom.reference.montecarlo.place_live_rows, documents the arguments and the law."""
    kg = 0
    kb = 0
    N, m, n = W.shape
    free = np.empty(n, dtype=np.int64)  # columns of cols but the pivot, ascending
    other = np.empty(n, dtype=np.int64)  # columns outside cols
    v = np.empty(n)  # the Householder vector on the free columns
    for s in range(N):
        norm2 = 0.0
        j0 = -1
        for j in range(n):
            if h[s, j] != 0.0:
                norm2 += h[s, j] * h[s, j]
                if j0 < 0:
                    j0 = j
        nf = 0
        no = 0
        for j in range(n):
            if j == j0:
                continue
            if cols[s, j]:
                free[nf] = j
                nf += 1
            else:
                other[no] = j
                no += 1
        sgn = v0 = c = 0.0
        if j0 >= 0:
            inv = 1.0 / math.sqrt(norm2)
            sgn = 1.0 if h[s, j0] > 0.0 else -1.0
            v0 = 1.0 + abs(h[s, j0]) * inv  # v = e_j0 + sgn h^, |v|^2 = 2 v0
            c = 1.0 / v0  # 2 / |v|^2
            for t in range(nf):
                v[t] = sgn * h[s, free[t]] * inv
        for i in range(m):
            if not (live[s, i] and fill_rest):
                W[s, i, :] = 0.0  # one vectorised pass: cheaper than zeroing the others one by one
            if not live[s, i]:
                continue
            if j0 >= 0:
                y0 = -sgn * u[s, i]
                dot = v0 * y0
                for t in range(nf):
                    dot += v[t] * G[kg + t]
                coef = c * dot
                W[s, i, j0] = std * (y0 - coef * v0)
                for t in range(nf):
                    W[s, i, free[t]] = std * (G[kg + t] - coef * v[t])
            else:
                for t in range(nf):
                    W[s, i, free[t]] = std * G[kg + t]
            kg += nf
            if fill_rest:
                for t in range(no):
                    W[s, i, other[t]] = std * B[kb + t]
                kb += no
