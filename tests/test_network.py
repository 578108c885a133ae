"""Networks: every backend against the per-sample numpy reference, the reference against
finite differences and explicit products, the identities of docs/theory.md ("End-to-end
Jacobians")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jacgeom
from jacgeom import Network, _products
from jacgeom.reference import network as ref

VARIANTS = [
    ([5, 7, 6, 4], {}),
    ([6, 6, 6, 6], {"residual": True}),
    ([5, 8, 3, 6], {"norm": "layer"}),
    ([4, 4, 4], {"residual": True, "norm": "layer"}),
    ([3, 2], {}),
    ([9, 4, 4, 4, 4, 4, 4, 4, 2], {}),
    ([2, 10, 10, 10, 12], {}),
    ([5, 8, 8, 8, 3], {"residual": [False, True, True, False]}),
    ([6, 6, 6, 4], {"residual": [True, False, False], "norm": "layer"}),
    ([5, 6, 6, 3], {"norm": ["layer", "layer", None]}),
    ([6, 6, 6, 4], {"residual": [True, True, False], "norm": [None, "layer", None]}),
]
ACTS = ["relu", "tanh", "gelu", "leaky_relu", "silu", "sigmoid"]


def net_and_data(
    widths: list[int], kw: dict, act: str, dtype: type, B: int = 7, seed: int = 0
) -> tuple[Network, np.ndarray]:
    net = Network.random(widths, activation=act, seed=seed, sigma_b=0.2, dtype=dtype, **kw)
    X = np.random.default_rng(seed + 1).standard_normal((B, widths[0])).astype(dtype)
    return net, X


def tol(dtype: type) -> float:
    return 2e-4 if dtype == np.float32 else 1e-10


@pytest.mark.parametrize(("widths", "kw"), VARIANTS)
@pytest.mark.parametrize("act", ACTS)
def test_jacobian_and_reductions_match_reference(
    widths: list[int], kw: dict, act: str, backend: str, dtype: type
) -> None:
    net, X = net_and_data(widths, kw, act, dtype)
    J = net.jacobian(X, backend=backend)
    Jr = ref.jacobian(net, X)
    assert J.shape == (7, widths[-1], widths[0]) and J.dtype == dtype
    scale = max(1.0, float(np.abs(Jr).max()))
    np.testing.assert_allclose(J, Jr, rtol=0, atol=tol(dtype) * scale)
    s = net.singular_values(X, backend=backend)
    np.testing.assert_allclose(s, ref.singular_values(net, X), rtol=0, atol=tol(dtype) * scale * 10)
    np.testing.assert_allclose(
        net.frobenius_norm(X, backend=backend), ref.frobenius_norm(net, X), rtol=tol(dtype) * 10
    )
    np.testing.assert_array_equal(net.active_counts(X, backend=backend), ref.active_counts(net, X))
    if dtype == np.float64:  # ranks compared where unambiguous: float64 random networks
        np.testing.assert_array_equal(net.rank(X, backend=backend), ref.rank(net, X))
        np.testing.assert_array_equal(net.layer_ranks(X, backend=backend), ref.layer_ranks(net, X))


@pytest.mark.parametrize(("widths", "kw"), VARIANTS)
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_log_singular_values_agree_with_explicit_svd(
    widths: list[int], kw: dict, act: str, backend: str
) -> None:
    # Every singular value above 1e-8 of the largest: 1e-8 relative agreement of the logs.
    net, X = net_and_data(widths, kw, act, np.float64, B=9)
    s = np.linalg.svd(ref.jacobian(net, X), compute_uv=False)
    got = net.log_singular_values(X, backend=backend)
    assert got.shape == s.shape
    keep = s > 1e-8 * s[:, :1]
    with np.errstate(divide="ignore"):
        want = np.log(s)
    err = np.abs(got[keep] - want[keep]) / np.maximum(1.0, np.abs(want[keep]))
    assert err.max(initial=0.0) <= 1e-8
    with np.errstate(invalid="ignore"):  # -inf - -inf in the exactly-zero tail
        steps = np.diff(got, axis=1)
    assert np.all((steps <= 1e-12) | np.isnan(steps))  # descending


@pytest.mark.parametrize("depth", [1, 5, 30])
@pytest.mark.parametrize("act", ["tanh", "relu", "leaky_relu"])
def test_log_abs_det_identities(depth: int, act: str, backend: str) -> None:
    # log|det J| = sum of log singular values = sum_l (sum_i log|d_i| + log|det W_l|).
    net, X = net_and_data([6] * (depth + 1), {}, act, np.float64, B=5)
    ld = net.log_abs_det(X, backend=backend)
    per_layer = np.zeros(5)
    for l, z in enumerate(net.preactivations(X)):
        with np.errstate(divide="ignore"):
            per_layer += np.log(np.abs(net.activations[l].derivative(z))).sum(1)
        per_layer += np.linalg.slogdet(net.weights[l])[1]
    finite = np.isfinite(per_layer)
    np.testing.assert_array_equal(np.isfinite(ld), finite)
    np.testing.assert_allclose(ld[finite], per_layer[finite], rtol=1e-10)
    ls = net.log_singular_values(X, backend=backend)
    np.testing.assert_allclose(ls.sum(1)[finite], ld[finite], rtol=1e-10)
    if depth <= 5:
        np.testing.assert_allclose(
            ld[finite], np.linalg.slogdet(net.jacobian(X))[1][finite], rtol=1e-9
        )


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_deep_stability_1000_layers(act: str) -> None:
    net = Network.random([64] * 1001, activation=act, seed=0)
    X = np.random.default_rng(1).standard_normal((3, 64))
    ls = net.log_singular_values(X)
    bound = np.min(net.active_counts(X), axis=1) if act == "relu" else np.full(3, 64)
    for row, k in zip(ls, bound, strict=True):
        assert np.all(np.isfinite(row[:k])) and np.all(row[k:] == -np.inf)
    with np.errstate(all="ignore"):
        naive_log = np.log(np.linalg.svd(net.jacobian(X), compute_uv=False))
    # Singular values more than e^40 below the largest are lost in the explicit product
    # (rounding, overflow or underflow); the frame keeps them finite.
    deep = np.isfinite(ls) & (ls < ls[:, :1] - 40)
    assert deep.any()
    assert not np.any(np.isclose(naive_log[deep], ls[deep], rtol=1e-3))
    ld = net.log_abs_det(X)
    if act == "tanh":
        per_layer = np.zeros(3)
        for l, z in enumerate(net.preactivations(X)):
            per_layer += (
                np.log(net.activations[l].derivative(z)).sum(1)
                + np.linalg.slogdet(net.weights[l])[1]
            )
        np.testing.assert_allclose(ld, per_layer, rtol=1e-9)
        np.testing.assert_allclose(ls.sum(1), ld, rtol=1e-9)
    else:
        assert np.all(ld == -np.inf)


def test_reference_jacobian_matches_finite_differences() -> None:
    for widths, kw in VARIANTS:
        for act in ["tanh", "gelu", "softplus"]:
            net, X = net_and_data(widths, kw, act, np.float64, B=2)
            h = 1e-6
            for x, J in zip(X, ref.jacobian(net, X), strict=True):
                fd = np.stack(
                    [
                        (net.forward(x + h * e) - net.forward(x - h * e)) / (2 * h)
                        for e in np.eye(widths[0])
                    ],
                    axis=1,
                )
                np.testing.assert_allclose(J, fd, rtol=1e-5, atol=1e-7)


def test_forward_and_preactivations(backend: str) -> None:
    net, X = net_and_data([5, 7, 6, 4], {}, "relu", np.float64)
    np.testing.assert_allclose(net.forward(X), ref.forward(net, X), rtol=1e-12)
    for z, zr in zip(net.preactivations(X), ref.preactivations(net, X), strict=True):
        np.testing.assert_allclose(z, zr, rtol=1e-12)
    assert net.forward(X[0]).shape == (4,)
    assert [z.shape for z in net.preactivations(X[0])] == [(7,), (6,), (4,)]


def test_rank_cannot_exceed_narrowest_active_layer(backend: str) -> None:
    net, X = net_and_data([8, 8, 8, 8, 8], {}, "relu", np.float64, B=40)
    ranks = net.rank(X, backend=backend)
    bound = np.minimum(8, net.active_counts(X, backend=backend).min(axis=1))
    np.testing.assert_array_equal(ranks, bound)  # docs/theory.md: equality almost surely
    assert np.all(np.diff(net.layer_ranks(X, backend=backend), axis=1) <= 0)


def test_accumulation_order_and_active_path_agree() -> None:
    # a classifier (wide input, narrow output) runs from the output side; compare both paths
    for widths in ([64, 32, 32, 3], [3, 32, 32, 64]):
        net, X = net_and_data(widths, {}, "relu", np.float64, B=6)
        Jr = ref.jacobian(net, X)
        assert _products.reverse_is_cheaper(net) == (widths[-1] < widths[0])
        for backend in jacgeom.backends():
            np.testing.assert_allclose(net.jacobian(X, backend=backend), Jr, rtol=0, atol=1e-12)
        layers = list(net._layers(X, "cpp"))
        np.testing.assert_allclose(_products.dense_forward(net, layers, 6), Jr, atol=1e-12)
        np.testing.assert_allclose(_products.dense_reverse(net, layers, 6), Jr, atol=1e-12)


def test_chunking_gives_identical_results(backend: str) -> None:
    net, X = net_and_data([6, 9, 9, 5], {}, "tanh", np.float64, B=23)
    full = [
        net.jacobian(X, backend=backend),
        net.singular_values(X, backend=backend),
        net.log_singular_values(X, backend=backend),
    ]
    net.memory_budget = 1  # one sample per chunk
    small = [
        net.jacobian(X, backend=backend),
        net.singular_values(X, backend=backend),
        net.log_singular_values(X, backend=backend),
    ]
    for a, b in zip(full, small, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_empty_and_single_batch(backend: str) -> None:
    net, X = net_and_data([4, 5, 3], {}, "relu", np.float64)
    assert net.jacobian(X[:0], backend=backend).shape == (0, 3, 4)
    assert net.singular_values(X[:0], backend=backend).shape == (0, 3)
    assert net.rank(X[:0], backend=backend).shape == (0,)
    assert net.layer_ranks(X[:0], backend=backend).shape == (0, 2)
    assert net.active_counts(X[:0], backend=backend).shape == (0, 2)
    assert net.log_singular_values(X[:0], backend=backend).shape == (0, 3)
    np.testing.assert_allclose(
        net.jacobian(X[0], backend=backend), ref.jacobian(net, X[:1])[0], atol=1e-12
    )
    assert np.ndim(net.rank(X[0], backend=backend)) == 0


def test_random_inits_and_spectral_norm() -> None:
    for init in ["he", "xavier", "lecun", "orthogonal", "gaussian"]:
        net = Network.random([50, 60, 40], init=init, seed=3, spectral_norm=0.9)
        for W in net.weights:
            assert np.linalg.norm(W, 2) <= 0.9 + 1e-12
    q = Network.random([30, 30], init="orthogonal", seed=1).weights[0]
    np.testing.assert_allclose(q @ q.T, np.eye(30), atol=1e-12)
    w = Network.random([2000, 2000], init="he", seed=2).weights[0]
    assert w.var() == pytest.approx(2 / 2000, rel=0.01)
    w = Network.random([400, 100], init="gaussian", sigma_w=3.0, seed=2).weights[0]
    assert w.var() == pytest.approx(9 / 400, rel=0.02)
    a = Network.random([3, 4], seed=5).weights[0]
    b = Network.random([3, 4], seed=5).weights[0]
    np.testing.assert_array_equal(a, b)
    assert Network.random([3, 4], dtype=np.float32).dtype == np.float32


NETWORK_ERRORS = [
    (
        lambda: Network([np.ones((3, 2)), np.ones((4, 5))]),
        ValueError,
        r"weights\[1\] has shape \(4, 5\) but weights\[0\] has 3 rows; "
        r"expected weights\[1\] of shape \(n_2, 3\)",
    ),
    (
        lambda: Network([np.ones((3, 2))], residual=True),
        ValueError,
        r"residual layers need square weights; weights\[0\]",
    ),
    (
        lambda: Network([np.ones((3, 2))], biases=[np.ones(2)]),
        ValueError,
        r"biases\[0\] has shape \(2,\) but weights\[0\] has 3 rows",
    ),
    (
        lambda: Network([np.ones((3, 2))], biases=[np.ones(3), np.ones(3)]),
        ValueError,
        r"biases must be a list of 1",
    ),
    (lambda: Network([]), TypeError, r"weights must be a non-empty list"),
    (lambda: Network(np.ones((3, 2))), TypeError, r"weights must be a non-empty list"),
    (lambda: Network([np.ones(3)]), ValueError, r"weights\[0\] has 1 dimension"),
    (lambda: Network([np.ones((3, 2))], norm="batch"), ValueError, r"unknown norm 'batch'"),
    (
        lambda: Network([np.ones((3, 2))], activation=["relu", "tanh"]),
        ValueError,
        r"activation has 2 entries for 1 layers",
    ),
    (
        lambda: Network([np.ones((3, 2))], activation="swish"),
        ValueError,
        r"unknown activation 'swish'",
    ),
    (lambda: Network([np.full((3, 2), np.nan)]), ValueError, r"weights\[0\] contains NaN"),
    (lambda: Network([np.ones((3, 2), complex)]), TypeError, r"weights\[0\] has dtype complex128"),
    (lambda: Network([np.ones((3, 2))], memory_budget=0), ValueError, r"memory_budget must be > 0"),
    # never truncated or parsed: 0.5 bytes, "1", 3.5 units, True as a width
    (
        lambda: Network([np.ones((3, 2))], memory_budget=0.5),
        TypeError,
        r"memory_budget must be an int",
    ),
    (
        lambda: Network([np.ones((3, 2))], memory_budget="1"),
        TypeError,
        r"memory_budget must be an int",
    ),
    (
        lambda: Network([np.ones((3, 2))], norm="layer", norm_eps=True),
        TypeError,
        r"norm_eps must be a real number, got bool",
    ),
    (lambda: Network.random([3.5, 2]), TypeError, r"widths\[0\] must be an int, got float 3.5"),
    (lambda: Network.random([3, "2"]), TypeError, r"widths\[1\] must be an int, got str '2'"),
    (lambda: Network.random([True, 2]), TypeError, r"widths\[0\] must be an int, got bool"),
    (lambda: Network.random("32"), TypeError, r"widths must be a sequence of ints, got str"),
    (lambda: Network.random([3, 2], seed=-1), ValueError, r"seed must be >= 0, got -1"),
    (lambda: Network.random([3, 2], seed=1.5), TypeError, r"seed must be an int, got float"),
    (lambda: Network.random([3]), ValueError, r"widths must hold at least two"),
    (lambda: Network.random([3, 0]), ValueError, r"widths must hold at least two positive"),
    (lambda: Network.random([3, 4], init="kaiming"), ValueError, r"unknown init 'kaiming'"),
    (
        lambda: Network.random([3, 4], dtype=np.int32),
        TypeError,
        r"dtype must be float32 or float64",
    ),
    (
        lambda: Network.random([3, 4], spectral_norm=-1.0),
        ValueError,
        r"spectral_norm must be a finite number > 0",
    ),
    # numbers are checked as numbers: these reached numpy's isfinite ("ufunc not
    # supported", "truth value ambiguous") or, True, were read as 1
    (
        lambda: Network.random([3, 4], sigma_w="1"),
        TypeError,
        r"sigma_w must be a real number, got str '1'",
    ),
    (
        lambda: Network.random([3, 4], sigma_w=np.array([1.0, 2.0])),
        TypeError,
        r"sigma_w must be a real number, got ndarray",
    ),
    (
        lambda: Network.random([3, 4], sigma_b=None),
        TypeError,
        r"sigma_b must be a real number, got NoneType",
    ),
    (
        lambda: Network.random([3, 4], spectral_norm=True),
        TypeError,
        r"spectral_norm must be a real number, got bool",
    ),
    (
        lambda: Network.random([3, 4], sigma_b=float("nan")),
        ValueError,
        r"sigma_b must be a finite number >= 0, got nan",
    ),
    (
        lambda: Network.random([3, 4]).jacobian(np.ones((2, 5))),
        ValueError,
        r"X has shape \(2, 5\) but the network takes 3 inputs",
    ),
    (
        lambda: Network.random([3, 4]).jacobian(np.ones((2, 3)), backend="gpu"),
        ValueError,
        r"unknown backend 'gpu'",
    ),
    (
        lambda: Network.random([3, 4]).log_abs_det(np.ones((2, 3))),
        ValueError,
        r"log_abs_det needs a square end-to-end Jacobian",
    ),
    (
        lambda: Network.random([3, 4]).rank(np.ones((2, 3)), tol=1.0, rtol=1.0),
        ValueError,
        r"tol and rtol cannot both",
    ),
    (
        lambda: Network.random([3, 4]).jacobian(np.full((2, 3), np.inf)),
        ValueError,
        r"X contains NaN or Inf",
    ),
]


@pytest.mark.parametrize(("make", "error", "match"), NETWORK_ERRORS)
def test_network_bad_inputs(make: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]


def test_weights_are_copied_and_read_only() -> None:
    W = np.ones((3, 2))
    net = Network([W])
    W[0, 0] = 5.0
    assert net.weights[0][0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        net.weights[0][0, 0] = 2.0
    assert "Network(widths=[2, 3]" in repr(net) and net.depth == 1


def test_reductions_stream_with_bounded_memory() -> None:
    # Peak extra memory follows memory_budget, not B: the numpy allocations of a rank
    # computation over many chunks stay within a few budgets (tracemalloc sees numpy's).
    import tracemalloc

    # Unstreamed, each call's peak would be 40 budgets or more (0.4 GiB for the ranks).
    # A first call's one-time allocations (about 15 MiB: compiled code, caches) are made
    # before the measurement.
    net = Network.random([64] * 9, activation="relu", seed=0)
    net.memory_budget = 4 * 2**20
    X = np.random.default_rng(0).standard_normal((1500, 64))
    net.rank(X[:2]), net.log_singular_values(X[:2])
    tracemalloc.start()
    try:
        ranks = net.rank(X)
        logs = net.log_singular_values(X[:600])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ranks.shape == (1500,) and logs.shape == (600, 64)
    assert peak < 6 * net.memory_budget, f"peak {peak / 2**20:.1f} MiB"


def _explicit_products(net: Network, X: np.ndarray) -> np.ndarray:
    return np.stack([ref.jacobian(net, x[None])[0] for x in X])


# Widths that put the narrowest layer of the product at the input, in the middle (the
# C++ kernels split there) and at the output; a tall live-row core (QR before the
# bidiagonal reduction); one wide enough for LAPACK's reduction.
SPLITS = [
    [4, 40, 40, 40],
    [40, 40, 3, 40, 20],
    [30, 30, 30, 2],
    [100, 60, 60, 12],
    [70, 90, 90, 70],
]


@pytest.mark.parametrize("widths", SPLITS)
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_split_products_match_explicit_svd(widths: list[int], act: str, dtype: type) -> None:
    net, X = net_and_data(widths, {}, act, dtype, B=12)
    S = np.linalg.svd(_explicit_products(net, X).astype(np.float64), compute_uv=False)
    scale = S[:, :1]
    for backend in jacgeom.backends():
        s = net.singular_values(X, backend=backend)
        np.testing.assert_allclose(
            s, S, rtol=0, atol=tol(dtype) * 10 * scale.max(), err_msg=backend
        )
    if dtype == np.float64:
        np.testing.assert_array_equal(net.rank(X, backend="cpp"), ref.rank(net, X))


@pytest.mark.parametrize("tolerance", [{}, {"tol": 0.5}, {"rtol": 0.1}, {"tol": 1e-3}])
def test_rank_tolerances_on_split_products(tolerance: dict) -> None:
    # Large tolerances make the certificate fail and the singular values decide.
    for widths in SPLITS:
        net, X = net_and_data(widths, {}, "relu", np.float64, B=15)
        expected = ref.rank(net, X, **tolerance)
        for backend in jacgeom.backends():
            np.testing.assert_array_equal(net.rank(X, backend=backend, **tolerance), expected)


def test_rank_deficient_beyond_the_narrowest_layer() -> None:
    # A middle layer of rank 3: the product loses rank below every active count, so no
    # certificate holds and the counted singular values must agree with numpy.
    net0, X = net_and_data([20, 24, 24, 24, 16], {}, "relu", np.float64, B=20)
    Ws = [np.array(W) for W in net0.weights]
    Ws[2] = Ws[2][:, :3] @ np.random.default_rng(5).standard_normal((3, 24)) / 3
    net = Network(Ws, net0.biases, activation="relu")
    expected = np.array([np.linalg.matrix_rank(J) for J in _explicit_products(net, X)])
    assert np.all(expected < net.active_counts(X).min(axis=1))
    for backend in jacgeom.backends():
        np.testing.assert_array_equal(net.rank(X, backend=backend), expected)


def test_dead_layer_and_non_finite_products() -> None:
    net0, X = net_and_data([6, 8, 8, 5], {}, "relu", np.float64, B=4)
    # A middle layer with every unit dead: J = 0.
    biases = [np.array(b) for b in net0.biases]
    biases[1] = np.full(8, -1e6)
    net = Network(net0.weights, biases, activation="relu")
    np.testing.assert_array_equal(net.singular_values(X, backend="cpp"), np.zeros((4, 5)))
    np.testing.assert_array_equal(net.rank(X, backend="cpp"), np.zeros(4, dtype=np.int64))
    # An infinite input with check_finite=False: NaN singular values of the formed
    # product, no crash; the rank (from the stable spectrum) is a clear error, not 0.
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with np.errstate(all="ignore"):  # the forward pass's own arithmetic on inf
        s = net0.singular_values(Xi, backend="cpp", check_finite=False)
        for be in ("cpp", "numpy"):
            with pytest.raises(FloatingPointError, match="pre-activations of layer 0"):
                net0.rank(Xi, backend=be, check_finite=False)
    assert s.shape == (4, 5)
    np.testing.assert_allclose(s[1:], ref.singular_values(net0, X[1:]), atol=1e-12)


@pytest.mark.parametrize("scales", [[1e-200, 1.0, 1e200, 1e200], [1e200, 1.0, 1e-170, 1e-170]])
def test_split_factors_out_of_range_where_the_product_is_not(scales: list[float]) -> None:
    # Split at the 32-wide layer, the factors above and below are ~1e±370 while J is
    # ~1e±200: the partial products are kept in range by exact powers of two.
    rng = np.random.default_rng(1)
    w = [40, 40, 32, 40, 40]
    Ws = [rng.standard_normal((w[l + 1], w[l])) * scales[l] for l in range(4)]
    net = Network(Ws, [np.zeros(x) for x in w[1:]], activation="tanh")
    X = np.zeros((2, 40))
    S = ref.singular_values(net, X)
    s = net.singular_values(X, backend="cpp")
    np.testing.assert_allclose(s, S, rtol=1e-10, atol=1e-12 * S.max())
    np.testing.assert_allclose(net.jacobian(X, backend="cpp"), ref.jacobian(net, X), rtol=1e-10)
    np.testing.assert_array_equal(net.rank(X, backend="cpp"), ref.rank(net, X))
    t = float(S[0, 5] * np.sqrt(S[0, 6] / S[0, 5]))  # an absolute tol in J's units (~1e±200)
    np.testing.assert_array_equal(net.rank(X, backend="cpp", tol=t), ref.rank(net, X, tol=t))


def test_explicit_rtol_is_compared_in_float64_as_numpy_does() -> None:
    net, X = net_and_data([40, 40, 40, 40], {}, "tanh", np.float32, B=30)
    S = ref.singular_values(net, X).astype(np.float64)
    # an rtol that puts a threshold between two singular values of each sample
    rtol = float(np.median(S[:, 20] / S[:, 0]))
    expected = ref.rank(net, X, rtol=rtol)
    for backend in jacgeom.backends():
        np.testing.assert_array_equal(net.rank(X, backend=backend, rtol=rtol), expected)


@pytest.mark.parametrize("backend", jacgeom.backends())
def test_singular_values_of_an_overflowing_product_is_an_error(backend: str) -> None:
    # Three layers of 1e160 and an input of 1e-200: J = W3 W2 W1 is 1e480, beyond float64;
    # its spectrum is not, and log_singular_values gives it. singular_values says so rather
    # than returning NaN.
    net = Network([np.full((2, 2), 1e160)] * 3, activation="identity")
    x = np.full(2, 1e-200)
    with pytest.raises(FloatingPointError, match="log_singular_values"):
        net.singular_values(x, backend=backend)
    logs = net.log_singular_values(x, backend=backend)
    assert logs[0] == pytest.approx(3 * np.log(2e160)) and np.isneginf(logs[1])


class _PinRecorder:
    """Stands in for jacgeom._backends._blas_pin: counts the holders of the BLAS pin."""

    def __init__(self) -> None:
        self.users = 0

    def acquire(self) -> object:
        self.users += 1
        return self

    def release(self, hold: object) -> None:
        assert hold is self
        self.users -= 1


@pytest.mark.parametrize(
    ("widths", "act", "kw", "backend", "dtype", "max_flops", "pinned"),
    [
        # the chain kernels multiply: forward gemms pinned
        ([16, 24, 16], "tanh", {}, "cpp", np.float64, 2 * 5 * 768, True),
        ([16, 24, 16], "tanh", {}, "cpp", np.float32, 5 * 768, True),  # float32 counts half
        # a forward pass too large to be worth running on one thread
        ([16, 24, 16], "tanh", {}, "cpp", np.float64, 2 * 5 * 768 - 1, False),
        ([16, 24, 16], "tanh", {}, "cpp", np.float32, 5 * 768 - 1, False),
        ([16, 24, 16], "tanh", {}, "numba", np.float64, 1e9, False),  # threaded gemms follow
        ([8, 24, 16], "tanh", {}, "cpp", np.float64, 1e9, False),  # narrower than the chain's
        ([8, 24, 6], "relu", {}, "cpp", np.float64, 1e9, True),  # narrow, but dead units
        ([16, 16, 16], "tanh", {"norm": "layer"}, "cpp", np.float64, 1e9, False),  # dense path
    ],
)
def test_forward_pass_pins_blas_only_before_chain_kernels(
    monkeypatch: pytest.MonkeyPatch,
    widths: list[int],
    act: str,
    kw: dict,
    backend: str,
    dtype: type,
    max_flops: float,
    pinned: bool,
) -> None:
    # A threaded OpenBLAS gemm leaves its workers spinning after it returns; before the
    # C++ chain kernels a small forward pass's gemms run pinned so that none spins into
    # them. Before the dense path's own threaded gemms they are left threaded.
    if backend not in jacgeom.backends():
        pytest.skip(f"{backend} backend not built")
    from jacgeom import _backends

    recorder = _PinRecorder()
    monkeypatch.setattr(_backends, "_blas_pin", recorder)
    monkeypatch.setattr(_products, "FORWARD_PIN_MAX_FLOPS", max_flops)
    net, X = net_and_data(widths, kw, act, dtype, B=5)
    seen: list[int] = []
    layers = Network._layers

    def recording(self: Network, X: np.ndarray, backend: str):  # type: ignore[no-untyped-def]
        for item in layers(self, X, backend):
            seen.append(recorder.users)
            yield item

    monkeypatch.setattr(Network, "_layers", recording)
    J = net.jacobian(X, backend=backend)
    np.testing.assert_allclose(J, ref.jacobian(net, X), rtol=tol(dtype), atol=tol(dtype))
    assert len(seen) == net.depth
    assert all(users > 0 for users in seen) if pinned else all(users == 0 for users in seen)
    assert recorder.users == 0


def test_numpy_scalars_and_arrays_are_accepted_where_python_numbers_are() -> None:
    # np.float32 for norm_eps, np.int64 for a budget or seed, an int array of widths
    a = Network([np.eye(3)], norm="layer", norm_eps=np.float32(1e-3), memory_budget=np.int64(4096))
    assert a.norm_eps == float(np.float32(1e-3)) and a.memory_budget == 4096
    b = Network.random(np.array([3, 2]), seed=np.int64(7))
    c = Network.random([3, 2], seed=7)
    assert b.widths == [3, 2]
    np.testing.assert_array_equal(b.weights[0], c.weights[0])


def test_seeds_as_numpy_takes_them() -> None:
    # sequences of ints and BitGenerators, as numpy.random.default_rng takes them
    for s in ([1, 2], (1, 2), np.array([1, 2])):
        a = Network.random([3, 2], seed=s)
        np.testing.assert_array_equal(
            a.weights[0], Network.random([3, 2], seed=np.random.default_rng([1, 2])).weights[0]
        )
    b = Network.random([3, 2], seed=np.random.PCG64(4))
    np.testing.assert_array_equal(b.weights[0], Network.random([3, 2], seed=4).weights[0])
    with pytest.raises(ValueError, match=r"seed must be >= 0 \(every entry\)"):
        Network.random([3, 2], seed=[1, -2])
    with pytest.raises(TypeError, match=r"seed\[1\] must be an int, got float"):
        Network.random([3, 2], seed=[1, 2.5])


@pytest.mark.parametrize(
    "method",
    [
        "forward",
        "preactivations",
        "jacobian",
        "singular_values",
        "rank",
        "exact_rank",
        "log_singular_values",
        "log_abs_det",
        "frobenius_norm",
        "active_counts",
    ],
)
@pytest.mark.parametrize("check_finite", [True, False])
def test_float32_network_refuses_x_beyond_its_range(
    method: str, check_finite: bool, backend: str
) -> None:
    # 1e39 is a finite float64, inf in float32: the cast made jacobian return zeros and the
    # frame methods blame check_finite=False, which the caller never passed
    net = Network.random([3, 4, 3], activation="relu", seed=0, dtype=np.float32)
    X = np.array([[1e39, 1.0, 2.0], [0.5, -1.0, 2.0]])
    before = X.copy()
    kwargs: dict[str, Any] = {"check_finite": check_finite}
    if method not in ("forward", "preactivations"):
        kwargs["backend"] = backend
    with pytest.raises(
        ValueError,
        match=r"X holds finite values beyond the range of the network's dtype float32 "
        r"\(largest magnitude 1e\+39, float32 holds at most 3.40282e\+38\)",
    ):
        getattr(net, method)(X, **kwargs)
    np.testing.assert_array_equal(X, before)  # not modified


def test_float32_network_takes_float64_x_within_its_range(backend: str) -> None:
    # float64 X within float32's range is cast, as before: the result is that of X cast to
    # float32 by numpy; NaN is still refused as NaN
    net = Network.random([3, 4, 3], activation="tanh", seed=0, dtype=np.float32)
    X = np.array([[1e37, 1.0, 2.0], [0.5, -1.0, 2.0 + 2**-40]])
    want = net.jacobian(X.astype(np.float32), backend=backend)
    np.testing.assert_array_equal(net.jacobian(X, backend=backend), want)
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        net.jacobian(np.array([[np.nan, 1e39, 0.0]]), backend=backend)


@pytest.mark.parametrize(
    ("diagonal", "activation"),
    [((-1.0, -1.0, -1.0), "identity"), ((-1.0, -1.0, 0.5), "identity"), ((-1.0, 0.5, 2.0), "relu")],
)
def test_residual_layer_rank_is_decided_not_assumed(
    diagonal: tuple[float, ...], activation: str, backend: str
) -> None:
    # the docstring said residual layers were taken as non-singular: I + D W = 0 where
    # phi' W = -I loses every direction. The independent value: numpy's rank of the formed
    # I + D W at x (for relu, D = [W x > 0]).
    W = np.diag(diagonal)
    x = np.array([-1.0, 2.0, 3.0]) if activation == "relu" else np.array([1.0, 2.0, 3.0])
    z = W @ x
    d = np.ones(3) if activation == "identity" else (z > 0).astype(float)
    want = np.linalg.matrix_rank(np.eye(3) + d[:, None] * W)
    net = Network([W], activation=activation, residual=True)
    assert net.exact_rank(x, backend=backend) == want


@pytest.mark.parametrize("backend", jacgeom.backends())
def test_infinite_bias_with_check_finite_false_follows_ieee_on_every_backend(
    backend: str,
) -> None:
    # -1.8e8 * 1e300 + inf is NaN: that unit's row is NaN and the others' exact. The numpy
    # backend used to raise "overflows ... for finite inputs" here (the biases were not
    # counted as inputs), where the compiled ones gave the IEEE result.
    W = np.zeros((4, 4))
    W[1, 1] = -1.79769314e8
    W[0, 0] = 2.0
    b = np.array([0.0, np.inf, 0.0, 0.0])
    net = jacgeom.Network([W], [b], activation="sigmoid", check_finite=False)
    X = np.array([[0.0, 1e300, 0.0, 0.0]])
    with np.errstate(invalid="ignore", over="ignore"):
        J = net.jacobian(X, backend=backend, check_finite=False)[0]
    assert np.isnan(J[1]).all()
    np.testing.assert_array_equal(J[[0, 2, 3]], [[0.5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
