"""The C-level API (jacgeom.cython_kernels, issue 23): a downstream Cython extension built
here from source, and Numba code through __pyx_capi__, get the Python API's results (backend
"cpp") bit for bit; statuses and the Python-level helpers' errors; the headers compile on
their own.

The downstream extension is compiled once per session (about 15 s on two cores).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import jacgeom

ck = pytest.importorskip("jacgeom.cython_kernels")
numba = pytest.importorskip("numba")
pytest.importorskip("Cython")

pytestmark = pytest.mark.skipif("cpp" not in jacgeom.backends(), reason="needs the C++ backend")

DTYPES = [np.float64, np.float32]

# The downstream module: what a library that cimports jacgeom writes. Fused over the two
# precisions; strides in elements from the memoryviews' byte strides.
DOWNSTREAM_PYX = textwrap.dedent(
    """
    # cython: language_level=3, boundscheck=False, wraparound=False
    from cython cimport floating
    from libc.math cimport NAN
    cimport jacgeom.cython_kernels as jk
    import numpy as np

    def codes():
        return {"relu": jk.ACTIVATION_RELU, "silu": jk.ACTIVATION_SILU,
                "bad_argument": jk.STATUS_BAD_ARGUMENT}

    def masked_ranks(floating[:, :] W, unsigned char[:, :] masks, double tol, double rtol,
                     double[:, ::1] gram=None):
        cdef Py_ssize_t m = W.shape[0], n = W.shape[1], b
        cdef Py_ssize_t item = sizeof(floating)
        cdef Py_ssize_t rs = W.strides[0] // item, cs = W.strides[1] // item
        cdef Py_ssize_t lwork
        if floating is double:
            lwork = jk.dmasked_rank_workspace(m, n)
        else:
            lwork = jk.smasked_rank_workspace(m, n)
        cdef double[::1] work = np.empty(lwork)
        cdef Py_ssize_t[::1] out = np.empty(masks.shape[0], dtype=np.intp)
        cdef const double* g = NULL if gram is None else &gram[0, 0]
        with nogil:
            for b in range(masks.shape[0]):
                if floating is double:
                    out[b] = jk.dmasked_rank(&W[0, 0], m, n, rs, cs, &masks[b, 0],
                                             masks.strides[1], tol, rtol, g, &work[0], lwork)
                else:
                    out[b] = jk.smasked_rank(&W[0, 0], m, n, rs, cs, &masks[b, 0],
                                             masks.strides[1], tol, rtol, g, &work[0], lwork)
        return np.asarray(out)

    def scaled_rank(floating[:, :] W, floating[::1] scale):
        cdef Py_ssize_t m = W.shape[0], n = W.shape[1]
        cdef Py_ssize_t item = sizeof(floating)
        cdef double[::1] work = np.empty(jk.dmasked_rank_workspace(m, n))
        if floating is double:
            return jk.drow_scaled_rank(&W[0, 0], m, n, W.strides[0] // item,
                                       W.strides[1] // item, &scale[0], 1, NAN, NAN, NULL,
                                       &work[0], work.shape[0])
        return jk.srow_scaled_rank(&W[0, 0], m, n, W.strides[0] // item, W.strides[1] // item,
                                   &scale[0], 1, NAN, NAN, NULL, &work[0], work.shape[0])

    def pullback_metric(floating[:, :] W, floating[:] d):
        cdef Py_ssize_t m = W.shape[0], n = W.shape[1]
        cdef Py_ssize_t item = sizeof(floating)
        cdef double[::1] work = np.empty(jk.dpullback_metric_workspace(m, n))
        G = np.full((n, n), np.nan, dtype=np.float64 if floating is double else np.float32)
        cdef floating[:, ::1] g = G
        cdef int status
        with nogil:
            if floating is double:
                status = jk.dpullback_metric(&W[0, 0], m, n, W.strides[0] // item,
                                             W.strides[1] // item, &d[0], d.strides[0] // item,
                                             &g[0, 0], &work[0], work.shape[0])
            else:
                status = jk.spullback_metric(&W[0, 0], m, n, W.strides[0] // item,
                                             W.strides[1] // item, &d[0], d.strides[0] // item,
                                             &g[0, 0], &work[0], work.shape[0])
        return status, G

    def derivatives(int code, double param, floating[:] z):
        out = np.empty(z.shape[0], dtype=np.float64 if floating is double else np.float32)
        cdef floating[::1] o = out
        cdef int status
        cdef Py_ssize_t zs = z.strides[0] // sizeof(floating)
        with nogil:
            if floating is double:
                status = jk.dderivatives(code, param, &z[0], zs, &o[0], 1, z.shape[0])
            else:
                status = jk.sderivatives(code, <float>param, &z[0], zs, &o[0], 1, z.shape[0])
        return status, out

    def singular_values(floating[:, :] A, bint log):
        cdef Py_ssize_t r = A.shape[0], c = A.shape[1], p = min(r, c)
        cdef Py_ssize_t item = sizeof(floating)
        cdef double[::1] work = np.empty(jk.dsingular_values_workspace(r, c))
        # A strided output (every other entry) exercises s_stride.
        out = np.full(2 * p, -7.0, dtype=np.float64 if floating is double else np.float32)
        cdef floating[::1] s = out
        cdef int status
        if floating is double:
            if log:
                status = jk.dlog_singular_values(&A[0, 0], r, c, A.strides[0] // item,
                                                 A.strides[1] // item, &s[0], 2, &work[0],
                                                 work.shape[0])
            else:
                status = jk.dsingular_values(&A[0, 0], r, c, A.strides[0] // item,
                                             A.strides[1] // item, &s[0], 2, &work[0],
                                             work.shape[0])
        else:
            if log:
                status = jk.slog_singular_values(&A[0, 0], r, c, A.strides[0] // item,
                                                 A.strides[1] // item, &s[0], 2, &work[0],
                                                 work.shape[0])
            else:
                status = jk.ssingular_values(&A[0, 0], r, c, A.strides[0] // item,
                                             A.strides[1] // item, &s[0], 2, &work[0],
                                             work.shape[0])
        assert (out[1::2] == -7).all()  # the gaps are untouched
        return status, out[::2].copy()
    """
)

DOWNSTREAM_SETUP = textwrap.dedent(
    """
    from Cython.Build import cythonize
    from setuptools import setup

    setup(ext_modules=cythonize("jg_downstream.pyx", quiet=True))
    """
)


@pytest.fixture(scope="session")
def downstream(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The downstream extension, compiled from source against the installed package."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    folder = tmp_path_factory.mktemp("downstream")
    (folder / "jg_downstream.pyx").write_text(DOWNSTREAM_PYX)
    (folder / "setup.py").write_text(DOWNSTREAM_SETUP)
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("jg_downstream")
    finally:
        sys.path.remove(str(folder))


def _deficient(rng: np.random.Generator, m: int, n: int, rank: int, dtype: Any) -> np.ndarray:
    """An (m, n) matrix of exact rank `rank` built on purpose, with some rows duplicated."""
    W = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    W[1] = W[0]
    return W.astype(dtype)


def _cases(dtype: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, W, masks): full-rank and deficient W, C order, Fortran order, a negative
    stride and a strided view; masks with 0, 1, k < n, k = n and k > n kept rows."""
    rng = np.random.default_rng(23)
    full = rng.standard_normal((24, 16)).astype(dtype)
    low = _deficient(rng, 24, 16, 9, dtype)
    masks = rng.random((40, 24)) < rng.random((40, 1))
    masks[0] = False
    masks[1] = False
    masks[1, 3] = True
    masks[2] = True
    masks[3, :2] = True  # the duplicated rows
    masks[3, 2:] = False
    masks = masks.astype(np.uint8)
    big = rng.standard_normal((48, 32)).astype(dtype)
    return [
        ("full", full, masks),
        ("deficient", low, masks),
        ("fortran", np.asfortranarray(low), masks),
        ("negative-stride", low[::-1, ::-1], masks),
        ("strided", big[::2, ::2], masks),
        ("wide", np.ascontiguousarray(full[:12].T)[:, :12], masks[:, :16]),
    ]


def _python_ranks(W: np.ndarray, masks: np.ndarray, **tol: float) -> np.ndarray:
    return np.array([jacgeom.masked_rank(W, m.astype(bool), backend="cpp", **tol) for m in masks])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tolerance", [{}, {"tol": 1e-3}, {"rtol": 1e-2}], ids=str)
def test_cython_masked_rank_equals_the_python_api(
    downstream: ModuleType, dtype: Any, tolerance: dict[str, float]
) -> None:
    tol, rtol = tolerance.get("tol", np.nan), tolerance.get("rtol", np.nan)
    for label, W, masks in _cases(dtype):
        before = W.copy()
        expected = _python_ranks(W, masks, **tolerance)
        batched = jacgeom.masked_rank(W, masks.astype(bool), backend="cpp", **tolerance)
        np.testing.assert_array_equal(batched, expected)  # with the row Gram path
        got = downstream.masked_ranks(W, masks, tol, rtol)
        np.testing.assert_array_equal(got, expected, err_msg=label)
        gram = np.empty((W.shape[0], W.shape[0]))
        fn = "drow_gram" if dtype == np.float64 else "srow_gram"
        assert ck.ctypes_function(fn)(W.ctypes.data, *W.shape, *_strides(W), gram.ctypes.data) == 0
        np.testing.assert_allclose(
            gram, W.astype(np.float64) @ W.T.astype(np.float64), rtol=1e-12, atol=1e-12
        )
        np.testing.assert_array_equal(downstream.masked_ranks(W, masks, tol, rtol, gram), expected)
        np.testing.assert_array_equal(W, before)


def test_masked_rank_sees_the_deficiency(downstream: ModuleType) -> None:
    """Not a vacuous agreement: the cases hold rank-deficient masks and every rank level."""
    _, W, masks = _cases(np.float64)[1]
    got = downstream.masked_ranks(W, masks, np.nan, np.nan)
    assert got[0] == 0 and got[1] == 1 and got[2] == 9 and got[3] == 1
    assert len(set(got.tolist())) >= 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "relu"])
def test_cython_scaled_rank_equals_jacobian_rank(
    downstream: ModuleType, dtype: Any, name: str
) -> None:
    rng = np.random.default_rng(5)
    W = _deficient(rng, 20, 12, 10, dtype)
    X = (rng.standard_normal((6, 12)) * np.array([1, 1, 30, 300, 1, 1])[:, None]).astype(dtype)
    expected = jacgeom.jacobian_rank(W, X, activation=name, backend="cpp")
    Z = jacgeom.preactivations(W, X, backend="cpp")
    got = []
    for z in Z:
        status, d = downstream.derivatives(jacgeom.activation(name).code, 0.0, z)
        assert status == 0
        got.append(downstream.scaled_rank(W, d))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (20, 12), (9, 33), (40, 17)])
@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_cython_pullback_metric_equals_the_python_api(
    downstream: ModuleType, dtype: Any, shape: tuple[int, int], name: str
) -> None:
    core = jacgeom._backends.core
    # The C-level API uses the best Gram kernel of the CPU, _core's default.
    assert core.get_gram_kernel() == core.gram_kernels()[0]
    rng = np.random.default_rng(shape[0])
    big = rng.standard_normal((2 * shape[0], 2 * shape[1])).astype(dtype)
    W = big[::-2, ::2]  # negative and non-unit strides
    X = rng.standard_normal((3, shape[1])).astype(dtype)
    X[2] = 0.0  # relu: every unit dead, G = 0
    b = np.zeros(shape[0], dtype)
    expected = jacgeom.pullback_metric(W, X, b, activation=name, backend="cpp")
    D = jacgeom.layer_derivatives(W, X, b, activation=name, backend="cpp")
    for x_index in range(3):
        status, G = downstream.pullback_metric(W, D[x_index])
        assert status == 0 and G.dtype == dtype
        np.testing.assert_array_equal(G, expected[x_index])
    assert name != "relu" or not expected[2].any()


def _awkward_z(dtype: Any) -> np.ndarray:
    big = float(np.finfo(dtype).max)
    special = [
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        -0.75179,
        -1.27846,
        20.0,
        -20.0,
        40.0,
        -40.0,
        373.0,
        -373.0,
        89.0,
        -89.0,
        1e30,
        -1e30,
        big,
        -big,
    ]
    rng = np.random.default_rng(2)
    return np.concatenate([special, rng.standard_normal(200) * 6]).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(jacgeom.activations.CODES))
def test_cython_derivatives_equal_the_python_api(
    downstream: ModuleType, dtype: Any, name: str
) -> None:
    z = _awkward_z(dtype)
    params = {"leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 0.7}, "softplus": {"beta": 2.5}}
    act = jacgeom.activation(name, **params.get(name, {}))
    m = z.size
    expected = jacgeom.layer_derivatives(np.eye(m, dtype=dtype), z, activation=act, backend="cpp")
    status, got = downstream.derivatives(act.code, act.parameter, z[::-1])  # a negative stride
    assert status == 0 and got.dtype == dtype
    np.testing.assert_array_equal(got[::-1].copy().view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (3, 7), (16, 16), (40, 33)])
def test_cython_singular_values_equal_the_python_api(
    downstream: ModuleType, dtype: Any, shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(shape))
    A = rng.standard_normal(shape).astype(dtype) * 1e3
    if min(shape) > 2:
        A[:, 1] = A[:, 0]  # an exact deficiency: a value ~ eps, its log finite and small
    for view in (A, np.asfortranarray(A), A[::-1, ::-1]):
        # Per view: a reversed matrix P A Q has the same singular values only up to rounding.
        expected = jacgeom.layer_singular_values(
            view, np.zeros(shape[1], dtype), activation="identity", backend="cpp"
        )
        status, s = downstream.singular_values(view, False)
        assert status == 0 and s.dtype == dtype
        np.testing.assert_array_equal(s.view(np.uint8), expected.view(np.uint8))
        status, logs = downstream.singular_values(view, True)
        assert status == 0
        np.testing.assert_array_equal(logs, _c_log(expected))


def _c_log(values: np.ndarray) -> np.ndarray:
    """The C library's log (double) or logf (float), which std::log calls; Python's
    math.log is the former. numpy's own log may differ in the last bit (its SIMD loops)."""
    if values.dtype == np.float64:
        return np.array([math.log(v) if v > 0 else -math.inf for v in values.tolist()])
    logf = ctypes.CDLL(ctypes.util.find_library("m")).logf
    logf.restype, logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.array([logf(v) if v > 0 else -math.inf for v in values.tolist()], np.float32)


def test_log_singular_values_of_a_zero_matrix_are_minus_infinity(downstream: ModuleType) -> None:
    status, logs = downstream.singular_values(np.zeros((3, 2)), True)
    assert status == 0 and logs.tolist() == [-math.inf, -math.inf]


def test_downstream_sees_the_pxd_constants(downstream: ModuleType) -> None:
    assert downstream.codes() == {
        "relu": jacgeom.activations.CODES["relu"],
        "silu": jacgeom.activations.CODES["silu"],
        "bad_argument": ck.STATUS["bad_argument"],
    }
    assert ck.ACTIVATION_CODES == jacgeom.activations.CODES


# ---------------------------------------------------------------------------------------
# Numba, through __pyx_capi__.


def _strides(A: np.ndarray) -> tuple[int, ...]:
    return tuple(s // A.itemsize for s in A.strides)


def _numba_rank_loop() -> Any:
    """An @njit loop calling dmasked_rank at the address numba reads from __pyx_capi__."""
    from numba.extending import get_cython_function_address

    address = get_cython_function_address("jacgeom.cython_kernels", "dmasked_rank")
    n_ = ctypes.c_ssize_t
    p_ = ctypes.c_void_p
    prototype = ctypes.CFUNCTYPE(
        n_, p_, n_, n_, n_, n_, p_, n_, ctypes.c_double, ctypes.c_double, p_, p_, n_
    )
    rank = prototype(address)
    lwork_of = ck.ctypes_function("dmasked_rank_workspace")

    @numba.njit(cache=False)
    def loop(W: np.ndarray, masks: np.ndarray, tol: float, rtol: float) -> np.ndarray:
        m, n = W.shape
        work = np.empty(lwork_of(m, n))
        out = np.empty(masks.shape[0], np.int64)
        rs, cs = W.strides[0] // 8, W.strides[1] // 8
        for b in range(masks.shape[0]):
            out[b] = rank(
                W.ctypes.data,
                m,
                n,
                rs,
                cs,
                masks[b].ctypes.data,
                1,
                tol,
                rtol,
                0,
                work.ctypes.data,
                work.size,
            )
        return out

    return loop


def test_numba_masked_rank_equals_the_python_api() -> None:
    loop = _numba_rank_loop()
    for label, W, masks in _cases(np.float64):
        for tolerance in ({}, {"rtol": 1e-2}):
            rtol = tolerance.get("rtol", np.nan)
            expected = _python_ranks(W, masks, **tolerance)
            np.testing.assert_array_equal(loop(W, masks, np.nan, rtol), expected, err_msg=label)


def test_numba_float32_kernels_through_ctypes_function() -> None:
    """The s-prefixed functions from @njit, with ctypes_function's prototypes."""
    rank = ck.ctypes_function("smasked_rank")
    values = ck.ctypes_function("ssingular_values")
    deriv = ck.ctypes_function("sderivatives")
    metric = ck.ctypes_function("spullback_metric")

    @numba.njit
    def run(
        W: np.ndarray,
        mask: np.ndarray,
        mask_f: np.ndarray,
        work: np.ndarray,
        s: np.ndarray,
        d: np.ndarray,
    ) -> Any:
        m, n = W.shape
        r = rank(
            W.ctypes.data,
            m,
            n,
            n,
            1,
            mask.ctypes.data,
            1,
            np.nan,
            np.nan,
            0,
            work.ctypes.data,
            work.size,
        )
        st = values(W.ctypes.data, m, n, n, 1, s.ctypes.data, 1, work.ctypes.data, work.size)
        sd = deriv(4, np.float32(0.0), W.ctypes.data, 1, d.ctypes.data, 1, d.size)
        G = np.empty((n, n), np.float32)
        sg = metric(
            W.ctypes.data,
            m,
            n,
            n,
            1,
            mask_f.ctypes.data,
            1,
            G.ctypes.data,
            work.ctypes.data,
            work.size,
        )
        return r, st, sd, sg, G

    rng = np.random.default_rng(9)
    W = _deficient(rng, 10, 8, 5, np.float32)
    mask = (rng.random(10) < 0.8).astype(np.uint8)
    work = np.empty(
        max(
            ck.workspace_size("masked_rank", 10, 8, "float32"),
            ck.workspace_size("singular_values", 10, 8, "float32"),
            ck.workspace_size("pullback_metric", 10, 8, "float32"),
        )
    )
    s, d = np.empty(8, np.float32), np.empty(8, np.float32)
    r, st, sd, sg, G = run(W, mask, mask.astype(np.float32), work, s, d)
    assert (st, sd, sg) == (0, 0, 0)
    np.testing.assert_array_equal(
        G, jacgeom._dispatch.call("pullback_metric", "cpp", W, mask[None].astype(np.float32))[0]
    )
    assert r == jacgeom.masked_rank(W, mask.astype(bool), backend="cpp")
    expected = jacgeom.layer_singular_values(
        W, np.zeros(8, np.float32), activation="identity", backend="cpp"
    )
    np.testing.assert_array_equal(s, expected)
    tanh = jacgeom.layer_derivatives(
        np.eye(8, dtype=np.float32), W[0, :8], activation="tanh", backend="cpp"
    )
    np.testing.assert_array_equal(d, tanh)


# ---------------------------------------------------------------------------------------
# Statuses of the C functions, errors of the Python helpers.


def _call_rank(
    W: np.ndarray,
    mask: np.ndarray,
    tol: float = np.nan,
    rtol: float = np.nan,
    lwork: int | None = None,
) -> int:
    f = ck.ctypes_function("dmasked_rank")
    work = np.empty(max(1, ck.workspace_size("masked_rank", *W.shape)))
    return f(
        W.ctypes.data,
        *W.shape,
        *_strides(W),
        mask.ctypes.data,
        1,
        tol,
        rtol,
        None,
        work.ctypes.data,
        work.size if lwork is None else lwork,
    )


def test_statuses() -> None:
    W = np.arange(12.0).reshape(4, 3)
    mask = np.ones(4, np.uint8)
    assert _call_rank(W, mask) == 2
    assert _call_rank(W, mask, tol=1e-3, rtol=1e-3) == ck.STATUS["bad_argument"]
    assert _call_rank(W, mask, tol=-1.0) == ck.STATUS["bad_argument"]
    assert _call_rank(W, mask, rtol=np.inf) == ck.STATUS["bad_argument"]
    assert _call_rank(W, mask, lwork=3) == ck.STATUS["workspace_small"]
    bad = W.copy()
    bad[2, 1] = np.nan
    assert _call_rank(bad, mask) == ck.STATUS["non_finite"]
    assert _call_rank(bad, np.array([1, 1, 0, 0], np.uint8)) == 2  # the NaN row is not kept
    assert _call_rank(np.zeros((0, 3)), mask[:0]) == 0
    assert _call_rank(np.zeros((4, 0)), mask) == 0
    assert ck.ctypes_function("dmasked_rank_workspace")(1024, 1024) == ck.STATUS["too_large"]
    assert ck.ctypes_function("dmasked_rank_workspace")(2**40, 2**40) == ck.STATUS["too_large"]
    assert ck.ctypes_function("ssingular_values_workspace")(-1, 2) == ck.STATUS["bad_argument"]
    z = np.zeros(3)
    assert (
        ck.ctypes_function("dderivatives")(99, 0.0, z.ctypes.data, 1, z.ctypes.data, 1, 3)
        == (ck.STATUS["bad_argument"])
    )


def test_singular_values_of_a_non_finite_matrix_are_nan() -> None:
    f = ck.ctypes_function("dsingular_values")
    A = np.ones((3, 3))
    A[1, 1] = np.inf
    s = np.zeros(3)
    work = np.empty(ck.workspace_size("singular_values", 3, 3))
    assert (
        f(A.ctypes.data, 3, 3, 3, 1, s.ctypes.data, 1, work.ctypes.data, work.size)
        == (ck.STATUS["non_finite"])
    )
    assert np.isnan(s).all()


def test_helpers_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no C-level function 'dmasked'"):
        ck.ctypes_function("dmasked")
    with pytest.raises(ValueError, match="no C-level function 'zmasked_rank'"):
        ck.ctypes_function("zmasked_rank")
    with pytest.raises(TypeError, match="name must be a str, got int"):
        ck.ctypes_function(3)
    with pytest.raises(ValueError, match="kernel must be one of"):
        ck.workspace_size("qr", 3, 3)
    with pytest.raises(TypeError, match="rows must be an integer, got float"):
        ck.workspace_size("masked_rank", 3.0, 3)
    with pytest.raises(TypeError, match="cols must be an integer, got bool"):
        ck.workspace_size("masked_rank", 3, True)
    with pytest.raises(ValueError, match="rows must be >= 0, got -2"):
        ck.workspace_size("masked_rank", -2, 3)
    with pytest.raises(ValueError, match="dtype must be float64 or float32, got int32"):
        ck.workspace_size("masked_rank", 3, 3, "int32")
    with pytest.raises(ValueError, match=r"above the C-level API's limit"):
        ck.workspace_size("singular_values", 1024, 1024)
    assert ck.workspace_size("masked_rank", 16, 16) == ck.ctypes_function("dmasked_rank_workspace")(
        16, 16
    )


def test_every_pxd_function_is_in_pyx_capi() -> None:
    pxd = Path(ck.__file__).with_name("cython_kernels.pxd").read_text()
    import re

    declared = set(re.findall(r"^cdef \w+ (\w+)\(", pxd, flags=re.MULTILINE))
    assert len(declared) == 20
    assert declared == set(ck.__pyx_capi__)
    for name in declared:
        ck.ctypes_function(name)  # a prototype for each


# ---------------------------------------------------------------------------------------
# The headers, on their own.


def test_headers_compile_without_python(tmp_path: Path) -> None:
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    include = Path(jacgeom.get_include())
    assert (include / "jacgeom" / "capi.hpp").is_file()
    source = tmp_path / "standalone.cpp"
    source.write_text(
        "#include <jacgeom/capi.hpp>\n"
        "int main() { return jacgeom::capi::masked_rank_workspace<double>(4, 4) > 0 ? 0 : 1; }\n"
    )
    done = subprocess.run(
        [compiler, "-std=c++17", "-fsyntax-only", f"-I{include}", str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "Python.h" not in "".join(p.read_text() for p in (include / "jacgeom").glob("*.hpp"))
