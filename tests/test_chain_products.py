"""The chains' products on every product kernel this CPU runs (jacgeom/product.hpp: the tiled
AVX-512 kernel and BLAS gemm), against an independent float64 product.

The tiled kernel packs the right operand into panels of 8 (float64) or 16 (float32) columns
and computes 6 output rows by 4 panels at a time, so the shapes below leave partial panels,
fewer than 4 panels and every remainder of the rows modulo 6 (the output width n_L is the
row count of the reverse products); one inner dimension lies above the panel-group limit,
where the tiled setting falls back to gemm.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from jacgeom import _backends, _dispatch

from .conftest import rtol_for

pytestmark = pytest.mark.skipif(
    _backends.core is None, reason="the compiled extension is not built"
)


def _kernels() -> list[str]:
    return [] if _backends.core is None else list(_backends.core.product_kernels())


def _with_kernel(kernel: str, fn: Callable[[], Any]) -> Any:
    core = _backends.core
    before = core.get_product_kernel()
    try:
        core.set_product_kernel(kernel)
        return fn()
    finally:
        core.set_product_kernel(before)


def _chain(
    widths: Sequence[int], B: int, dtype: type, dead: float, per_sample: bool, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    Ws, Ds = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        shape = (B, n_out, n_in) if per_sample else (n_out, n_in)
        Ws.append((rng.standard_normal(shape) / np.sqrt(n_in)).astype(dtype))
        d = rng.uniform(0.5, 1.5, (B, n_out)) * (rng.random((B, n_out)) >= dead)
        Ds.append(d.astype(dtype))
    return Ws, Ds


def _float64_product(Ws: list[np.ndarray], Ds: list[np.ndarray], absolute: bool = False) -> Any:
    """D_L W_L ... D_1 W_1 in float64 from the same entries; with ``absolute``, of |D| |W|
    (the bound on each entry's rounding error's scale)."""
    f = np.abs if absolute else (lambda a: a)
    J = f(Ds[0].astype(np.float64))[:, :, None] * f(Ws[0].astype(np.float64))
    for W, d in zip(Ws[1:], Ds[1:], strict=True):
        J = np.matmul(f(d.astype(np.float64))[:, :, None] * f(W.astype(np.float64)), J)
    return J


SHAPES = [
    (1, 1, 1),
    (5, 7, 3),
    (6, 12, 6, 24),
    (17, 33, 6, 40),
    (64, 48, 96, 130),
    (129, 127, 131, 127),
    (2, 300, 257, 3),
    (9, 20, 11),
    (9, 20, 8),
]


@pytest.mark.parametrize("kernel", _kernels() or ["none"])
@pytest.mark.parametrize("widths", SHAPES, ids=lambda w: "-".join(map(str, w)))
@pytest.mark.parametrize("dead", [0.0, 0.4], ids=["all-live", "dead-units"])
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared-W", "per-sample-W"])
def test_chain_jacobian_on_every_product_kernel(
    kernel: str, widths: tuple[int, ...], dead: float, per_sample: bool, dtype: type
) -> None:
    Ws, Ds = _chain(widths, 5, dtype, dead, per_sample, seed=len(widths) + widths[1])
    want = _float64_product(Ws, Ds)
    scale = float(_float64_product(Ws, Ds, absolute=True).max(initial=0.0)) or 1.0
    for reverse in (False, True):
        got = _with_kernel(
            kernel, lambda r=reverse: _dispatch.call("chain_active", "cpp", Ws, Ds, r)
        )
        assert got.dtype == dtype and got.shape == want.shape
        err = np.abs(got.astype(np.float64) - want).max(initial=0.0)
        assert err <= rtol_for(dtype) * scale * max(widths), (reverse, err, scale)


@pytest.mark.parametrize("kernel", _kernels() or ["none"])
def test_chain_spectra_on_every_product_kernel(kernel: str, dtype: type) -> None:
    # The split products of the singular values and ranks use the same kernels.
    Ws, Ds = _chain((40, 70, 25, 90, 33), 6, dtype, 0.3, False, seed=4)
    want = np.linalg.svd(_float64_product(Ws, Ds), compute_uv=False)
    got = _with_kernel(kernel, lambda: _dispatch.call("chain_singular_values", "cpp", Ws, Ds))
    assert np.abs(got - want).max() <= rtol_for(dtype) * 100 * want[:, :1].max()
    ranks = _with_kernel(
        kernel, lambda: _dispatch.call("chain_rank", "cpp", Ws, Ds, _dispatch.Tolerance())
    )
    # 30% dead units of widths 25..90: the narrowest live count bounds the exact rank, and
    # the independent product's numerical rank is the same count.
    np.testing.assert_array_equal(ranks, np.linalg.matrix_rank(_float64_product(Ws, Ds)))


def test_inner_dimension_above_the_panel_group_limit(dtype: type) -> None:
    # k = 2100 rows of the right operand: 4 panels of them (256 bytes per row in either
    # dtype) are more than 512 KiB, so the tiled setting multiplies with gemm; values as the
    # reference.
    k = 2100
    Ws, Ds = _chain((3, k, 20), 2, dtype, 0.0, False, seed=9)
    want = _float64_product(Ws, Ds)
    scale = float(_float64_product(Ws, Ds, absolute=True).max())
    for kernel in _kernels():
        for reverse in (False, True):
            got = _with_kernel(
                kernel, lambda r=reverse: _dispatch.call("chain_active", "cpp", Ws, Ds, r)
            )
            assert np.abs(got - want).max() <= rtol_for(dtype) * scale * k


def test_non_finite_entries_propagate_on_every_product_kernel() -> None:
    # An infinity or NaN in a weight reaches the entries it touches on either kernel, as gemm
    # propagates it (the callers report non-finite results as errors).
    Ws, Ds = _chain((9, 14, 10), 2, np.float64, 0.0, False, seed=1)
    Ws[0][3, 4] = np.nan
    for kernel in _kernels():
        got = _with_kernel(kernel, lambda: _dispatch.call("chain_active", "cpp", Ws, Ds, True))
        assert np.isnan(got[:, :, 4]).all() and np.isfinite(np.delete(got, 4, axis=2)).all()


def test_unknown_or_unsupported_product_kernel_is_refused() -> None:
    core = _backends.core
    with pytest.raises(ValueError, match="product kernel must be one of"):
        core.set_product_kernel("avx9")
    assert core.get_product_kernel() == core.product_kernels()[0]
    if "avx512" not in core.product_kernels():
        with pytest.raises(ValueError, match="cannot run"):
            core.set_product_kernel("avx512")


def test_chain_active_writes_into_out() -> None:
    Ws, Ds = _chain((4, 6, 5), 3, np.float64, 0.3, False, seed=2)
    want = _float64_product(Ws, Ds)
    out = np.full((3, 5, 4), np.nan)
    got = _dispatch.call("chain_active", "cpp", Ws, Ds, True, out)
    assert got is out or np.shares_memory(got, out)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="C-contiguous"):
        _dispatch.call("chain_active", "cpp", Ws, Ds, True, np.empty((3, 4, 5)).transpose(0, 2, 1))
    with pytest.raises(TypeError, match="C-contiguous"):
        _dispatch.call("chain_active", "cpp", Ws, Ds, True, np.empty((3, 5, 4), np.float32))
    with pytest.raises(ValueError, match="writeable"):
        _dispatch.call("chain_active", "cpp", Ws, Ds, True, np.empty((3, 4, 5)))
    frozen = np.empty((3, 5, 4))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _dispatch.call("chain_active", "cpp", Ws, Ds, True, frozen)


def test_out_must_not_overlap_the_inputs_nor_be_misaligned() -> None:
    Ws, Ds = _chain((4, 12, 3), 2, np.float64, 0.0, False, seed=5)
    with pytest.raises(ValueError, match="overlap"):
        _dispatch.call("chain_active", "cpp", Ws, Ds, False, Ds[0].reshape(2, 3, 4))
    raw = np.zeros(2 * 3 * 4 * 8 + 1, np.uint8)[1:]
    with pytest.raises(ValueError, match="aligned"):
        _dispatch.call("chain_active", "cpp", Ws, Ds, False, raw.view(np.float64).reshape(2, 3, 4))


def test_one_wide_layer_between_narrow_ends(dtype: type) -> None:
    # 16 -> 3000 -> 16: the chain's scratch is sized by the widest layer times the wider end
    # (48,000 entries), not the widest layer squared (9 million per buffer and thread: 290 MB
    # per thread for singular values in float64). Values as the reference; the memory in a
    # fresh process, whose high-water mark the call alone can raise.
    import jacgeom

    net = jacgeom.Network.random([16, 3000, 16], activation="tanh", seed=0, dtype=dtype)
    X = np.random.default_rng(0).standard_normal((4, 16)).astype(dtype)
    want = net.singular_values(X, backend="numpy")
    got = net.singular_values(X, backend="cpp")
    assert np.abs(got - want).max() <= rtol_for(dtype) * 10 * want.max()
    J, J_ref = net.jacobian(X, backend="cpp"), net.jacobian(X, backend="numpy")
    assert np.abs(J - J_ref).max() <= rtol_for(dtype) * 30 * np.abs(J_ref).max()
    code = (
        "import resource, numpy as np, jacgeom\n"
        f"net = jacgeom.Network.random([16, 3000, 16], activation='tanh', seed=0, "
        f"dtype=np.{np.dtype(dtype).name})\n"
        "X = np.random.default_rng(0).standard_normal((4, 16))\n"
        "net.jacobian(X[:1], backend='numpy')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "net.singular_values(X, backend='cpp'); net.jacobian(X, backend='cpp')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 32, out.stdout


def test_non_finite_weights_take_the_dense_product() -> None:
    # check_finite=False with an infinite weight: sigmoid' underflows to exact zeros there,
    # and 0 * inf must stay NaN as in the reference (the sub-block chain would drop it).
    import jacgeom

    net = jacgeom.Network.random([16, 16, 16, 16], activation="sigmoid", seed=1)
    Ws = [W.copy() for W in net.weights]
    Ws[2][0, :] = np.inf
    bad = jacgeom.Network(Ws, activation="sigmoid", check_finite=False)
    X = np.random.default_rng(0).standard_normal((4, 16))
    with np.errstate(all="ignore"):
        want = np.isnan(bad.jacobian(X, backend="numpy", check_finite=False))
        for backend in jacgeom.backends():
            got = bad.jacobian(X, backend=backend, check_finite=False)
            np.testing.assert_array_equal(np.isnan(got), want)
    assert want.any()


@pytest.mark.parametrize("kernel", _kernels() or ["none"])
@pytest.mark.parametrize("dead", [0.0, 0.3], ids=["all-live", "dead-units"])
@pytest.mark.parametrize("direction", [1.0, -1.0], ids=["huge", "tiny"])
def test_extreme_ranges_rescaled_on_every_product_kernel(
    kernel: str, dead: float, direction: float, dtype: type
) -> None:
    # Entries near 1e+-250 (float64) or 1e+-33 (float32) at the end: the partial products
    # leave the band the chain keeps them in and are rescaled by powers of two, and the last
    # product, written into the result itself when every output unit is live, is scaled back.
    depth = 6
    top = 250.0 if dtype == np.float64 else 33.0
    Ws, Ds = _chain((20,) * (depth + 1), 3, dtype, dead, False, seed=11)
    factor = 10.0 ** (direction * top / depth)
    Ws = [(W.astype(np.float64) * factor).astype(dtype) for W in Ws]
    want = _float64_product(Ws, Ds)
    assert 10.0 ** (top - 8) < np.abs(want).max() ** direction
    for reverse in (False, True):
        got = _with_kernel(
            kernel, lambda r=reverse: _dispatch.call("chain_active", "cpp", Ws, Ds, r)
        )
        scale = float(np.abs(want).max())
        assert np.abs(got - want).max() <= rtol_for(dtype) * scale * 20, reverse
        np.testing.assert_array_equal(got == 0, want == 0)


@pytest.mark.parametrize("kernel", _kernels() or ["none"])
@pytest.mark.parametrize("magnitude", ["inside", "beyond"])
def test_huge_weights_under_tiny_derivatives_on_every_product_kernel(
    kernel: str, magnitude: str, dtype: type
) -> None:
    # d_l W_l near 3 in norm, but W_l near 1e+-190 / 1e+-22 ("inside": the tiled kernel reads
    # W_l in place and scales W_l C by d_l afterwards) or 1e+-305 / 1e+-34 ("beyond": W_l C
    # could leave the float range, so the block is gathered scaled), float64 / float32, and
    # d_l its inverse. The products grow by about 3 per layer to about 1e+8.
    depth = 16
    top = {
        ("inside", np.float64): 190.0,
        ("beyond", np.float64): 305.0,
        ("inside", np.float32): 22.0,
        ("beyond", np.float32): 34.0,
    }[magnitude, dtype]
    for sign in (1.0, -1.0):
        Ws, Ds = _chain((20,) * (depth + 1), 3, dtype, 0.0, False, seed=12)
        Ws = [(W.astype(np.float64) * 10.0 ** (sign * top)).astype(dtype) for W in Ws]
        Ds = [(3 * d.astype(np.float64) * 10.0 ** (-sign * top)).astype(dtype) for d in Ds]
        want = _float64_product(Ws, Ds)
        assert 1e5 < np.abs(want).max() < 1e12
        scale = float(_float64_product(Ws, Ds, absolute=True).max())
        for reverse in (False, True):
            got = _with_kernel(
                kernel,
                lambda r=reverse, W=Ws, D=Ds: _dispatch.call("chain_active", "cpp", W, D, r),
            )
            assert np.isfinite(got).all(), (sign, reverse)
            assert np.abs(got - want).max() <= rtol_for(dtype) * scale * 20, (sign, reverse)


def test_network_jacobian_into_out(backend: str, dtype: type) -> None:
    # out= on every backend: the same values as a fresh result, written across chunks
    # (memory_budget of about two samples), for 2-D and 1-D X; bad outputs refused before
    # any work.
    import jacgeom

    base = jacgeom.Network.random([20, 24, 18], activation="tanh", seed=3, dtype=dtype)
    net = jacgeom.Network(base.weights, base.biases, activation="tanh", memory_budget=8000)
    X = np.random.default_rng(3).standard_normal((7, 20)).astype(dtype)
    want = net.jacobian(X, backend=backend)
    out = np.full((7, 18, 20), np.nan, dtype)
    assert net.jacobian(X, backend=backend, out=out) is out
    np.testing.assert_array_equal(out, want)
    one = np.empty((18, 20), dtype)
    assert net.jacobian(X[2], backend=backend, out=one) is one
    # one input: the same bits as a fresh result at that input (on cpp the C-level API's
    # per-sample code, which agrees with the batch to rounding)
    np.testing.assert_array_equal(one, net.jacobian(X[2], backend=backend))
    np.testing.assert_allclose(one, want[2], rtol=0, atol=16 * np.finfo(dtype).eps)
    with pytest.raises(ValueError, match="shape"):
        net.jacobian(X, backend=backend, out=np.empty((7, 20, 18), dtype))
    with pytest.raises(TypeError, match="dtype"):
        other = np.float32 if dtype == np.float64 else np.float64
        net.jacobian(X, backend=backend, out=np.empty((7, 18, 20), other))
    with pytest.raises(ValueError, match="C-contiguous"):
        net.jacobian(X, backend=backend, out=np.empty((7, 20, 18), dtype).transpose(0, 2, 1))
