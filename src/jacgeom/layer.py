"""Single-layer kernels: the Jacobian D_phi(z) W of x -> phi(W x + b) and what derives from it.

Every function validates its inputs (jacgeom._validation), resolves the backend and
dispatches through jacgeom._dispatch. The pre-activations Z = X W^T + b are one BLAS gemm
(through numpy) in every backend; the backends differ in what they do with d = phi'(Z): the
compiled ones never form the (B, m, n) Jacobian unless it is the result asked for, and skip
the rows where d_i = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backends, _dispatch, _validation, reference
from .activations import Activation
from .activations import activation as _lookup
from .typing import ActivationName, BackendName, Float32Array, Float64Array

__all__ = [
    "layer_derivatives",
    "layer_jacobian",
    "layer_singular_values",
    "log_volume",
    "preactivations",
    "pullback_metric",
]

FloatArray = NDArray[np.floating[Any]]
ActivationLike = ActivationName | Activation


class _Layer:
    """Validated inputs of one call, and the values every function derives from them.

    The non-finite rule (the same on every backend, documented in :func:`layer_jacobian`):

    - finite inputs: a NaN pre-activation, a NaN or infinite phi', or a Jacobian entry
      phi'(z_i) w_ij that overflows is a FloatingPointError; so is a result that overflows
      the float range after the stable scaling (``_scaled``);
    - non-finite inputs (only with ``check_finite=False``): IEEE 754 arithmetic, J = phi'(z) w
      entry by entry (0 * nan = nan, 0 * inf = nan: a dead unit's row of non-finite weights
      is NaN, never skipped), and what a sample with a non-finite J derives is NaN.
    """

    def __init__(
        self, W: Any, X: Any, b: Any, activation: Any, backend: Any, check_finite: bool
    ) -> None:
        self.backend = _backends.resolve(backend)
        self.act = _lookup(activation)
        self.W, self.X, self.b, self.squeeze = _validation.layer_inputs(W, X, b, check_finite)
        self.finite_inputs = check_finite or _validation.all_finite(self.W, self.X, self.b)
        # phi' uses the parameter rounded to the working dtype: one finite in float64 only
        # (alpha = 1e39 in float32) would make phi' infinite at finite inputs.
        _validation.activation_parameter(self.act, self.W.dtype, "the dtype of W and X")
        self._Z: FloatArray | None = None
        self._D: FloatArray | None = None
        self._may_overflow: bool | None = None
        self._w_absmax: float | None = None

    def w_absmax(self) -> float:
        """max |w_ij| (0 for an empty W), computed once per call."""
        if self._w_absmax is None:
            self._w_absmax = float(np.max(np.abs(self.W), initial=0.0))
        return self._w_absmax

    def out(self, result: FloatArray) -> FloatArray:
        return result[0] if self.squeeze else result

    def preactivations(self) -> FloatArray:
        """Z = X W^T + b, (B, m); not finite from finite inputs raises (as in Network)."""
        if self._Z is None:
            with np.errstate(over="ignore", invalid="ignore"):  # decided here, not warned
                Z = reference.preactivations(self.W, self.X, self.b)
            # An overflowing sum is not the limit of anything: terms of both signs give NaN
            # or either infinity (BLAS's order decides; 2e308 - 2e308 came out -inf), and
            # relu or tanh would read a unit whose true z is 0 as dead or saturated.
            if self.finite_inputs and not np.isfinite(Z).all():
                raise FloatingPointError(
                    "the pre-activations W x + b are not finite for finite inputs (the sum "
                    "overflows the float range); no Jacobian exists in floating point"
                )
            self._Z = Z
        return self._Z

    def derivatives(self) -> FloatArray:
        """d = phi'(Z), (B, m), computed by the resolved backend and checked."""
        if self._D is None:
            D = _dispatch.derivatives(self.preactivations(), self.act, self.backend)
            # A built-in phi' is finite at finite z (activations.py) and bounded by 1.13 or
            # its parameter: only a custom one, or huge weights, need the passes over D.
            if self.finite_inputs and self.act.is_custom:
                _check_derivatives(D, self.act)
            if self.jacobian_may_overflow():
                _check_products(self.W, D)
            self._D = D
        return self._D

    def jacobian_may_overflow(self) -> bool:
        """Whether some phi'(z_i) w_ij can overflow at finite inputs, decided without
        computing phi' (a custom phi' is not bounded; a built-in's is 1.13 or its parameter)."""
        if not self.finite_inputs:
            return False  # IEEE arithmetic: nothing to check
        if self.act.is_custom:
            return True
        if self._may_overflow is None:
            amax = self.w_absmax()
            bound = max(2.0, abs(self.act.parameter))  # |phi'| <= 1.13 or the parameter
            self._may_overflow = amax * bound >= float(np.finfo(self.W.dtype).max) / 2
        return self._may_overflow

    def nonfinite_samples(self) -> NDArray[np.bool_] | None:
        """With non-finite inputs: the (B,) samples whose IEEE Jacobian holds NaN or Inf
        (None with finite inputs, where there are none)."""
        if self.finite_inputs:
            return None
        J = _dispatch.call("jacobian", self.backend, self.W, self.derivatives(), None)
        return np.asarray(~np.isfinite(J).all(axis=(1, 2)))


def _check_derivatives(D: FloatArray, act: Activation) -> None:
    if not np.isfinite(D).all():
        raise FloatingPointError(
            f"phi' of activation {act.name!r} is NaN or infinite at finite inputs; "
            "no Jacobian exists"
        )


def _check_products(W: FloatArray, D: FloatArray) -> None:
    # |phi'(z_i) w_ij| is largest at the row's largest |w_ij|, and rounding is monotone:
    # this product overflows exactly when some entry of J does.
    if W.size == 0 or D.size == 0:
        return
    row_max = np.max(np.abs(W), axis=1)
    with np.errstate(over="ignore"):
        overflow = np.isinf(np.abs(D) * row_max)
    if overflow.any():
        raise FloatingPointError(
            "the Jacobian phi'(z_i) w_ij overflows the float range at finite inputs; "
            "no Jacobian exists in floating point"
        )


def _check_result(result: FloatArray, what: str) -> None:
    if not np.isfinite(result).all():
        raise FloatingPointError(
            f"{what}: a value overflows the float range at finite inputs (its true value is "
            "beyond the largest float)"
        )


# Beyond 2^(+-maxexp / 3) the entries of J, or its singular values, could leave the float
# range (or lose bits as subnormals) inside a kernel; below it nothing is scaled.
def _scaled(
    W: FloatArray, D: FloatArray, w_absmax: float | None = None
) -> tuple[FloatArray, FloatArray, NDArray[np.int64]] | None:
    """(W', D', e) with W' = W 2^-c, D'[b] = D[b] 2^-a_b and e = a_b + c, so that
    D'[b] W' = 2^-e[b] D[b] W has entries of magnitude about 1, or None where no scaling is
    needed. ``w_absmax``: max |W| where the caller has it.

    Powers of two are exact: the singular values of D[b] W are 2^e[b] times those of D'[b] W'
    and its log-volume n e[b] log 2 more. Only an entry below 2^-1074 times the sample's
    largest can be lost (flushed to zero), far below any relative rank tolerance (an
    absolute tol is handled apart: rank._compiled_rank).
    """
    if W.size == 0 or D.size == 0:
        return None
    limit = np.finfo(W.dtype).maxexp // 3
    c = math.frexp(float(np.max(np.abs(W))) if w_absmax is None else w_absmax)[1]
    d_max = np.max(np.abs(D), axis=1)
    a = np.frexp(d_max)[1].astype(np.int64)
    e = a + c
    if not np.any((d_max > 0) & ((e > limit) | (e < -limit))):
        return None
    Ws = np.ldexp(W, -c).astype(W.dtype)
    Ds = np.ldexp(D, -a[:, None]).astype(D.dtype)
    return Ws, Ds, e


_PARAMETERS = """W : (m, n) array_like
        Weight matrix.
    X : (B, n) or (n,) array_like
        Input samples as rows; a 1-D X gives results without the batch axis.
    b : (m,) array_like, optional
        Bias.
    activation : str or Activation, default "relu"
        A name of :func:`jacgeom.activation_names` or an :class:`Activation`.
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        Implementation; "numpy" is the readable reference.
    check_finite : bool, default True
        Raise ValueError on NaN or Inf in W, X or b. With False they follow IEEE 754 on
        every backend: J = phi'(z) w entry by entry, 0 * nan = nan and 0 * inf = nan (a dead
        unit's row of non-finite weights is NaN, never skipped); a sample whose Jacobian holds
        NaN or Inf has NaN singular values and log-volume, the pullback metric J^T J in IEEE
        arithmetic, and no rank (FloatingPointError). From finite inputs, a pre-activation
        that overflows, a NaN or infinite phi' or a Jacobian entry or result beyond the float
        range is a FloatingPointError, whatever check_finite says."""

_OUT = """out : (B, m, n) ndarray, optional
        Write the result here (C-contiguous, the result's dtype, not overlapping the
        inputs) and return it; reusing one array across calls avoids the page faults of a
        fresh allocation, which cost more than the kernel itself at large sizes."""


_F = TypeVar("_F", bound=Callable[..., Any])


def _doc(text: str) -> Callable[[_F], _F]:
    def wrap(fn: _F) -> _F:
        fn.__doc__ = text.replace("{parameters}", _PARAMETERS).replace("{out}", _OUT)
        return fn

    return wrap


@overload
def preactivations(
    W: Float64Array,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def preactivations(
    W: ArrayLike,
    X: Float64Array,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def preactivations(
    W: ArrayLike,
    X: ArrayLike,
    b: Float64Array,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def preactivations(
    W: Float32Array,
    X: Float32Array,
    b: Float32Array | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float32Array: ...


@overload
def preactivations(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> FloatArray: ...


@_doc(
    """Pre-activations Z = X W^T + b.

    Parameters
    ----------
    {parameters}

    Returns
    -------
    Z : (B, m) or (m,) ndarray
        float32 when every input is float32 (or float16), else float64.

    Notes
    -----
    One BLAS gemm in every backend; ``activation`` is accepted for a uniform signature
    and ignored.

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> jacgeom.preactivations(np.eye(2), [1.0, -2.0], b=[0.5, 0.5]).tolist()
    [1.5, -1.5]
    """
)
def preactivations(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationLike = "relu",
    backend: BackendName = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    return layer.out(layer.preactivations())


@overload
def layer_derivatives(
    W: Float64Array,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def layer_derivatives(
    W: ArrayLike,
    X: Float64Array,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def layer_derivatives(
    W: ArrayLike,
    X: ArrayLike,
    b: Float64Array,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def layer_derivatives(
    W: Float32Array,
    X: Float32Array,
    b: Float32Array | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float32Array: ...


@overload
def layer_derivatives(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> FloatArray: ...


@_doc(
    """The diagonal d = phi'(W x + b) of D_phi for every sample.

    Parameters
    ----------
    {parameters}

    Returns
    -------
    d : (B, m) or (m,) ndarray

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> jacgeom.layer_derivatives(np.eye(2), [1.0, -2.0]).tolist()
    [1.0, 0.0]
    """
)
def layer_derivatives(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationLike = "relu",
    backend: BackendName = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    return layer.out(layer.derivatives())


@overload
def layer_jacobian(
    W: Float64Array,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    out: FloatArray | None = ...,
) -> Float64Array: ...


@overload
def layer_jacobian(
    W: ArrayLike,
    X: Float64Array,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    out: FloatArray | None = ...,
) -> Float64Array: ...


@overload
def layer_jacobian(
    W: ArrayLike,
    X: ArrayLike,
    b: Float64Array,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    out: FloatArray | None = ...,
) -> Float64Array: ...


@overload
def layer_jacobian(
    W: Float32Array,
    X: Float32Array,
    b: Float32Array | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    out: FloatArray | None = ...,
) -> Float32Array: ...


@overload
def layer_jacobian(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
    out: FloatArray | None = ...,
) -> FloatArray: ...


@_doc(
    """The layer Jacobian J = D_phi(z) W for every sample.

    Parameters
    ----------
    {parameters}

    {out}

    Returns
    -------
    J : (B, m, n) or (m, n) ndarray
        Row i of J[b] is phi'(z_bi) times row i of W.

    Notes
    -----
    Writes B m n numbers once: the compiled backends are bound by memory bandwidth. When
    only the metric, the spectrum or the volume is needed, call :func:`pullback_metric`,
    :func:`layer_singular_values` or :func:`log_volume`, which never form J.

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> W = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> jacgeom.layer_jacobian(W, [1.0, -1.0]).tolist()   # z = (-1, -1): both rows dead
    [[0.0, 0.0], [0.0, 0.0]]
    >>> jacgeom.layer_jacobian(W, [1.0, 0.0], activation="identity").tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
)
def layer_jacobian(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationLike = "relu",
    backend: BackendName = "auto",
    check_finite: bool = True,
    out: FloatArray | None = None,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    if out is not None:
        m, n = layer.W.shape
        shape = (m, n) if layer.squeeze else (layer.X.shape[0], m, n)
        inputs = (W, X, b, layer.W, layer.X, layer.b)
        _validation.output_array(out, shape, layer.W.dtype, inputs)
        target = out[None] if layer.squeeze else out
    else:
        target = None
    if layer.act.is_custom or layer.backend == "numpy" or layer.jacobian_may_overflow():
        J = _dispatch.call("jacobian", layer.backend, layer.W, layer.derivatives(), target)
    else:
        # phi' of a built-in evaluated inside the write (cpp); z NaN is checked first
        J = _dispatch.call(
            "jacobian_from_preactivations",
            layer.backend,
            layer.W,
            layer.preactivations(),
            layer.act,
            target,
        )
    return out if out is not None else layer.out(J)


@overload
def pullback_metric(
    W: Float64Array,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def pullback_metric(
    W: ArrayLike,
    X: Float64Array,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def pullback_metric(
    W: ArrayLike,
    X: ArrayLike,
    b: Float64Array,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def pullback_metric(
    W: Float32Array,
    X: Float32Array,
    b: Float32Array | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float32Array: ...


@overload
def pullback_metric(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> FloatArray: ...


@_doc(
    """The pullback metric G = W^T D_phi^2 W (the Gram matrix J^T J) for every sample.

    Parameters
    ----------
    {parameters}

    Returns
    -------
    G : (B, n, n) or (n, n) ndarray
        Symmetric positive semi-definite; g(u, v) = u^T G v is the metric the layer
        induces on its input space.

    Notes
    -----
    G = sum_i phi'(z_i)^2 w_i w_i^T over the rows w_i of W. The compiled backends gather the
    k rows with phi'(z_i) != 0, scaled, and form A^T A per sample (k n^2 flops), never the
    (B, m, n) Jacobian: the cpp backend with a register-tiled kernel of its own on x86-64
    with AVX2 or AVX-512 (BLAS syrk elsewhere, and for operands above 8 MiB), numba with
    one BLAS syrk.

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> W = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> jacgeom.pullback_metric(W, [1.0, 1.0]).tolist()
    [[1.0, 0.0], [0.0, 4.0]]
    """
)
def pullback_metric(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationLike = "relu",
    backend: BackendName = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    D = layer.derivatives()
    if not layer.finite_inputs:
        # IEEE: J^T J of the Jacobian as formed, dead rows of non-finite weights included
        J = _dispatch.call("jacobian", layer.backend, layer.W, D, None)
        with np.errstate(invalid="ignore", over="ignore"):
            return layer.out(np.matmul(np.swapaxes(J, -1, -2), J))
    with np.errstate(over="ignore", invalid="ignore"):  # decided below, not warned
        G = _dispatch.call("pullback_metric", layer.backend, layer.W, D)
    # |G_ij| <= m (max|d| max|w|)^2: below half the float range no entry can overflow, and
    # the pass over G (B n^2 entries, the largest array of the call) is skipped.
    m = layer.W.shape[0]
    top = float(np.max(np.abs(D), initial=0.0)) * layer.w_absmax()
    if not m * top * top < float(np.finfo(G.dtype).max) / 2:
        _check_result(G, "pullback metric")
    return layer.out(G)


@overload
def layer_singular_values(
    W: Float64Array,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def layer_singular_values(
    W: ArrayLike,
    X: Float64Array,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def layer_singular_values(
    W: ArrayLike,
    X: ArrayLike,
    b: Float64Array,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def layer_singular_values(
    W: Float32Array,
    X: Float32Array,
    b: Float32Array | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float32Array: ...


@overload
def layer_singular_values(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> FloatArray: ...


@_doc(
    """Singular values of the layer Jacobian D_phi(z) W for every sample, descending.

    Parameters
    ----------
    {parameters}

    Returns
    -------
    s : (B, min(m, n)) or (min(m, n),) ndarray

    Notes
    -----
    They are not the singular values of W scaled entry by entry; only the bounds
    min|d_i| sigma_k(W) <= sigma_k(D W) <= max|d_i| sigma_k(W) hold. The compiled backends
    compute the values of the k x n matrix of rows with phi'(z_i) != 0 and append
    min(m, n) - min(k, n) exact zeros: numba by LAPACK's gesdd (values only); cpp by a
    Householder bidiagonalisation of its own up to 4 MiB per matrix (the reflectors of
    LAPACK's, backward stable alike, vectorised for the machine) and LAPACK's dqds on the
    bidiagonal, gesdd above. Each value is accurate to a small multiple of
    max(m, n) eps sigma_max, as gesdd's are.

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> W = np.array([[3.0, 0.0], [0.0, 2.0]])
    >>> jacgeom.layer_singular_values(W, [1.0, 1.0]).round(12).tolist()
    [3.0, 2.0]
    >>> jacgeom.layer_singular_values(W, [1.0, -1.0]).round(12).tolist()
    [3.0, 0.0]
    """
)
def layer_singular_values(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationLike = "relu",
    backend: BackendName = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    return layer.out(_spectrum(layer, "singular_values"))


@overload
def log_volume(
    W: Float64Array,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def log_volume(
    W: ArrayLike,
    X: Float64Array,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def log_volume(
    W: ArrayLike,
    X: ArrayLike,
    b: Float64Array,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float64Array: ...


@overload
def log_volume(
    W: Float32Array,
    X: Float32Array,
    b: Float32Array | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> Float32Array: ...


@overload
def log_volume(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = ...,
    activation: ActivationLike = ...,
    backend: BackendName = ...,
    check_finite: bool = ...,
) -> FloatArray: ...


@_doc(
    """Log-volume 0.5 log det(W^T D_phi^2 W) of the layer at every sample (m >= n).

    Parameters
    ----------
    {parameters}

    Returns
    -------
    v : (B,) ndarray or scalar ndarray
        The sum of the log singular values of J = D_phi W; -inf where J has numerical
        rank < n (numpy.linalg.matrix_rank's tolerance: sigma_max * max(m, n) * eps).

    Raises
    ------
    ValueError
        If W has fewer rows than columns (the volume element is 0 for every input).

    Notes
    -----
    The C++ backend needs no SVD in the common case: with k < n non-zero phi'(z_i) the
    answer is -inf exactly; otherwise a Householder QR of the k x n active rows gives
    |det R| = prod sigma_i, and full rank is certified by sigma_min >= 1 / ||R^-1||_F
    exceeding 8 times the tolerance bound ||R||_F max(m, n) eps. Only when the certificate
    fails do the singular values of R decide, exactly as numpy would.

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> W = np.diag([2.0, 3.0])
    >>> float(jacgeom.log_volume(W, [1.0, 1.0]))          # log 6
    1.791759469228055
    >>> float(jacgeom.log_volume(W, [1.0, -1.0]))         # a dead unit: singular
    -inf
    """
)
def log_volume(
    W: ArrayLike,
    X: ArrayLike,
    b: ArrayLike | None = None,
    activation: ActivationLike = "relu",
    backend: BackendName = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    m, n = layer.W.shape
    if m < n:
        raise ValueError(
            f"W has shape {layer.W.shape}; log_volume needs m >= n (at least as many rows as "
            "columns), otherwise the volume element is 0 for every input"
        )
    return layer.out(_spectrum(layer, "log_volume"))


def _spectrum(layer: _Layer, name: str) -> FloatArray:
    """Kernel ``name`` ("singular_values" or "log_volume") of every sample, by the rule of
    _Layer: scaled by powers of two where J's entries are near the ends of the float range,
    NaN for the samples whose Jacobian is not finite (non-finite inputs), and LAPACK never
    sees a non-finite matrix."""
    D = layer.derivatives()
    W = layer.W
    n = W.shape[1]
    bad = layer.nonfinite_samples()
    if bad is not None and bad.any():
        good = ~bad
        shape = (D.shape[0], min(W.shape)) if name == "singular_values" else (D.shape[0],)
        out = np.full(shape, np.nan, dtype=W.dtype)
        if good.any():
            out[good] = _dispatch.call(name, layer.backend, W, np.ascontiguousarray(D[good]))
        return out
    scaled = _scaled(W, D, layer.w_absmax())
    if scaled is None:
        result = _dispatch.call(name, layer.backend, W, D)
    else:
        Ws, Ds, e = scaled
        result = _dispatch.call(name, layer.backend, Ws, Ds)
        if name == "singular_values":
            with np.errstate(over="ignore"):
                result = np.ldexp(result, e[:, None]).astype(W.dtype)
        else:
            result = (result.astype(np.float64) + n * e * np.log(2.0)).astype(W.dtype)
    if layer.finite_inputs:
        finite = result if name == "singular_values" else result[~np.isneginf(result)]
        _check_result(finite, "singular values" if name == "singular_values" else "log-volume")
    return result
