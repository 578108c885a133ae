"""Type stubs of jacgeom._core, the compiled kernels (csrc/bindings/*.cpp).

Private: call them through jacgeom._dispatch. Every array argument must be C-contiguous
with the exact dtype (pybind11 copies any other array silently, and the Python layer
validates and converts first). Each kernel is registered for float64 and float32; the
result has the inputs' dtype (``_F``).
"""

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)
_Int64Array = NDArray[np.int64]

# runtime.cpp ------------------------------------------------------------------------------

def register_lapack(blas_capi: dict[str, Any], lapack_capi: dict[str, Any]) -> None:
    """Take BLAS/LAPACK from scipy.linalg.cython_blas/cython_lapack __pyx_capi__ tables."""

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def gram_kernels() -> list[str]:
    """The pullback metric's Gram kernels this CPU runs, fastest first."""

def get_gram_kernel() -> str: ...
def set_gram_kernel(name: str) -> None: ...
def vector_math() -> bool:
    """Whether gelu, gelu' and tanh' run four lanes at a time through glibc's libmvec."""

def product_kernels() -> list[str]:
    """The chains' product kernels this CPU runs, fastest first."""

def get_product_kernel() -> str: ...
def set_product_kernel(name: str) -> None: ...

# layer.cpp: W (m, n), D and Z (B, m) ------------------------------------------------------

def derivatives(Z: NDArray[_F], code: int, param: float) -> NDArray[_F]:
    """phi'(Z) for a built-in activation code (jacgeom.activations.CODES), Z's shape."""

def values(Z: NDArray[_F], code: int, param: float) -> NDArray[_F]:
    """phi(Z) in double rounded once (gelu's erfc four lanes at a time), Z's shape."""

def jacobian(W: NDArray[_F], D: NDArray[_F], out: NDArray[_F] | None = None) -> NDArray[_F]:
    """J (B, m, n) = D[b] * W row by row, into ``out`` when given."""

def jacobian_z(
    W: NDArray[_F], Z: NDArray[_F], code: int, param: float, out: NDArray[_F] | None = None
) -> NDArray[_F]:
    """J (B, m, n) = phi'(Z[b]) * W, phi' evaluated inside the write."""

def pullback_metric(W: NDArray[_F], D: NDArray[_F]) -> NDArray[_F]:
    """G (B, n, n) = W^T D[b]^2 W."""

def singular_values(W: NDArray[_F], D: NDArray[_F]) -> NDArray[_F]:
    """Singular values of D[b] W, (B, min(m, n)), descending."""

def log_volume(W: NDArray[_F], D: NDArray[_F]) -> NDArray[_F]:
    """(B,) 0.5 log det(W^T D[b]^2 W), -inf below rank n; needs m >= n."""

def batched_singular_values(A: NDArray[_F]) -> NDArray[_F]:
    """Singular values of every matrix of a (B, r, c) stack, (B, min(r, c)), descending."""

# rank.cpp -----------------------------------------------------------------------------------

def masked_rank(
    W: NDArray[_F],
    scale: NDArray[_F],
    row_gram: NDArray[np.float64] | None,
    tol_mode: int,
    tol_value: float,
    singular_values: bool,
) -> tuple[_Int64Array, NDArray[_F], int]:
    """(ranks (U,), singular values (U, min(m, n)) or (0, 0), SVD fallbacks) of the rows of W
    (m, n) or W[u] (U, m, n) with scale[u] != 0, scaled; tol_mode 0: numpy's default rtol,
    1: absolute tol_value, 2: relative tol_value; row_gram: W W^T (m, m) for a shared W."""

# chain.cpp: W[l] (n_l, n_{l-1}) or (B, n_l, n_{l-1}), D[l] (B, n_l) ----------------------------

def chain_active(
    W: Sequence[NDArray[_F]],
    D: Sequence[NDArray[_F]],
    reverse: bool,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]:
    """J (B, n_L, n_0) = D_L W_L ... D_1 W_1 on the active rows only."""

def network_jacobian_one(
    W: Sequence[NDArray[_F]],
    b: Sequence[NDArray[_F]],
    codes: Sequence[int],
    params: Sequence[float],
    x: NDArray[_F],
    J: NDArray[_F],
) -> int:
    """The C-level network_jacobian at one input x (n_0,), into J (n_L, n_0); its status."""

def chain_singular_values(W: Sequence[NDArray[_F]], D: Sequence[NDArray[_F]]) -> NDArray[_F]:
    """Singular values of each end-to-end J[b], (B, min(n_L, n_0))."""

def chain_rank(
    W: Sequence[NDArray[_F]],
    D: Sequence[NDArray[_F]],
    tol: float,
    rtol: float,
    rtol_double: bool,
) -> _Int64Array:
    """matrix_rank of each J[b], (B,): above tol, or (tol NaN) above rtol * sigma_max,
    compared in double when rtol_double."""

# spectral.cpp ---------------------------------------------------------------------------------

def spectral_summary(
    J: NDArray[_F], rank_bound: _Int64Array | None = None, spectra: bool = True
) -> tuple[_Int64Array, NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F]]:
    """(rank, log_smax, log_smin, frobenius2, log_volume), each (B,), of J (B, m, n)."""

def spectral_summary_rows(
    rows: NDArray[_F],
    counts: _Int64Array,
    m: int,
    scale: float = 1.0,
    rank_bound: _Int64Array | None = None,
    spectra: bool = True,
) -> tuple[_Int64Array, NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F]]:
    """spectral_summary of the (B, m, n) stack whose sample b has the next counts[b] rows of
    rows (K, n), times scale, and zero rows for the rest."""
