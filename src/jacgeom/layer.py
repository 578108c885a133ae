"""Single-layer kernels: the Jacobian D_phi(z) W of x -> phi(W x + b) and what derives from it.

Every function validates its inputs (jacgeom._validation), resolves the backend and
dispatches through jacgeom._dispatch. The pre-activations Z = X W^T + b are one BLAS gemm
(through numpy) in every backend; the backends differ in what they do with d = phi'(Z): the
compiled ones never form the (B, m, n) Jacobian unless it is the result asked for, and skip
the rows where d_i = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backends, _dispatch, _validation, reference
from .activations import Activation
from .activations import activation as _lookup

__all__ = [
    "layer_derivatives",
    "layer_jacobian",
    "layer_singular_values",
    "log_volume",
    "preactivations",
    "pullback_metric",
]

FloatArray = NDArray[np.floating[Any]]
ActivationLike = str | Activation


class _Layer:
    """Validated inputs of one call."""

    def __init__(
        self, W: Any, X: Any, b: Any, activation: Any, backend: Any, check_finite: bool
    ) -> None:
        self.backend = _backends.resolve(backend)
        self.act = _lookup(activation)
        self.W, self.X, self.b, self.squeeze = _validation.layer_inputs(W, X, b, check_finite)

    def out(self, result: FloatArray) -> FloatArray:
        return result[0] if self.squeeze else result

    def preactivations(self) -> FloatArray:
        return reference.preactivations(self.W, self.X, self.b)

    def derivatives(self) -> FloatArray:
        """d = phi'(Z), (B, m), computed by the resolved backend."""
        return _dispatch.derivatives(self.preactivations(), self.act, self.backend)


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
        Raise ValueError on NaN or Inf in W, X or b."""

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
    backend: str = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    return layer.out(layer.preactivations())


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
    backend: str = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    return layer.out(layer.derivatives())


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
    backend: str = "auto",
    check_finite: bool = True,
    out: FloatArray | None = None,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    if out is not None:
        m, n = layer.W.shape
        shape = (m, n) if layer.squeeze else (layer.X.shape[0], m, n)
        _validation.output_array(out, shape, layer.W.dtype, (W, X, layer.W, layer.X))
        target = out[None] if layer.squeeze else out
    else:
        target = None
    if layer.backend == "numpy":
        J = reference.layer_jacobian(layer.W, layer.X, layer.b, layer.act)
        if target is None:
            return layer.out(J)
        target[...] = J
        return out  # type: ignore[return-value]
    if layer.act.is_custom:
        J = _dispatch.call("jacobian", layer.backend, layer.W, layer.derivatives(), target)
    else:
        J = _dispatch.call(
            "jacobian_from_preactivations",
            layer.backend,
            layer.W,
            layer.preactivations(),
            layer.act,
            target,
        )
    return out if out is not None else layer.out(J)


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
    backend: str = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    if layer.backend == "numpy":
        return layer.out(reference.pullback_metric(layer.W, layer.X, layer.b, layer.act))
    D = layer.derivatives()
    return layer.out(_dispatch.call("pullback_metric", layer.backend, layer.W, D))


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
    backend: str = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    if layer.backend == "numpy":
        return layer.out(reference.layer_singular_values(layer.W, layer.X, layer.b, layer.act))
    D = layer.derivatives()
    return layer.out(_dispatch.call("singular_values", layer.backend, layer.W, D))


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
    backend: str = "auto",
    check_finite: bool = True,
) -> FloatArray:
    layer = _Layer(W, X, b, activation, backend, check_finite)
    m, n = layer.W.shape
    if m < n:
        raise ValueError(
            f"W has shape {layer.W.shape}; log_volume needs m >= n (at least as many rows as "
            "columns), otherwise the volume element is 0 for every input"
        )
    if layer.backend == "numpy":
        return layer.out(reference.log_volume(layer.W, layer.X, layer.b, layer.act))
    D = layer.derivatives()
    return layer.out(_dispatch.call("log_volume", layer.backend, layer.W, D))
