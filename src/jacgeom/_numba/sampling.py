"""Numba helper of the Monte Carlo's conditional sampler (jacgeom.montecarlo): the rows of
live units placed from their exact law given the pre-activations, in one pass without the
GIL, so that chunks running in threads overlap (the numpy twin takes five passes, all
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
    u: NDArray[np.float64],
    live: NDArray[np.bool_],
    G: NDArray[np.float64],
    std: float,
    W: NDArray[np.float64],
) -> None:
    """W[s, i] = std (g - (g . h^ - u[s, i]) h^) for every live (s, i), in row-major order of
    (s, i), g the next row of G and h^ = h[s] / |h[s]| (zero when h[s] = 0), and zero rows
    for the dead units. W is (N, m, n), h (N, n), u and live (N, m), G (count of live, n)."""
    k = 0
    n = h.shape[1]
    for s in range(h.shape[0]):
        norm2 = 0.0
        for j in range(n):
            norm2 += h[s, j] * h[s, j]
        inv = 1.0 / math.sqrt(norm2) if norm2 > 0.0 else 0.0
        for i in range(u.shape[1]):
            if not live[s, i]:
                for j in range(n):
                    W[s, i, j] = 0.0
                continue
            dot = 0.0
            for j in range(n):
                dot += G[k, j] * h[s, j]
            coef = (dot * inv - u[s, i]) * inv  # (g . h^ - u) h^ = coef h
            for j in range(n):
                W[s, i, j] = std * (G[k, j] - coef * h[s, j])
            k += 1
