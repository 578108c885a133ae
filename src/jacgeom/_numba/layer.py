"""Numba single-layer kernels on precomputed derivatives d = phi'(z).

Layout: W (m, n), D (B, m), C-contiguous, one dtype. Rows with d_i = 0 are skipped: they
are exactly zero in D W, so the compacted k x n matrix has the same Gram matrix and the same
non-zero singular values.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from . import lapack
from ._parallel import parallel_njit

FloatArray = NDArray[np.floating[Any]]

_OPTS: dict[str, Any] = {"cache": True, "nogil": True}


@numba.njit(inline="always", **_OPTS)
def _stable_sigmoid(z: float) -> float:
    e = math.exp(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


@numba.njit(inline="always", **_OPTS)
def _sigmoid_derivative(z: float) -> float:
    e = math.exp(-abs(z))
    return e / ((1.0 + e) * (1.0 + e))


@numba.njit(**_OPTS)
def _derivative(code: int, p: float, z: float) -> float:
    # Codes as in jacgeom.activations.CODES; branches mirror activations.hpp.
    if code == 0:
        return 1.0
    if code == 1:
        return 1.0 if z > 0 else 0.0
    if code == 2:
        return 1.0 if z > 0 else p
    if code == 3:
        return _sigmoid_derivative(z)
    if code == 4:
        e = math.exp(-2.0 * abs(z))
        return 4.0 * e / ((1.0 + e) * (1.0 + e))
    if code == 5:
        zc = min(max(z, -40.0), 40.0)
        cdf = 0.5 * math.erfc(-z * 0.70710678118654752440)
        return cdf + zc * math.exp(-0.5 * zc * zc) * 0.39894228040143267794
    if code == 6:
        zc = min(max(z, -30.0), 30.0)
        c = 0.79788456080286535588
        u = c * (zc + 0.044715 * zc * zc * zc)
        du = c * (1.0 + 3 * 0.044715 * zc * zc)
        return _stable_sigmoid(2.0 * u) + zc * 2.0 * _sigmoid_derivative(2.0 * u) * du
    if code == 7:
        bz = z * p
        return _stable_sigmoid(bz)
    if code == 8:
        return 1.0 if z > 0 else p * math.exp(min(z, 0.0))
    if code == 9:
        # z clipped in the product where s' is 0 anyway: silu'(+-inf) = 1, 0, not nan
        return _stable_sigmoid(z) + min(max(z, -1000.0), 1000.0) * _sigmoid_derivative(z)
    return math.nan


@parallel_njit(**_OPTS)
def _derivatives(Z: FloatArray, code: int, p: float, D: FloatArray) -> None:
    z = Z.ravel()
    d = D.ravel()
    for i in numba.prange(z.size):
        # np.float64, not float(): numba's float() of a float32 stays float32, and phi' would
        # be evaluated in float32 (silu'(-100) underflowing to 0), not in float64 as elsewhere
        d[i] = _derivative(code, p, np.float64(z[i]))


def derivatives(Z: FloatArray, code: int, p: float) -> FloatArray:
    """phi'(Z) elementwise for a built-in activation code; same shape and dtype as Z.

    The rule of every backend: the parameter rounded to Z's dtype, phi' evaluated in float64
    (``_derivative``) and rounded once when stored."""
    D = np.empty_like(Z)
    _derivatives(Z, code, float(Z.dtype.type(p)), D)
    return D


# Compiled custom derivatives, by the Activation's (snapshot) function: at most this many
# per process. Numba never frees the machine code of a compiled function, so the bound is on
# compilations, not on entries: once it is reached, new custom activations are evaluated
# from Python (jacgeom._dispatch falls back to numpy's evaluation), as are functions numba
# cannot compile (recorded as None, so that a failure is not retried on every call).
MAX_COMPILED_CUSTOM = 64
_custom_compiled: dict[Callable[[float], float], Any] = {}
# The check of the bound and the insert are one step: threads creating custom activations
# at once would otherwise compile past it.
_custom_lock = threading.Lock()


def _compiled_custom(dphi: Callable[[float], float]) -> Any:
    with _custom_lock:
        return _compile_custom_locked(dphi)


def _compile_custom_locked(dphi: Callable[[float], float]) -> Any:
    if dphi in _custom_compiled:
        return _custom_compiled[dphi]
    if len(_custom_compiled) >= MAX_COMPILED_CUSTOM:
        return None
    try:
        # One float64 signature: phi' is evaluated in float64 and rounded once to the
        # working dtype, the rule of every backend. A ufunc is one compilation per function
        # (a function argument to an njit kernel would compile that kernel once more each).
        ufunc = numba.vectorize(["float64(float64)"], nopython=True)(dphi)  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - numba cannot compile this function
        ufunc = None
    _custom_compiled[dphi] = ufunc
    return ufunc


def derivatives_custom(Z: FloatArray, dphi: Callable[[float], float]) -> FloatArray | None:
    """phi'(Z) for a custom scalar Python derivative compiled by numba, same shape and dtype
    as Z; None where it is not compiled (numba cannot, or the bound is reached)."""
    ufunc = _compiled_custom(dphi)
    if ufunc is None:
        return None
    # A division by zero or a domain error gives inf or NaN here, which the caller turns into
    # a FloatingPointError (as the Python evaluation's exception is): no warning besides.
    with np.errstate(all="ignore"):
        return np.asarray(ufunc(Z.astype(np.float64))).astype(Z.dtype, copy=False)


@parallel_njit(**_OPTS)
def _jacobian(W: FloatArray, D: FloatArray, J: FloatArray) -> None:
    B, m = D.shape
    n = W.shape[1]
    for b in numba.prange(B):
        for i in range(m):
            di = D[b, i]
            for j in range(n):
                J[b, i, j] = di * W[i, j]


def jacobian(W: FloatArray, D: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """J[b] = diag(D[b]) W, shape (B, m, n), into ``out`` when given."""
    J = np.empty((D.shape[0], W.shape[0], W.shape[1]), dtype=W.dtype) if out is None else out
    _jacobian(W, D, J)
    return J


@numba.njit(inline="always", **_OPTS)
def _gather(W: FloatArray, d: FloatArray, A: FloatArray) -> int:
    m, n = W.shape
    k = 0
    for i in range(m):
        di = d[i]
        if di != 0:
            for j in range(n):
                A[k, j] = di * W[i, j]
            k += 1
    return k


@parallel_njit(**_OPTS)
def _pullback(W: FloatArray, D: FloatArray, syrk: Any, chars: Any, G: FloatArray) -> None:
    B = D.shape[0]
    m, n = W.shape
    for b in numba.prange(B):
        A = np.empty((m, n), dtype=W.dtype)
        k = _gather(W, D[b], A)
        if k == 0 or n == 0:
            G[b] = 0
        else:
            lapack.gram(syrk, A[:k], G[b], chars)


def pullback_metric(W: FloatArray, D: FloatArray) -> FloatArray:
    """G[b] = W^T diag(D[b])^2 W, shape (B, n, n): one syrk of the active rows per sample."""
    G = np.empty((D.shape[0], W.shape[1], W.shape[1]), dtype=W.dtype)
    syrk = lapack.dsyrk if W.dtype == np.float64 else lapack.ssyrk
    _pullback(W, D, syrk, lapack.UPPER_NOTRANS, G)
    return G


def _gesdd(dtype: np.dtype[Any]) -> Any:
    return lapack.dgesdd if dtype == np.float64 else lapack.sgesdd


@parallel_njit(**_OPTS)
def _singular_values(W: FloatArray, D: FloatArray, gesdd: Any, jobz: Any, S: FloatArray) -> None:
    B = D.shape[0]
    m, n = W.shape
    p = min(m, n)
    for b in numba.prange(B):
        A = np.empty((m, n), dtype=W.dtype)
        k = _gather(W, D[b], A)
        S[b] = 0
        if k > 0 and n > 0:
            s = np.empty(min(k, n), dtype=W.dtype)
            if lapack.svd_values(gesdd, A[:k], s, jobz) != 0:
                s[:] = np.nan
            S[b, : min(k, p)] = s


def singular_values(W: FloatArray, D: FloatArray) -> FloatArray:
    """Singular values of diag(D[b]) W, descending, shape (B, min(m, n))."""
    S = np.empty((D.shape[0], min(W.shape)), dtype=W.dtype)
    _singular_values(W, D, _gesdd(W.dtype), lapack.JOBZ_N, S)
    return S


@parallel_njit(**_OPTS)
def _log_volume(
    W: FloatArray, D: FloatArray, eps: float, gesdd: Any, jobz: Any, out: FloatArray
) -> None:
    B = D.shape[0]
    m, n = W.shape
    for b in numba.prange(B):
        if n == 0:
            out[b] = 0
            continue
        A = np.empty((m, n), dtype=W.dtype)
        k = _gather(W, D[b], A)
        if k < n:
            out[b] = -np.inf
            continue
        s = np.empty(n, dtype=W.dtype)
        if lapack.svd_values(gesdd, A[:k], s, jobz) != 0:
            out[b] = np.nan
            continue
        tol = s[0] * (max(m, n) * eps)  # the factor first: s[0] * max(m, n) may overflow
        total = 0.0
        full = True
        for i in range(n):
            full = full and s[i] > tol
            total += math.log(s[i]) if s[i] > 0 else -np.inf
        out[b] = total if full else -np.inf


def log_volume(W: FloatArray, D: FloatArray) -> FloatArray:
    """0.5 log det(W^T D[b]^2 W), -inf where rank < n (numpy's matrix_rank tolerance)."""
    out = np.empty(D.shape[0], dtype=W.dtype)
    _log_volume(W, D, float(np.finfo(W.dtype).eps), _gesdd(W.dtype), lapack.JOBZ_N, out)
    return out


@parallel_njit(**_OPTS)
def _batched_singular_values(A: FloatArray, gesdd: Any, jobz: Any, S: FloatArray) -> None:
    for b in numba.prange(A.shape[0]):
        if S.shape[1] == 0:
            continue
        work = A[b].copy()
        s = np.empty(S.shape[1], dtype=A.dtype)
        if lapack.svd_values(gesdd, work, s, jobz) != 0:
            s[:] = np.nan
        S[b] = s


def batched_singular_values(A: FloatArray) -> FloatArray:
    """Singular values of every (r, c) matrix of a C-contiguous (B, r, c) stack."""
    S = np.empty((A.shape[0], min(A.shape[1], A.shape[2])), dtype=A.dtype)
    _batched_singular_values(A, _gesdd(A.dtype), lapack.JOBZ_N, S)
    return S
