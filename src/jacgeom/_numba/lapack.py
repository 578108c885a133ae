"""scipy's BLAS and LAPACK routines as ctypes functions that Numba can call in nopython mode.

Numba's own np.linalg.svd always computes the singular vectors, and its matrix product of
A^T with A is a full gemm; the kernels need values only (gesdd with jobz = 'N') and half
the product (syrk), so they call scipy's routines directly through the same cython_blas /
cython_lapack capsules that numba itself uses. Fortran conventions: every argument by
pointer, column-major, 32-bit integers.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numba
import numpy as np
from scipy.linalg import cython_blas, cython_lapack

_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]


def _address(name: str, module: Any = cython_lapack) -> int:
    capsule = module.__pyx_capi__[name]
    return int(_get_pointer(capsule, _get_name(capsule)))


_P = ctypes.c_void_p
# gesdd(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info)
_GESDD = ctypes.CFUNCTYPE(None, *([_P] * 14))
dgesdd = _GESDD(_address("dgesdd"))
sgesdd = _GESDD(_address("sgesdd"))

JOBZ_N = np.frombuffer(b"N", dtype=np.uint8).copy()
# syrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
_SYRK = ctypes.CFUNCTYPE(None, *([_P] * 10))
dsyrk = _SYRK(_address("dsyrk", cython_blas))
ssyrk = _SYRK(_address("ssyrk", cython_blas))
UPPER_NOTRANS = np.frombuffer(b"UN", dtype=np.uint8).copy()


@numba.njit(nogil=True, cache=True)
def svd_values(gesdd: Any, A: Any, s: Any, jobz: Any) -> int:
    # A: (k, n) C-contiguous = column-major (n, k); destroyed. s: (min(k, n),).
    k, n = A.shape
    mn = min(k, n)
    ints = np.empty(6, dtype=np.int32)
    ints[0] = n  # rows of the column-major view
    ints[1] = k
    ints[2] = max(1, n)  # lda
    ints[3] = 1  # ldu = ldvt
    ints[5] = 0  # info
    lwork = 3 * mn + max(max(k, n), 7 * mn) + 1
    ints[4] = lwork
    work = np.empty(lwork, dtype=A.dtype)
    iwork = np.empty(max(1, 8 * mn), dtype=np.int32)
    dummy = np.empty(1, dtype=A.dtype)
    gesdd(
        jobz.ctypes,
        ints[0:].ctypes,
        ints[1:].ctypes,
        A.ctypes,
        ints[2:].ctypes,
        s.ctypes,
        dummy.ctypes,
        ints[3:].ctypes,
        dummy.ctypes,
        ints[3:].ctypes,
        work.ctypes,
        ints[4:].ctypes,
        iwork.ctypes,
        ints[5:].ctypes,
    )
    return ints[5]


@numba.njit(nogil=True, cache=True)
def gram(syrk: Any, A: Any, G: Any, chars: Any) -> None:
    """G = A^T A for A (k, n) C-contiguous, k >= 1, into G (n, n) C-contiguous."""
    k, n = A.shape
    ints = np.empty(2, dtype=np.int32)
    ints[0] = n
    ints[1] = k
    scalars = np.empty(2, dtype=A.dtype)
    scalars[0] = 1  # alpha
    scalars[1] = 0  # beta
    # A row-major (k, n) is A^T column-major (n, k): syrk('U', 'N') gives A^T A, its upper
    # triangle in column-major order, which is G's lower triangle in row-major order.
    syrk(
        chars[0:].ctypes,
        chars[1:].ctypes,
        ints[0:].ctypes,
        ints[1:].ctypes,
        scalars[0:].ctypes,
        A.ctypes,
        ints[0:].ctypes,
        scalars[1:].ctypes,
        G.ctypes,
        ints[0:].ctypes,
    )
    # Copy the lower triangle onto the upper in 32 x 32 tiles, so that the strided side of
    # the transpose stays in cache.
    for ib in range(0, n, 32):
        for jb in range(ib, n, 32):
            for i in range(ib, min(n, ib + 32)):
                for j in range(max(jb, i + 1), min(n, jb + 32)):
                    G[i, j] = G[j, i]
