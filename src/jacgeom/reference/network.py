"""End-to-end network quantities in plain numpy, one sample at a time.

``net`` is any object with the attributes of jacgeom.Network: ``weights`` (list of (n_l,
n_{l-1}) arrays), ``biases`` (list of (n_l,) arrays), ``activations`` (list of Activation),
``residual`` (a bool for every layer, or one bool per layer), ``norm`` (None or "layer",
or one of them per layer), ``norm_eps`` (float) and, optionally, ``norm_weights`` /
``norm_biases`` (the normalisation's gamma_l, beta_l; None, or None at layer l: 1 and 0); where
``kernel_layers[l]`` is true, ``weights[l]`` is a kernel layer (an object with ``forward``
and ``jacobian`` of one sample, as jacgeom.KernelLayer) with every unit live.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .graded import (
    DEPENDENT_GAP,
    fold_dependent_rows,
    graded_log_singular_values,
    graded_qr_step,
    graded_qr_step_pivoted,
    graded_rank_floor,
    log_spread,
    map_rank,
    numerical_rank_from_logs,
    rank_tolerance,
    scaled_norms,
    split_log_scales,
    unit_rows,
    unshift_log_scales,
)
from .layer import svd_values
from .rank import rank_and_values

FloatArray = NDArray[np.floating[Any]]


def layer_norm_sigma(centred: NDArray[Any], eps: float) -> NDArray[Any]:
    """sqrt(mean(c^2) + eps) over the last axis of the centred values c, without overflow:
    where max|c| >= 1 it is computed as s sqrt(mean((c / s)^2) + eps / s^2), s = max|c|, so
    pre-activations up to the dtype's maximum give a finite sigma (the plain formula's
    squares overflow from |c| ~ 1.3e154 in float64, 1.8e19 in float32)."""
    s = np.max(np.abs(centred), axis=-1, keepdims=True, initial=0.0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        big = s >= 1
        safe = np.where(big, s, 1.0)
        scaled = np.sqrt(np.mean((centred / safe) ** 2, axis=-1, keepdims=True) + eps / safe**2)
        plain = np.sqrt(np.mean(centred**2, axis=-1, keepdims=True) + eps)
    return np.where(big, safe * scaled, plain)[..., 0].astype(centred.dtype, copy=False)


def layer_norm_mean(z: NDArray[Any]) -> NDArray[Any]:
    """mean(z) over the last axis (keepdims) without overflow: where the plain sum leaves
    the float range for finite z (n entries near max / n, as float32 pre-activations of
    weights near 1e37 are), it is 2^k mean(2^-k z), 2^k >= n, exact scalings; elsewhere
    numpy's mean, bit for bit."""
    with np.errstate(over="ignore", invalid="ignore"):
        mu = np.mean(z, axis=-1, keepdims=True)
    bad = ~np.isfinite(mu)
    if bad.any():
        bad &= np.isfinite(z).all(axis=-1, keepdims=True)
        if bad.any():
            s = 2.0 ** -math.ceil(math.log2(max(z.shape[-1], 1)))
            scaled = np.mean(z * z.dtype.type(s), axis=-1, keepdims=True) / z.dtype.type(s)
            mu = np.where(bad, scaled, mu)
    return mu


def layer_norm(z: NDArray[Any], eps: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """(sigma, u = (z - mean(z)) / sigma) over the last axis, sigma = sqrt(var(z) + eps):
    without overflow where the pre-activations are finite but z - mean(z) is not (entries of
    both signs near max / 2): there the centring is of z / 2, exact, with eps / 4. A sigma
    beyond the float range is a FloatingPointError (the normalisation's Jacobian, 1 /
    sigma times a bounded matrix, is then below what the dtype represents relative to it)."""
    mu = layer_norm_mean(z)
    with np.errstate(over="ignore", invalid="ignore"):
        centred = z - mu
    bad = ~np.isfinite(centred).all(axis=-1) & np.isfinite(z).all(axis=-1)
    if not bad.any():
        sigma = layer_norm_sigma(centred, eps)
        with np.errstate(invalid="ignore", divide="ignore"):  # NaN inputs stay NaN
            return sigma, centred / sigma[..., None]
    half = z.dtype.type(0.5)
    with np.errstate(over="ignore", invalid="ignore"):  # rows of non-finite z: IEEE
        halves = z * half - mu * half
    sigma_half = layer_norm_sigma(np.where(bad[..., None], halves, 0), eps / 4)
    with np.errstate(over="ignore"):
        twice = sigma_half * z.dtype.type(2)
    if not np.isfinite(twice[bad]).all():
        raise FloatingPointError(
            "the standard deviation of a layer's pre-activations is beyond the float range; "
            "no layer normalisation exists in floating point"
        )
    sigma = np.where(bad, twice, layer_norm_sigma(np.where(bad[..., None], 0, centred), eps))
    centred = np.where(bad[..., None], halves, centred)
    scale = np.where(bad, sigma_half, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sigma.astype(z.dtype, copy=False), centred / scale[..., None]


def _affine(net: Any, l: int) -> tuple[Any, Any]:
    """(gamma_l, beta_l) of an affine layer normalisation, or (None, None)."""
    gammas, betas = getattr(net, "norm_weights", None), getattr(net, "norm_biases", None)
    if gammas is None or betas is None or gammas[l] is None or betas[l] is None:
        return None, None
    return gammas[l], betas[l]


def _is_normalised(net: Any, l: int) -> bool:
    norm = net.norm
    return norm == "layer" if norm is None or isinstance(norm, str) else norm[l] == "layer"


def _normalised(net: Any, l: int, z: FloatArray) -> tuple[Any, FloatArray, FloatArray, Any]:
    """(sigma, u = N(z), the argument of phi gamma u + beta, gamma or None) at one sample."""
    sigma, u = layer_norm(z, net.norm_eps)
    gamma, beta = _affine(net, l)
    return sigma, u, (u if gamma is None else gamma * u + beta), gamma


def _layer(net: Any, l: int, h: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One layer at one sample: (output, pre-activation z, layer Jacobian (n_l, n_{l-1}));
    a kernel layer's "pre-activation" is its output."""
    W, b, act = net.weights[l], net.biases[l], net.activations[l]
    if _is_kernel(net, l):
        out, J = W.forward(h), W.jacobian(h)
        if _is_residual(net, l):
            return h + out, out, np.eye(J.shape[0], dtype=J.dtype) + J
        return out, out, J
    with np.errstate(over="ignore", invalid="ignore"):  # decided here, not warned
        z = W @ h + b
    if not np.all(np.isfinite(z)) and all(np.all(np.isfinite(a)) for a in (h, W, b)):
        raise FloatingPointError(
            f"the pre-activations of layer {l} are not finite for finite inputs (the forward "
            "pass overflows the float range); no Jacobian exists in floating point"
        )
    # From here non-finite values come only from non-finite inputs: IEEE, not warned.
    with np.errstate(over="ignore", invalid="ignore"):
        if _is_normalised(net, l):
            m = z.shape[0]
            sigma, u, arg, gamma = _normalised(net, l, z)
            J_norm = (np.eye(m) - np.ones((m, m)) / m - np.outer(u, u) / m) / sigma
            a, d = act.phi(arg), act.derivative(arg)
            if gamma is not None:
                d = d * gamma
            J = (d[:, None] * J_norm) @ W
        else:
            a, d = act.phi(z), act.derivative(z)
            J = d[:, None] * W
    if _is_residual(net, l):
        return h + a, z, np.eye(W.shape[0], dtype=W.dtype) + J
    return a, z, J


def _is_residual(net: Any, l: int) -> bool:
    flags = net.residual
    return bool(flags) if isinstance(flags, (bool, np.bool_)) else bool(flags[l])


def _is_kernel(net: Any, l: int) -> bool:
    kernel = getattr(net, "kernel_layers", None)
    return bool(kernel[l]) if kernel is not None else False


def _derivative(net: Any, l: int, z: FloatArray) -> FloatArray:
    act = net.activations[l]
    if _is_kernel(net, l):
        return np.ones_like(z)
    if _is_normalised(net, l):
        _, _, arg, gamma = _normalised(net, l, z)
        d = act.derivative(arg)
        return d if gamma is None else d * gamma
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
        with np.errstate(over="ignore", invalid="ignore"):  # Network checks the result
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
    """Number of live units in each layer, (B, L): phi' not zero mathematically
    (Activation.derivative_is_zero; a phi' that underflows to 0.0 is live), and gamma != 0
    under an affine layer normalisation."""
    zs = preactivations(net, X)
    out = np.empty((X.shape[0], len(net.weights)), dtype=np.int64)
    for i in range(X.shape[0]):
        out[i] = [np.count_nonzero(_live(net, l, zs[l][i])) for l in range(len(zs))]
    return out


def _live(net: Any, l: int, z: FloatArray) -> NDArray[np.bool_]:
    """The units of layer l whose row of the layer Jacobian is not zero in exact arithmetic."""
    if _is_kernel(net, l):
        return np.ones(z.shape, dtype=bool)
    act = net.activations[l]
    if _is_normalised(net, l):
        _, _, arg, gamma = _normalised(net, l, z)
        live = ~act.derivative_is_zero(arg)
        return live if gamma is None else live & (gamma != 0)
    return ~act.derivative_is_zero(z)


def frobenius_norm(net: Any, X: FloatArray) -> FloatArray:
    """Frobenius norm of each end-to-end Jacobian, (B,)."""
    return frobenius_norms(jacobian(net, X))


def frobenius_norms(J: FloatArray) -> FloatArray:
    """||J[b]||_F of a (B, m, n) stack, (B,), without overflow or underflow: where the plain
    sum of squares leaves the float range (entries beyond sqrt(max) ~ 1.3e154 in float64,
    1.8e19 in float32, or below sqrt(tiny / eps)), J[b] is first divided by max |J[b]|."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ss = np.einsum("bij,bij->b", J, J)
    info = np.finfo(J.dtype)
    redo = ~(np.isfinite(ss) & (ss >= info.tiny / info.eps))
    out = np.sqrt(ss)
    if redo.any() and J.size:
        Jr = J[redo]
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            top = np.max(np.abs(Jr), axis=(1, 2))
            safe = np.where(np.isfinite(top) & (top > 0), top, 1.0)
            scaled = safe * np.sqrt(np.sum((Jr / safe[:, None, None]) ** 2, axis=(1, 2)))
        out[redo] = np.where(np.isfinite(top) & (top > 0), scaled, top).astype(out.dtype)
    return out


def log_singular_values(net: Any, X: FloatArray) -> FloatArray:
    """log of the singular values of each end-to-end Jacobian, descending, (B, min(n_L, n_0)),
    from the stable frame (never forms the product; no overflow); -inf beyond the exact rank."""
    p = min(net.widths[0], net.widths[-1])
    out = np.full((X.shape[0], p), -np.inf, dtype=X.dtype)
    for i, x in enumerate(X):
        g, V, _ = stable_frame(net, x)
        logs = graded_log_singular_values(g, V)
        out[i, : min(p, logs.size)] = logs[:p]
    return out


def exact_rank(net: Any, X: FloatArray) -> NDArray[np.int64]:
    """Exact rank of each end-to-end Jacobian, (B,): the directions the stable frame keeps."""
    return np.array([stable_frame(net, x)[2][-1] for x in X], dtype=np.int64).reshape(-1)


def layer_exact_ranks(net: Any, X: FloatArray) -> NDArray[np.int64]:
    """Exact rank of the partial product after each layer, (B, L)."""
    out = np.empty((X.shape[0], len(net.weights)), dtype=np.int64)
    for i, x in enumerate(X):
        out[i] = stable_frame(net, x)[2]
    return out


def stable_rank(
    net: Any, X: FloatArray, tol: float | None = None, rtol: float | None = None
) -> NDArray[np.int64]:
    """numpy.linalg.matrix_rank's rule applied to the exact singular values of J, (B,)."""
    shape = (net.widths[-1], net.widths[0])
    eps = float(np.finfo(X.dtype).eps)
    return np.array(
        [
            numerical_rank_from_logs(row, tol, rtol, shape, eps)
            for row in log_singular_values(net, X)
        ],
        dtype=np.int64,
    ).reshape(-1)


def log_abs_det(net: Any, X: FloatArray) -> FloatArray:
    """log|det J| for square end-to-end Jacobians, (B,): the sum of the frame's log scales,
    -inf where the exact rank is below n_0."""
    out = np.empty(X.shape[0], dtype=X.dtype)
    for i, x in enumerate(X):
        g, _, ranks = stable_frame(net, x)
        out[i] = np.sum(g) if ranks[-1] == net.widths[0] else -np.inf
    return out


Step = tuple[FloatArray, FloatArray, FloatArray, FloatArray, float, NDArray[np.bool_]]


def _rows_step(
    M: FloatArray,
    log_d: FloatArray,
    sign: FloatArray,
    zero: NDArray[np.bool_],
    term_log_norms: FloatArray | None = None,
) -> Step:
    """The step diag(sign e^log_d) M, rows where ``zero`` is true removed exactly:
    (X, norms, sign, t, c, alive) with X the alive rows of M at unit norm (their log norms
    moved into t, so a row of subnormal or near-overflow entries keeps its direction) and
    norms the sizes against which each row's cancellation on the frame is judged: 1, or
    where M was summed from larger terms (``term_log_norms``), those terms' size."""
    Mu, log_rn = unit_rows(M)
    alive = ~zero & np.isfinite(log_rn)
    t = log_d + log_rn
    c = float(np.max(t[alive])) if alive.any() else 0.0
    norms = np.ones(M.shape[0])
    if term_log_norms is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.exp(term_log_norms - log_rn)
    return Mu[alive], norms[alive], sign[alive], t[alive] - c, c, alive


def _layer_factors(
    net: Any, l: int, h: FloatArray, support: NDArray[np.bool_] | None = None
) -> tuple[FloatArray, list[Step]]:
    """One layer at one sample, for the stable frame, all in float64: (output, steps), the
    layer Jacobian as a product of steps applied in order, each (X, sign, t, c, alive):
    X the step's map with the rows whose factor is zero mathematically removed and
    invertible diagonal factors dropped (it decides ranks); the step restricted to the
    ``alive`` rows is e^c diag(sign e^t) X, t <= 0, even where the factors underflow;
    ``norms`` judge the rows' cancellation on the frame (:func:`_rows_step`). ``support``
    (n_(l-1),): the input coordinates the frame uses; W's other columns meet zero rows of
    the frame, take no part, and are left out of every row's size.

    A layer normalisation is two steps, J_N W = (B_1 H) diag(delta, 1, ..., 1) (H B_1^T W)
    / sigma (see :func:`_norm_factors`): delta is a scale like phi', which never removes a
    direction, so the rank is decided on H B_1^T W and on B_1 H, not on a product where
    delta = eps / (var + eps) (1e-17 at weights of 1e6) falls below any tolerance."""
    W, b, act = net.weights[l], net.biases[l], net.activations[l]
    if _is_kernel(net, l):
        out, J = W.forward(h), W.jacobian(h)
        A = np.asarray(J, dtype=np.float64)
        if not np.all(np.isfinite(A)):
            raise FloatingPointError(
                f"the Jacobian of layer {l} is not finite (non-finite inputs with "
                "check_finite=False, or weights that overflow); no spectrum or rank exists"
            )
        if _is_residual(net, l):
            A = A + np.eye(A.shape[0])
            out = h + out
        return out, [_dense_step(A)]
    W64 = np.asarray(W, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # checked below, not warned
        z = W @ h + b
    if support is not None and not support.all():
        W64 = W64 * support[None, :]
    arg = u = z
    gamma = None
    steps: list[Step] = []
    M: FloatArray = W64
    if _is_normalised(net, l):
        sigma, u, arg, gamma = _normalised(net, l, z)
    if not np.all(np.isfinite(arg)):
        raise FloatingPointError(
            f"the pre-activations of layer {l} are not finite (non-finite inputs with "
            "check_finite=False, or weights that overflow); no spectrum or rank exists"
        )
    a = act.phi(arg)
    out = h + a if _is_residual(net, l) else a
    if _is_normalised(net, l):
        B1H, log_delta = _norm_factors(u.astype(np.float64), float(sigma), net.norm_eps)
        if _is_residual(net, l):
            M = (B1H @ (np.exp(log_delta)[:, None] * (B1H.T @ W64))) / float(sigma)
        else:
            # H B_1^T W sums W's rows: where they cancel (a component along the ones
            # vector), the result is judged against the size of the terms.
            Wu, log_rn = unit_rows(W64)
            top = float(np.max(log_rn, initial=-np.inf))
            top = top if np.isfinite(top) else 0.0
            terms = np.exp(log_rn - top)
            with np.errstate(divide="ignore"):
                term_log_norms = np.log(np.abs(B1H.T) @ terms)  # units of terms
            k = B1H.shape[1]
            steps.append(
                _rows_step(
                    B1H.T @ (terms[:, None] * Wu),
                    log_delta + top - float(np.log(sigma)),
                    np.ones(k),
                    np.zeros(k, dtype=bool),
                    term_log_norms,
                )
            )
            M = B1H
    g64 = None if gamma is None else np.asarray(gamma, dtype=np.float64)
    if _is_residual(net, l):
        d = act.derivative(arg).astype(np.float64)
        if g64 is not None:
            d = d * g64
        A = np.eye(M.shape[0]) + d[:, None] * M
        return out, [_dense_step(A)]
    alive = ~act.derivative_is_zero(arg)
    log_d = act.log_abs_derivative(arg.astype(np.float64))
    if np.any(np.isnan(log_d[alive])) or np.any(np.isposinf(log_d[alive])):
        raise FloatingPointError(
            f"phi' of activation {act.name!r} is NaN or infinite at layer {l} for finite "
            "pre-activations"
        )
    sign = act.derivative_sign(arg).astype(np.float64)
    if g64 is not None:  # gamma: a row scale like phi', its zeros remove rows exactly
        alive &= g64 != 0
        with np.errstate(divide="ignore"):
            log_d = log_d + np.log(np.abs(g64))
        sign = sign * np.sign(g64)
    steps.append(_rows_step(M, np.where(alive, log_d, 0.0), sign, ~alive))
    return out, steps


@functools.lru_cache(maxsize=16)
def ones_complement(m: int) -> FloatArray:
    """(m, m - 1) orthonormal basis of the complement of the ones vector: the Helmert
    basis, column k (1 <= k < m) = (1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1)) with k
    ones. Its columns sum to zero to a few ulps (k eps relative), where a basis from an
    SVD of I - 1 1^T / m is off by ~20 eps at m = 5: a map that cancels on the ones vector
    (every weight row the same) must come out as rounding noise, not as a direction."""
    B = np.zeros((m, max(m - 1, 0)))
    for k in range(1, m):
        a = 1.0 / np.sqrt(k * (k + 1.0))
        B[:k, k - 1] = a
        B[k, k - 1] = -k * a
    B.setflags(write=False)
    return B


def _norm_factors(u: FloatArray, sigma: float, eps: float) -> tuple[FloatArray, FloatArray]:
    """The layer normalisation's Jacobian (I - 1 1^T / m - u u^T / m) / sigma factored as
    (B_1 H) diag(delta, 1, ..., 1) (B_1 H)^T / sigma: returns B_1 H (m, m - 1) and the log
    of the diagonal (m - 1,).

    B_1 is an orthonormal basis of the complement of the ones vector, H the reflector taking
    B_1^T u / |u| to e_1, and delta = 1 - |u|^2 / m = eps / sigma^2 (sigma^2 = var + eps),
    computed as the latter: the former cancels to rounding noise when the variance is large
    (delta ~ 1e-17 at weights of 1e6), and formed densely the u-direction is lost the same
    way (a rank-1 Jacobian at m = 2 would look like rank 2)."""
    m = u.shape[0]
    if m < 2:
        return np.zeros((m, 0)), np.zeros(0)
    B1 = ones_complement(m)
    w = B1.T @ u
    nw = float(np.linalg.norm(w))
    H = np.eye(m - 1)
    log_diag = np.zeros(m - 1)
    if nw > 0:
        v = w / nw
        v[0] += 1.0 if v[0] >= 0 else -1.0
        H -= 2.0 * np.outer(v, v) / (v @ v)
        log_diag[0] = min(np.log(eps) - 2.0 * np.log(sigma), 0.0)
    return B1 @ H, log_diag


def _dense_step(A: FloatArray) -> Step:
    """A formed, well-scaled layer Jacobian as one step: rows as they are, judged
    against their own norms."""
    m = A.shape[0]
    return A, scaled_norms(A, axis=1), np.ones(m), np.zeros(m), 0.0, np.ones(m, dtype=bool)


def stable_frame(net: Any, x: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """The stable factorisation J(x) = U diag(e^g) V of one sample, with the exact rank
    after every layer.

    Returns
    -------
    g : (r,) float64, V : (r, n_0) float64, ranks : (L,) int64
        r is the exact rank; U (orthonormal columns) is not returned.

    Notes
    -----
    Per layer: X U (X the layer's map on its live units, U the frame's orthonormal basis
    of the range so far) has the rank r_l of the partial product, decided by
    jacgeom.reference.graded.map_rank (numpy.linalg.matrix_rank's count on X U with rows
    divided by X's row norms) on a matrix no worse conditioned than one layer. Where
    r_l is below both the frame's live directions and X's rows, the frame is first
    restricted to the row space of X U (right singular vectors Z_1):
    A diag(e^g) V -> (A Z_1) (Z_1^T diag(e^g) V), so the lost directions leave exactly
    (:func:`_frame_step`). Then C U diag(e^g) V is refactored by :func:`graded_qr_step`.
    """
    n0 = x.shape[0]
    U = np.eye(n0)
    g = np.zeros(n0)
    V = np.eye(n0)
    L = len(net.weights)
    # The units of layer l - 1 that layer l reads: its first step's columns on its kept
    # rows; for a layer normalisation, W's columns that are not constant (J_N removes the
    # ones vector exactly, its formed first step only to rounding).
    read, h = [], x
    for l in range(L):
        h, steps = _layer_factors(net, l, h)
        r = np.any(steps[0][0] != 0, axis=0)
        if _is_normalised(net, l) and not _is_residual(net, l) and not _is_kernel(net, l):
            W = np.asarray(net.weights[l])
            r &= np.any(W != W[:1], axis=0)
        read.append(r)
    h = x
    ranks = np.empty(L, dtype=np.int64)
    spread = 0.0  # the widest grading of rows so far (graded.graded_rank_floor)
    for l in range(L):
        h, steps = _layer_factors(net, l, h, np.any(U != 0, axis=1))
        frame = (U, g, V, spread)
        ranks[l], U, g, V, spread = _apply_steps(steps, *frame)
        # Units the next layer does not read leave the frame before it mixes the rest:
        # exact, and it keeps a graded frame accurate (jacgeom._frame._restrict_to_read).
        if l + 1 < L and read[l + 1].any() and np.any(U[~read[l + 1]] != 0):
            # the whole step's rows count in the redo's rank tolerance
            tol_rows = int(np.count_nonzero(np.asarray(steps[-1][1]) > 0))
            steps[-1] = _drop_rows(steps[-1], ~read[l + 1])
            redo = _apply_steps(steps, *frame, tol_rows=tol_rows)[1:]
            # where rounding at the threshold keeps more directions than the whole layer,
            # the whole layer's frame stays
            if np.count_nonzero(np.isfinite(redo[1])) <= np.count_nonzero(np.isfinite(g)):
                U, g, V, spread = redo
    return g, V, ranks


def _apply_steps(
    steps: list[Step],
    U: NDArray[np.float64],
    g: NDArray[np.float64],
    V: NDArray[np.float64],
    spread: float,
    tol_rows: int | None = None,
) -> tuple[int, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    """One layer's steps on the frame U diag(e^g) V: the last step's rank, the new frame
    and the widest grading of rows so far. ``tol_rows``: the rows the last step's rank
    tolerance counts (graded.map_rank's ``rows``), default its own."""
    r_l = 0
    for k, (X, norms, sign, t, c, alive) in enumerate(steps):
        n64: NDArray[np.float64] = np.asarray(norms, dtype=np.float64)
        floor = float(graded_rank_floor(spread))
        rows = tol_rows if k == len(steps) - 1 else None
        r_l, Q, g, V = _frame_step(X, n64, sign, t, c, U, g, V, floor, rows=rows)
        U = np.zeros((alive.shape[0], Q.shape[1]))
        U[alive] = Q
        # the step's rows are graded by t and, for a formed step, by their own sizes
        with np.errstate(divide="ignore"):
            log_t = np.asarray(t, dtype=np.float64) + np.log(scaled_norms(X, axis=1))
        spread = max(spread, float(log_spread(log_t)))
    return r_l, U, g, V, spread


def _drop_rows(step: Step, drop: NDArray[np.bool_]) -> Step:
    """``step`` with the output rows where ``drop`` (m,) removed."""
    X, norms, sign, t, c, alive = step
    keep = ~drop[alive]
    t = np.asarray(t, dtype=np.float64)[keep]
    top = float(np.max(t, initial=-np.inf))
    top = top if np.isfinite(top) else 0.0
    return X[keep], norms[keep], sign[keep], t - top, c + top, alive & ~drop


def _frame_step(
    X: NDArray[Any],
    norms: NDArray[np.float64],
    sign: NDArray[Any],
    t: NDArray[Any],
    c: float,
    U: NDArray[np.float64],
    g: NDArray[np.float64],
    V: NDArray[np.float64],
    floor: float = 0.0,
    force: bool = False,
    rows: int | None = None,
) -> tuple[int, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """One step e^c diag(sign e^t) X of :func:`stable_frame` on the frame U diag(e^g) V:
    returns the rank r_l of X U and the new frame Q, g, V. ``floor``: the least tolerance
    of the rank decision (graded.graded_rank_floor of the rows' grading so far).

    The frame is restricted to the row space of X U only where X U has lower rank than
    its rows and the live directions leave (as jacgeom._frame's ``_deflate``): there the
    rank is a property of the unscaled map, which the graded QR alone would keep as
    rounding noise. Elsewhere the graded QR refactors the frame as it is: a restriction
    through the right singular vectors of X U, accurate to eps in absolute terms, mixes
    the frame's large directions into its small ones by eps e^(g_i - g_j), which a graded
    frame cannot afford (the numpy backend's largest value off by e^349 where a zero
    weight column met a frame graded over e^380). ``force`` restricts wherever the rank is
    below the live directions; a step whose QR kept fewer directions than the rank is
    redone so. ``rows``: the rows the rank tolerance counts (graded.map_rank's)."""
    XU = X @ U
    rank_l, Xn = map_rank(XU, norms, floor=floor, rows=rows)
    r_l = int(rank_l)
    live = int(np.count_nonzero(np.isfinite(g)))
    g_in, V_in = g, V
    if r_l < min(live, X.shape[0]) or (force and r_l < live):
        Z1 = np.linalg.svd(Xn)[2][:r_l].T if r_l else np.zeros((U.shape[1], 0))
        Q1, g, V = graded_qr_step_pivoted(Z1.T, g, V)
        XU = XU @ (Z1 @ Q1)
    # Exactly dependent large rows folded into the rows they depend on, where smaller
    # rows follow them (graded.fold_dependent_rows): U = T Q.
    T = None
    if X.shape[0] > r_l and log_spread(t) > DEPENDENT_GAP:
        counted = np.count_nonzero(norms > 0) if rows is None else rows
        tol = rank_tolerance(counted, U.shape[1])  # rounding only: no graded floor
        folded, Yhat, Tk, kept, through = fold_dependent_rows(
            XU[None], norms[None], np.asarray(t, float)[None], sign[None], [r_l], [tol]
        )
        if folded[0]:
            XU, T = Yhat[0], (Tk[0], kept[0], through[0])
    # diag(sign e^t) applied as diag(e^t_K) ... diag(e^t_2) diag(sign e^t_1), with
    # gaps wider than graded.LOG_SCALE_GAP applied as a shift of g afterwards.
    parts, shift = split_log_scales(t)
    Q, new_g, new_V = graded_qr_step((sign * np.exp(parts[0]))[:, None] * XU, g + c, V)
    for part in parts[1:]:
        Q, new_g, new_V = graded_qr_step(np.exp(part)[:, None] * Q, new_g, new_V)
    new_g = unshift_log_scales(Q, new_g, shift)
    if T is not None:
        Q = T[0] @ Q[T[1]] + T[2][:, None] * Q
    if not force and np.count_nonzero(np.isfinite(new_g)) < r_l < live:
        return _frame_step(X, norms, sign, t, c, U, g_in, V_in, floor, force=True, rows=rows)
    return r_l, Q, new_g, new_V
