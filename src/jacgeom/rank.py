"""Masked-row ranks: how much rank a layer keeps, for millions of active sets.

For relu, rank(D_phi(z) W) = rank(W[S]) with S = {i : z_i > 0}; every function here returns,
for each mask (or sample), exactly what numpy.linalg.matrix_rank returns on the kept rows.

Why this design: most masks keep full rank, and a certificate of full rank is cheaper than
the singular values. The C++ backend holds the Gram matrix in double precision (for k <= n
kept rows a gather from W W^T, computed once per call) and runs one shifted k x k Cholesky:
O(k^3 / 3) flops per mask instead of an O(k n min(k, n)) SVD, with scipy's LAPACK through
function pointers. The shift keeps a margin of 16 max(k, n) eps ||W_S||_F above twice the
tolerance; whenever the certificate does not hold with it, the singular values decide, as in
numpy. Masks are deduplicated first (a 16-unit layer has at most 2^16 = 65,536 active sets
however many samples are drawn). The Numba backend always uses the singular values (exact,
slower). The measurements behind these choices are in docs/benchmarks.md, "Measurements
behind design choices".
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backends, _dispatch, _validation, reference
from .activations import Activation
from .layer import _Layer, _scaled
from .typing import ActivationName, BackendName, IntArray

__all__ = ["active_rank", "jacobian_rank", "masked_rank"]

FloatArray = NDArray[np.floating[Any]]


def _unique_rows(mask: NDArray[np.bool_]) -> tuple[NDArray[np.bool_], NDArray[np.intp]]:
    """Distinct masks and, for each input mask, the index of its distinct row."""
    if mask.shape[0] <= 1:
        return mask, np.arange(mask.shape[0])
    packed = np.packbits(mask, axis=1)
    width = packed.shape[1]
    if width <= 8:
        # Up to 64 units: one integer key per mask, sorted far faster than byte strings.
        keys8 = np.zeros((packed.shape[0], 8), dtype=np.uint8)
        keys8[:, :width] = packed
        keys: NDArray[Any] = keys8.view(np.uint64)[:, 0]
    else:
        keys = np.ascontiguousarray(packed).view(np.dtype((np.void, width)))[:, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return mask[first], inverse.reshape(-1)


def _compiled_rank(
    W: FloatArray,
    scale: FloatArray,
    tol: float | None,
    rtol: float | None,
    backend: str,
    want_values: bool,
) -> tuple[NDArray[np.int64], FloatArray]:
    """Ranks (and values) of diag(scale[u]) W restricted to scale != 0, on any backend (the
    numpy twin is numpy.linalg.matrix_rank per row set), scaled by powers of two where the
    rows' magnitudes would leave the float range inside the SVD (a sigma_max of inf made
    the threshold inf and the rank 0)."""
    e: NDArray[np.int64] | None = None
    if tol is None:
        scaled = _scaled(W, scale)
        if scaled is not None:
            W, scale, e = scaled
    else:
        # An absolute tol is in the caller's units: one power of two for every row set.
        c = _out_of_range_exponent(W)
        if c and _scaling_loses_entries(W, c):
            c, backend = 0, "numpy"
        if c:
            W, tol = np.ldexp(W, -c).astype(W.dtype), _scaled_tol(tol, c)
            e = np.full(scale.shape[0], c, dtype=np.int64)
    tolerance = _dispatch.Tolerance(tol, rtol)
    ranks, values = _dispatch.call("masked_rank", backend, W, scale, tolerance, want_values)
    if want_values and e is not None:
        with np.errstate(over="ignore"):
            values = np.ldexp(values, e[:, None]).astype(W.dtype)
    return ranks, values


def _scaled_tol(tol: float, c: int) -> float:
    """2^-c tol, the absolute tolerance of 2^-c W (c from :func:`_out_of_range_exponent`).

    Where it overflows to inf (W tiny, c < 0, tol huge) the answer is unchanged: 2^-c W has
    max|entry| below 1, so the singular values of its row sets, rows scaled by phi', are at
    most max|phi'| sqrt(m n), far below 2^-c tol > float max; the finite tol keeps none of
    them and so does tol = inf (rank 0). The overflow is harmless, so it is not warned about.
    """
    with np.errstate(over="ignore"):
        return float(np.ldexp(tol, -c))


def _out_of_range_exponent(W: FloatArray) -> int:
    """c with 2^-c max|W| in [1/2, 1) where max|W| is beyond 2^(+-maxexp / 3), else 0."""
    if W.size == 0:
        return 0
    amax = float(np.max(np.abs(W)))
    if amax == 0:
        return 0
    c = int(np.frexp(amax)[1])
    return c if abs(c) > np.finfo(W.dtype).maxexp // 3 else 0


def _scaling_loses_entries(W: FloatArray, c: int) -> bool:
    """Whether 2^-c W rounds some nonzero entry of W below the normal range (to a subnormal
    or to zero). Under a relative tolerance such entries, 2^-maxexp below the largest, are
    far below the threshold; an absolute tol (tol = 0 included) is in the caller's units and
    may count them, so the rank is then numpy.linalg.matrix_rank's on the unscaled W (the
    rank jacgeom's is defined as)."""
    nonzero = np.abs(W[W != 0])
    if c <= 0 or nonzero.size == 0:  # scaled up (c < 0): nothing moves towards zero
        return False
    return bool(nonzero.min() < np.ldexp(float(np.finfo(W.dtype).tiny), c))


def _ranks_of_masks(
    W: FloatArray,
    masks: NDArray[np.bool_],
    squeeze: bool,
    tol: float | None,
    rtol: float | None,
    backend: str,
    want_values: bool,
) -> Any:
    c = _out_of_range_exponent(W)
    if c and tol is not None and _scaling_loses_entries(W, c):
        c, backend = 0, "numpy"
    if c:
        # rank(2^-c W) = rank(W) exactly, and tol scales with it
        W = np.ldexp(W, -c).astype(W.dtype)
        tol = None if tol is None else _scaled_tol(tol, c)
    if backend == "numpy":
        out = reference.masked_rank(W, masks, tol, rtol, want_values)
    else:
        distinct, inverse = _unique_rows(masks)
        ranks, values = _dispatch.call(
            "masked_rank",
            backend,
            W,
            distinct.astype(W.dtype),
            _dispatch.Tolerance(tol, rtol),
            want_values,
        )
        out = (ranks[inverse], values[inverse]) if want_values else ranks[inverse]
    if want_values and c:
        with np.errstate(over="ignore"):
            out = (out[0], np.ldexp(out[1], c).astype(W.dtype))
    return _squeeze(out, squeeze, want_values)


def _require_finite_rows(W: FloatArray, masks: NDArray[np.bool_]) -> None:
    """A kept row holding NaN or Inf (check_finite=False) has no rank: FloatingPointError."""
    bad_rows = ~np.isfinite(W).all(axis=1)
    if bad_rows.any() and (masks & bad_rows).any():
        raise FloatingPointError(
            "a kept row of W holds NaN or Inf (check_finite=False); no rank exists"
        )


def _require_finite_jacobians(layer: _Layer) -> None:
    """With non-finite inputs, a sample whose IEEE Jacobian holds NaN or Inf (a dead unit's
    row of non-finite weights included: 0 * inf = nan) has no rank: FloatingPointError."""
    bad = layer.nonfinite_samples()
    if bad is not None and bad.any():
        raise FloatingPointError(
            f"the Jacobian of sample {int(np.argmax(bad))} holds NaN or Inf (non-finite "
            "inputs with check_finite=False); no rank exists"
        )


def _squeeze(out: Any, squeeze: bool, want_values: bool) -> Any:
    if not squeeze:
        return out
    if want_values:
        return out[0][0], out[1][0]
    return out[0]


_NOTES = """Notes
    -----
    The result for each mask equals ``numpy.linalg.matrix_rank(A, tol=tol, rtol=rtol)`` on
    the kept rows A (k x n): singular values above tol, or above rtol * sigma_max, with the
    default rtol = max(k, n) * eps of the dtype (k = the number of kept rows, not m); an
    empty mask has rank 0.

    Method and guarantee (backend "cpp"): full rank p = min(k, n) is certified from the
    Gram matrix G of A in double precision (k <= n: gathered from W W^T; k > n: A^T A by
    one syrk). Let need = twice the tolerance (with ||A||_F >= sigma_max) plus
    16 max(k, n) eps ||A||_F. If the Cholesky factorisation of G - c I, with c = need^2
    plus a bound on the rounding of forming and factoring G (Rump, "Verification of
    positive definiteness", BIT 2006), runs to completion, then sigma_min(A) > need: every
    singular value numpy would compute is above numpy's threshold, so the answer is p.
    Otherwise the singular values of A (in the input precision, accurate as LAPACK's gesdd
    that numpy uses: jacgeom's own bidiagonalisation and LAPACK's dqds up to 4 MiB, gesdd
    above) decide, as in numpy; a singular value within rounding of the threshold can be
    counted differently from numpy. The Gram matrix never decides a rank below full. Backend
    "numba" always uses the singular values; "numpy" calls numpy.linalg.matrix_rank per
    mask. Identical masks are computed once."""


@overload
def masked_rank(
    W: ArrayLike,
    mask: ArrayLike,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    return_singular_values: Literal[False] = ...,
) -> IntArray: ...


@overload
def masked_rank(
    W: ArrayLike,
    mask: ArrayLike,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    *,
    return_singular_values: Literal[True],
) -> tuple[IntArray, FloatArray]: ...


@overload
def masked_rank(
    W: ArrayLike,
    mask: ArrayLike,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    return_singular_values: bool = ...,
) -> IntArray | tuple[IntArray, FloatArray]: ...


def masked_rank(
    W: ArrayLike,
    mask: ArrayLike,
    tol: float | None = None,
    rtol: float | None = None,
    backend: BackendName = "auto",
    check_finite: bool = True,
    return_singular_values: bool = False,
) -> IntArray | tuple[IntArray, FloatArray]:
    _validation.flag("return_singular_values", return_singular_values)
    resolved = _backends.resolve(backend)
    tol, rtol = _validation.tolerances(tol, rtol)
    Wk = _validation.weight_matrix(W, check_finite)
    if isinstance(mask, np.ma.MaskedArray):
        # As W and X (_validation.as_float_array): np.asarray would read its masked entries,
        # arbitrary data, as rows kept or dropped.
        raise TypeError("mask is a masked array; pass mask.filled(value) or the mask you mean")
    masks, squeeze = _validation.mask_array(mask, Wk.shape[0])
    if not check_finite:
        _require_finite_rows(Wk, masks)
    return _ranks_of_masks(Wk, masks, squeeze, tol, rtol, resolved, bool(return_singular_values))


masked_rank.__doc__ = f"""Rank of W restricted to the rows each mask keeps: rank(W[mask[b]]).

    Parameters
    ----------
    W : (m, n) array_like
        Weight matrix.
    mask : (B, m) or (m,) array_like of bool
        Rows kept (True). 0/1 integers are accepted; a 1-D mask gives scalar results.
    tol : float, optional
        Absolute threshold: singular values above it count.
    rtol : float, optional
        Relative threshold (times sigma_max). Cannot be given with ``tol``.
    backend : {{"auto", "cpp", "numba", "numpy"}}, default "auto"
    check_finite : bool, default True
        Raise ValueError on NaN or Inf in W.
    return_singular_values : bool, default False
        Also return the singular values of W[mask[b]] that decided each rank, descending,
        padded with zeros to min(m, n) (the values of D W with the dropped rows zeroed).

    Returns
    -------
    rank : (B,) int64 ndarray, or int64 scalar for a 1-D mask
    singular_values : (B, min(m, n)) ndarray, only with ``return_singular_values``
        Computing them makes every rank SVD-based (slower).

    {_NOTES}

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> W = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    >>> jacgeom.masked_rank(W, [[True, True, False], [True, False, True], [False] * 3]).tolist()
    [1, 2, 0]
    >>> r, s = jacgeom.masked_rank(W, [True, True, False], return_singular_values=True)
    >>> int(r), s.round(6).tolist()
    (1, [2.236068, 0.0])
    """


@overload
def active_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    return_singular_values: Literal[False] = ...,
) -> IntArray: ...


@overload
def active_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    *,
    return_singular_values: Literal[True],
) -> tuple[IntArray, FloatArray]: ...


@overload
def active_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    return_singular_values: bool = ...,
) -> IntArray | tuple[IntArray, FloatArray]: ...


def active_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    tol: float | None = None,
    rtol: float | None = None,
    backend: BackendName = "auto",
    check_finite: bool = True,
    return_singular_values: bool = False,
) -> IntArray | tuple[IntArray, FloatArray]:
    _validation.flag("return_singular_values", return_singular_values)
    tol, rtol = _validation.tolerances(tol, rtol)
    layer = _Layer(W, X, b, "relu", backend, check_finite)
    masks = layer.preactivations() > 0
    _require_finite_jacobians(layer)
    return _ranks_of_masks(
        layer.W, masks, layer.squeeze, tol, rtol, layer.backend, bool(return_singular_values)
    )


active_rank.__doc__ = f"""Rank of a relu layer's Jacobian: masked_rank with mask = (W x + b > 0).

    Parameters
    ----------
    W : (m, n) array_like
    X : (B, n) or (n,) array_like
    b : (m,) array_like, optional
    tol, rtol : float, optional
        As in :func:`masked_rank`.
    backend : {{"auto", "cpp", "numba", "numpy"}}, default "auto"
    check_finite : bool, default True
    return_singular_values : bool, default False

    Returns
    -------
    rank : (B,) int64 ndarray (int64 scalar for a 1-D X)
    singular_values : (B, min(m, n)) ndarray, only with ``return_singular_values``

    {_NOTES}

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> jacgeom.active_rank(np.eye(3), [[1.0, 2.0, 3.0], [1.0, -2.0, 3.0]]).tolist()
    [3, 2]
    """


@overload
def jacobian_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationName | Activation = ...,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    return_singular_values: Literal[False] = ...,
    exact: bool = ...,
) -> IntArray: ...


@overload
def jacobian_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationName | Activation = ...,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    *,
    return_singular_values: Literal[True],
    exact: bool = ...,
) -> tuple[IntArray, FloatArray]: ...


@overload
def jacobian_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationName | Activation = ...,
    tol: float | None = ...,
    rtol: float | None = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    return_singular_values: bool = ...,
    exact: bool = ...,
) -> IntArray | tuple[IntArray, FloatArray]: ...


def jacobian_rank(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationName | Activation = "relu",
    tol: float | None = None,
    rtol: float | None = None,
    backend: BackendName = "auto",
    check_finite: bool = True,
    return_singular_values: bool = False,
    exact: bool = False,
) -> IntArray | tuple[IntArray, FloatArray]:
    _validation.flag("return_singular_values", return_singular_values)
    _validation.flag("exact", exact)
    tol, rtol = _validation.tolerances(tol, rtol)
    layer = _Layer(W, X, b, activation, backend, check_finite)
    want = bool(return_singular_values)
    act = layer.act
    # z not finite, phi' NaN or infinite, or a Jacobian entry that overflows at finite inputs
    # is a FloatingPointError here, before any rank (it was counted as rank 0). A built-in's
    # phi' needs computing only where a rank is read from it.
    layer.preactivations()
    if act.is_custom or layer.jacobian_may_overflow():
        layer.derivatives()
    _require_finite_jacobians(layer)
    if exact:
        live = (
            layer.derivatives() != 0
            if act.is_custom
            else ~act.derivative_is_zero(layer.preactivations())
        )
        return _ranks_of_masks(layer.W, live, layer.squeeze, tol, rtol, layer.backend, want)
    if act.name == "relu" and not act.is_custom:
        return _ranks_of_masks(
            layer.W, layer.preactivations() > 0, layer.squeeze, tol, rtol, layer.backend, want
        )
    D = np.ascontiguousarray(layer.derivatives())
    ranks, values = _compiled_rank(layer.W, D, tol, rtol, layer.backend, want)
    return _squeeze((ranks, values) if want else ranks, layer.squeeze, want)


jacobian_rank.__doc__ = f"""Numerical or exact rank of the layer Jacobian D_phi(z) W, for any
    activation.

    Numerical rank (default): the rank of the non-zero rows phi'(z_i) w_i (k of them), with
    numpy.linalg.matrix_rank's tolerance on that k x n matrix; for relu this is
    :func:`active_rank`. It drops where phi' is small (a saturated unit's row is rounding
    next to the others).

    Exact rank (``exact=True``): the number of singular values of D_phi(z) W that are
    non-zero in exact arithmetic. Only units whose phi' is zero mathematically
    (:meth:`Activation.derivative_is_zero`: relu's z <= 0, a custom activation's exact
    zeros) delete rows; every other row counts however small phi' is, so the answer is the
    rank of W's rows at those units, decided by the same rule on the unscaled rows (where
    a single weight matrix's own conditioning is all that matters).

    Parameters
    ----------
    W : (m, n) array_like
    X : (B, n) or (n,) array_like
    b : (m,) array_like, optional
    activation : str or Activation, default "relu"
    tol, rtol : float, optional
        As in :func:`masked_rank`.
    backend : {{"auto", "cpp", "numba", "numpy"}}, default "auto"
    check_finite : bool, default True
    return_singular_values : bool, default False
        With ``exact=True``, the singular values of the unscaled live rows.
    exact : bool, default False

    Returns
    -------
    rank : (B,) int64 ndarray (int64 scalar for a 1-D X)
    singular_values : (B, min(m, n)) ndarray, only with ``return_singular_values``

    {_NOTES}

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> W1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> x = [[1000.0, 1.0]]  # the first tanh unit saturates: tanh'(1000) underflows to 0
    >>> jacgeom.jacobian_rank(W1, x, activation="tanh").tolist()
    [1]
    >>> jacgeom.jacobian_rank(W1, x, activation="tanh", exact=True).tolist()
    [2]
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> jacgeom.jacobian_rank(W, [[1.0, -1.0]], activation="relu").tolist()
    [1]
    >>> jacgeom.jacobian_rank(W, [[1.0, -1.0]], activation="tanh").tolist()
    [2]
    """
