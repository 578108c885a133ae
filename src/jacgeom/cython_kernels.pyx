# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""jacgeom's C-level API: one-sample kernels for Cython, Numba and C callers.

The functions declared in ``cython_kernels.pxd`` (phi' of a vector, singular values and
log singular values of a small matrix, the rank of a masked or row-scaled W, the pullback
metric of one sample, W W^T, the end-to-end Jacobian of a plain network at one input and
its log singular values) run
without the GIL over raw pointers and element strides, with the caller's workspace, as
scipy.linalg.cython_blas does for BLAS. Cython code cimports them; Numba reaches the same
functions through ``__pyx_capi__`` (:func:`ctypes_function` builds the ctypes prototype).
Results equal the Python API's (backend "cpp") bit for bit: the arithmetic is that of
csrc/include/jacgeom, compiled with the same flags. The network functions are the
exception: the network Jacobian equals jacgeom.Network.jacobian at one input bit for bit
(the Python API runs this code there, for networks up to 32 units wide) and a batch's to
rounding (summed in another order); its log singular values are those of
jacgeom.layer_singular_values on that J bit for bit, and Network.log_singular_values' to
rounding.

The Python-level names here (:func:`ctypes_function`, :func:`workspace_size`,
:func:`network_workspace_size`, :data:`STATUS`, :data:`ACTIVATION_CODES`) help callers set up; they validate their
arguments. The C functions validate sizes and tolerances only and report a negative status.

Examples
--------
>>> import numpy as np
>>> from jacgeom import cython_kernels
>>> rank = cython_kernels.ctypes_function("dmasked_rank")
>>> W = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
>>> mask = np.array([1, 1, 0], dtype=np.uint8)
>>> work = np.empty(cython_kernels.workspace_size("masked_rank", 3, 2))
>>> int(rank(W.ctypes.data, 3, 2, 2, 1, mask.ctypes.data, 1, np.nan, np.nan, None,
...          work.ctypes.data, work.size))
1
"""

import ctypes

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport int64_t

import numpy as np
from scipy.linalg import cython_blas, cython_lapack

from .activations import CODES as _CODES


cdef extern from "jacgeom/capi.hpp" namespace "jacgeom::capi" nogil:
    int64_t sv_workspace "jacgeom::capi::singular_values_workspace" [T](int64_t, int64_t)
    int cpp_derivatives "jacgeom::capi::derivatives" [T](int, T, const T*, int64_t, T*, int64_t, int64_t)
    int cpp_singular_values "jacgeom::capi::singular_values" [T](
        const T*, int64_t, int64_t, int64_t, int64_t, T*, int64_t, double*, int64_t, bint)
    int64_t rank_workspace "jacgeom::capi::masked_rank_workspace" [T](int64_t, int64_t)
    int64_t cpp_masked_rank "jacgeom::capi::masked_rank" [T](
        const T*, int64_t, int64_t, int64_t, int64_t, const unsigned char*, int64_t, int,
        double, const double*, double*, int64_t)
    int64_t cpp_row_scaled_rank "jacgeom::capi::row_scaled_rank" [T](
        const T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, int, double,
        const double*, double*, int64_t)
    int cpp_row_gram "jacgeom::capi::row_gram" [T](const T*, int64_t, int64_t, int64_t, int64_t, double*)
    int64_t pb_workspace "jacgeom::capi::pullback_metric_workspace" [T](int64_t, int64_t)
    int cpp_pullback_metric "jacgeom::capi::pullback_metric" [T](
        const T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, T*, double*, int64_t)
    int64_t net_workspace "jacgeom::capi::network_jacobian_workspace" [T](int64_t, const int64_t*)
    int cpp_network_jacobian "jacgeom::capi::network_jacobian" [T](
        int64_t, const int64_t*, const T* const*, const int64_t*, const T* const*,
        const int64_t*, const int*, const T*, const T*, int64_t, T*, int64_t, int64_t,
        double*, int64_t)
    int64_t net_logsv_workspace "jacgeom::capi::network_log_singular_values_workspace" [T](
        int64_t, const int64_t*)
    int cpp_network_log_singular_values "jacgeom::capi::network_log_singular_values" [T](
        int64_t, const int64_t*, const T* const*, const int64_t*, const T* const*,
        const int64_t*, const int*, const T*, const T*, int64_t, T*, int64_t, double*,
        int64_t)
    bint set_routine "jacgeom::capi::set_routine" (const char*, void*)


# ---------------------------------------------------------------------------------------
# BLAS/LAPACK: the pointers scipy exports, as jacgeom._core takes them (bindings/
# runtime.cpp). This module is a separate shared object with its own copy of the table.
cdef void _register(dict table, str name) except *:
    cdef object capsule = table[name]
    cdef void* pointer = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    if not set_routine(name.encode(), pointer):
        raise RuntimeError(f"jacgeom.cython_kernels: no slot for {name}")


for _prefix in "ds":
    for _name in ("syrk", "gemm"):
        _register(cython_blas.__pyx_capi__, _prefix + _name)
    for _name in ("gesdd", "geqrf", "trtri", "potrf", "bdsqr", "gebrd"):
        _register(cython_lapack.__pyx_capi__, _prefix + _name)


# ---------------------------------------------------------------------------------------
# The C-level API (declared in cython_kernels.pxd).

cdef inline int _tolerance(double tol, double rtol, double* value) noexcept nogil:
    """RankTolerance's (mode, value) from (tol, rtol), NaN meaning "not given"; -1 when
    both are given (numpy refuses that too)."""
    if tol == tol:
        if rtol == rtol:
            return -1
        value[0] = tol
        return 1
    if rtol == rtol:
        value[0] = rtol
        return 2
    value[0] = 0.0
    return 0


cdef int dderivatives(int code, double param, const double* z, Py_ssize_t z_stride,
                      double* out, Py_ssize_t out_stride, Py_ssize_t count) noexcept nogil:
    return cpp_derivatives[double](code, param, z, z_stride, out, out_stride, count)


cdef int sderivatives(int code, float param, const float* z, Py_ssize_t z_stride,
                      float* out, Py_ssize_t out_stride, Py_ssize_t count) noexcept nogil:
    return cpp_derivatives[float](code, param, z, z_stride, out, out_stride, count)


cdef Py_ssize_t dsingular_values_workspace(Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    return sv_workspace[double](rows, cols)


cdef Py_ssize_t ssingular_values_workspace(Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    return sv_workspace[float](rows, cols)


cdef int dsingular_values(const double* A, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t row_stride, Py_ssize_t col_stride,
                          double* s, Py_ssize_t s_stride,
                          double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_singular_values[double](A, rows, cols, row_stride, col_stride, s, s_stride,
                                       work, lwork, False)


cdef int ssingular_values(const float* A, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t row_stride, Py_ssize_t col_stride,
                          float* s, Py_ssize_t s_stride,
                          double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_singular_values[float](A, rows, cols, row_stride, col_stride, s, s_stride,
                                      work, lwork, False)


cdef int dlog_singular_values(const double* A, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t row_stride, Py_ssize_t col_stride,
                              double* s, Py_ssize_t s_stride,
                              double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_singular_values[double](A, rows, cols, row_stride, col_stride, s, s_stride,
                                       work, lwork, True)


cdef int slog_singular_values(const float* A, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t row_stride, Py_ssize_t col_stride,
                              float* s, Py_ssize_t s_stride,
                              double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_singular_values[float](A, rows, cols, row_stride, col_stride, s, s_stride,
                                      work, lwork, True)


cdef Py_ssize_t dmasked_rank_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    return rank_workspace[double](m, n)


cdef Py_ssize_t smasked_rank_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    return rank_workspace[float](m, n)


cdef Py_ssize_t dmasked_rank(const double* W, Py_ssize_t m, Py_ssize_t n,
                             Py_ssize_t row_stride, Py_ssize_t col_stride,
                             const unsigned char* mask, Py_ssize_t mask_stride,
                             double tol, double rtol, const double* row_gram,
                             double* work, Py_ssize_t lwork) noexcept nogil:
    cdef double value
    cdef int mode = _tolerance(tol, rtol, &value)
    if mode < 0:
        return STATUS_BAD_ARGUMENT
    return cpp_masked_rank[double](W, m, n, row_stride, col_stride, mask, mask_stride, mode,
                                   value, row_gram, work, lwork)


cdef Py_ssize_t smasked_rank(const float* W, Py_ssize_t m, Py_ssize_t n,
                             Py_ssize_t row_stride, Py_ssize_t col_stride,
                             const unsigned char* mask, Py_ssize_t mask_stride,
                             double tol, double rtol, const double* row_gram,
                             double* work, Py_ssize_t lwork) noexcept nogil:
    cdef double value
    cdef int mode = _tolerance(tol, rtol, &value)
    if mode < 0:
        return STATUS_BAD_ARGUMENT
    return cpp_masked_rank[float](W, m, n, row_stride, col_stride, mask, mask_stride, mode,
                                  value, row_gram, work, lwork)


cdef Py_ssize_t drow_scaled_rank(const double* W, Py_ssize_t m, Py_ssize_t n,
                                 Py_ssize_t row_stride, Py_ssize_t col_stride,
                                 const double* scale, Py_ssize_t scale_stride,
                                 double tol, double rtol, const double* row_gram,
                                 double* work, Py_ssize_t lwork) noexcept nogil:
    cdef double value
    cdef int mode = _tolerance(tol, rtol, &value)
    if mode < 0:
        return STATUS_BAD_ARGUMENT
    return cpp_row_scaled_rank[double](W, m, n, row_stride, col_stride, scale, scale_stride,
                                       mode, value, row_gram, work, lwork)


cdef Py_ssize_t srow_scaled_rank(const float* W, Py_ssize_t m, Py_ssize_t n,
                                 Py_ssize_t row_stride, Py_ssize_t col_stride,
                                 const float* scale, Py_ssize_t scale_stride,
                                 double tol, double rtol, const double* row_gram,
                                 double* work, Py_ssize_t lwork) noexcept nogil:
    cdef double value
    cdef int mode = _tolerance(tol, rtol, &value)
    if mode < 0:
        return STATUS_BAD_ARGUMENT
    return cpp_row_scaled_rank[float](W, m, n, row_stride, col_stride, scale, scale_stride,
                                      mode, value, row_gram, work, lwork)


cdef Py_ssize_t dpullback_metric_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    return pb_workspace[double](m, n)


cdef Py_ssize_t spullback_metric_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    return pb_workspace[float](m, n)


cdef int dpullback_metric(const double* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                          Py_ssize_t col_stride, const double* d, Py_ssize_t d_stride,
                          double* G, double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_pullback_metric[double](W, m, n, row_stride, col_stride, d, d_stride, G, work,
                                       lwork)


cdef int spullback_metric(const float* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                          Py_ssize_t col_stride, const float* d, Py_ssize_t d_stride,
                          float* G, double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_pullback_metric[float](W, m, n, row_stride, col_stride, d, d_stride, G, work,
                                      lwork)


cdef int drow_gram(const double* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                   Py_ssize_t col_stride, double* out) noexcept nogil:
    return cpp_row_gram[double](W, m, n, row_stride, col_stride, out)


cdef int srow_gram(const float* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                   Py_ssize_t col_stride, double* out) noexcept nogil:
    return cpp_row_gram[float](W, m, n, row_stride, col_stride, out)


# Py_ssize_t and int64_t are one type on the platforms jacgeom builds for (64-bit);
# the casts only satisfy the C++ compiler's pointer types.

cdef Py_ssize_t dnetwork_jacobian_workspace(Py_ssize_t depth,
                                            const Py_ssize_t* widths) noexcept nogil:
    return net_workspace[double](depth, <const int64_t*>widths)


cdef Py_ssize_t snetwork_jacobian_workspace(Py_ssize_t depth,
                                            const Py_ssize_t* widths) noexcept nogil:
    return net_workspace[float](depth, <const int64_t*>widths)


cdef int dnetwork_jacobian(Py_ssize_t depth, const Py_ssize_t* widths,
                           const double* const* weights, const Py_ssize_t* weight_strides,
                           const double* const* biases, const Py_ssize_t* bias_strides,
                           const int* codes, const double* parameters,
                           const double* x, Py_ssize_t x_stride,
                           double* J, Py_ssize_t J_row_stride, Py_ssize_t J_col_stride,
                           double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_network_jacobian[double](
        depth, <const int64_t*>widths, weights, <const int64_t*>weight_strides, biases,
        <const int64_t*>bias_strides, codes, parameters, x, x_stride, J, J_row_stride,
        J_col_stride, work, lwork)


cdef int snetwork_jacobian(Py_ssize_t depth, const Py_ssize_t* widths,
                           const float* const* weights, const Py_ssize_t* weight_strides,
                           const float* const* biases, const Py_ssize_t* bias_strides,
                           const int* codes, const float* parameters,
                           const float* x, Py_ssize_t x_stride,
                           float* J, Py_ssize_t J_row_stride, Py_ssize_t J_col_stride,
                           double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_network_jacobian[float](
        depth, <const int64_t*>widths, weights, <const int64_t*>weight_strides, biases,
        <const int64_t*>bias_strides, codes, parameters, x, x_stride, J, J_row_stride,
        J_col_stride, work, lwork)


cdef Py_ssize_t dnetwork_log_singular_values_workspace(Py_ssize_t depth,
                                                       const Py_ssize_t* widths) noexcept nogil:
    return net_logsv_workspace[double](depth, <const int64_t*>widths)


cdef Py_ssize_t snetwork_log_singular_values_workspace(Py_ssize_t depth,
                                                       const Py_ssize_t* widths) noexcept nogil:
    return net_logsv_workspace[float](depth, <const int64_t*>widths)


cdef int dnetwork_log_singular_values(Py_ssize_t depth, const Py_ssize_t* widths,
                                      const double* const* weights,
                                      const Py_ssize_t* weight_strides,
                                      const double* const* biases,
                                      const Py_ssize_t* bias_strides,
                                      const int* codes, const double* parameters,
                                      const double* x, Py_ssize_t x_stride,
                                      double* s, Py_ssize_t s_stride,
                                      double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_network_log_singular_values[double](
        depth, <const int64_t*>widths, weights, <const int64_t*>weight_strides, biases,
        <const int64_t*>bias_strides, codes, parameters, x, x_stride, s, s_stride, work, lwork)


cdef int snetwork_log_singular_values(Py_ssize_t depth, const Py_ssize_t* widths,
                                      const float* const* weights,
                                      const Py_ssize_t* weight_strides,
                                      const float* const* biases,
                                      const Py_ssize_t* bias_strides,
                                      const int* codes, const float* parameters,
                                      const float* x, Py_ssize_t x_stride,
                                      float* s, Py_ssize_t s_stride,
                                      double* work, Py_ssize_t lwork) noexcept nogil:
    return cpp_network_log_singular_values[float](
        depth, <const int64_t*>widths, weights, <const int64_t*>weight_strides, biases,
        <const int64_t*>bias_strides, codes, parameters, x, x_stride, s, s_stride, work, lwork)


# ---------------------------------------------------------------------------------------
# Python-level helpers.

#: Status codes the C functions return, by name (negative: an error).
STATUS = {
    "ok": STATUS_OK,
    "bad_argument": STATUS_BAD_ARGUMENT,
    "not_registered": STATUS_NOT_REGISTERED,
    "too_large": STATUS_TOO_LARGE,
    "workspace_small": STATUS_WORKSPACE_SMALL,
    "non_finite": STATUS_NON_FINITE,
    "lapack_failed": STATUS_LAPACK_FAILED,
}

#: Activation codes of the derivatives functions, by activation name.
ACTIVATION_CODES = dict(_CODES)

_P = ctypes.c_void_p  # every pointer: numba passes arr.ctypes, ctypes an address or None
_N = ctypes.c_ssize_t
_SIGNATURES = {
    "derivatives": (ctypes.c_int, [ctypes.c_int, None, _P, _N, _P, _N, _N]),
    "singular_values_workspace": (_N, [_N, _N]),
    "singular_values": (ctypes.c_int, [_P, _N, _N, _N, _N, _P, _N, _P, _N]),
    "log_singular_values": (ctypes.c_int, [_P, _N, _N, _N, _N, _P, _N, _P, _N]),
    "masked_rank_workspace": (_N, [_N, _N]),
    "masked_rank": (_N, [_P, _N, _N, _N, _N, _P, _N, ctypes.c_double, ctypes.c_double, _P,
                         _P, _N]),
    "row_scaled_rank": (_N, [_P, _N, _N, _N, _N, _P, _N, ctypes.c_double, ctypes.c_double,
                             _P, _P, _N]),
    "row_gram": (ctypes.c_int, [_P, _N, _N, _N, _N, _P]),
    "pullback_metric_workspace": (_N, [_N, _N]),
    "pullback_metric": (ctypes.c_int, [_P, _N, _N, _N, _N, _P, _N, _P, _P, _N]),
    "network_jacobian_workspace": (_N, [_N, _P]),
    "network_jacobian": (ctypes.c_int, [_N, _P, _P, _P, _P, _P, _P, _P, _P, _N, _P, _N, _N,
                                        _P, _N]),
    "network_log_singular_values_workspace": (_N, [_N, _P]),
    "network_log_singular_values": (ctypes.c_int, [_N, _P, _P, _P, _P, _P, _P, _P, _P, _N, _P,
                                                   _N, _P, _N]),
}


def ctypes_function(name):
    """The C-level function ``name`` as a ctypes function, callable from Numba's ``@njit``.

    Parameters
    ----------
    name : str
        A function of ``cython_kernels.pxd`` with its precision prefix, e.g.
        ``"dmasked_rank"`` (float64) or ``"smasked_rank"`` (float32).

    Returns
    -------
    ctypes._CFuncPtr
        Pointer arguments are ``c_void_p``: pass ``array.ctypes`` inside ``@njit``,
        ``array.ctypes.data`` (or None for NULL) from Python.

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If ``name`` is not a function of the C-level API.

    Notes
    -----
    The address is ``numba.extending.get_cython_function_address("jacgeom.cython_kernels",
    name)``, read here from ``__pyx_capi__``; the prototype is the .pxd's declaration.

    Examples
    --------
    >>> from jacgeom import cython_kernels
    >>> cython_kernels.ctypes_function("dmasked_rank_workspace")(16, 16) > 0
    True
    """
    cdef void* pointer
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    base = name[1:]
    if name[:1] not in ("d", "s") or base not in _SIGNATURES:
        known = ", ".join(p + b for b in _SIGNATURES for p in "ds")
        raise ValueError(f"no C-level function {name!r}; expected one of: {known}")
    restype, argtypes = _SIGNATURES[base]
    real = ctypes.c_double if name[0] == "d" else ctypes.c_float
    argtypes = [real if a is None else a for a in argtypes]
    capsule = globals()["__pyx_capi__"][name]
    pointer = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    return ctypes.CFUNCTYPE(restype, *argtypes)(<Py_ssize_t>pointer)


_KERNELS = ("masked_rank", "row_scaled_rank", "singular_values", "log_singular_values",
            "pullback_metric")


cdef Py_ssize_t _workspace(str kernel, bint double_precision, Py_ssize_t rows,
                           Py_ssize_t cols) noexcept:
    if kernel in ("masked_rank", "row_scaled_rank"):
        if double_precision:
            return dmasked_rank_workspace(rows, cols)
        return smasked_rank_workspace(rows, cols)
    if kernel == "pullback_metric":
        if double_precision:
            return dpullback_metric_workspace(rows, cols)
        return spullback_metric_workspace(rows, cols)
    if double_precision:
        return dsingular_values_workspace(rows, cols)
    return ssingular_values_workspace(rows, cols)


def workspace_size(kernel, rows, cols, dtype="float64"):
    """Length (in float64 entries) of the workspace of a C-level kernel for a (rows, cols)
    matrix.

    Parameters
    ----------
    kernel : str
        One of "masked_rank", "row_scaled_rank", "singular_values", "log_singular_values",
        "pullback_metric".
    rows, cols : int
        The matrix's shape (W's for the ranks).
    dtype : {"float64", "float32"}, default "float64"
        The matrix's dtype (the workspace is float64 for both).

    Returns
    -------
    int
        What the C function ``<d|s><kernel>_workspace(rows, cols)`` returns.

    Raises
    ------
    TypeError
        If rows or cols is not an integer.
    ValueError
        For an unknown kernel or dtype, a negative size, or a matrix above the per-call
        limit (1 MiB: the one-sample kernels are for small matrices).

    Examples
    --------
    >>> import numpy as np
    >>> from jacgeom import cython_kernels
    >>> work = np.empty(cython_kernels.workspace_size("singular_values", 8, 5))
    """
    if not isinstance(kernel, str) or kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(_KERNELS)}, got {kernel!r}")
    for label, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{label} must be an integer, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{label} must be >= 0, got {value}")
    kind = np.dtype(dtype)
    if kind not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {kind}")
    size = _workspace(kernel, kind == np.float64, rows, cols)
    if size == STATUS_TOO_LARGE:
        raise ValueError(
            f"a ({rows}, {cols}) {kind} matrix is above the C-level API's limit of 1 MiB; "
            "use the Python API"
        )
    return int(size)


_NETWORK_KERNELS = ("network_jacobian", "network_log_singular_values")


def network_workspace_size(kernel, widths, dtype="float64"):
    """Length (in float64 entries) of the workspace of a C-level network kernel.

    Parameters
    ----------
    kernel : {"network_jacobian", "network_log_singular_values"}
    widths : (depth + 1,) sequence of int
        n_0 (inputs), n_1, ..., n_L, as ``jacgeom.Network.widths``.
    dtype : {"float64", "float32"}, default "float64"
        The network's dtype (the workspace is float64 for both).

    Returns
    -------
    int
        What ``<d|s><kernel>_workspace(depth, widths)`` returns.

    Raises
    ------
    TypeError
        If a width is not an integer.
    ValueError
        For an unknown kernel or dtype, fewer than two widths, a negative width, or a
        network whose partial products (widest layer x max(n_0, n_L)) are above 1 MiB.

    Examples
    --------
    >>> from jacgeom import cython_kernels
    >>> cython_kernels.network_workspace_size("network_jacobian", [16, 32, 32, 4]) > 0
    True
    """
    if not isinstance(kernel, str) or kernel not in _NETWORK_KERNELS:
        raise ValueError(
            f"kernel must be one of {', '.join(_NETWORK_KERNELS)}, got {kernel!r}"
        )
    values = list(widths)
    if len(values) < 2:
        raise ValueError(f"widths must have at least 2 entries (n_0 and n_1), got {len(values)}")
    for i, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"widths[{i}] must be an integer, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"widths[{i}] must be >= 0, got {value}")
    kind = np.dtype(dtype)
    if kind not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {kind}")
    cdef Py_ssize_t[::1] w = np.asarray(values, dtype=np.intp)
    cdef Py_ssize_t depth = len(values) - 1, size
    if kernel == "network_jacobian":
        size = (dnetwork_jacobian_workspace(depth, &w[0]) if kind == np.float64
                else snetwork_jacobian_workspace(depth, &w[0]))
    else:
        size = (dnetwork_log_singular_values_workspace(depth, &w[0]) if kind == np.float64
                else snetwork_log_singular_values_workspace(depth, &w[0]))
    if size == STATUS_TOO_LARGE:
        raise ValueError(
            f"a {kind} network of widths {tuple(values)} is above the C-level API's limit "
            "(partial products of the widest layer by max(n_0, n_L) of at most 1 MiB); use "
            "the Python API"
        )
    return int(size)
