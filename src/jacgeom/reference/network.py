"""End-to-end network quantities in plain numpy, one sample at a time.

``net`` is any object with the attributes of jacgeom.Network: ``weights`` (list of (n_l,
n_{l-1}) arrays), ``biases`` (list of (n_l,) arrays), ``activations`` (list of Activation),
``residual`` (bool), ``norm`` (None or "layer") and ``norm_eps`` (float); where
``kernel_layers[l]`` is true, ``weights[l]`` is a kernel layer (an object with ``forward``
and ``jacobian`` of one sample, as jacgeom.KernelLayer) with every unit live.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .layer import svd_values
from .rank import rank_and_values

FloatArray = NDArray[np.floating[Any]]


def _layer(net: Any, l: int, h: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One layer at one sample: (output, pre-activation z, layer Jacobian (n_l, n_{l-1}));
    a kernel layer's "pre-activation" is its output."""
    W, b, act = net.weights[l], net.biases[l], net.activations[l]
    if _is_kernel(net, l):
        out, J = W.forward(h), W.jacobian(h)
        if net.residual:
            return h + out, out, np.eye(J.shape[0], dtype=J.dtype) + J
        return out, out, J
    z = W @ h + b
    if net.norm == "layer":
        m = z.shape[0]
        mu = z.mean()
        sigma = np.sqrt(np.mean((z - mu) ** 2) + net.norm_eps)
        u = (z - mu) / sigma
        J_norm = (np.eye(m) - np.ones((m, m)) / m - np.outer(u, u) / m) / sigma
        a, d = act.phi(u), act.derivative(u)
        J = (d[:, None] * J_norm) @ W
    else:
        a, d = act.phi(z), act.derivative(z)
        J = d[:, None] * W
    if net.residual:
        return h + a, z, np.eye(W.shape[0], dtype=W.dtype) + J
    return a, z, J


def _is_kernel(net: Any, l: int) -> bool:
    kernel = getattr(net, "kernel_layers", None)
    return bool(kernel[l]) if kernel is not None else False


def _derivative(net: Any, l: int, z: FloatArray) -> FloatArray:
    act = net.activations[l]
    if _is_kernel(net, l):
        return np.ones_like(z)
    if net.norm == "layer":
        mu = z.mean()
        return act.derivative((z - mu) / np.sqrt(np.mean((z - mu) ** 2) + net.norm_eps))
    return act.derivative(z)


def forward(net: Any, X: FloatArray) -> FloatArray:
    """Outputs, (B, n_L)."""
    out = np.empty((X.shape[0], net.widths[-1]), dtype=X.dtype)
    for i, x in enumerate(X):
        h = x
        for l in range(len(net.weights)):
            h = _layer(net, l, h)[0]
        out[i] = h
    return out


def preactivations(net: Any, X: FloatArray) -> list[Any]:
    """z_l = W_l h_{l-1} + b_l for every layer, each (B, n_l)."""
    zs = [np.empty((X.shape[0], w), dtype=X.dtype) for w in net.widths[1:]]
    for i, x in enumerate(X):
        h = x
        for l in range(len(net.weights)):
            h, zs[l][i], _ = _layer(net, l, h)
    return zs


def partial_jacobians(net: Any, x: FloatArray) -> list[Any]:
    """J_l = A_l ... A_1 after every layer l, for one sample."""
    h, J, out = x, np.eye(x.shape[0], dtype=x.dtype), []
    for l in range(len(net.weights)):
        h, _, A = _layer(net, l, h)
        J = A @ J
        out.append(J)
    return out


def jacobian(net: Any, X: FloatArray) -> FloatArray:
    """End-to-end Jacobians, (B, n_L, n_0)."""
    out = np.empty((X.shape[0], net.widths[-1], net.widths[0]), dtype=X.dtype)
    for i, x in enumerate(X):
        out[i] = partial_jacobians(net, x)[-1]
    return out


def singular_values(net: Any, X: FloatArray) -> FloatArray:
    """Singular values of the end-to-end Jacobian, descending, (B, min(n_L, n_0))."""
    return svd_values(jacobian(net, X))


def _rank(J: FloatArray, tol: float | None, rtol: float | None) -> int:
    return rank_and_values(J, tol, rtol, min(J.shape))[0]


def rank(
    net: Any, X: FloatArray, tol: float | None = None, rtol: float | None = None
) -> NDArray[np.int64]:
    """numpy.linalg.matrix_rank of each end-to-end Jacobian, (B,)."""
    return np.array([_rank(J, tol, rtol) for J in jacobian(net, X)], dtype=np.int64)


def layer_ranks(
    net: Any, X: FloatArray, tol: float | None = None, rtol: float | None = None
) -> NDArray[np.int64]:
    """Rank of the partial product after each layer, (B, L)."""
    out = np.empty((X.shape[0], len(net.weights)), dtype=np.int64)
    for i, x in enumerate(X):
        out[i] = [_rank(J, tol, rtol) for J in partial_jacobians(net, x)]
    return out


def active_counts(net: Any, X: FloatArray) -> NDArray[np.int64]:
    """Number of units with phi' != 0 in each layer, (B, L)."""
    zs = preactivations(net, X)
    out = np.empty((X.shape[0], len(net.weights)), dtype=np.int64)
    for i in range(X.shape[0]):
        out[i] = [np.count_nonzero(_derivative(net, l, zs[l][i])) for l in range(len(zs))]
    return out


def frobenius_norm(net: Any, X: FloatArray) -> FloatArray:
    """Frobenius norm of each end-to-end Jacobian, (B,)."""
    return np.sqrt(np.sum(jacobian(net, X) ** 2, axis=(1, 2)))


def log_singular_values(net: Any, X: FloatArray) -> FloatArray:
    """log of the singular values of each end-to-end Jacobian, descending, (B, min(n_L, n_0)),
    by propagating a graded orthonormal frame (never forms the product; no overflow)."""
    p = min(net.widths[0], net.widths[-1])
    out = np.empty((X.shape[0], p), dtype=X.dtype)
    for i, x in enumerate(X):
        out[i] = _frame_log_singular_values(net, x, p)
    return out


def structural_rank_bound(net: Any, x: FloatArray) -> int:
    """An exact upper bound on rank(J(x)) from the structure alone: every width, the number
    of units with phi' != 0 of each plain layer, and n_l - 1 for a layer normalisation
    (its Jacobian annihilates the all-ones direction). Residual layers impose none."""
    bound = min(net.widths)
    h = x
    for l in range(len(net.weights)):
        h_next, z, _ = _layer(net, l, h)
        if not net.residual:
            k = int(np.count_nonzero(_derivative(net, l, z)))
            bound = min(bound, k, z.shape[0] - 1 if net.norm == "layer" else k)
        h = h_next
    return max(bound, 0)


def log_abs_det(net: Any, X: FloatArray) -> FloatArray:
    """log|det J| for square end-to-end Jacobians, (B,): the sum of the frame's log scales,
    -inf where the structural rank bound is below n_0."""
    out = np.empty(X.shape[0], dtype=X.dtype)
    for i, x in enumerate(X):
        U, logD, V = _frame(net, x)
        full = logD.size == net.widths[0] and structural_rank_bound(net, x) == net.widths[0]
        out[i] = np.sum(logD) if full else -np.inf
    return out


def _frame(net: Any, x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """J = U diag(exp(logD)) V with U orthonormal columns and V of unit-scale rows.

    Each layer: A = A_l U; columns ordered by their scaled norms (pre-pivoting); A = Q R;
    logD <- log|R_ii| + logD; V <- (R_ij / |R_ii|) exp(logD_j - logD_i) V; U <- Q.
    """
    n0 = x.shape[0]
    U = np.eye(n0, dtype=x.dtype)
    logD = np.zeros(n0, dtype=x.dtype)
    V = np.eye(n0, dtype=x.dtype)
    h = x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for l in range(len(net.weights)):
            h, _, A_l = _layer(net, l, h)
            A = A_l @ U
            order = np.argsort(-(np.log(np.linalg.norm(A, axis=0)) + logD), kind="stable")
            A, logD, V = A[:, order], logD[order], V[order]
            Q, R = np.linalg.qr(A)
            r = R.shape[0]
            diag = np.abs(np.diagonal(R))
            log_ratio = np.log(np.abs(R)) - np.log(diag)[:, None] + logD[None, :] - logD[:r, None]
            coeff = np.sign(R) * np.exp(np.minimum(log_ratio, 700.0))
            # Directions already scaled to zero (exact rank loss) stay zero.
            alive = np.isfinite(logD[:r]) & (diag > 0)
            coeff = np.where(np.isfinite(coeff) & alive[:, None], coeff, 0.0)
            V = coeff @ V
            logD = np.log(diag) + logD[:r]
            U = Q
    return U, logD, V


def _frame_log_singular_values(net: Any, x: FloatArray, p: int) -> FloatArray:
    _, logD, V = _frame(net, x)
    out = graded_log_singular_values(logD[None], V[None], p, svd_values)[0]
    out[structural_rank_bound(net, x) :] = -np.inf
    return out


def graded_log_singular_values(
    logD: FloatArray, V: FloatArray, p: int, svd_values: Any
) -> FloatArray:
    """log singular values of diag(e^logD) V for a batch, (B, p), padded with -inf.

    logD : (B, r), V : (B, r, n0), svd_values: (B, r, n0) -> (B, min(r, n0)).

    The values come from the SVD of diag(e^(logD - max logD)) V, shifted back. Those below
    1e-13 of the largest are lost to rounding there (spreads beyond the floating-point range,
    at depths of hundreds of layers); they are replaced by the graded scales logD, sorted,
    and, when V is square (so that prod s_i = e^(sum logD) exactly), shifted by a common
    amount so that their sum is exactly sum(logD) minus the sum of the reliable values: the
    product of the lost values is then exact even though each is an estimate.
    """
    B, r = logD.shape
    out = np.full((B, p), -np.inf, dtype=logD.dtype)
    if r == 0 or B == 0:
        return out
    n0 = V.shape[2]
    with np.errstate(divide="ignore", under="ignore", invalid="ignore", over="ignore"):
        top = np.max(logD, axis=1)
        top = np.where(np.isfinite(top), top, 0.0)
        M = np.exp(logD - top[:, None])[:, :, None] * V
        s = svd_values(M)
        logs = np.log(s) + top[:, None]
        graded = -np.sort(-logD, axis=1)[:, : s.shape[1]]
        lost = (s < 1e-13 * s[:, :1]) & np.isfinite(graded)
        if r == n0:
            finite = np.isfinite(logD).all(axis=1)
            missing = np.sum(logD, axis=1) - np.sum(np.where(lost, 0.0, logs), axis=1)
            shift = (missing - np.sum(np.where(lost, graded, 0.0), axis=1)) / np.maximum(
                lost.sum(1), 1
            )
            graded = graded + np.where(finite, shift, 0.0)[:, None]
        logs = np.where(lost, graded, logs)
    q = min(p, logs.shape[1])
    out[:, :q] = logs[:, :q]
    return out
