"""The C-level API (jacgeom.cython_kernels, issue 23): a downstream Cython extension built
here from source, and Numba code through __pyx_capi__, get the Python API's results (backend
"cpp") bit for bit; statuses and the Python-level helpers' errors; the headers compile on
their own.

The downstream extension is compiled once per session (about 6 s on two cores, at -O0).
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

    def network(list weights, list biases, int[::1] codes, floating[::1] params,
                const floating[:] x, bint log):
        # J (n_L, n_0) of the network at x (into a Fortran-order J), or its log singular
        # values (every other entry). biases None: no biases.
        cdef Py_ssize_t L = len(weights), l, item = sizeof(floating)
        cdef Py_ssize_t[::1] widths = np.empty(L + 1, np.intp)
        cdef Py_ssize_t[::1] strides = np.empty(2 * L, np.intp)
        cdef Py_ssize_t[::1] bstrides = np.empty(L, np.intp)
        cdef size_t[::1] wp = np.zeros(L, np.uintp)
        cdef size_t[::1] bp = np.zeros(L, np.uintp)
        cdef const floating[:, :] W
        cdef const floating[:] b
        for l in range(L):
            W = weights[l]
            widths[l], widths[l + 1] = W.shape[1], W.shape[0]
            strides[2 * l], strides[2 * l + 1] = W.strides[0] // item, W.strides[1] // item
            wp[l] = <size_t>&W[0, 0]
            if biases is not None:
                b = biases[l]
                bp[l] = <size_t>&b[0]
                bstrides[l] = b.strides[0] // item
        cdef Py_ssize_t n0 = widths[0], nL = widths[L], lwork, xs = x.strides[0] // item
        dtype = np.float64 if floating is double else np.float32
        if floating is double:
            lwork = (jk.dnetwork_log_singular_values_workspace(L, &widths[0]) if log
                     else jk.dnetwork_jacobian_workspace(L, &widths[0]))
        else:
            lwork = (jk.snetwork_log_singular_values_workspace(L, &widths[0]) if log
                     else jk.snetwork_jacobian_workspace(L, &widths[0]))
        cdef double[::1] work = np.empty(max(lwork, 1))
        cdef const floating* const* wptr = <const floating* const*>&wp[0]
        cdef const floating* const* bptr = (
            NULL if biases is None else <const floating* const*>&bp[0])
        cdef floating[::1, :] J
        cdef floating[::1] s
        cdef int status
        if log:
            out = np.full(2 * min(n0, nL) + 1, -7.0, dtype=dtype)
            s = out
            with nogil:
                if floating is double:
                    status = jk.dnetwork_log_singular_values(
                        L, &widths[0], wptr, &strides[0], bptr, &bstrides[0], &codes[0],
                        &params[0], &x[0], xs, &s[0], 2, &work[0], lwork)
                else:
                    status = jk.snetwork_log_singular_values(
                        L, &widths[0], wptr, &strides[0], bptr, &bstrides[0], &codes[0],
                        &params[0], &x[0], xs, &s[0], 2, &work[0], lwork)
            assert (out[1::2] == -7).all()  # the gaps are untouched
            return status, out[::2][:min(n0, nL)].copy()
        out = np.full((nL, n0), np.nan, dtype=dtype, order="F")
        J = out
        with nogil:
            if floating is double:
                status = jk.dnetwork_jacobian(
                    L, &widths[0], wptr, &strides[0], bptr, &bstrides[0], &codes[0],
                    &params[0], &x[0], xs, &J[0, 0], 1, nL, &work[0], lwork)
            else:
                status = jk.snetwork_jacobian(
                    L, &widths[0], wptr, &strides[0], bptr, &bstrides[0], &codes[0],
                    &params[0], &x[0], xs, &J[0, 0], 1, nL, &work[0], lwork)
        return status, out
    """
)

# The downstream module's own code only loops and forwards pointers, so its optimisation
# is not under test: at -O0 (after Python's -O3 on the command line, so it wins) it builds
# in about 6 s on two cores instead of 14.
DOWNSTREAM_SETUP = textwrap.dedent(
    """
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    ext = Extension("jg_downstream", ["jg_downstream.pyx"], extra_compile_args=["-O0"])
    setup(ext_modules=cythonize([ext], quiet=True))
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
# The network's Jacobian at one input.

# (label, widths, activations): depth 1 and deep, width 1 inside and at both ends,
# n_L < n_0 (accumulated from the output), n_L > n_0, mixed activations with parameters.
NETWORKS = [
    ("depth-1", [7, 3], "tanh"),
    ("one-by-one", [1, 1], "sigmoid"),
    ("width-1-inside", [4, 1, 6], "relu"),
    ("width-1-input", [1, 5, 4], "gelu"),
    ("width-1-output", [6, 5, 1], "silu"),
    ("narrowing", [9, 7, 3], "tanh"),
    ("widening", [2, 5, 9], "gelu_tanh"),
    ("deep", [3, 8, 8, 8, 8, 8, 8, 8, 12], "softplus"),
    ("deep-relu", [10, 16, 16, 16, 16, 16, 4], "relu"),
    ("mixed", [5, 6, 7, 6, 5], ["leaky_relu", "elu", "identity", "softplus"]),
]


def _network(widths: list[int], activation: Any, dtype: Any) -> jacgeom.Network:
    rng = np.random.default_rng(len(widths) * 100 + widths[0])
    weights = [
        rng.standard_normal((m, n)) / np.sqrt(max(n, 1)) * 1.5
        for n, m in zip(widths[:-1], widths[1:], strict=True)
    ]
    biases = [rng.standard_normal(m) * 0.3 for m in widths[1:]]
    if isinstance(activation, list):
        params = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7}, "softplus": {"beta": 2.5}}
        activation = [jacgeom.activation(a, **params.get(a, {})) for a in activation]
    return jacgeom.Network(
        [w.astype(dtype) for w in weights],
        [b.astype(dtype) for b in biases],
        activation=activation,
    )


def _layouts(W: np.ndarray) -> list[np.ndarray]:
    """W as C order, Fortran order and a view with negative and non-unit strides."""
    big = np.zeros((2 * W.shape[0], W.shape[1]), W.dtype)
    big[::2, ::-1] = W
    return [W, np.asfortranarray(W), big[::2, ::-1]]


def _c_arguments(net: jacgeom.Network, layout: int) -> tuple[list[Any], list[Any], Any, Any]:
    weights = [_layouts(np.asarray(W))[layout] for W in net.weights]
    biases = [np.asarray(b)[::-1].copy()[::-1] for b in net.biases]  # negative stride
    codes = np.array([a.code for a in net.activations], np.intc)
    params = np.array([a.parameter for a in net.activations], net.dtype)
    return weights, biases, codes, params


def _inputs(net: jacgeom.Network) -> np.ndarray:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, net.widths[0])).astype(net.dtype)
    X[3] = 0.0  # z = b: with relu, some units dead
    return X


def _assert_close(got: np.ndarray, expected: np.ndarray, depth: int, label: str) -> None:
    eps = float(np.finfo(expected.dtype).eps)
    scale = max(float(np.abs(expected).max(initial=0.0)), float(np.finfo(expected.dtype).tiny))
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * depth * eps * scale, err_msg=label)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NETWORKS, ids=[c[0] for c in NETWORKS])
def test_cython_network_jacobian_equals_the_python_api(
    downstream: ModuleType, dtype: Any, case: tuple[str, list[int], Any]
) -> None:
    label, widths, activation = case
    net = _network(widths, activation, dtype)
    X = _inputs(net)
    expected = {be: net.jacobian(X, backend=be) for be in ("cpp", "numba", "numpy")}
    for layout in range(3):
        weights, biases, codes, params = _c_arguments(net, layout)
        before = [w.copy() for w in weights]
        for i, x in enumerate(X):
            status, J = downstream.network(weights, biases, codes, params, x, False)
            assert status == 0 and J.dtype == dtype and J.shape == (widths[-1], widths[0])
            # At one input the Python API runs this very code: bit for bit, every layout.
            np.testing.assert_array_equal(J, net.jacobian(x, backend="cpp"), err_msg=label)
            np.testing.assert_array_equal(J, net.jacobian(x[None])[0], err_msg=label)
            for be, Jb in expected.items():  # batches multiply in another order
                _assert_close(J, Jb[i], net.depth, f"{label}, layout {layout}, x {i}, {be}")
            # A dead output unit's row is exactly zero, as in the Python API.
            np.testing.assert_array_equal(J[~expected["cpp"][i].any(axis=1)], 0)
        for w, b in zip(weights, before, strict=True):
            np.testing.assert_array_equal(w, b)


def test_cython_network_jacobian_sees_dead_layers_and_no_biases(downstream: ModuleType) -> None:
    """A layer with every relu unit dead gives J = 0 exactly; biases None is b = 0."""
    net = _network([4, 6, 5, 3], "relu", np.float64)
    weights, biases, codes, params = _c_arguments(net, 0)
    x = np.ones(4)
    dead = [b.copy() for b in biases]
    dead[1][:] = -1e3
    status, J = downstream.network(weights, dead, codes, params, x, False)
    assert status == 0 and not J.any()
    status, J = downstream.network(weights, None, codes, params, x, False)
    unbiased = jacgeom.Network(net.weights, [np.zeros_like(b) for b in biases], activation="relu")
    assert status == 0
    _assert_close(J, unbiased.jacobian(x, backend="cpp"), 3, "no biases")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NETWORKS, ids=[c[0] for c in NETWORKS])
def test_cython_network_log_singular_values(
    downstream: ModuleType, dtype: Any, case: tuple[str, list[int], Any]
) -> None:
    """Bit for bit the log singular values of the C-level J (the SVD of the Python API's
    layer_singular_values), and Network.log_singular_values to rounding where the values
    are well above the SVD's absolute error."""
    label, widths, activation = case
    net = _network(widths, activation, dtype)
    X = _inputs(net)
    weights, biases, codes, params = _c_arguments(net, 2)
    reference = net.log_singular_values(X, backend="numpy")
    eps = float(np.finfo(dtype).eps)
    for i, x in enumerate(X):
        status, J = downstream.network(weights, biases, codes, params, x, False)
        assert status == 0
        status, logs = downstream.network(weights, biases, codes, params, x, True)
        assert status == 0 and logs.dtype == dtype
        values = jacgeom.layer_singular_values(
            J, np.zeros(J.shape[1], dtype), activation="identity", backend="cpp"
        )
        np.testing.assert_array_equal(logs, _c_log(values), err_msg=label)
        resolved = reference[i] > reference[i].max(initial=-np.inf) + np.log(1e3 * eps)
        np.testing.assert_allclose(
            logs[resolved], reference[i][resolved], rtol=0, atol=1e3 * eps * net.depth
        )


def _numba_network_loop(dtype: Any) -> Any:
    """@njit: J of every row of X through [ds]network_jacobian, the float64 function at the
    address numba's get_cython_function_address reads from __pyx_capi__."""
    from numba.extending import get_cython_function_address

    if dtype == np.float64:
        n_, p_ = ctypes.c_ssize_t, ctypes.c_void_p
        prototype = ctypes.CFUNCTYPE(
            ctypes.c_int, n_, p_, p_, p_, p_, p_, p_, p_, p_, n_, p_, n_, n_, p_, n_
        )
        jacobian = prototype(
            get_cython_function_address("jacgeom.cython_kernels", "dnetwork_jacobian")
        )
    else:
        jacobian = ck.ctypes_function("snetwork_jacobian")

    @numba.njit
    def loop(
        widths: np.ndarray,
        pointers: np.ndarray,
        strides: np.ndarray,
        biases: np.ndarray,
        codes: np.ndarray,
        params: np.ndarray,
        X: np.ndarray,
        work: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        n0, nL = widths[0], widths[-1]
        out = np.empty((X.shape[0], nL, n0), X.dtype)
        status = np.empty(X.shape[0], np.int64)
        for b in range(X.shape[0]):
            status[b] = jacobian(
                widths.size - 1,
                widths.ctypes.data,
                pointers.ctypes.data,
                strides.ctypes.data,
                biases.ctypes.data,
                0,
                codes.ctypes.data,
                params.ctypes.data,
                X[b].ctypes.data,
                1,
                out[b].ctypes.data,
                n0,
                1,
                work.ctypes.data,
                work.size,
            )
        return status, out

    return loop


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_network_jacobian_equals_the_python_api(dtype: Any) -> None:
    loop = _numba_network_loop(dtype)
    for label, widths, activation in NETWORKS:
        net = _network(widths, activation, dtype)
        X = _inputs(net)
        weights, biases, codes, params = _c_arguments(net, 1)
        pointers = np.array([w.ctypes.data for w in weights], np.uintp)
        strides = np.array([s // w.itemsize for w in weights for s in w.strides], np.intp)
        contiguous = [np.ascontiguousarray(b) for b in biases]
        bias_pointers = np.array([b.ctypes.data for b in contiguous], np.uintp)
        work = np.empty(ck.network_workspace_size("network_jacobian", widths, dtype))
        status, J = loop(
            np.array(widths, np.intp), pointers, strides, bias_pointers, codes, params, X, work
        )
        assert (status == 0).all()
        _assert_close(J, net.jacobian(X, backend="cpp"), net.depth, label)
        for x, Jx in zip(X, J, strict=True):  # one input: the same code, bit for bit
            np.testing.assert_array_equal(Jx, net.jacobian(x, backend="cpp"), err_msg=label)


def _call_network(
    widths: list[int],
    codes: list[int],
    lwork: int | None = None,
    params: bool = True,
    scale: float = 1.0,
) -> int:
    f = ck.ctypes_function("dnetwork_jacobian")
    rng = np.random.default_rng(0)
    shapes = [(max(m, 0), max(n, 0)) for n, m in zip(widths[:-1], widths[1:], strict=True)]
    weights = [scale * rng.standard_normal(shape) for shape in shapes]
    pointers = np.array([w.ctypes.data for w in weights] or [0], np.uintp)
    strides = np.array([s // 8 for w in weights for s in w.strides] or [0], np.intp)
    code_array = np.array(codes or [0], np.intc)
    param_array = np.zeros(max(1, len(codes)))
    w = np.array(widths, np.intp)
    x = np.ones(max(1, widths[0]))
    J = np.empty(max(1, widths[0] * max(widths[-1], 0)))
    size = ck.ctypes_function("dnetwork_jacobian_workspace")(len(widths) - 1, w.ctypes.data)
    work = np.empty(max(1, size))
    return int(
        f(
            len(widths) - 1,
            w.ctypes.data,
            pointers.ctypes.data,
            strides.ctypes.data,
            None,
            None,
            code_array.ctypes.data,
            param_array.ctypes.data if params else None,
            x.ctypes.data,
            1,
            J.ctypes.data,
            max(1, widths[0]),
            1,
            work.ctypes.data,
            work.size if lwork is None else lwork,
        )
    )


def test_network_statuses() -> None:
    assert _call_network([3, 4, 2], [1, 4]) == 0
    assert _call_network([3, 0, 2], [1, 4]) == 0  # an empty layer: J = 0
    assert _call_network([3], []) == ck.STATUS["bad_argument"]  # depth 0
    assert _call_network([3, -1, 2], [1, 4]) == ck.STATUS["bad_argument"]
    assert _call_network([3, 4, 2], [1, 99]) == ck.STATUS["bad_argument"]
    assert _call_network([3, 4, 2], [1, 4], params=False) == ck.STATUS["bad_argument"]
    assert _call_network([3, 4, 2], [1, 4], lwork=2) == ck.STATUS["workspace_small"]
    assert _call_network([400, 400, 400], [1, 1]) == ck.STATUS["too_large"]
    # Identity layers of entries near 1e100: J of four (about 1e400) leaves the float range,
    # a status rather than infinities reported as success; of three (about 1e300) it does not.
    assert _call_network([3, 4, 4, 4, 2], [0, 0, 0, 0], scale=1e100) == ck.STATUS["non_finite"]
    assert _call_network([3, 4, 4, 2], [0, 0, 0], scale=1e100) == 0  # about 1e300: finite
    # A pre-activation beyond the float range: tanh'(inf) = 0 would give a finite J (zero
    # rows), which is not the network's Jacobian; a status, as the Python API raises.
    tanh = ck.ACTIVATION_CODES["tanh"]
    assert _call_network([64, 4, 2], [tanh, tanh], scale=4e307) == ck.STATUS["non_finite"]
    assert _call_network([64, 4, 2], [tanh, tanh], scale=1e300) == 0


def test_network_workspace_size_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kernel must be one of network_jacobian"):
        ck.network_workspace_size("jacobian", [3, 4])
    with pytest.raises(ValueError, match="widths must have at least 2 entries"):
        ck.network_workspace_size("network_jacobian", [3])
    with pytest.raises(TypeError, match=r"widths\[1\] must be an integer, got float"):
        ck.network_workspace_size("network_jacobian", [3, 4.0])
    with pytest.raises(ValueError, match=r"widths\[0\] must be >= 0, got -3"):
        ck.network_workspace_size("network_jacobian", [-3, 4])
    with pytest.raises(ValueError, match="dtype must be float64 or float32, got int8"):
        ck.network_workspace_size("network_jacobian", [3, 4], "int8")
    with pytest.raises(ValueError, match=r"above the C-level API's limit"):
        ck.network_workspace_size("network_log_singular_values", [400, 400, 400])


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


def test_huge_dimensions_are_too_large_not_an_overflow() -> None:
    # (2^61, 0): rows * cols = 0 passed the size check and the workspace's per-row regions
    # wrapped around (16 doubles), then a stride-0 mask walked 2^61 rows (SIGSEGV)
    for prefix in ("d", "s"):
        for kernel in ("masked_rank", "singular_values", "pullback_metric"):
            size = ck.ctypes_function(f"{prefix}{kernel}_workspace")
            assert size(2**61, 0) == size(0, 2**61) == ck.STATUS["too_large"], kernel
    work, mask = np.empty(16), np.ones(1, np.uint8)
    rank = ck.ctypes_function("dmasked_rank")(
        0, 2**61, 0, 0, 0, mask.ctypes.data, 0, np.nan, np.nan, None, work.ctypes.data, 16
    )
    assert rank == ck.STATUS["too_large"]
    # one dimension up to the limit alone is fine: 131,072 doubles are 1 MiB
    assert ck.ctypes_function("dmasked_rank_workspace")(131072, 1) > 0


@pytest.mark.parametrize(
    ("name", "param"),
    [
        ("leaky_relu", -0.1),
        ("leaky_relu", 0.0),
        ("elu", -1.0),
        ("softplus", 0.0),
        ("softplus", np.nan),
        ("elu", np.inf),
    ],
)
def test_activation_parameters_out_of_range_are_bad_arguments(name: str, param: float) -> None:
    # as jacgeom.activation refuses them (alpha, beta > 0 and finite); before, leaky_relu
    # with alpha < 0 returned status 0 and softplus with beta = 0 non_finite
    code = ck.ACTIVATION_CODES[name]
    with pytest.raises(ValueError):
        jacgeom.activation(name, **{"beta" if name == "softplus" else "alpha": param})
    z, out = np.array([1.0, -1.0]), np.empty(2)
    status = ck.ctypes_function("dderivatives")(
        code, param, z.ctypes.data, 1, out.ctypes.data, 1, 2
    )
    assert status == ck.STATUS["bad_argument"]
    f = ck.ctypes_function("dnetwork_jacobian")
    W, w = np.ones((2, 2)), np.array([2, 2], np.intp)
    pointers = np.array([W.ctypes.data], np.uintp)
    strides, codes, params = np.array([2, 1], np.intp), np.array([code], np.intc), np.array([param])
    J, work = np.empty(4), np.empty(ck.network_workspace_size("network_jacobian", [2, 2]))
    status = f(1, w.ctypes.data, pointers.ctypes.data, strides.ctypes.data, None, None,
               codes.ctypes.data, params.ctypes.data, z.ctypes.data, 1, J.ctypes.data, 2, 1,
               work.ctypes.data, work.size)  # fmt: skip
    assert status == ck.STATUS["bad_argument"]
    params[0] = 0.5  # in range: computed
    status = f(1, w.ctypes.data, pointers.ctypes.data, strides.ctypes.data, None, None,
               codes.ctypes.data, params.ctypes.data, z.ctypes.data, 1, J.ctypes.data, 2, 1,
               work.ctypes.data, work.size)  # fmt: skip
    assert status == 0


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
    assert len(declared) == 28
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
