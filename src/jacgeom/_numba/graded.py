"""Numba twin of jacgeom.reference.graded.graded_log_singular_values, batched over samples:
log singular values of diag(e^g) V by one-sided Jacobi on log-scaled columns (see the
reference for the rotation formulas and why they stay finite)."""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

_MAX_SWEEPS = 60


# Reassociation lets the dot products and row updates vectorise; no flag that assumes
# finite values (exact zeros are -inf log-scales).
_FAST = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _one(g: Any, V: Any, out: Any) -> None:
    r, n = V.shape
    U = np.empty((r, n))
    s = np.empty(r)
    k = 0
    for i in range(r):
        if not math.isfinite(g[i]):
            continue
        nrm = 0.0
        for j in range(n):
            nrm += V[i, j] * V[i, j]
        nrm = math.sqrt(nrm)
        if nrm == 0.0:
            continue
        for j in range(n):
            U[k, j] = V[i, j] / nrm
        s[k] = g[i] + math.log(nrm)
        k += 1
    tol = math.sqrt(max(n, 1)) * 2.220446049250313e-16
    for _ in range(_MAX_SWEEPS):
        rotated = False
        for i in range(k - 1):
            for j in range(i + 1, k):
                if s[i] >= s[j]:
                    a, b = i, j
                else:
                    a, b = j, i
                # Rows are kept at unit norm (renormalised after every rotation), so
                # p = q = 1 to rounding and only their product c is summed.
                c = 0.0
                for t in range(n):
                    c += U[a, t] * U[b, t]
                if abs(c) <= tol:
                    continue
                p = 1.0
                q = 1.0
                rotated = True
                rho = math.exp(s[b] - s[a])
                w = (rho * rho * q - p) / (2.0 * c)
                tau = math.copysign(1.0, w) / (abs(w) + math.hypot(rho, w))
                tt = rho * tau
                cs = 1.0 / math.sqrt(1.0 + tt * tt)
                f = rho * rho * tau
                na = 0.0
                nb = 0.0
                for t in range(n):
                    x = U[a, t]
                    y = U[b, t]
                    xa = cs * (x - f * y)
                    yb = cs * (tau * x + y)
                    U[a, t] = xa
                    U[b, t] = yb
                    na += xa * xa
                    nb += yb * yb
                na = math.sqrt(na)
                nb = math.sqrt(nb)
                for t in range(n):
                    U[a, t] /= na
                    U[b, t] /= nb
                s[a] += math.log(na)
                s[b] += math.log(nb)
        if not rotated:
            break
    vals = np.sort(s[:k])
    for i in range(r):
        out[i] = vals[k - 1 - i] if i < k else -np.inf


@numba.njit(parallel=True, cache=True, nogil=True)
def _batched(g: Any, V: Any, out: Any) -> None:
    for b in numba.prange(g.shape[0]):
        _one(g[b], V[b], out[b])


def graded_log_singular_values(
    g: NDArray[np.float64], V: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(B, r) log singular values of diag(e^g[b]) V[b], descending, -inf for exact zeros.

    g : (B, r) float64, V : (B, r, n) float64, C-contiguous.
    """
    out = np.empty(g.shape, dtype=np.float64)
    if g.size:
        _batched(np.ascontiguousarray(g), np.ascontiguousarray(V), out)
    return out
