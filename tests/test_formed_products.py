"""Formed products at the ends of the float range: J, its Frobenius norm and singular values
are right where they fit the float range and an error where they do not (issue 21)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jacgeom

BACKENDS = ("cpp", "numba", "numpy")


def _scaled_identity(n: int, depth: int, c: float, dtype: Any) -> jacgeom.Network:
    return jacgeom.Network([np.eye(n, dtype=dtype) * c] * depth, activation="identity")


@pytest.mark.parametrize(
    ("dtype", "c"),
    [(np.float32, 1e10), (np.float32, 1e-12), (np.float64, 1e80), (np.float64, 1e-90)],
)
def test_frobenius_norm_beyond_the_squares_range(dtype: Any, c: float) -> None:
    # J = c^2 I: its squares overflow (1e20 in float32, 1e160 in float64) or underflow,
    # the norm c^2 sqrt(n) does not
    net = _scaled_identity(4, 2, c, dtype)
    X = np.ones((2, 4), dtype=dtype)
    expected = float(dtype(c)) ** 2 * 2.0
    for backend in jacgeom.backends():
        got = net.frobenius_norm(X, backend=backend)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, [expected] * 2, rtol=1e-6, err_msg=backend)


def test_jacobian_beyond_the_float_range_is_an_error() -> None:
    # J = 1e480 I cannot be written in float64; its spectrum can (at x = 0 the forward
    # pass stays finite)
    net = _scaled_identity(3, 3, 1e160, np.float64)
    X = np.zeros((2, 3))
    for backend in jacgeom.backends():
        for method in ("jacobian", "frobenius_norm", "singular_values"):
            with pytest.raises(FloatingPointError, match="log_singular_values"):
                getattr(net, method)(X, backend=backend)
        logs = net.log_singular_values(X, backend=backend)
        np.testing.assert_allclose(logs, np.full((2, 3), 3 * np.log(1e160)), rtol=1e-14)
    # out= as well, and the last chunk of a run of chunks
    with pytest.raises(FloatingPointError):
        net.jacobian(X, out=np.empty((2, 3, 3)))
    # non-finite inputs (check_finite=False) follow IEEE arithmetic, no error
    J = _scaled_identity(3, 1, 1.0, np.float64).jacobian(
        np.array([[np.nan, 1.0, 2.0]]), check_finite=False
    )
    assert J.shape == (1, 3, 3)


def test_overflowing_preactivations_are_an_error_everywhere() -> None:
    # at x = 1 the forward pass itself reaches 1e480: no Jacobian exists in floating point
    net = _scaled_identity(3, 3, 1e160, np.float64)
    X = np.ones((2, 3))
    for backend in jacgeom.backends():
        for method in ("jacobian", "frobenius_norm", "singular_values", "log_singular_values"):
            with pytest.raises(FloatingPointError, match="not finite"):
                getattr(net, method)(X, backend=backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pullback_metric_beyond_the_float_range_is_an_error(dtype: Any) -> None:
    # J entries of 1e25 (float32) / 1e160 (float64) are finite, J^T J is not: an error on
    # every backend; a factor 1e-3 smaller fits and is computed
    big = 1e25 if dtype == np.float32 else 1e160
    X = np.ones((2, 3), dtype=dtype)
    for backend in jacgeom.backends():
        W = np.full((4, 3), big, dtype=dtype)
        with pytest.raises(FloatingPointError, match="pullback metric"):
            jacgeom.pullback_metric(W, X, activation="identity", backend=backend)
        small = np.full((4, 3), 1e17 if dtype == np.float32 else 1e152, dtype=dtype)
        G = jacgeom.pullback_metric(small, X, activation="identity", backend=backend)
        np.testing.assert_allclose(G, 4 * float(small[0, 0]) ** 2, rtol=1e-5)


@pytest.mark.parametrize("widths", [[6, 6, 6], [8, 8, 8, 8]])
@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
def test_normalised_layers_with_weights_near_the_float_range(widths: list[int], act: str) -> None:
    # float32 weights of 2e37: a normalised layer's J_N W is O(1), but W times the partial
    # products overflowed in the compiled backends' one-gemm-per-layer product (NaN or an
    # error) where numpy's per-sample J_N W is finite; at width 8 the pre-activations' mean
    # overflowed in the forward pass of every backend. Checked against float64.
    rng = np.random.default_rng(len(widths))
    Ws = [rng.standard_normal((m, n)) * 2e37 for n, m in zip(widths[:-1], widths[1:], strict=True)]
    X = rng.standard_normal((3, widths[0]))
    kw: dict[str, Any] = {"activation": act, "residual": True, "norm": "layer"}
    net32 = jacgeom.Network([W.astype(np.float32) for W in Ws], **kw)
    net64 = jacgeom.Network([W.astype(np.float32).astype(np.float64) for W in Ws], **kw)
    exact = net64.jacobian(X.astype(np.float32).astype(np.float64), backend="numpy")
    for be in ("cpp", "numba", "numpy"):
        J = net32.jacobian(X.astype(np.float32), backend=be)
        np.testing.assert_allclose(J, exact, rtol=0, atol=1e-4 * np.abs(exact).max(), err_msg=be)


def test_layer_norm_mean_without_overflow() -> None:
    from jacgeom.reference.network import layer_norm_mean

    rng = np.random.default_rng(0)
    z = (rng.uniform(0.5, 1.0, (4, 8)) * 3e38).astype(np.float32)  # the plain sum overflows
    z[1] *= -1
    with np.errstate(over="ignore"):
        assert not np.isfinite(z.mean(axis=-1)).any()
    got = layer_norm_mean(z)
    assert got.dtype == np.float32 and got.shape == (4, 1)
    np.testing.assert_allclose(got[:, 0], z.astype(np.float64).mean(axis=-1), rtol=1e-6)
    ordinary = rng.standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_array_equal(layer_norm_mean(ordinary), ordinary.mean(axis=-1, keepdims=True))
    z[2, 3] = np.inf  # non-finite input: IEEE arithmetic, as numpy's mean
    with np.errstate(over="ignore", invalid="ignore"):
        assert layer_norm_mean(z)[2, 0] == np.inf


@pytest.mark.parametrize(
    ("dtype", "big", "small", "x_big"),
    [(np.float64, 1e200, 1e-170, 1e-199), (np.float32, 1e30, 1e-16, 1e-29)],
)
def test_scaling_a_normalised_layer_keeps_its_small_weights(
    dtype: Any, big: float, small: float, x_big: float
) -> None:
    # Column 3 of J depends on W's tiny entries only: scaling W down by max|W| made them
    # subnormal or zero on the compiled backends (a zero column where numpy has 7e-172).
    W = np.array([[big, 0, 0, small], [0, big, 0, -2 * small], [0, 0, big, 3 * small]], dtype=dtype)
    net = jacgeom.Network([W], activation="identity", norm="layer")
    X = np.array([[x_big, 2 * x_big, -x_big, 1.0]] * 2, dtype=dtype)
    expected = net.jacobian(X, backend="numpy")[0, :, 3]
    assert np.all(expected != 0)
    for be in ("cpp", "numba"):
        got = net.jacobian(X, backend=be)[:, :, 3]
        np.testing.assert_allclose(got, [expected] * 2, rtol=1e-5, err_msg=be)


@pytest.mark.parametrize(("dtype", "big"), [(np.float32, 3e38), (np.float64, 1.7e308)])
def test_layer_norm_of_preactivations_near_the_float_range(dtype: Any, big: float) -> None:
    # z = [big, -big, big] is finite, z - mean(z) is not: the normalisation is
    # [1, -2, 1] / sqrt(2) all the same, on every backend, without warnings.
    net = jacgeom.Network(
        [np.eye(3, dtype=dtype) * dtype(big), np.eye(3, dtype=dtype)],
        activation="tanh",
        norm=["layer", None],
    )
    x = np.array([1, -1, 1], dtype=dtype)
    u = np.array([1.0, -2.0, 1.0]) / np.sqrt(2.0)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(net.forward(x), np.tanh(np.tanh(u)), rtol=rtol)
    # J = D_2 D_1 J_N W: J_N's rows are orthogonal to the ones vector and to u; its
    # singular values are 0 (twice, to rounding: delta = eps / var) and the third finite.
    logs = {be: net.log_singular_values(x, backend=be) for be in BACKENDS}
    for be, got in logs.items():
        assert np.isfinite(got[0]) and got[2] == -np.inf, be
        np.testing.assert_allclose(got[0], logs["numpy"][0], rtol=1e-5, err_msg=be)
        J = net.jacobian(x, backend=be)
        np.testing.assert_allclose(J.sum(axis=1), 0, atol=1e-5)  # the ones direction
        assert net.active_counts(x, backend=be).tolist() == [3, 3]


def test_an_overflowing_partial_product_is_redone_in_the_other_order() -> None:
    # |J| is at most about 1e100 (the bound over the whole chain), but from the output side
    # W_3 W_2 is 1e400: the check of the formed product was skipped on that bound, and the
    # compiled backends returned infinities; then they raised, while the numpy reference's
    # order (from the input side) gives the finite J. Every contiguous range counts for the
    # check, and the samples concerned are redone in the reference's order.
    net = jacgeom.Network(
        [1e-300 * np.ones((3, 3)) / 3, 1e200 * np.eye(3), 1e200 * np.ones((2, 3)) / 3],
        activation="identity",
    )
    x = np.zeros(3)
    want = net.jacobian(x, backend="numpy")
    assert np.all(np.isfinite(want)) and abs(want[0, 0]) > 1e99
    for be in BACKENDS:
        for X in (x, np.stack([x, x])):
            got = net.jacobian(X, backend=be)
            np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-13)
        np.testing.assert_allclose(
            net.singular_values(x, backend=be), net.singular_values(x, backend="numpy")
        )
        np.testing.assert_allclose(
            net.frobenius_norm(x, backend=be), net.frobenius_norm(x, backend="numpy")
        )


def test_a_saturated_layer_behind_an_overflowing_gemm_is_zero_on_every_backend() -> None:
    # Audit of issue 21: layer 2 saturates (phi' = e^-8e120, 0 in float64) behind weights
    # whose all-sample gemm W_2 P overflows: numba's dense chain gave 0 * inf = NaN and an
    # error, cpp (dead rows dropped) and numpy (D_l W_l first) J = 0, its true rounding.
    net = jacgeom.Network([np.full((2, 2), 1e160)] * 3, activation="tanh")
    X = np.full((2, 2), 1e-200)
    for be in BACKENDS:
        assert np.all(net.jacobian(X, backend=be) == 0.0), be
        assert np.all(net.singular_values(X, backend=be) == 0.0), be
        assert np.all(net.frobenius_norm(X, backend=be) == 0.0), be


def test_one_input_and_a_batch_agree_where_a_partial_product_overflows() -> None:
    # The one-input kernel multiplies in its own order (live-unit flops); where a partial
    # product may overflow, the batched path decides, so x and a batch holding x agree.
    net = jacgeom.Network(
        [1e200 * np.eye(3), 1e200 * np.ones((30, 3)) / 30, 1e-300 * np.ones((4, 30))],
        activation="identity",
    )
    x = np.zeros(3)
    with pytest.raises(FloatingPointError):
        net.jacobian(np.stack([x, x]), backend="cpp")
    with pytest.raises(FloatingPointError):
        net.jacobian(x, backend="cpp")


@pytest.mark.parametrize("norm", [None, "layer"])
def test_infinite_inputs_follow_ieee_without_warnings(norm: str | None) -> None:
    # check_finite=False: an infinite input propagates as IEEE arithmetic says (NaN or inf
    # entries), on every backend, with no RuntimeWarning from the activations on the way
    # (gelu's z * Phi(z) at z = inf leaked "invalid value encountered in multiply").
    x = np.array([np.inf, 1.0, -np.inf])
    for name in jacgeom.activation_names():
        net = jacgeom.Network.random([3, 4, 2], activation=name, seed=0, norm=norm)
        net.forward(x, check_finite=False)
        for be in BACKENDS:
            J = net.jacobian(x, backend=be, check_finite=False)
            assert J.shape == (2, 3)
            net.singular_values(x, backend=be, check_finite=False)
            net.frobenius_norm(x, backend=be, check_finite=False)
            with pytest.raises(FloatingPointError, match="pre-activations"):
                net.log_singular_values(x, backend=be, check_finite=False)


def test_layer_norm_batch_mixing_overflowing_and_infinite_rows() -> None:
    from jacgeom.reference.network import layer_norm

    big = np.finfo(np.float64).max
    sigma, u = layer_norm(np.array([[big, -big, -big], [np.inf, 1.0, 1.0]]), 1e-5)
    np.testing.assert_allclose(u[0], np.array([2.0, -1.0, -1.0]) / np.sqrt(2.0), rtol=1e-14)
    assert np.isnan(u[1]).all() and np.isfinite(sigma[0])


def test_derivative_bound_of_the_overflow_check() -> None:
    # Network skips its pass over J where |phi'| <= _DERIVATIVE_BOUND (or leaky_relu's and
    # elu's alpha) times row sums keeps every partial product in range: the bound must
    # hold for every built-in activation, in both dtypes.
    from jacgeom.network import _DERIVATIVE_BOUND

    z = np.linspace(-60.0, 60.0, 400001)
    for name in jacgeom.activation_names():
        for kw in ({}, {"alpha": 5.0}, {"beta": 50.0}):
            try:
                act = jacgeom.activation(name, **kw)
            except (TypeError, ValueError):
                continue
            bound = _DERIVATIVE_BOUND
            if name in ("leaky_relu", "elu"):
                bound = max(bound, abs(act.parameter))
            for dtype in (np.float32, np.float64):
                assert np.abs(act.derivative(z.astype(dtype))).max() <= bound, (name, kw)


@pytest.mark.parametrize(("dtype", "depth"), [(np.float32, 46), (np.float64, 300)])
def test_one_input_kernel_on_deep_ordinary_networks(dtype: Any, depth: int) -> None:
    # Deep He tanh networks are far from overflow: at one input Network.jacobian is the
    # C-level code's result, bit for bit (a loose bound deferred them to the batched path).
    from jacgeom import _dispatch

    net = jacgeom.Network.random([16] * depth, activation="tanh", seed=0, dtype=dtype)
    x = np.random.default_rng(0).standard_normal(16).astype(dtype)
    J = np.empty((16, 16), dtype)
    args = (net.weights, net.biases, net.activations, x, J)
    assert _dispatch.call("network_jacobian_one", "cpp", *args) == 0
    np.testing.assert_array_equal(net.jacobian(x, backend="cpp"), J)
