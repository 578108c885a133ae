"""Numba twin of jacgeom.reference.graded.graded_log_singular_values, batched over samples:
log singular values of diag(e^g) V by one-sided Jacobi on log-scaled columns (see the
reference for the rotation formulas and why they stay finite)."""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from ._parallel import parallel_njit

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


@parallel_njit(cache=True, nogil=True)
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


# jacgeom.reference.graded.PIVOT_SLACK and the scale of its sums of squares
_PIVOT_SLACK = 8.0
_SQUARE_SCALE = 2.0**500


@numba.njit(cache=True, nogil=True)
def _row_order(M: Any, gs: Any) -> Any:
    """Rows of M diag(e^gs) (gs descending) by decreasing size max_j |M_ij| e^(gs_j),
    stable, ties by decreasing |M_ij| in the column that gives the size
    (reference.graded.graded_row_order)."""
    m, k = M.shape
    top = gs[0] if k and math.isfinite(gs[0]) else 0.0
    f = np.empty(k)
    for j in range(k):
        f[j] = math.exp(gs[j] - top)
    size = np.empty(m)
    entry = np.empty(m)
    for i in range(m):
        s = 0.0
        col = 0
        for j in range(k):
            a = abs(M[i, j]) * f[j]
            if a > s:
                s = a
                col = j
        if s < 1e-290:
            best = -math.inf
            col = 0
            for j in range(k):
                a = abs(M[i, j])
                if a > 0.0 and math.isfinite(gs[j]):
                    t = math.log(a) + gs[j]
                    if t > best:
                        best = t
                        col = j
            size[i] = best
        else:
            size[i] = math.log(s) + top
        a = abs(M[i, col])
        entry[i] = math.log(a) if a > 0.0 else -math.inf
    rows = np.argsort(-size, kind="mergesort")
    start = 0
    while start < m:  # runs of equal size: insertion sort by decreasing entry, stable
        stop = start + 1
        while stop < m and size[rows[stop]] == size[rows[start]]:
            stop += 1
        for a in range(start + 1, stop):
            r = rows[a]
            b = a
            while b > start and entry[rows[b - 1]] < entry[r]:
                rows[b] = rows[b - 1]
                b -= 1
            rows[b] = r
        start = stop
    return rows


@numba.njit(cache=True, nogil=True)
def _pivots_hold(R: Any, gs: Any) -> bool:
    """reference.graded.pivots_hold for one sample: ||R[i:, j]|| e^(g_j) <= slack
    |R_ii| e^(g_i) for every i and later live j (gs descending)."""
    q, k = R.shape
    tail = np.zeros(k)
    log_slack = math.log(_PIVOT_SLACK)
    for i in range(q - 1, -1, -1):
        for j in range(i, k):
            x = R[i, j] * _SQUARE_SCALE
            tail[j] += x * x
        d = (R[i, i] * _SQUARE_SCALE) ** 2
        limit = d * _PIVOT_SLACK * _PIVOT_SLACK
        for j in range(i + 1, k):
            if tail[j] <= limit or not math.isfinite(gs[j]) or tail[j] == 0.0:
                continue  # e^(g_j - g_i) <= 1: holds
            if d == 0.0 or not math.isfinite(gs[i]):
                return False
            if 0.5 * math.log(tail[j]) + gs[j] > 0.5 * math.log(d) + gs[i] + log_slack:
                return False
    return True


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _reflect(h: Any, v: Any, j: int, m: int) -> None:
    """v[j:m] <- (I - 2 h h^T) v[j:m] for the unit Householder vector h[j:m], in place."""
    dot = 0.0
    for i in range(j, m):
        dot += h[i] * v[i]
    dot *= 2.0
    for i in range(j, m):
        v[i] -= dot * h[i]


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _householder_pivoted(M: Any, gs: Any, perm: Any) -> Any:
    """reference.graded.householder_pivoted for one sample: Q (m, q), R (q, k); gs and
    perm (k,) are permuted in place. Columns are stored as the rows of C (k, m), the
    reflectors as the rows of H (q, m): the inner loops run over contiguous memory."""
    m, k = M.shape
    q = min(m, k)
    C = np.ascontiguousarray(M.T)
    H = np.zeros((q, m))
    stop = q
    for j in range(q):
        best = -math.inf
        p = j
        for c in range(j, k):
            if not math.isfinite(gs[c]):
                continue
            nrm = _scaled_norm(C[c, j:])
            if nrm > 0.0:
                key = math.log(nrm) + gs[c]
                if key > best:
                    best = key
                    p = c
        if best == -math.inf:
            stop = j
            break
        if p != j:
            for i in range(m):
                t = C[j, i]
                C[j, i] = C[p, i]
                C[p, i] = t
            t = gs[j]
            gs[j] = gs[p]
            gs[p] = t
            pj = perm[j]
            perm[j] = perm[p]
            perm[p] = pj
        x0 = C[j, j]
        for i in range(j, m):
            H[j, i] = C[j, i]
        H[j, j] = x0 + math.copysign(_scaled_norm(C[j, j:]), x0)
        nv = _scaled_norm(H[j, j:])
        for i in range(j, m):
            H[j, i] /= nv
        for c in range(j, k):
            _reflect(H[j], C[c], j, m)
    R = np.zeros((q, k))
    for i in range(stop):
        for j in range(i, k):
            R[i, j] = C[j, i]
    # Q = H_0 ... H_(q-1) I[:, :q], its columns built as the rows of Qt.
    Qt = np.zeros((q, m))
    for c in range(q):
        Qt[c, c] = 1.0
        for j in range(min(c, stop - 1), -1, -1):
            _reflect(H[j], Qt[c], j, m)
    return np.ascontiguousarray(Qt.T), R


@numba.njit(cache=True, nogil=True)
def _qr_step_one(A: Any, g: Any, V: Any, Q: Any, g_out: Any, V_out: Any) -> None:
    # reference.graded.graded_qr_step_batched for one sample: columns to unit size (their
    # norms into g) by decreasing g, rows by decreasing size in A diag(e^g); LAPACK's QR
    # in that order, kept where it is a pivoting order to within the slack, else
    # Householder QR with dynamic column pivoting.
    m, k = A.shape
    q = min(m, k)
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
    gs = np.empty(k)
    cols = np.empty((m, k))
    for jj in range(k):
        gs[jj] = key[order[jj]]
        cols[:, jj] = unit[:, order[jj]]
    # orders decided on g relative to its largest (see the reference)
    top = gs[0] if math.isfinite(gs[0]) else 0.0
    rel = np.empty(k)
    for j in range(k):
        rel[j] = gs[j] - top
    rows = _row_order(cols, rel)
    M = np.empty((m, k))
    for ii in range(m):
        M[ii, :] = cols[rows[ii], :]
    Qs, R = np.linalg.qr(M)
    perm = np.arange(k)
    if not _pivots_hold(R, rel):
        Qs, R = _householder_pivoted(M, rel, perm)
        unpermuted = gs.copy()
        for jj in range(k):
            gs[jj] = unpermuted[perm[jj]]
    for ii in range(m):
        Q[rows[ii], :] = Qs[ii, :]
    # coeff_ij = R_ij / |R_ii| e^(g_j - g_i), in log space only where the factors apart
    # leave the floating-point range (reference.graded.graded_coefficients).
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
        V_sorted[jj, :] = V[order[perm[jj]], :]
    V_out[:, :] = coeff @ V_sorted


@parallel_njit(cache=True, nogil=True)
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
