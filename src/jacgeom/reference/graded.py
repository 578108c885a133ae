"""Graded matrices diag(e^g) V in plain numpy: one step of the graded QR frame, and their
singular values to high relative accuracy.

A graded matrix is stored as log-scales ``g`` (r,) and rows ``V`` (r, n) of unit size, so
that its rows may differ by factors far outside the floating-point range. ``g = -inf``
marks a row that is exactly zero (a direction lost to structure).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# One-sided Jacobi stops when every pair of columns is orthogonal to this relative level
# (the cosine of their angle); LAPACK's dgesvj uses sqrt(m) * eps, m the column length.
_JACOBI_MAX_SWEEPS = 60


# Row scales are applied as factors e^t, t in [-600, 0], one step at a time: e^-600
# (1e-261) times a unit-size entry stays a normal float64.
LOG_SCALE_STEP = 600.0
# Rows whose log scales lie further apart than this are decoupled beyond float64 precision
# (e^-1200 = 1e-521): the excess of such a gap is not applied as factors (a unit whose
# phi' is e^-1e9 would take millions of steps) but added to the log singular values of
# the directions those rows carry, once the layer is refactored.
LOG_SCALE_GAP = 1200.0


def split_log_scales(t: NDArray[Any]) -> tuple[list[F64], F64]:
    """Split log row scales t (..., m), finite and <= 0, into steps and a shift.

    Returns ``parts``, a list of K arrays (..., m) with entries in [-600, 0], and
    ``shift`` (..., m) >= 0 such that sum(parts) = t + shift. Along the last axis, sorted
    t is compressed: every gap wider than LOG_SCALE_GAP is cut to that width, so K is at
    most (m - 1) * LOG_SCALE_GAP / LOG_SCALE_STEP + 1 whatever the spread, and rows with
    different shifts stay at least LOG_SCALE_GAP apart after the compression.
    """
    t = np.asarray(t, dtype=np.float64)
    if t.shape[-1] == 0:
        return [t], np.zeros_like(t)
    order = np.argsort(-t, axis=-1, kind="stable")
    ts = np.take_along_axis(t, order, axis=-1)
    gaps = np.minimum(ts[..., :-1] - ts[..., 1:], LOG_SCALE_GAP)
    # The compressed values are built from the capped gaps, never as t + shift, which
    # would cancel catastrophically when t is of order 1e9 or more.
    compressed_sorted = ts[..., :1] - np.concatenate(
        [np.zeros_like(ts[..., :1]), np.cumsum(gaps, axis=-1)], axis=-1
    )
    compressed = np.empty_like(t)
    np.put_along_axis(compressed, order, compressed_sorted, axis=-1)
    shift = compressed - t
    low = float(np.min(compressed, initial=0.0))
    K = max(1, int(np.ceil(-low / LOG_SCALE_STEP)))
    parts = [np.clip(compressed + LOG_SCALE_STEP * k, -LOG_SCALE_STEP, 0.0) for k in range(K)]
    return parts, shift


def unshift_log_scales(Q: F64, g: F64, shift: F64) -> F64:
    """g of a frame Q (..., m, q) diag(e^g) built with row scales t + shift: each
    direction's g less the shift of the row that carries it (its largest |Q_ij|; rows of
    different shifts are decoupled, so each column of Q lives on rows of one shift)."""
    if not np.any(shift > 0) or Q.shape[-1] == 0:
        return g
    home = np.argmax(np.abs(Q), axis=-2)
    with np.errstate(invalid="ignore"):
        return g - np.take_along_axis(shift, home, axis=-1)


def scaled_norms(A: NDArray[Any], axis: int) -> F64:
    """2-norms along ``axis`` that neither underflow nor overflow (entries down to the
    smallest normal float64 give a nonzero norm)."""
    big = np.max(np.abs(A), axis=axis, keepdims=True, initial=0.0)
    safe = np.where(big > 0, big, 1.0)
    return np.squeeze(big, axis=axis) * np.linalg.norm(A / safe, axis=axis)


def unit_rows(W: NDArray[Any]) -> tuple[F64, F64]:
    """Rows of W (..., m, k) scaled to unit 2-norm, and the natural log of their norms
    (..., m), neither underflowing nor overflowing (a row of subnormal entries, or of
    entries near the float64 maximum, keeps its direction); zero rows stay zero, log -inf."""
    W = np.asarray(W, dtype=np.float64)
    big = np.max(np.abs(W), axis=-1, keepdims=True, initial=0.0)
    scaled = W / np.where(big > 0, big, 1.0)
    norm = np.linalg.norm(scaled, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_norms = (np.log(big) + np.log(norm))[..., 0]
    return scaled / np.where(norm > 0, norm, 1.0), log_norms


def map_rank(
    XU: F64,
    row_norms: F64,
    columns: NDArray[Any] | None = None,
    singular_values: Callable[[F64], NDArray[Any]] | None = None,
    floor: Any = 0.0,
    rows: Any = None,
) -> tuple[NDArray[np.int64], F64]:
    """Rank of a layer's map X on an orthonormal basis U of the frame, (..., m, r).

    ``row_norms`` (..., m) are the norms of X's rows (0 for rows removed). Each row of XU
    is divided by its row's norm in X, not in XU: a row that XU cancels to rounding noise
    stays noise. The rank is numpy.linalg.matrix_rank's count with the tolerance of that
    row-normalised X, max(m, r) eps sqrt(rows), not of XU, whose largest value can itself
    be noise. m counts the rows kept (row_norms > 0) and r the live columns, ``columns``
    (...), default all: a sample's rank never depends on the batch around it.
    ``singular_values`` computes the values of a (..., m, r) stack (default numpy's SVD).
    ``floor`` (...): the least tolerance (:func:`graded_rank_floor` of the frame's
    grading). ``rows`` (...): the rows the tolerance counts, default those kept; a map
    decided without some of its rows passes the whole map's count, so that it keeps no
    direction the whole map loses. Returns the ranks (...) and the row-normalised XU.
    """
    Xn = XU / np.where(row_norms > 0, row_norms, 1.0)[..., None]
    m, r = XU.shape[-2:]
    if m == 0 or r == 0:
        return np.zeros(XU.shape[:-2], dtype=np.int64), Xn
    if singular_values is None:
        s = np.linalg.svd(Xn, compute_uv=False)
    else:
        s = singular_values(Xn)
    if rows is None:
        rows = np.count_nonzero(row_norms > 0, axis=-1)
    rows = np.asarray(rows)
    cols = np.full(rows.shape, r) if columns is None else np.asarray(columns)
    tol = rank_tolerance(rows, cols, floor)
    return np.count_nonzero(s > tol[..., None], axis=-1).astype(np.int64), Xn


def rank_tolerance(rows: Any, cols: Any, floor: Any = 0.0) -> Any:
    """:func:`map_rank`'s tolerance on a row-normalised map of ``rows`` counted rows and
    ``cols`` live columns: max(rows, cols) eps sqrt(rows), at least ``floor``."""
    rows = np.asarray(rows)
    tol = np.maximum(np.maximum(rows, cols), 1) * np.finfo(np.float64).eps
    return np.maximum(tol * np.sqrt(np.maximum(rows, 1)), floor)


# A step's rows are checked for exact dependence (fold_dependent_rows) where their log
# scales span more than this (natural log, a ratio of about 1e4): below it, the rounding
# that dependent large rows leave (eps times their size) stays under eps e^DEPENDENT_GAP of
# every smaller row's contribution.
DEPENDENT_GAP = 9.2


def leading_rows_independent(
    Y: F64, row_norms: F64, t: F64, rank: Any, tol: Any
) -> NDArray[np.bool_]:
    """Whether, per sample, the ``rank`` (B,) rows of largest log scale t (B, m; -inf for
    rows removed) of the map Y (B, m, r), each divided by its ``row_norms`` (B, m) as
    :func:`map_rank` judges them, are independent: each at a distance above ``tol`` (B,)
    from the span of those before it (unpivoted QR of the sorted rows). Where they are, no
    exactly dependent row comes before a smaller independent one and
    :func:`fold_dependent_rows` has nothing to do; (B,)."""
    B, m, r = Y.shape
    k = int(np.max(rank, initial=0))
    if B == 0 or k == 0:
        return np.ones(B, dtype=bool)
    top = np.argsort(-t, axis=1, kind="stable")[:, :k]
    Ys = np.take_along_axis(Y, top[:, :, None], axis=1)
    norms = np.take_along_axis(row_norms, top, axis=1)
    Ys /= np.where(norms > 0, norms, 1.0)[:, :, None]
    d = np.abs(np.diagonal(np.linalg.qr(np.swapaxes(Ys, 1, 2), mode="r"), axis1=1, axis2=2))
    j = np.arange(d.shape[1])[None, :]
    return np.all((j >= np.asarray(rank)[:, None]) | (d > np.asarray(tol)[:, None]), axis=1)


def fold_dependent_rows(
    Y: F64, row_norms: F64, t: F64, sign: F64, rank: Any, tol: Any
) -> tuple[NDArray[np.bool_], F64, F64, NDArray[np.intp], NDArray[np.bool_]]:
    """Steps with their exactly dependent rows folded into the larger rows they depend on,
    for a batch of samples.

    The step of each sample is M = diag(sign e^t) Y: Y (B, m, r) the map on the frame, t
    (B, m) log row scales (-inf for rows removed), sign (B, m); each row is judged divided
    by its ``row_norms`` (B, m), as :func:`map_rank` judges it. Taken by decreasing t, a row
    at a distance of at most ``tol`` (B,) from the span of the rows kept before it is
    dependent on them; ``tol`` is numpy's rank tolerance without the graded floor, so only
    rows equal to rounding are folded (a difference of 1e-12 stays a direction). With A the
    ``rank`` (B,) rows kept and D the dependent rows that come before a kept one, M_D =
    C M_A (C_ki = sign_k sign_i a_ki e^(t_k - t_i), Y_k = sum_i a_ki Y_i over the rows of
    A before k), so M = T Mhat with Mhat = diag(sign e^t) Yhat, Yhat's rows D exactly zero
    and its rows A = R_c M_A (R_c^T R_c = I + C^T C, upper triangular in the order of t: a
    row only gains multiples of smaller ones), T's columns A = [I; C] R_c^-1, orthonormal:
    the QR of [I; C]. Dependent rows after the last kept one pass through (T is the
    identity there): their rounding is below every kept row's, and folding them would only
    add the cancellation of nearly parallel kept rows.

    Why: Householder QR is row-wise backward stable, so two exactly dependent large rows
    leave a residual of eps times their size, which a graded QR keeps as a direction in
    place of a smaller row's (a saturated unit beside a duplicated one: e^-37 against
    e^-93), and the next layer's rank decision then drops the true direction. With the
    dependent rows folded away, M's graded QR is Mhat's, and U = T Q.

    Returns ``(folded, Yhat, Tk, kept, through)``: folded (B,) where a dependent row comes
    before an independent row of smaller scale and exactly ``rank`` rows were found
    independent (elsewhere nothing is to be done, or the decision sits at the tolerance's
    edge, and the step is left as it is); Yhat (B, m, r) (Y where not folded); Tk (B, m, k)
    and kept (B, k), k = max rank, and through (B, m): T Q = Tk @ Q[kept] + through * Q
    (padding columns of Tk zero).
    """
    B, m, r = Y.shape
    rank = np.asarray(rank, dtype=np.intp)
    tol = np.asarray(tol, dtype=np.float64)
    k = int(np.max(rank, initial=0))
    b = np.arange(B)
    order = np.argsort(-t, axis=1, kind="stable")
    ts = np.take_along_axis(t, order, axis=1)
    norms = np.take_along_axis(row_norms, order, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        Xs = (
            np.take_along_axis(Y, order[:, :, None], axis=1)
            / np.where(norms > 0, norms, 1.0)[:, :, None]
        )
    # Gram-Schmidt (twice) over the rows in order, all samples at once: basis Qb (B, k, r)
    # of the rows kept so far, R (B, k, k) their coefficients, count (B,) kept so far.
    Qb = np.zeros((B, k, r))
    QbT = np.zeros((B, r, k))  # its transpose, kept beside it for the products
    R = np.broadcast_to(np.eye(k), (B, k, k)).copy()  # unused slots: 1 on the diagonal
    coef = np.zeros((B, m, k))  # a dependent row's coefficients on the basis
    count = np.zeros(B, dtype=np.intp)
    kept_pos = np.zeros((B, k), dtype=np.intp)
    dependent = np.zeros((B, m), dtype=bool)  # dependent rows with a kept row after them
    late = np.zeros((B, m), dtype=bool)  # dependent rows after the last kept one
    early = np.zeros(B, dtype=bool)  # a dependent row before a kept one
    over = np.zeros(B, dtype=bool)  # more independent rows than the rank
    p = 0
    while p < m and np.any(count < rank):
        live = np.isfinite(ts[:, p])
        if not live.any():
            break
        x = Xs[:, p, :, None]
        c1 = Qb @ x
        res = x - QbT @ c1
        c2 = Qb @ res
        res -= QbT @ c2
        c = (c1 + c2)[:, :, 0]
        res = res[:, :, 0]
        size = np.linalg.norm(res, axis=1)
        indep = live & (size > tol)
        over |= indep & (count >= rank)
        take = indep & (count < rank)
        i = b[take]
        j = count[take]
        Qb[i, j] = res[take] / size[take, None]
        QbT[i, :, j] = Qb[i, j]
        R[i, :, j] = c[take]
        R[i, j, j] = size[take]
        kept_pos[i, j] = p
        early[i] |= dependent[i].any(axis=1)
        dep = live & ~indep
        ahead = dep & (count < rank)
        dependent[ahead, p] = True
        coef[ahead, p] = c[ahead]
        late[dep & ~ahead, p] = True
        count += take
        p += 1
    if p < m:
        # every sample has its rank: the rows left are dependent, unless one is at more
        # than tol from the span (more independent rows than the rank: not folded)
        x = Xs[:, p:, :]
        c = x @ QbT
        res = x - c @ Qb
        c2 = res @ QbT
        res -= c2 @ Qb
        live = np.isfinite(ts[:, p:])
        over |= np.any(live & (np.linalg.norm(res, axis=2) > tol[:, None]), axis=1)
        late[:, p:] = live
    folded = early & ~over & (count == rank)
    Tk = np.zeros((B, m, k))
    kept = np.take_along_axis(order, kept_pos, axis=1)
    Yhat = np.array(Y, dtype=np.float64)
    through = np.zeros((B, m), dtype=bool)
    f = np.flatnonzero(folded)
    if f.size == 0:
        return folded, Yhat, Tk, kept, through
    slot = np.arange(k)[None, :] < rank[f, None]  # (F, k) slots in use
    # coefficients of each dependent row on the kept rows (Xn terms), then in Y terms
    a = np.linalg.solve(R[f], np.swapaxes(coef[f], 1, 2))  # (F, k, m)
    a = np.swapaxes(a, 1, 2) * slot[:, None, :]  # (F, m, k)
    nk = np.take_along_axis(norms[f], kept_pos[f], axis=1)  # (F, k)
    tk = np.take_along_axis(ts[f], kept_pos[f], axis=1)
    sk = np.take_along_axis(np.take_along_axis(sign[f], order[f], axis=1), kept_pos[f], axis=1)
    ss = np.take_along_axis(sign[f], order[f], axis=1)  # (F, m) sorted signs
    dep = dependent[f]  # sorted order
    with np.errstate(under="ignore", invalid="ignore", divide="ignore"):
        scale = np.exp(np.minimum(ts[f][:, :, None] - tk[:, None, :], 0.0))
        ratio = norms[f][:, :, None] / np.where(nk > 0, nk, 1.0)[:, None, :]
    C = np.where(dep[:, :, None] & slot[:, None, :], a * ratio * scale, 0.0)
    C = C * ss[:, :, None] * sk[:, None, :]  # (F, m, k), rows in sorted order
    # [I; C] = Q_c R_c by Householder QR (R_c^T R_c = I + C^T C, stable however large C
    # is): P holds the rows in sorted order, e_j at kept row j, C at the dependent rows,
    # and a unit row below for each padding slot, so that every column is nonzero.
    F = f.size
    P = np.concatenate([C, np.broadcast_to(np.eye(k), (F, k, k)) * ~slot[:, None, :]], axis=1)
    for j in range(k):  # slot by slot: a padding slot's index must write nothing
        g = np.flatnonzero(slot[:, j])
        P[g, kept_pos[f][g, j], j] = 1.0
    Qc, Rc = np.linalg.qr(P)
    with np.errstate(under="ignore"):
        S = np.triu(Rc * np.exp(np.minimum(tk[:, None, :] - tk[:, :, None], 0.0)))
    S = S * sk[:, :, None] * sk[:, None, :] * slot[:, :, None] * slot[:, None, :]
    YA = np.take_along_axis(Y[f], kept[f][:, :, None], axis=1) * slot[:, :, None]
    SY = S @ YA
    # rows after the last kept one pass through: their rounding is below every kept row's
    Yf = np.where(
        np.take_along_axis(dep, np.argsort(order[f], axis=1), axis=1)[:, :, None], 0.0, Y[f]
    )
    for j in range(k):
        g = np.flatnonzero(slot[:, j])
        Yf[g, kept[f][g, j]] = SY[g, j]
    # T's rows in sorted order: Q_c without the padding rows (its padding columns vanish)
    Ts = Qc[:, :m, :] * slot[:, None, :]
    Tf = np.zeros_like(Ts)
    np.put_along_axis(Tf, order[f][:, :, None], Ts, axis=1)
    Yhat[f] = Yf
    Tk[f] = Tf
    through[f] = np.take_along_axis(late[f], np.argsort(order[f], axis=1), axis=1)
    return folded, Yhat, Tk, kept, through


# The rank of a layer's map is decided on the frame's basis U of the range so far, which is
# computed, and rounded most where a layer's rows were graded (leaky_relu's slope alpha
# beside phi' = 1, saturated units) and its large rows dependent: by eps / alpha or more in
# the directions normal to the range, passed on through the layers that follow, so a
# direction that structure removes shows as a singular value of that size, far above
# numpy's tolerance (2.2e-14 against 3.3e-15 at alpha = 0.01). The tolerance is raised to
# GRADED_RANK_FACTOR eps times the largest ratio of row scales met so far
# (:func:`graded_rank_floor`), never above GRADED_RANK_CAP: random weights put a map's
# singular value below the cap with a probability of order 1e-11 times the width per layer
# and sample. A frame whose rows were never graded keeps numpy's tolerance.
GRADED_RANK_FACTOR = 64.0
GRADED_RANK_CAP = 1e-11


def graded_rank_floor(spread: Any) -> Any:
    """The least rank tolerance on a basis computed from rows whose log scales spanned
    ``spread`` (natural log, >= 0; the largest over the steps so far): 0 where no step was
    graded, else min(GRADED_RANK_CAP, GRADED_RANK_FACTOR eps e^spread)."""
    spread = np.asarray(spread, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    with np.errstate(over="ignore"):
        floor = np.minimum(GRADED_RANK_CAP, GRADED_RANK_FACTOR * eps * np.exp(spread))
    return np.where(spread > 0, floor, 0.0)


def log_spread(log_t: Any) -> Any:
    """max - min of log row scales (..., m) over the rows that are kept (finite), 0 where
    fewer than two are."""
    t = np.asarray(log_t, dtype=np.float64)
    ok = np.isfinite(t)
    hi = np.max(np.where(ok, t, -np.inf), axis=-1, initial=-np.inf)
    lo = np.min(np.where(ok, t, np.inf), axis=-1, initial=np.inf)
    with np.errstate(invalid="ignore"):
        return np.where(np.count_nonzero(ok, axis=-1) > 1, hi - lo, 0.0)


def graded_qr_step(A: F64, g: F64, V: F64) -> tuple[F64, F64, F64]:
    """Refactor A diag(e^g) V = Q diag(e^g') V' for one sample.

    Parameters
    ----------
    A : (m, k) ndarray
        A well-scaled matrix applied on the left.
    g : (k,) ndarray
        Log-scales (-inf for exact zero rows of V).
    V : (k, n) ndarray

    Returns
    -------
    Q : (m, q) ndarray, orthonormal columns, q = min(m, k)
    g' : (q,) ndarray, log|R_ii| + g_i (-inf where R_ii = 0 or g_i = -inf)
    V' : (q, n) ndarray, rows (R_ij / |R_ii|) e^(g_j - g_i) combined

    Notes
    -----
    Householder QR of A diag(e^g) with its rows sorted by decreasing size and dynamic
    column pivoting on the scaled norms of what is left of each column (see
    :func:`graded_qr_step_batched`, which this is for one sample).
    """
    Q, new_g, new_V = graded_qr_step_batched(
        np.asarray(A, dtype=np.float64)[None],
        np.asarray(g, dtype=np.float64)[None],
        np.asarray(V, dtype=np.float64)[None],
    )
    return Q[0], new_g[0], new_V[0]


# The static column order (by decreasing scaled norm) is kept where it is a pivoting order
# to within this factor: every column's remaining part, scaled, at most PIVOT_SLACK times
# the one taken at each step (see graded_qr_step_batched).
PIVOT_SLACK = 8.0
# Squares of entries of size <= 1 are summed scaled by this power of two: no underflow
# down to 1e-300, no overflow for up to 2^24 terms.
_SQUARE_SCALE = 2.0**500


def graded_qr_step_batched(A: F64, g: F64, V: F64) -> tuple[F64, F64, F64]:
    """Batched refactorisation A diag(e^g) V = Q diag(e^g') V'.

    A : (B, m, k), g : (B, k) (-inf for dead directions), V : (B, k, n0);
    returns Q (B, m, q), g' (B, q), V' (B, q, n0) with q = min(m, k), per sample
    (the stable frame's numpy backend).

    Notes
    -----
    The matrix factored is M = A diag(e^g), never formed: A's columns are taken at unit
    size, their norms joining g, and ordered by decreasing g. Its rows are sorted by
    decreasing size max_j |A_ij| e^(g_j) (:func:`graded_row_order`). Householder QR of a
    matrix whose rows are sorted so and whose columns are pivoted (at each step the column
    whose remaining part has the largest scaled norm ||A[j:, c]|| e^(g_c)) is row-wise
    backward stable (Powell and Reid; Cox and Higham, 1998): each row of M is perturbed
    relative to its own size, so a row-graded M = D B keeps the relative accuracy of its
    small singular values. The pivoting also bounds V's coefficients
    (R_ij / |R_ii|) e^(g_j - g_i) by 1, so diag(e^g') V' is as well conditioned a graded
    matrix as the one-sided Jacobi of :func:`graded_log_singular_values` needs (the
    preconditioning of LAPACK's dgejsv). Without it, where the first columns are nearly
    dependent on the large rows (exactly structured weights), a small row shows only
    through a cancellation and the values lose their relative accuracy.

    LAPACK's QR (numpy.linalg.qr) runs in the static order first; a sample whose R shows
    that order was not a pivoting order to within PIVOT_SLACK (:func:`pivots_hold`) is
    refactored by Householder QR with dynamic pivoting (:func:`householder_pivoted`). A
    column of zeros (a unit with phi' = 0) or a dead direction (g = -inf) is never taken
    while another column has a nonzero remaining part: the remaining R_ii are exactly 0.
    """
    B, m, k = A.shape
    n = V.shape[2]
    if m == 0 or k == 0:
        return np.zeros((B, m, 0)), np.zeros((B, 0)), np.zeros((B, 0, n))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        norms = scaled_norms(A, axis=1)
        A = A / np.where(norms > 0, norms, 1.0)[:, None, :]
        g = g + np.log(norms)
        g = np.where(np.isnan(g), -np.inf, g)
        order = np.argsort(-g, axis=1, kind="stable")
        A = np.take_along_axis(A, order[:, None, :], axis=2)
        g = np.take_along_axis(g, order, axis=1)
        V = np.take_along_axis(V, order[:, :, None], axis=1)
    # The orders are decided on g relative to its largest: at |g| ~ 1e29 (phi' = e^-1e29)
    # the sum log|A_ij| + g_j would round away the row scales that order the rows.
    top = g[:, :1]
    rel = g - np.where(np.isfinite(top), top, 0.0)
    rows = graded_row_order(A, rel)
    M = np.take_along_axis(A, rows[:, :, None], axis=1)
    Q, R = np.linalg.qr(M)
    redo = np.flatnonzero(~pivots_hold(R, rel))
    if redo.size:
        Qp, Rp, _, perm = householder_pivoted(M[redo], rel[redo])
        Q[redo], R[redo] = Qp, Rp
        g[redo] = np.take_along_axis(g[redo], perm, axis=1)
        V[redo] = np.take_along_axis(V[redo], perm[:, :, None], axis=1)
    Q = np.take_along_axis(Q, np.argsort(rows, axis=1)[:, :, None], axis=1)
    new_g, coeff = graded_coefficients(R, g)
    return Q, new_g, np.matmul(coeff, V)


def graded_row_order(A: F64, g: F64) -> NDArray[np.intp]:
    """Rows of M = A diag(e^g) (A (B, m, k), g (B, k) descending) by decreasing size
    max_j |A_ij| e^(g_j), stable: formed with the factors e^(g_j - g_0) where the result
    stays above 1e-290, from logs otherwise. Rows of equal size come by decreasing
    |A_ij| in the column j that gives their size: where g is so large that the sums
    round the entries' sizes away (phi' = e^-1e29), the large row still comes before the
    small one, which a Householder step taken on the small one would cancel exactly."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        top = g[:, :1]
        top = np.where(np.isfinite(top), top, 0.0)
        scaled = np.abs(A) * np.exp(g - top)[:, None, :]
        col = np.argmax(scaled, axis=2)
        s = np.take_along_axis(scaled, col[:, :, None], axis=2)[:, :, 0]
        size = np.log(s) + top
        small = s < 1e-290
        if small.any():
            exact = np.log(np.abs(A)) + g[:, None, :]
            exact = np.where(np.isnan(exact), -np.inf, exact)
            size = np.where(small, np.max(exact, axis=2), size)
            col = np.where(small, np.argmax(exact, axis=2), col)
        entry = np.log(np.abs(np.take_along_axis(A, col[:, :, None], axis=2)[:, :, 0]))
    return np.lexsort((-entry, -size), axis=-1)


def pivots_hold(R: F64, g: F64, slack: float = PIVOT_SLACK) -> NDArray[np.bool_]:
    """Whether the column order of R (B, q, k), upper triangular, with log-scales g (B, k)
    descending, is a pivoting order of R diag(e^g) to within ``slack``: for every step i
    and later live column j, ||R[i:, j]|| e^(g_j) <= slack |R_ii| e^(g_i); (B,)."""
    B, q, k = R.shape
    if q == 0:
        return np.ones(B, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        squares = np.square(R * _SQUARE_SCALE)
        tail = np.cumsum(squares[:, ::-1, :], axis=1)[:, ::-1, :]  # (B, q, k)
        lhs = 0.5 * np.log(tail) + g[:, None, :]
        rhs = 0.5 * np.log(np.diagonal(squares, axis1=1, axis2=2)) + g[:, :q]
        later = np.arange(k)[None, :] > np.arange(q)[:, None]
        bad = later & (lhs > rhs[:, :, None] + np.log(slack))
    return ~np.any(bad, axis=(1, 2))


def householder_pivoted(M: F64, g: F64) -> tuple[F64, F64, F64, NDArray[np.intp]]:
    """Householder QR of M diag(e^g) (M (B, m, k), g (B, k)) with dynamic column
    pivoting on the scaled norms ||M[j:, c]|| e^(g_c) of what is left of each column,
    vectorised over the batch. Returns Q (B, m, q), R (B, q, k), g and the column
    permutation perm (B, k) (column j of R is column perm[j] of M). Where only columns
    with key -inf are left (zero remaining parts, or g = -inf), R's remaining rows are
    exactly 0. Cost: 4 m k q flops for R and as many for Q, one Python step per column."""
    B, m, k = M.shape
    q = min(m, k)
    b = np.arange(B)
    A = np.array(M, dtype=np.float64)
    g = np.array(g, dtype=np.float64)
    perm = np.broadcast_to(np.arange(k), (B, k)).copy()
    reflectors = np.zeros((B, q, m))
    stop = np.full(B, q)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for j in range(q):
            key = np.log(scaled_norms(A[:, j:, j:], axis=1)) + g[:, j:]
            key = np.where(np.isnan(key), -np.inf, key)
            p = j + np.argmax(key, axis=1)
            stop = np.where((stop == q) & ~np.isfinite(np.max(key, axis=1)), j, stop)
            live = stop == q
            p = np.where(live, p, j)
            A[b, :, j], A[b, :, p] = A[b, :, p], A[b, :, j].copy()
            g[b, j], g[b, p] = g[b, p], g[b, j].copy()
            perm[b, j], perm[b, p] = perm[b, p], perm[b, j].copy()
            x = A[:, j:, j]
            v = x.copy()
            v[:, 0] += np.copysign(scaled_norms(x, axis=1), x[:, 0])
            nv = scaled_norms(v, axis=1)
            v /= np.where(live & (nv > 0), nv, np.inf)[:, None]  # v = 0: no reflection
            A[:, j:, j:] -= 2.0 * v[:, :, None] * np.matmul(v[:, None, :], A[:, j:, j:])
            reflectors[:, j, j:] = v
    R = np.triu(A[:, :q, :])
    R[np.arange(q)[None, :] >= stop[:, None]] = 0.0  # exactly zero from the stop on
    Q = np.broadcast_to(np.eye(m)[:, :q], (B, m, q)).copy()
    for j in reversed(range(q)):
        v = reflectors[:, j, j:]
        Q[:, j:, :] -= 2.0 * v[:, :, None] * np.matmul(v[:, None, :], Q[:, j:, :])
    return Q, R, g, perm


def graded_coefficients(R: F64, g: F64) -> tuple[F64, F64]:
    """g' (B, q) and the coefficients C (B, q, k) of R diag(e^g) = diag(e^g') C, R (B, q, k)
    upper triangular: g'_i = log|R_ii| + g_i (-inf where R_ii = 0 or g_i = -inf),
    C_ij = R_ij / |R_ii| e^(g_j - g_i) (0 in dead rows and columns)."""
    q = R.shape[1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        diag = np.abs(np.diagonal(R, axis1=1, axis2=2))
        new_g = np.log(diag) + g[:, :q]
        # Formed in log space only where the two factors apart leave the float range.
        alive = np.isfinite(new_g)
        live = alive[:, :, None] & np.isfinite(g)[:, None, :]
        coeff = (R / diag[:, :, None]) * np.exp(np.minimum(g[:, None, :] - g[:, :q, None], 700.0))
        bad = live & ~np.isfinite(coeff)
        if bad.any():
            log_ratio = (
                np.log(np.abs(R)) - np.log(diag)[:, :, None] + g[:, None, :] - g[:, :q, None]
            )
            coeff[bad] = (np.sign(R) * np.exp(np.minimum(log_ratio, 700.0)))[bad]
        coeff = np.where(live & np.isfinite(coeff), coeff, 0.0)
    return np.where(alive, new_g, -np.inf), coeff


def _graded_from_r(R: F64, g: F64, V: F64) -> tuple[F64, F64]:
    """g' and V' of R diag(e^g) V = diag(e^g') V', R (q, k) upper triangular."""
    q = R.shape[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        diag = np.abs(np.diagonal(R))
        new_g = np.log(diag) + g[:q]
        log_ratio = np.log(np.abs(R)) - np.log(diag)[:, None] + g[None, :] - g[:q, None]
        coeff = np.sign(R) * np.exp(np.minimum(log_ratio, 700.0))
        alive = np.isfinite(new_g)
        coeff = np.where(np.isfinite(coeff) & alive[:, None], coeff, 0.0)
        new_g = np.where(alive, new_g, -np.inf)
    return new_g, coeff @ V


def graded_qr_step_pivoted(A: F64, g: F64, V: F64) -> tuple[F64, F64, F64]:
    """:func:`graded_qr_step` with dynamic column pivoting: Householder QR that takes, at
    each step, the column whose remaining part has the largest scaled norm
    log ||a_j|| + g_j. Rank-revealing where columns of A are exactly dependent (two units
    with parallel weight rows), which the static order of graded_qr_step is not: there
    R_kk can vanish while a later column still adds a direction."""
    A = np.array(A, dtype=np.float64)
    g = np.array(g, dtype=np.float64)
    V = np.array(V, dtype=np.float64)
    m, k = A.shape
    q = min(m, k)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        norms = scaled_norms(A, axis=0)
        A /= np.where(norms > 0, norms, 1.0)
        g = g + np.log(norms)
        g = np.where(np.isnan(g), -np.inf, g)
        reflectors = []
        for j in range(q):
            key = np.log(scaled_norms(A[j:, j:], axis=0)) + g[j:]
            key = np.where(np.isnan(key), -np.inf, key)
            p = j + int(np.argmax(key))
            if not np.isfinite(key[p - j]):
                break  # what is left is exactly zero (or dead): R_ii = 0 from here on
            A[:, [j, p]] = A[:, [p, j]]
            g[[j, p]] = g[[p, j]]
            V[[j, p]] = V[[p, j]]
            x = A[j:, j]
            v = x.copy()
            v[0] += math.copysign(float(scaled_norms(x, axis=0)), x[0])
            v /= scaled_norms(v, axis=0)
            A[j:, j:] -= 2.0 * np.outer(v, v @ A[j:, j:])
            reflectors.append((j, v))
        R = np.triu(A[:q])
        R[len(reflectors) :] = 0.0
        Q = np.eye(m)[:, :q]
        for j, v in reversed(reflectors):
            Q[j:] -= 2.0 * np.outer(v, v @ Q[j:])
    return (Q, *_graded_from_r(R, g, V))


def graded_log_singular_values(g: NDArray[Any], V: NDArray[Any]) -> F64:
    """log singular values of diag(e^g) V, descending, to high relative accuracy.

    Parameters
    ----------
    g : (r,) ndarray
        Log-scales; rows with g = -inf are exact zeros and give -inf.
    V : (r, n) ndarray

    Returns
    -------
    (r,) ndarray, descending; -inf for exact zeros.

    Notes
    -----
    One-sided Jacobi (Hestenes) on the columns of (diag(e^g) V)^T, each kept as a
    log-scale and a unit vector, e^s u, so that no scale is ever formed. For columns
    e^(s_a) u_a, e^(s_b) u_b with s_a >= s_b, rho = e^(s_b - s_a) <= 1 and
    p = u_a.u_a, q = u_b.u_b, c = u_a.u_b, the rotation that orthogonalises them is
    t = rho tau, tau = sign(w) / (|w| + sqrt(rho^2 + w^2)), w = (rho^2 q - p) / (2 c),
    cs = 1 / sqrt(1 + t^2):
    u_a <- cs (u_a - rho^2 tau u_b), u_b <- cs (tau u_a + u_b): every factor is finite
    whatever the ratio of the scales. Jacobi keeps high relative accuracy on a matrix
    B D whose column-normalised B is well conditioned (Demmel and Veselic), which the
    graded frame's V is: each singular value comes out with a relative error of a small
    multiple of n eps cond(B), however small it is next to the largest.
    """
    r = g.shape[0]
    out = np.full(r, -np.inf)
    live = np.flatnonzero(np.isfinite(g))
    if live.size == 0:
        return out
    U = np.array(V[live], dtype=np.float64)
    s = np.array(g[live], dtype=np.float64)
    norms = np.linalg.norm(U, axis=1)
    keep = norms > 0
    U, s, norms = U[keep], s[keep], norms[keep]
    U /= norms[:, None]
    s += np.log(norms)
    k, n = U.shape
    tol = math.sqrt(max(n, 1)) * np.finfo(np.float64).eps
    for _ in range(_JACOBI_MAX_SWEEPS):
        rotated = False
        for i in range(k - 1):
            for j in range(i + 1, k):
                a, b = (i, j) if s[i] >= s[j] else (j, i)
                c = float(U[a] @ U[b])
                p, q = float(U[a] @ U[a]), float(U[b] @ U[b])
                if abs(c) <= tol * math.sqrt(p * q):
                    continue
                rotated = True
                rho = math.exp(s[b] - s[a])
                w = (rho * rho * q - p) / (2.0 * c)
                tau = math.copysign(1.0, w) / (abs(w) + math.hypot(rho, w))
                t = rho * tau
                cs = 1.0 / math.sqrt(1.0 + t * t)
                ua = cs * (U[a] - rho * rho * tau * U[b])
                ub = cs * (tau * U[a] + U[b])
                for idx, u in ((a, ua), (b, ub)):
                    nrm = float(np.linalg.norm(u))
                    U[idx] = u / nrm
                    s[idx] += math.log(nrm)
        if not rotated:
            break
    vals = np.sort(s)[::-1]
    out[: vals.size] = vals
    return out


def numerical_rank_from_logs(
    log_s: NDArray[Any],
    tol: float | None,
    rtol: float | None,
    shape: tuple[int, int],
    eps: float,
) -> int:
    """numpy.linalg.matrix_rank's count, sigma_i > tol (or > rtol sigma_1, default
    rtol = max(shape) eps), from descending log singular values."""
    if log_s.size == 0 or not np.isfinite(log_s[0]):
        return 0
    if tol is not None:
        if tol <= 0:
            return int(np.count_nonzero(np.isfinite(log_s)))
        return int(np.count_nonzero(log_s > math.log(tol)))
    rel = max(shape) * eps if rtol is None else rtol
    if rel <= 0:
        return int(np.count_nonzero(np.isfinite(log_s)))
    # Differences, not log_s[0] + log(rel): at |log sigma| ~ 1e160 the sum rounds to log_s[0].
    return int(np.count_nonzero(log_s - log_s[0] > math.log(rel)))
