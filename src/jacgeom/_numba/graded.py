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


@numba.njit(cache=True, nogil=True)
def _scaled_norm(x: Any) -> float:
    """2-norm of a vector without underflow or overflow (as reference.graded.scaled_norms)."""
    big = 0.0
    for v in x:
        a = abs(v)
        if a > big:
            big = a
    if big == 0.0:
        return 0.0
    s = 0.0
    for v in x:
        t = v / big
        s += t * t
    return big * math.sqrt(s)


@numba.njit(cache=True, nogil=True)
def _qr_step_one(A: Any, g: Any, V: Any, Q: Any, g_out: Any, V_out: Any) -> None:
    m, k = A.shape
    q = min(m, k)
    # Columns to unit size, their norms into g; columns by decreasing g, rows by
    # decreasing norm (stable orders, as the reference's argsort(kind="stable")).
    key = np.empty(k)
    unit = np.empty((m, k))
    for j in range(k):
        nrm = _scaled_norm(A[:, j])
        d = nrm if nrm > 0.0 else 1.0
        for i in range(m):
            unit[i, j] = A[i, j] / d
        x = g[j] + (math.log(nrm) if nrm > 0.0 else -math.inf)
        key[j] = -math.inf if math.isnan(x) else x
    order = np.argsort(-key, kind="mergesort")
    cols = np.empty((m, k))
    gs = np.empty(k)
    for jj in range(k):
        gs[jj] = key[order[jj]]
        cols[:, jj] = unit[:, order[jj]]
    row_norms = np.empty(m)
    for i in range(m):
        row_norms[i] = _scaled_norm(cols[i, :])
    rows = np.argsort(-row_norms, kind="mergesort")
    sorted_rows = np.empty((m, k))
    for ii in range(m):
        sorted_rows[ii, :] = cols[rows[ii], :]
    Qs, R = np.linalg.qr(sorted_rows)
    for ii in range(m):
        Q[rows[ii], :] = Qs[ii, :]
    # coeff_ij = R_ij / |R_ii| e^(g_j - g_i), in log space only where the factors apart
    # leave the floating-point range (reference.graded._graded_from_r).
    coeff = np.zeros((q, k))
    for i in range(q):
        d = abs(R[i, i])
        new = (math.log(d) if d > 0.0 else -math.inf) + gs[i]
        if not math.isfinite(new):
            g_out[i] = -math.inf
            continue
        g_out[i] = new
        for j in range(i, k):
            if not math.isfinite(gs[j]) or R[i, j] == 0.0:
                continue
            c = (R[i, j] / d) * math.exp(min(gs[j] - gs[i], 700.0))
            if not math.isfinite(c):
                log_ratio = math.log(abs(R[i, j])) - math.log(d) + gs[j] - gs[i]
                c = math.copysign(math.exp(min(log_ratio, 700.0)), R[i, j])
            if math.isfinite(c):
                coeff[i, j] = c
    V_sorted = np.empty((k, V.shape[1]))
    for jj in range(k):
        V_sorted[jj, :] = V[order[jj], :]
    V_out[:, :] = coeff @ V_sorted


@numba.njit(parallel=True, cache=True, nogil=True)
def _qr_step_batched(A: Any, g: Any, V: Any, Q: Any, g_out: Any, V_out: Any) -> None:
    for b in numba.prange(A.shape[0]):
        _qr_step_one(A[b], g[b], V[b], Q[b], g_out[b], V_out[b])


def graded_qr_step_batched(
    A: NDArray[np.float64], g: NDArray[np.float64], V: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """jacgeom.reference.graded.graded_qr_step_batched: A (B, m, k), g (B, k), V (B, k, n)
    float64, C-contiguous -> Q (B, m, q), g' (B, q), V' (B, q, n), q = min(m, k)."""
    B, m, k = A.shape
    q = min(m, k)
    n = V.shape[2]
    if m == 0 or k == 0:
        return np.zeros((B, m, 0)), np.zeros((B, 0)), np.zeros((B, 0, n))
    if not (np.isfinite(A).all() and np.isfinite(V).all()) or np.isnan(g).any():
        raise FloatingPointError("graded_qr_step: A and V must be finite and g not NaN")
    Q = np.empty((B, m, q))
    g_out = np.empty((B, q))
    V_out = np.empty((B, q, n))
    if B:
        _qr_step_batched(A, g, V, Q, g_out, V_out)
    return Q, g_out, V_out
