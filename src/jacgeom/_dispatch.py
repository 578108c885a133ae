"""The dispatch layer: one table from each kernel's name to its numpy, numba and cpp
implementations, and the helpers every public module shares.

This module (with jacgeom._backends, which loads the compiled modules) is the only code that
touches ``jacgeom._core`` and ``jacgeom._numba``; tests/test_architecture.py enforces it and
docs/architecture.md draws the layers. A public module validates its inputs
(jacgeom._validation), resolves the backend name (``_backends.resolve``) and calls:

``call(name, backend, *args)``
    Run kernel ``name`` on ``backend`` ("cpp", "numba", "numpy" or "auto"). Where the table
    marks the kernel ``per_sample_blas`` and a compiled implementation runs, scipy's BLAS is
    pinned to one thread for the call (``_backends.single_threaded_blas``).
``kernel(name, backend)``
    The implementation itself, without the pin.
``derivatives(Z, act, backend)``
    phi'(Z) for an Activation: the one rule, custom activations included.
``activation_values(Z, act, backend)``
    phi(Z) for an Activation: the forward pass's rule.
``batched_singular_values(A, backend)``
    Singular values of a (B, r, c) stack, BLAS pinned on the compiled backends.
``matrix_rank_count(s, shape, tolerance)``
    numpy.linalg.matrix_rank's count from singular values.
``Tolerance(tol, rtol)``
    matrix_rank's tolerance; the kernels convert it to the compiled encodings in one place.

Every implementation of a kernel takes the same arguments and returns the same result (up
to rounding); ``KERNELS[name].signature`` states them. A backend without an implementation
of a kernel runs the next one loaded, in the order cpp, numba, numpy: ``place_live_rows`` and
``graded_log_singular_values`` have no C++ version ("cpp" runs numba's), the chain and
spectral kernels no Numba version ("numba" runs the numpy twin). Arrays reach the compiled
implementations C-contiguous with one float dtype, as jacgeom._validation makes them.

Adding a kernel: its numpy twin in jacgeom.reference (or here, where it only adapts a
reference function to the kernel's calling convention), the Numba kernel in jacgeom._numba,
the C++ kernel and its binding in csrc/, and one ``_entry(...)`` in ``KERNELS`` below.
Adding a backend: load its module in ``_backends.compiled_modules`` and give the kernels
that it implements one more keyword in their entries.

Converting a module: replace

- ``_derivatives(Z, act, be)`` by ``derivatives(Z, act, be)`` (a custom activation then takes
  layer.py's rule: numba-compiled where numba compiles it);
- ``_batched_singular_values(J, be)`` by ``batched_singular_values(J, be)``; with "numpy" it
  is ``numpy.linalg.svd(J, compute_uv=False)``;
- ``_count_rank(s, shape, tol, rtol)`` (and montecarlo's ``_count``, ``_rank_of_rows``,
  kernel_layer's count) by ``matrix_rank_count(s, shape, Tolerance(tol, rtol))``; shape's
  rows may be a (B,) array of live-row counts;
- ``core.chain_active(Ws, Ds, reverse)`` by ``call("chain_active", be, Ws, Ds, reverse)``,
  and likewise ``chain_singular_values``, ``spectral_summary``, ``spectral_summary_rows``;
- ``core.chain_rank(Ws, Ds, tol_or_nan, rtol_or_default, given)`` by
  ``call("chain_rank", be, Ws, Ds, Tolerance(tol, rtol))``;
- ``core.masked_rank(W, D, None, 0, 0.0, False)[0]`` by
  ``call("masked_rank", be, W, D, DEFAULT_TOLERANCE, False, row_gram=False)[0]``
  (``row_gram=True``, the default, lets the C++ kernel gather from one W W^T as
  jacgeom.masked_rank does);
- ``numba_kernels.place_live_rows(...)`` by ``call("place_live_rows", "auto", ...)`` (numba's
  when it loaded, else the numpy twin), ``numba_kernels.graded_log_singular_values(g, V)`` by
  ``call("graded_log_singular_values", "auto", g, V)``.

Examples
--------
>>> import numpy as np
>>> from jacgeom import _dispatch
>>> from jacgeom.activations import activation
>>> Z = np.array([[1.0, -2.0], [0.5, 3.0]])
>>> _dispatch.derivatives(Z, activation("relu"), "numpy").tolist()
[[1.0, 0.0], [1.0, 1.0]]
>>> J = np.array([[[3.0, 0.0], [0.0, 1e-20]]])
>>> s = _dispatch.batched_singular_values(J, "numpy")
>>> _dispatch.matrix_rank_count(s, J.shape[1:], _dispatch.Tolerance()).tolist()
[1]
>>> Ws, Ds = [np.eye(2)], [np.array([[1.0, 0.0]])]
>>> _dispatch.call("chain_rank", "numpy", Ws, Ds, _dispatch.Tolerance(rtol=1e-3)).tolist()
[1]
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import _backends
from .activations import Activation
from .reference import graded as _reference_graded
from .reference import montecarlo as _reference_montecarlo
from .reference.layer import svd_values
from .reference.rank import rank_and_values

__all__ = [
    "DEFAULT_TOLERANCE",
    "KERNELS",
    "Kernel",
    "Tolerance",
    "activation_values",
    "batched_singular_values",
    "call",
    "derivatives",
    "implementations",
    "kernel",
    "matrix_rank_count",
]

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]

# ---------------------------------------------------------------------------------------
# The tolerance


class Tolerance(NamedTuple):
    """numpy.linalg.matrix_rank's tolerance, as every rank in jacgeom reads it.

    Singular values above ``tol`` count; with ``tol`` None, those above ``rtol`` times the
    largest; with both None, rtol = max(rows, cols) * eps of the values' dtype (numpy's
    default). At most one is given (jacgeom._validation.tolerances checks it first).

    The compiled kernels take it in three encodings; each is derived here, once:
    :meth:`masked_rank_mode` (masked_rank, C++ and Numba), :meth:`chain_rank_arguments`
    (chain_rank); spectral_summary takes none and applies the default.
    """

    tol: float | None = None
    rtol: float | None = None

    def masked_rank_mode(self) -> tuple[int, float]:
        """(mode, value) of the masked-rank kernels (rank.hpp's RankTolerance): mode 0 is
        numpy's default rtol, 1 an absolute tol, 2 a relative rtol."""
        if self.tol is not None:
            return 1, float(self.tol)
        if self.rtol is not None:
            return 2, float(self.rtol)
        return 0, 0.0

    def chain_rank_arguments(
        self, shape: tuple[int, int], dtype: np.dtype[Any]
    ) -> tuple[float, float, bool]:
        """(tol, rtol, rtol_given) of ``_core.chain_rank`` for (rows, cols) matrices of dtype:
        tol NaN when not given; rtol the given one or numpy's default; rtol_given makes the
        kernel compare in double, as numpy does for an rtol passed to it (its default rtol is
        compared in the values' precision)."""
        if self.tol is not None:
            return float(self.tol), np.nan, False
        if self.rtol is not None:
            return np.nan, float(self.rtol), True
        return np.nan, max(shape) * float(np.finfo(dtype).eps), False


DEFAULT_TOLERANCE = Tolerance()


def matrix_rank_count(
    s: FloatArray,
    shape: tuple[Any, int],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> IntArray:
    """numpy.linalg.matrix_rank's count from the singular values of a stack of matrices.

    Parameters
    ----------
    s : (B, p) ndarray
        Singular values of each matrix, descending (s[:, 0] the largest).
    shape : (rows, cols)
        The matrices' shape; ``rows`` may be a (B,) int array when it differs per matrix
        (the rows that are not exactly zero, as for a Jacobian's live units).
    tolerance : Tolerance, default numpy's

    Returns
    -------
    (B,) int64 ndarray

    Notes
    -----
    As numpy compares: against a tol or rtol given in float64 (numpy takes ``asarray`` of
    them), against the default sigma_max * max(rows, cols) * eps in the values' precision.

    Examples
    --------
    >>> s = np.array([[2.0, 1e-17], [1.0, 0.5]])
    >>> matrix_rank_count(s, (2, 2)).tolist(), matrix_rank_count(s, (2, 2), Tolerance(0.7)).tolist()
    ([1, 2], [1, 1])
    """
    if s.shape[1] == 0:
        return np.zeros(s.shape[0], dtype=np.int64)
    if tolerance.tol is not None:
        t = np.full(s.shape[0], tolerance.tol)
    elif tolerance.rtol is not None:
        t = s[:, 0].astype(np.float64) * tolerance.rtol
    else:
        rows, cols = shape
        eps = np.finfo(s.dtype).eps
        # A Python int times eps stays in the values' dtype, as in numpy; per-matrix row
        # counts (an int array) make the threshold float64.
        factor = max(int(rows), cols) * eps if np.ndim(rows) == 0 else np.maximum(rows, cols) * eps
        t = s[:, 0] * factor
    return np.count_nonzero(s > t[:, None], axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------
# numpy twins in the kernels' calling convention. They adapt the readable reference
# (jacgeom.reference) to the compiled kernels' arguments: derivatives D instead of inputs X,
# masks as scale rows, chains of layers.


def _numpy_derivatives(Z: FloatArray, act: Activation) -> FloatArray:
    return act.derivative(Z)


#: Activations whose numpy phi is worth splitting over threads: gelu's scipy.special.erfc is scalar
#: code (Cephes) at ~14 ns per element, ten times numpy's vectorised exp-based phis. Scalar
#: elementwise code gives every element the same value whatever chunk it is in.
_THREADED_PHI = frozenset({"gelu"})

#: Activations whose phi the cpp backend evaluates in C++ (jacgeom._core.values).
_COMPILED_PHI = frozenset({"gelu"})

#: Elements per thread below which the split is not worth a thread's start (~50 us, the
#: time of ~4,000 erfc evaluations).
_THREADED_PHI_MIN = 1 << 15


def _numpy_activation_values(Z: FloatArray, act: Activation) -> FloatArray:
    # act.phi(Z) bit for bit; gelu's on a large Z in contiguous chunks over
    # jacgeom.get_num_threads() threads (scipy's erfc releases the GIL).
    n = min(_backends.get_num_threads(), Z.size // _THREADED_PHI_MIN)
    if act.is_custom or act.name not in _THREADED_PHI or n <= 1 or not Z.flags.c_contiguous:
        return act.phi(Z)  # (act.phi keeps a Fortran-ordered Z's layout)
    flat = Z.reshape(-1)
    out = np.empty_like(flat)
    bounds = [flat.size * t // n for t in range(n + 1)]
    # numpy's error state is per thread (a context variable a new thread does not inherit):
    # each chunk runs under the caller's, and an error it raises is raised here.
    state: dict[str, Any] = {**np.geterr(), "call": np.geterrcall()}
    raised: list[BaseException] = []

    def chunk(t: int) -> None:
        try:
            with np.errstate(**state):
                out[bounds[t] : bounds[t + 1]] = act.phi(flat[bounds[t] : bounds[t + 1]])
        except BaseException as error:  # re-raised on the calling thread
            raised.append(error)

    threads = [threading.Thread(target=chunk, args=(t,)) for t in range(1, n)]
    for thread in threads:
        thread.start()
    chunk(0)
    for thread in threads:
        thread.join()
    if raised:
        raise raised[0]
    return out.reshape(Z.shape)


def _numpy_jacobian(W: FloatArray, D: FloatArray, out: FloatArray | None = None) -> FloatArray:
    # IEEE without warnings: 0 * inf = nan is the documented rule (check_finite=False), as
    # the compiled kernels compute it silently
    with np.errstate(invalid="ignore", over="ignore"):
        J = D[:, :, None] * W
    if out is None:
        return J
    out[...] = J
    return out


def _numpy_jacobian_from_preactivations(
    W: FloatArray, Z: FloatArray, act: Activation, out: FloatArray | None = None
) -> FloatArray:
    return _numpy_jacobian(W, act.derivative(Z), out)


def _numpy_pullback_metric(W: FloatArray, D: FloatArray) -> FloatArray:
    J = D[:, :, None] * W
    return np.swapaxes(J, -1, -2) @ J


def _numpy_singular_values(W: FloatArray, D: FloatArray) -> FloatArray:
    return svd_values(D[:, :, None] * W)


def _numpy_log_volume(W: FloatArray, D: FloatArray) -> FloatArray:
    m, n = W.shape
    s = svd_values(D[:, :, None] * W)
    if n == 0:
        return np.zeros(D.shape[0], dtype=W.dtype)
    full = matrix_rank_count(s, (m, n)) == n
    with np.errstate(divide="ignore"):
        logs = np.sum(np.log(s), axis=1)
    return np.where(full, logs, -np.inf).astype(W.dtype)


def _numpy_batched_singular_values(A: FloatArray) -> FloatArray:
    return np.linalg.svd(A, compute_uv=False)


def _numpy_masked_rank(
    W: FloatArray,
    scale: FloatArray,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    want_values: bool = False,
    row_gram: bool = True,
) -> tuple[IntArray, FloatArray]:
    U, m = scale.shape
    p = min(m, W.shape[-1])
    ranks = np.zeros(U, dtype=np.int64)
    values = np.zeros((U, p), dtype=W.dtype)
    for u in range(U):
        Wu = W if W.ndim == 2 else W[u]
        keep = scale[u] != 0
        A = scale[u, keep, None] * Wu[keep]
        ranks[u], values[u] = rank_and_values(A, tolerance.tol, tolerance.rtol, p)
    return ranks, values


def _numpy_chain_active(
    Ws: Sequence[FloatArray],
    Ds: Sequence[FloatArray],
    reverse: bool = False,
    out: FloatArray | None = None,
) -> FloatArray:
    # ``reverse`` chooses the compiled kernel's order of multiplication only.
    J = Ds[0][:, :, None] * Ws[0]
    for W, d in zip(Ws[1:], Ds[1:], strict=True):
        J = (d[:, :, None] * W) @ J
    if out is None:
        return np.ascontiguousarray(J)
    out[...] = J
    return out


def _numpy_network_jacobian_one(
    Ws: Sequence[FloatArray],
    bs: Sequence[FloatArray],
    acts: Sequence[Activation],
    x: FloatArray,
    J: FloatArray,
) -> int:
    # The C-level network_jacobian at one input: J written, status 0 or -5 (a pre-activation
    # or an entry of J not finite).
    h, P = x, np.eye(x.shape[0], dtype=x.dtype)
    finite = True
    with np.errstate(over="ignore", invalid="ignore"):
        for W, b, act in zip(Ws, bs, acts, strict=True):
            z = W @ h + b
            finite &= bool(np.isfinite(z).all())
            P = (act.derivative(z)[:, None] * W) @ P
            h = act.phi(z)
    J[...] = P
    return 0 if finite and np.isfinite(P).all() else -5


def _cpp_network_jacobian_one(
    module: ModuleType,
    Ws: Sequence[FloatArray],
    bs: Sequence[FloatArray],
    acts: Sequence[Activation],
    x: FloatArray,
    J: FloatArray,
) -> int:
    codes = [act.code for act in acts]
    params = [act.parameter for act in acts]
    return int(module.network_jacobian_one(list(Ws), list(bs), codes, params, x, J))


def _numpy_chain_singular_values(Ws: Sequence[FloatArray], Ds: Sequence[FloatArray]) -> FloatArray:
    return np.linalg.svd(_numpy_chain_active(Ws, Ds), compute_uv=False)


def _numpy_chain_rank(
    Ws: Sequence[FloatArray],
    Ds: Sequence[FloatArray],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> IntArray:
    J = _numpy_chain_active(Ws, Ds)
    return matrix_rank_count(np.linalg.svd(J, compute_uv=False), J.shape[1:], tolerance)


def _numpy_graded_log_singular_values(g: FloatArray, V: FloatArray) -> FloatArray:
    out = np.empty(g.shape, dtype=np.float64)
    for b in range(g.shape[0]):
        out[b] = _reference_graded.graded_log_singular_values(g[b], V[b])
    return out


# ---------------------------------------------------------------------------------------
# Adapters of the compiled modules: the module comes first, bound once per lookup.


def _compiled_derivatives(module: ModuleType, Z: FloatArray, act: Activation) -> FloatArray:
    return module.derivatives(np.ascontiguousarray(Z), act.code, act.parameter)


def _cpp_activation_values(module: ModuleType, Z: FloatArray, act: Activation) -> FloatArray:
    # C++ where it is the faster evaluation: gelu (erfc four lanes at a time where glibc's
    # vector math library is present); numpy's vectorised phi elsewhere.
    if act.is_custom or act.name not in _COMPILED_PHI:
        return _numpy_activation_values(Z, act)
    return module.values(np.ascontiguousarray(Z), act.code, act.parameter)


def _numba_custom_derivatives(module: ModuleType, Z: FloatArray, act: Activation) -> FloatArray:
    # The C++ kernels switch on built-in codes; a Python derivative is compiled by numba
    # when it can be (within jacgeom._numba's bound on compilations), else evaluated as the
    # numpy backend evaluates it. Both read the same snapshot function (Activation.custom).
    D = module.derivatives_custom(np.ascontiguousarray(Z), act.scalar_dphi)
    return act.derivative(Z) if D is None else D


def _cpp_jacobian_from_preactivations(
    module: ModuleType, W: FloatArray, Z: FloatArray, act: Activation, out: FloatArray | None = None
) -> FloatArray:
    # phi' evaluated row by row inside the (bandwidth-bound) write
    return module.jacobian_z(W, Z, act.code, act.parameter, out)


def _numba_jacobian_from_preactivations(
    module: ModuleType, W: FloatArray, Z: FloatArray, act: Activation, out: FloatArray | None = None
) -> FloatArray:
    return module.jacobian(W, module.derivatives(Z, act.code, act.parameter), out)


# W W^T costs m^2 n / 2 flops once and saves ~k^2 n per mask; beyond this many rows its
# m^2 doubles would cost more memory than the design's O(threads m n) budget allows.
_ROW_GRAM_MAX_ROWS = 4096


def _cpp_masked_rank(
    module: ModuleType,
    W: FloatArray,
    scale: FloatArray,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    want_values: bool = False,
    row_gram: bool = True,
) -> tuple[IntArray, FloatArray]:
    gram = None
    if (
        row_gram
        and not want_values
        and W.ndim == 2
        and scale.shape[0] >= 4
        and W.shape[0] <= _ROW_GRAM_MAX_ROWS
    ):
        W64 = W.astype(np.float64, copy=False)
        gram = W64 @ W64.T
    mode, value = tolerance.masked_rank_mode()
    ranks, values, _ = module.masked_rank(W, scale, gram, mode, value, want_values)
    return ranks, values


def _numba_masked_rank(
    module: ModuleType,
    W: FloatArray,
    scale: FloatArray,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    want_values: bool = False,
    row_gram: bool = True,
) -> tuple[IntArray, FloatArray]:
    return module.masked_rank(W, scale, *tolerance.masked_rank_mode())


def _cpp_chain_rank(
    module: ModuleType,
    Ws: Sequence[FloatArray],
    Ds: Sequence[FloatArray],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> IntArray:
    shape = (Ds[-1].shape[1], Ws[0].shape[-1])
    return module.chain_rank(Ws, Ds, *tolerance.chain_rank_arguments(shape, Ds[0].dtype))


# ---------------------------------------------------------------------------------------
# The table

Adapter = Callable[..., Any]
# A compiled implementation: the module's function of that name, or an adapter whose first
# argument is the module.
Implementation = str | Adapter


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One kernel: its calling convention and its implementation on each backend.

    Attributes
    ----------
    name : str
        The key in ``KERNELS``, also the name of the numba / C++ function where one exists.
    signature : str
        The arguments every implementation takes and what it returns.
    numpy : callable
        The numpy twin; every kernel has one.
    compiled : mapping of str to (str or callable)
        Backend name ("cpp", "numba") to the compiled module's function name, or to an
        adapter taking the module first.
    per_sample_blas : bool
        The compiled implementations call BLAS/LAPACK once per sample from several threads:
        :func:`call` pins scipy's BLAS to one thread around them.
    """

    name: str
    signature: str
    numpy: Adapter
    compiled: Mapping[str, Implementation]
    per_sample_blas: bool = False


def _entry(
    name: str,
    signature: str,
    *,
    numpy: Adapter,
    per_sample_blas: bool = False,
    **compiled: Implementation,
) -> tuple[str, Kernel]:
    return name, Kernel(name, signature, numpy, compiled, per_sample_blas)


KERNELS: dict[str, Kernel] = dict(
    [
        _entry(
            "derivatives",
            "(Z (...) , act: built-in Activation) -> phi'(Z), Z's shape and dtype",
            numpy=_numpy_derivatives,
            cpp=_compiled_derivatives,
            numba=_compiled_derivatives,
        ),
        _entry(
            "activation_values",
            "(Z (...), act: Activation) -> phi(Z), Z's shape and dtype: act.phi, or for gelu on "
            "cpp the C++ evaluation in double rounded once",
            numpy=_numpy_activation_values,
            cpp=_cpp_activation_values,
        ),
        _entry(
            "custom_derivatives",
            "(Z (...), act: custom Activation) -> phi'(Z): numba-compiled scalar derivative, "
            "numpy's elementwise evaluation where numba cannot compile it",
            numpy=_numpy_derivatives,
            numba=_numba_custom_derivatives,
        ),
        _entry(
            "jacobian",
            "(W (m, n), D (B, m), out (B, m, n) or None) -> J (B, m, n) = D[b] * W, into out",
            numpy=_numpy_jacobian,
            cpp="jacobian",
            numba="jacobian",
        ),
        _entry(
            "jacobian_from_preactivations",
            "(W (m, n), Z (B, m), act: built-in Activation, out (B, m, n) or None) -> "
            "J = phi'(Z)[b] * W (C++: _core.jacobian_z)",
            numpy=_numpy_jacobian_from_preactivations,
            cpp=_cpp_jacobian_from_preactivations,
            numba=_numba_jacobian_from_preactivations,
        ),
        _entry(
            "pullback_metric",
            "(W (m, n), D (B, m)) -> G (B, n, n) = W^T D[b]^2 W",
            numpy=_numpy_pullback_metric,
            cpp="pullback_metric",
            numba="pullback_metric",
            per_sample_blas=True,
        ),
        _entry(
            "singular_values",
            "(W (m, n), D (B, m)) -> singular values of D[b] W, (B, min(m, n)), descending",
            numpy=_numpy_singular_values,
            cpp="singular_values",
            numba="singular_values",
            per_sample_blas=True,
        ),
        _entry(
            "log_volume",
            "(W (m, n), D (B, m)), m >= n -> (B,) 0.5 log det(W^T D[b]^2 W), -inf below rank n",
            numpy=_numpy_log_volume,
            cpp="log_volume",
            numba="log_volume",
            per_sample_blas=True,
        ),
        _entry(
            "batched_singular_values",
            "(A (B, r, c)) -> singular values (B, min(r, c)), descending",
            numpy=_numpy_batched_singular_values,
            cpp="batched_singular_values",
            numba="batched_singular_values",
            per_sample_blas=True,
        ),
        _entry(
            "masked_rank",
            "(W (m, n) or (U, m, n), scale (U, m), tolerance: Tolerance, want_values=False, "
            "row_gram=True) -> (ranks (U,) int64, values (U, min(m, n)) when want_values): "
            "matrix_rank of the rows with scale != 0, scaled; row_gram lets the C++ kernel "
            "gather Gram matrices from one W W^T (shared W, no values, >= 4 masks); numba "
            "takes a shared W only",
            numpy=_numpy_masked_rank,
            cpp=_cpp_masked_rank,
            numba=_numba_masked_rank,
            per_sample_blas=True,
        ),
        _entry(
            "chain_active",
            "(Ws: L arrays (n_l, n_{l-1}) or (B, n_l, n_{l-1}), Ds: L arrays (B, n_l), "
            "reverse: bool, out=None) -> J (B, n_L, n_0) = D_L W_L ... D_1 W_1, written into "
            "out (C-contiguous, W's dtype) when given",
            numpy=_numpy_chain_active,
            cpp="chain_active",
            per_sample_blas=True,
        ),
        _entry(
            "network_jacobian_one",
            "(Ws: L arrays (n_l, n_{l-1}), bs: L arrays (n_l,), acts: L built-in Activations, "
            "x (n_0,), J (n_L, n_0) C-contiguous) -> status: J of a plain network at one input "
            "written into J, 0, or -5 where a pre-activation or an entry of J is not finite "
            "(the C-level API's network_jacobian: on cpp, its bits)",
            numpy=_numpy_network_jacobian_one,
            cpp=_cpp_network_jacobian_one,
        ),
        _entry(
            "chain_singular_values",
            "(Ws, Ds as chain_active) -> singular values of each J[b], (B, min(n_L, n_0))",
            numpy=_numpy_chain_singular_values,
            cpp="chain_singular_values",
            per_sample_blas=True,
        ),
        _entry(
            "chain_rank",
            "(Ws, Ds as chain_active, tolerance: Tolerance) -> matrix_rank of each J[b], "
            "(B,) int64",
            numpy=_numpy_chain_rank,
            cpp=_cpp_chain_rank,
            per_sample_blas=True,
        ),
        _entry(
            "spectral_summary",
            "(J (B, m, n), rank_bound (B,) int64 or None, spectra=True) -> (rank, log_smax, "
            "log_smin, frobenius2, log_volume), each (B,); numpy's default tolerance",
            numpy=_reference_montecarlo.spectral_summary,
            cpp="spectral_summary",
            per_sample_blas=True,
        ),
        _entry(
            "spectral_summary_rows",
            "(rows (K, n), counts (B,) int64, m, scale=1.0, rank_bound=None, spectra=True) -> "
            "spectral_summary of the stack whose sample b has the next counts[b] rows",
            numpy=_reference_montecarlo.spectral_summary_rows,
            cpp="spectral_summary_rows",
            per_sample_blas=True,
        ),
        _entry(
            "graded_log_singular_values",
            "(g (B, r) float64, V (B, r, n) float64) -> (B, r) float64: log singular values "
            "of diag(e^g[b]) V[b], descending, -inf for exact zeros (Network's graded frame)",
            numpy=_numpy_graded_log_singular_values,
            numba="graded_log_singular_values",
        ),
        _entry(
            "graded_qr_step",
            "(A (B, m, k), g (B, k), V (B, k, n), float64) -> (Q (B, m, q), g' (B, q), "
            "V' (B, q, n)), q = min(m, k): A diag(e^g) V = Q diag(e^g') V' per sample by a "
            "QR with graded ordering (the stable frame's step)",
            numpy=_reference_graded.graded_qr_step_batched,
            numba="graded_qr_step_batched",
            per_sample_blas=True,
        ),
        _entry(
            "place_live_rows",
            "(h (N, n), cols (N, n) bool, u (N, m), live (N, m) bool, G, B, fill_rest, std, "
            "W (N, m, n)) -> None: the conditional sampler's live rows, written into W",
            numpy=_reference_montecarlo.place_live_rows,
            numba="place_live_rows",
        ),
    ]
)

# Where a backend has no implementation of a kernel, the next of these runs.
_FALLBACK = {"cpp": ("cpp", "numba", "numpy"), "numba": ("numba", "numpy"), "numpy": ("numpy",)}


def _bind(implementation: Implementation, module: ModuleType) -> Adapter:
    if isinstance(implementation, str):
        fn: Adapter = getattr(module, implementation)
    else:
        fn = functools.partial(implementation, module)
    if module is not _backends.numba_kernels:
        return fn

    # numba's thread pool starts with the first numba kernel, not at import, and each
    # thread applies the thread count before its next kernel (_backends.prepare_numba); a
    # process forked after the pool started runs the serial twins (jacgeom._numba._parallel).
    @functools.wraps(fn)
    def numba_kernel(*args: Any, **kwargs: Any) -> Any:
        _backends.prepare_numba()
        return fn(*args, **kwargs)

    return numba_kernel


class _Resolved(NamedTuple):
    core: Any  # the compiled modules it was bound against
    numba: Any
    function: Adapter
    pinned: bool  # run under the single-threaded BLAS pin


# (name, backend) -> _Resolved. The modules are compared on every lookup, so a test that
# replaces _backends.core or _backends.numba_kernels (the extension missing) sees the
# fallback at once.
_cache: dict[tuple[str, str], _Resolved] = {}


def _resolve(name: str, backend: str) -> _Resolved:
    hit = _cache.get((name, backend))
    if hit is not None and hit.core is _backends.core and hit.numba is _backends.numba_kernels:
        return hit
    entry = KERNELS.get(name)
    if entry is None:
        raise KeyError(f"no kernel {name!r} in the dispatch table; known: {', '.join(KERNELS)}")
    chosen = _backends.backends()[0] if backend == "auto" else backend
    if chosen not in _FALLBACK:
        raise ValueError(f"unknown backend {backend!r}; valid choices: cpp, numba, numpy, auto")
    loaded = _backends.compiled_modules()
    function, pinned = entry.numpy, False
    for candidate in _FALLBACK[chosen]:
        implementation = entry.compiled.get(candidate)
        if implementation is not None and candidate in loaded:
            function = _bind(implementation, loaded[candidate])
            pinned = entry.per_sample_blas
            break
    resolved = _Resolved(_backends.core, _backends.numba_kernels, function, pinned)
    _cache[(name, backend)] = resolved
    return resolved


def kernel(name: str, backend: str = "auto") -> Callable[..., Any]:
    """The implementation of kernel ``name`` that ``backend`` runs (no BLAS pin).

    Parameters
    ----------
    name : str
        A key of ``KERNELS``.
    backend : {"cpp", "numba", "numpy", "auto"}
        A resolved backend (``_backends.resolve``); "auto" is the fastest loaded. A backend
        without its own implementation of the kernel gets the next of cpp, numba, numpy.

    Returns
    -------
    callable
        With the kernel's signature (``KERNELS[name].signature``).
    """
    return _resolve(name, backend).function


def call(name: str, backend: str, /, *args: Any, **kwargs: Any) -> Any:
    """Run kernel ``name`` on ``backend``; scipy's BLAS pinned to one thread around a compiled
    implementation of a ``per_sample_blas`` kernel.

    Examples
    --------
    >>> import numpy as np
    >>> call("singular_values", "numpy", np.diag([3.0, 2.0]), np.array([[1.0, 0.0]])).tolist()
    [[3.0, 0.0]]
    """
    resolved = _cache.get((name, backend))
    if (
        resolved is None
        or resolved.core is not _backends.core
        or resolved.numba is not _backends.numba_kernels
    ):
        resolved = _resolve(name, backend)
    if not resolved.pinned:
        return resolved.function(*args, **kwargs)
    with _backends.single_threaded_blas():
        return resolved.function(*args, **kwargs)


def implementations(name: str) -> dict[str, Callable[..., Any]]:
    """Every implementation of kernel ``name`` loaded in this process, by backend (numpy
    always; the compiled ones that the table lists and that loaded): what the tests compare
    with the numpy twin."""
    entry = KERNELS[name]
    loaded = _backends.compiled_modules()
    out: dict[str, Callable[..., Any]] = {
        backend: _bind(implementation, loaded[backend])
        for backend, implementation in entry.compiled.items()
        if backend in loaded
    }
    out["numpy"] = entry.numpy
    return out


# ---------------------------------------------------------------------------------------
# The shared helpers


def activation_values(Z: FloatArray, act: Activation, backend: str) -> FloatArray:
    """phi(Z) elementwise, the one rule of every module's forward pass.

    ``act.phi(Z)`` (numpy; gelu's scipy erfc split over ``jacgeom.get_num_threads()``
    threads on a large C-contiguous Z, the same values), except gelu on the cpp backend:
    evaluated in double and rounded once, with glibc's four-lane erfc where it is present.
    That one is at least as accurate as scipy's (against 120-bit values: 2 ulps for
    |z| <= 1, 25 on [-5, -1], where both lose digits to the rounding of z / sqrt(2), which
    erfc amplifies by z^2), not the same bits: Network.forward, Network.preactivations and
    the products of one backend share one rule.

    Parameters
    ----------
    Z : (...) ndarray of float
    act : Activation
    backend : {"cpp", "numba", "numpy", "auto"}

    Returns
    -------
    (...) ndarray, Z's shape and dtype
    """
    return call("activation_values", backend, Z, act)


def derivatives(Z: FloatArray, act: Activation, backend: str) -> FloatArray:
    """phi'(Z) elementwise, the one rule for every module.

    Built-in activations run the backend's kernel; a custom activation's scalar derivative
    is compiled by numba on the compiled backends (evaluated by numpy where numba cannot
    compile it, and on the numpy backend).

    Parameters
    ----------
    Z : (...) ndarray of float
    act : Activation
    backend : {"cpp", "numba", "numpy", "auto"}

    Returns
    -------
    (...) ndarray, Z's shape and dtype
    """
    return call("custom_derivatives" if act.is_custom else "derivatives", backend, Z, act)


def batched_singular_values(A: FloatArray, backend: str) -> FloatArray:
    """Singular values of every matrix of a (B, r, c) stack, descending, (B, min(r, c)).

    The compiled backends take a C-contiguous copy where A is not, and run with scipy's
    BLAS pinned to one thread (one small SVD per sample, in parallel over samples).

    A matrix holding NaN or Inf gets NaN values on every backend and never reaches LAPACK
    (whose gesdd writes "On entry to DLASCL parameter number 4 had an illegal value" to
    stdout for it).
    """
    A = np.ascontiguousarray(A)
    finite = np.isfinite(A).all(axis=(-2, -1)) if A.size else np.ones(A.shape[0], dtype=bool)
    if finite.all():
        return call("batched_singular_values", backend, A)
    s = np.full((A.shape[0], min(A.shape[1:])), np.nan, dtype=A.dtype)
    if finite.any():
        s[finite] = call("batched_singular_values", backend, np.ascontiguousarray(A[finite]))
    return s
