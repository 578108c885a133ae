"""Single-layer kernels: every backend against the numpy reference, and the reference
against independent truths (finite differences, numpy.linalg, the singular-value bounds of
docs/theory.md, "The layer Jacobian")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import jacgeom
from jacgeom import reference

from .conftest import assert_close, rtol_for

KERNELS: dict[str, Callable[..., Any]] = {
    "preactivations": jacgeom.preactivations,
    "layer_derivatives": jacgeom.layer_derivatives,
    "layer_jacobian": jacgeom.layer_jacobian,
    "pullback_metric": jacgeom.pullback_metric,
    "layer_singular_values": jacgeom.layer_singular_values,
    "log_volume": jacgeom.log_volume,
}
SHAPES = [
    (0, 3, 2),
    (1, 1, 1),
    (5, 1, 4),
    (5, 4, 1),
    (7, 5, 3),
    (6, 3, 5),
    (9, 13, 13),
    (3, 40, 17),
]
ACTIVATIONS = ["relu", "gelu", "tanh", "leaky_relu", "silu", "identity"]


def data(B: int, m: int, n: int, dtype: type, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng([seed, B, m, n])
    W = rng.standard_normal((m, n)).astype(dtype)
    X = rng.standard_normal((B, n)).astype(dtype)
    b = (0.3 * rng.standard_normal(m)).astype(dtype)
    return W, X, b


def expected_shape(name: str, B: int, m: int, n: int) -> tuple[int, ...]:
    return {
        "preactivations": (B, m),
        "layer_derivatives": (B, m),
        "layer_jacobian": (B, m, n),
        "pullback_metric": (B, n, n),
        "layer_singular_values": (B, min(m, n)),
        "log_volume": (B,),
    }[name]


def check(
    name: str, W: Any, X: Any, b: Any, act: str, backend: str, dtype: type
) -> np.ndarray | None:
    """The backend's result, compared with the reference's (None where it must raise)."""
    Wa = np.asarray(W)
    m, n = Wa.shape
    if name == "log_volume" and m < n:
        with pytest.raises(ValueError, match="log_volume needs m >= n"):
            KERNELS[name](W, X, b, activation=act, backend=backend)
        return None
    got = KERNELS[name](W, X, b, activation=act, backend=backend)
    want = getattr(reference, name)(np.ascontiguousarray(W), np.ascontiguousarray(X), b, act)
    if name == "log_volume":
        # log sigma_i carries an absolute error of about eps * sigma_max / sigma_i in any
        # backward-stable method (the reference's SVD included), so the tolerance follows the
        # conditioning of each sample.
        sv = reference.layer_singular_values(
            np.ascontiguousarray(W), np.ascontiguousarray(X), b, act
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = np.sum(sv[:, :1] / sv, axis=1) if sv.size else np.zeros(len(want))
        eps = float(np.finfo(dtype).eps)
        atol = 16 * eps * max(m, n) * spread + rtol_for(dtype) * np.abs(want)
        # Full rank or not is decided against sigma_max * max(m, n) * eps; a sample whose
        # sigma_min / sigma_max lies within the rounding of any SVD of that threshold may go
        # either way (seen: 7.24e-7 against 7.15e-7 in float32), so it is not compared.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = sv[:, -1] / sv[:, 0] if sv.size else np.zeros(len(want))
        clear = ~(np.abs(ratio - max(m, n) * eps) <= 4 * max(m, n) * eps)
        finite = np.isfinite(want) & clear
        np.testing.assert_array_equal(np.isfinite(got)[clear], finite[clear])
        infinite = ~np.isfinite(want) & clear
        np.testing.assert_array_equal(got[infinite], want[infinite])
        assert np.all(np.abs(got[finite] - want[finite]) <= atol[finite]), (got, want, atol)
        assert got.dtype == want.dtype
        return got
    scale = None
    if name in ("layer_singular_values", "pullback_metric", "log_volume"):
        # Absolute accuracy of spectra is relative to the largest value (or to n for logs).
        finite = want[np.isfinite(want)]
        scale = max(float(np.abs(finite).max(initial=0.0)), 1.0) * max(m, n)
    assert_close(got, want, dtype, scale)
    return got


@pytest.mark.parametrize(
    ("name", "act"),
    # z = W x + b does not depend on the activation: preactivations once, not once per act
    [(name, act) for name in KERNELS for act in ACTIVATIONS if name != "preactivations"]
    + [("preactivations", ACTIVATIONS[0])],
)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backend_matches_reference(
    name: str, shape: tuple[int, int, int], act: str, backend: str, dtype: type
) -> None:
    B, m, n = shape
    W, X, b = data(B, m, n, dtype)
    out = check(name, W, X, b, act, backend, dtype)
    if out is not None:
        assert out.shape == expected_shape(name, B, m, n)
        assert out.dtype == dtype


@pytest.mark.parametrize("name", list(KERNELS))
def test_awkward_strides(name: str, backend: str, dtype: type) -> None:
    rng = np.random.default_rng(7)
    Wbig = rng.standard_normal((14, 10)).astype(dtype)
    Xbig = rng.standard_normal((11, 12)).astype(dtype)
    W = Wbig[::-2, 1::2]  # negative stride, non-contiguous (7, 5)
    X = Xbig[::2, 2:7]  # strided rows (6, 5)
    b = rng.standard_normal(14).astype(dtype)[::2]
    Wt = np.asfortranarray(W)
    before = [a.copy() for a in (W, X, b)]
    check(name, W, X, b, "relu", backend, dtype)
    check(name, Wt, X, b, "gelu", backend, dtype)
    for a, a0 in zip((W, X, b), before, strict=True):
        np.testing.assert_array_equal(a, a0)  # inputs never modified


def test_read_only_and_broadcast_inputs(backend: str) -> None:
    W, X, b = data(4, 6, 3, np.float64)
    W.setflags(write=False)
    Xb = np.broadcast_to(X[0], (4, 3))  # zero stride
    got = jacgeom.pullback_metric(W, Xb, b, backend=backend)
    want = reference.pullback_metric(W, np.ascontiguousarray(Xb), b)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(KERNELS))
def test_one_dimensional_x_drops_batch_axis(name: str, backend: str) -> None:
    W, X, b = data(3, 6, 4, np.float64)
    batch = KERNELS[name](W, X, b, backend=backend)
    single = KERNELS[name](W, X[1], b, backend=backend)
    assert single.shape == batch.shape[1:]
    np.testing.assert_allclose(single, batch[1], rtol=1e-12, atol=1e-12)


def test_mixed_dtypes_promote(backend: str) -> None:
    W, X, b = data(3, 4, 4, np.float32)
    assert jacgeom.layer_jacobian(W, X.astype(np.float64), backend=backend).dtype == np.float64
    assert jacgeom.layer_jacobian(W, X.astype(np.float16), backend=backend).dtype == np.float32
    assert (
        jacgeom.layer_jacobian(W.astype(int), X.astype(bool), backend=backend).dtype == np.float64
    )


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(0, 6),
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    act=st.sampled_from(jacgeom.activation_names()),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
    transpose=st.booleans(),
)
def test_hypothesis_all_kernels(
    B: int, m: int, n: int, act: str, dtype: type, seed: int, transpose: bool
) -> None:
    rng = np.random.default_rng(seed)
    W = (
        rng.standard_normal((n, m)).astype(dtype).T
        if transpose
        else rng.standard_normal((m, n)).astype(dtype)
    )
    X = (3 * rng.standard_normal((B, n))).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    for backend in jacgeom.backends():
        for name in KERNELS:
            check(name, W, X, b, act, backend, dtype)


# ----- the reference against independent truths ------------------------------------------


@pytest.mark.parametrize(
    "act", ["gelu", "tanh", "sigmoid", "softplus", "silu", "gelu_tanh", "elu", "relu"]
)
def test_reference_jacobian_matches_finite_differences(act: str) -> None:
    rng = np.random.default_rng(3)
    W, x, b = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal(6)
    phi = jacgeom.activation(act).phi
    h = 1e-6
    fd = np.stack(
        [(phi(W @ (x + h * e) + b) - phi(W @ (x - h * e) + b)) / (2 * h) for e in np.eye(4)], axis=1
    )
    np.testing.assert_allclose(reference.layer_jacobian(W, x, b, act), fd, rtol=1e-6, atol=1e-8)


def test_singular_value_bounds_of_theory() -> None:
    # min|d| sigma_k(W) <= sigma_k(D W) <= max|d| sigma_k(W), and equality fails in general.
    rng = np.random.default_rng(5)
    W, X = rng.standard_normal((8, 5)), rng.standard_normal((50, 5))
    d = jacgeom.layer_derivatives(W, X, activation="tanh")
    s = jacgeom.layer_singular_values(W, X, activation="tanh")
    sw = np.linalg.svd(W, compute_uv=False)
    lo = np.abs(d).min(axis=1, keepdims=True) * sw
    hi = np.abs(d).max(axis=1, keepdims=True) * sw
    assert np.all(lo <= s * (1 + 1e-12)) and np.all(s <= hi * (1 + 1e-12))
    assert not np.allclose(s, np.sort(np.abs(d[:, :5]) * sw, axis=1)[:, ::-1])


def test_log_volume_is_sum_of_log_singular_values(backend: str) -> None:
    rng = np.random.default_rng(11)
    W, X = rng.standard_normal((12, 5)), rng.standard_normal((20, 5))
    v = jacgeom.log_volume(W, X, activation="softplus", backend=backend)
    s = np.linalg.svd(reference.layer_jacobian(W, X, None, "softplus"), compute_uv=False)
    np.testing.assert_allclose(v, np.log(s).sum(axis=1), rtol=1e-12)
    G = jacgeom.pullback_metric(W, X, activation="softplus", backend=backend)
    np.testing.assert_allclose(v, 0.5 * np.linalg.slogdet(G)[1], rtol=1e-9)


def test_log_volume_rank_deficient_W_is_minus_inf(backend: str) -> None:
    # W of rank 3 < n = 4, built on purpose: every sample is singular for every activation.
    rng = np.random.default_rng(2)
    W = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 4))
    X = rng.standard_normal((6, 4))
    for act in ["tanh", "identity", "relu"]:
        assert np.all(jacgeom.log_volume(W, X, activation=act, backend=backend) == -np.inf)


def test_log_volume_ill_conditioned_but_full_rank(backend: str) -> None:
    # Graded column scales 1 .. 1e-9: far above the tolerance (~1e-14), so finite, and equal
    # to the reference; the C++ certificate or its SVD fallback must both agree.
    rng = np.random.default_rng(4)
    W = rng.standard_normal((9, 4)) * np.logspace(0, -9, 4)
    X = rng.standard_normal((5, 4))
    got = jacgeom.log_volume(W, X, activation="identity", backend=backend)
    want = reference.log_volume(W, X, None, "identity")
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_relu_dead_rows_delete_rank(backend: str) -> None:
    W = np.eye(3)
    X = np.array([[1.0, 2.0, 3.0], [1.0, -2.0, 3.0], [-1.0, -2.0, -3.0]])
    s = jacgeom.layer_singular_values(W, X, backend=backend)
    np.testing.assert_array_equal((s > 0).sum(axis=1), [3, 2, 0])
    G = jacgeom.pullback_metric(W, X, backend=backend)
    np.testing.assert_array_equal(G[1], np.diag([1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(G[2], np.zeros((3, 3)))


def test_results_do_not_depend_on_thread_count(compiled_backend: str) -> None:
    W, X, b = data(37, 20, 12, np.float64, seed=9)
    before = jacgeom.get_num_threads()
    try:
        outs = []
        for k in (1, 2, 3):
            jacgeom.set_num_threads(k)
            outs.append(
                [
                    KERNELS[name](W, X, b, activation="gelu", backend=compiled_backend)
                    for name in KERNELS
                ]
            )
    finally:
        jacgeom.set_num_threads(before)
    for other in outs[1:]:
        for a, c in zip(outs[0], other, strict=True):
            np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-13)


def test_empty_batch_every_kernel(backend: str) -> None:
    W, X, b = data(0, 4, 3, np.float64)
    for name, fn in KERNELS.items():
        out = fn(W, X, b, backend=backend)
        assert out.shape == expected_shape(name, 0, 4, 3)


def test_check_finite_false_does_not_crash(backend: str) -> None:
    W, X, b = data(3, 5, 4, np.float64)
    X[0, 0] = np.nan
    X[1, 1] = np.inf
    with np.errstate(all="ignore"):
        for name, fn in KERNELS.items():
            out = fn(W, X, b, activation="tanh", backend=backend, check_finite=False)
            assert out.shape == expected_shape(name, 3, 5, 4)


def test_rtol_helper_sane() -> None:
    assert rtol_for(np.float32) > rtol_for(np.float64)


def test_layer_jacobian_into_out(backend: str, dtype: type) -> None:
    W, X, b = data(6, 5, 4, dtype)
    out = np.full((6, 5, 4), np.nan, dtype=dtype)
    got = jacgeom.layer_jacobian(W, X, b, activation="gelu", backend=backend, out=out)
    assert got is out
    assert_close(out, reference.layer_jacobian(W, X, b, "gelu"), dtype)
    one = np.empty((5, 4), dtype=dtype)
    assert jacgeom.layer_jacobian(W, X[2], b, backend=backend, out=one) is one
    np.testing.assert_array_equal(one, jacgeom.layer_jacobian(W, X, b, backend=backend)[2])


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_layer_jacobian_large_output_streaming_stores(
    compiled_backend: str, dtype: type, act: str
) -> None:
    # Outputs of 64 MiB and more take the streaming-store path of the C++ kernel; odd n
    # puts every row at a different alignment, and an out= that starts one element into its
    # buffer exercises the head of each row before its first 16-byte boundary. Numba has no
    # such path (its kernel is the same at every size): the same checks on 3 samples.
    itemsize = np.dtype(dtype).itemsize
    B = (2**26 // (256 * 257 * itemsize)) + 1 if compiled_backend == "cpp" else 3
    m, n = 256, 257
    W, X, b = data(B, m, n, dtype)
    want = reference.layer_jacobian(W, X, b, act)
    assert_close(
        jacgeom.layer_jacobian(W, X, b, activation=act, backend=compiled_backend), want, dtype
    )
    out = np.zeros(B * m * n + 1, dtype=dtype)[1:].reshape(B, m, n)
    jacgeom.layer_jacobian(W, X, b, activation=act, backend=compiled_backend, out=out)
    assert_close(out, want, dtype)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda dt: np.empty((6, 5, 3), dt),
            ValueError,
            r"out has shape \(6, 5, 3\); expected \(6, 5, 4\)",
        ),
        (lambda dt: np.empty((6, 5, 4), np.float16), TypeError, "out has dtype float16"),
        (lambda dt: np.empty((6, 4, 5), dt).transpose(0, 2, 1), ValueError, "C-contiguous"),
        (lambda dt: [[0.0]], TypeError, "out must be a numpy ndarray"),
        (
            lambda dt: (
                np.zeros(120 * np.dtype(dt).itemsize + 1, np.uint8)[1:].view(dt).reshape(6, 5, 4)
            ),
            ValueError,
            "aligned",
        ),
    ],
)
def test_layer_jacobian_bad_out(
    make: Any, error: type[Exception], match: str, backend: str
) -> None:
    W, X, b = data(6, 5, 4, np.float64)
    with pytest.raises(error, match=match):
        jacgeom.layer_jacobian(W, X, b, backend=backend, out=make(np.float64))
    ro = np.empty((6, 5, 4))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        jacgeom.layer_jacobian(W, X, b, backend=backend, out=ro)


def test_misaligned_inputs(backend: str, dtype: type) -> None:
    # A view that starts one byte into its buffer is legal numpy; the kernels get an
    # aligned copy (whole-element loads of a misaligned one are undefined behaviour).
    W, X, b = data(5, 6, 4, dtype)
    raw = np.zeros(W.nbytes + 1, np.uint8)[1:]
    Wm = raw.view(dtype).reshape(W.shape)
    Wm[...] = W
    assert not Wm.flags.aligned
    for fn in KERNELS.values():
        assert_close(fn(Wm, X, b, backend=backend), fn(W, X, b, backend=backend), dtype)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        *[
            (shape, dtype)
            for dtype in (np.float64, np.float32)
            for shape in [
                (1, 1),
                (1, 5),
                (5, 1),
                (2, 3),
                (16, 8),
                (8, 16),
                (17, 33),
                (64, 64),
                (65, 65),
                (64, 100),
                (100, 64),
                (257, 256),
                (600, 250),  # float64: above 1 MiB and twice as tall as wide: QR first
                (250, 600),
                (1100, 300),  # both dtypes: QR first
                (800, 700),  # float64: above 4 MiB: gesdd
            ]
        ],
        ((1100, 1000), np.float32),  # float32 above 4 MiB: gesdd
    ],
)
def test_batched_singular_values_on_every_path(shape: tuple[int, int], dtype: type) -> None:
    # Up to 4 MiB the written-out bidiagonalisation (after a QR factorisation for tall
    # shapes above 1 MiB) + bdsqr, above it gesdd: every path must agree with numpy on
    # random, graded, tiny, huge, zero-row and zero matrices, and give NaN (not a crash or
    # a hang) for non-finite ones.
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    m, n = shape
    rng = np.random.default_rng(m * 1000 + n)
    A = rng.standard_normal((12 if m * n < 10**5 else 7, m, n))
    big = 1e300 if dtype == np.float64 else 1e30
    A[1] = 0.0
    A[2, ::2] = 0.0
    A[3] *= big
    A[4] /= big
    A[5, :, : n // 2 + 1] *= 1e-9  # graded columns
    A[6] = np.outer(rng.standard_normal(m), rng.standard_normal(n))  # rank one
    A = A.astype(dtype)
    # Called as the public functions call it, scipy's BLAS pinned to one thread: unpinned,
    # each kernel thread's gesdd starts OpenBLAS threads of its own, and their spin-waits
    # took 7 s instead of 0.07 with another busy process on two cores. numpy's reference SVD
    # on one thread too, for the same reason (30 s instead of 1); the values are the same.
    with _backends.single_threaded_blas():
        s = _backends.core.batched_singular_values(np.ascontiguousarray(A))
    with threadpool_limits(1, user_api="blas"):
        want = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    scale = np.maximum(want[:, :1], np.finfo(np.float64).tiny)
    assert np.all(np.abs(s - want) <= 50 * np.finfo(dtype).eps * max(m, n) * scale)
    assert np.all(s[1] == 0)
    assert np.all(np.diff(s, axis=1) <= 0)  # descending
    bad = A[:3].copy()
    bad[0, 0, 0] = np.nan
    bad[1, -1, -1] = np.inf
    with _backends.single_threaded_blas():
        out = _backends.core.batched_singular_values(bad)
    assert np.all(np.isnan(out[:2])) and np.all(np.isfinite(out[2]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("transpose", [False, True])
def test_singular_values_with_a_row_in_the_subnormal_range(dtype: type, transpose: bool) -> None:
    # A row (or column) so small that its squares are subnormal: the Householder vector
    # made from it must be scaled first, or its tau is inexact, the reflector not
    # orthogonal, and the large rows it is applied to are corrupted (28% off once).
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    eps = np.finfo(dtype).eps
    scales = (
        [1e-150, 1e-158, 1e-160, 1e-161, 1e-200, 1e-300, 1e-320]
        if dtype == np.float64
        else [1e-18, 1e-20, 1e-22, 1e-25, 1e-30, 1e-40]
    )
    rng = np.random.default_rng(7)
    for n in (3, 5, 64, 200):
        A = rng.standard_normal((len(scales), n, n)).astype(dtype)
        for i, scale in enumerate(scales):
            A[i, 0] *= dtype(scale)
        A[0, 0] = 0.0
        A[0, 0, 1] = dtype(scales[3])  # a lone tiny entry in a zero row
        if transpose:
            A = np.ascontiguousarray(A.transpose(0, 2, 1))
        s = _backends.core.batched_singular_values(A)
        want = np.linalg.svd(A.astype(np.float64), compute_uv=False)
        assert np.all(np.abs(s - want) <= 50 * eps * n * want[:, :1])


def test_saturated_float32_unit_keeps_the_other_singular_values() -> None:
    # A tanh unit saturated to phi' ~ 1e-20 in float32: its row of D W is in the subnormal
    # squares' range (the case above, reached through the public API).
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 64)).astype(np.float32)
    W[0] *= 0.01
    X = rng.standard_normal((6, 64)).astype(np.float32)
    b = np.zeros(32, np.float32)
    b[0] = 24.0
    want = jacgeom.layer_singular_values(W, X, b, activation="tanh", backend="numpy")
    for backend in jacgeom.backends():
        got = jacgeom.layer_singular_values(W, X, b, activation="tanh", backend=backend)
        assert np.all(np.abs(got - want) <= 50 * np.finfo(np.float32).eps * 64 * want[:, :1])


def _gram_kernels() -> list[str]:
    from jacgeom import _backends

    return [] if _backends.core is None else list(_backends.core.gram_kernels())


@pytest.mark.parametrize("kernel", _gram_kernels() or ["none"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1), (3, 1), (1, 5), (7, 9), (40, 17), (13, 33), (300, 100), (100, 300), (257, 255)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_pullback_metric_on_every_gram_kernel(
    kernel: str, shape: tuple[int, int], act: str, dtype: type
) -> None:
    # Each Gram kernel this CPU can run (the tiled AVX-512 and AVX2 ones, BLAS syrk) against
    # the reference: widths that leave partial panels, dead rows compacted away (relu, one
    # sample with every unit dead), and the result exactly symmetric.
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    m, n = shape
    W, X, b = data(5, m, n, dtype, seed=3)
    b[:] = b.dtype.type(0.3)
    X[0] = 0
    got = _with_gram_kernel(
        kernel, lambda: jacgeom.pullback_metric(W, X, b, activation=act, backend="cpp")
    )
    dead = _with_gram_kernel(
        kernel, lambda: jacgeom.pullback_metric(W, X[:1], b - 1, activation="relu", backend="cpp")
    )
    want = reference.pullback_metric(W, X, b, act)
    assert got.dtype == dtype
    assert_close(got, want, dtype, max(float(np.abs(want).max(initial=0.0)), 1.0) * max(m, n))
    np.testing.assert_array_equal(got, got.transpose(0, 2, 1))
    np.testing.assert_array_equal(dead, np.zeros((1, n, n), dtype))


def _with_gram_kernel(kernel: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
    from jacgeom import _backends

    core = _backends.core
    before = core.get_gram_kernel()
    try:
        core.set_gram_kernel(kernel)
        return fn()
    finally:
        core.set_gram_kernel(before)


def test_pullback_metric_above_the_tiled_kernel_size() -> None:
    # A packed operand above 8 MiB (1049 active rows of 1000 float64 columns) goes from the
    # tiled kernel to syrk: bitwise syrk's result there, the tiled kernel's one row below.
    # The kernel is called on fixed derivatives (the public function's preactivations may
    # round differently from call to call with the BLAS thread count).
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    core = _backends.core
    rng = np.random.default_rng(4)
    W = rng.standard_normal((1049, 1000))
    D = rng.uniform(0.5, 1.5, (1, 1049))
    for rows, handed_over in ((1049, True), (1048, False)):
        Wr, Dr = W[:rows], np.ascontiguousarray(D[:, :rows])
        got = core.pullback_metric(Wr, Dr)
        syrk = _with_gram_kernel("blas", lambda Wr=Wr, Dr=Dr: core.pullback_metric(Wr, Dr))
        want = np.einsum("bi,ij,ik->bjk", Dr**2, Wr, Wr)
        assert_close(got, want, np.float64, float(np.abs(want).max()) * rows)
        np.testing.assert_array_equal(got, got.transpose(0, 2, 1))
        if handed_over or core.get_gram_kernel() == "blas":
            np.testing.assert_array_equal(got, syrk)
        else:
            assert not np.array_equal(got, syrk)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pullback_metric_exact_on_integers_on_every_gram_kernel(dtype: type) -> None:
    # Small integers make every product and partial sum exact: every kernel (syrk with
    # 65,536-row blocks past that height) must return the exact Gram matrix, bitwise.
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    rng = np.random.default_rng(5)
    for m, n in ((70_000, 3), (37, 29), (256, 17)):
        W = rng.integers(-3, 4, (m, n)).astype(dtype)
        X = rng.integers(-2, 3, (3, n)).astype(dtype)
        want = reference.pullback_metric(W, X, None, "relu")
        for kernel in _backends.core.gram_kernels():
            got = _with_gram_kernel(
                kernel, lambda W=W, X=X: jacgeom.pullback_metric(W, X, backend="cpp")
            )
            np.testing.assert_array_equal(got, want)


def test_gram_kernel_choice_is_checked() -> None:
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    with pytest.raises(ValueError, match="must be one of 'avx512', 'avx2', 'blas'"):
        _backends.core.set_gram_kernel("sse")
    assert _backends.core.get_gram_kernel() == _backends.core.gram_kernels()[0]
