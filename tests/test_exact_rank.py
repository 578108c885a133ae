"""Exact rank, numerical rank and accurate log singular values of networks, against
independent truths: 80-digit arithmetic (mpmath), closed forms, and structure built on
purpose."""

from __future__ import annotations

import functools
import math
import warnings
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import jacgeom
from jacgeom import Network
from jacgeom.reference import graded as ref_graded
from jacgeom.reference import network as reference_network

BACKENDS = jacgeom.backends()


def _mp_log_singular_values(net: Network, x: np.ndarray) -> np.ndarray:
    """log singular values of D_L W_L ... D_1 W_1 in 80 digits, with D_l = phi'(z_l) at the
    network's own (float) pre-activations: exactly the product the library factors."""
    mpmath.mp.dps = 80
    zs = net.preactivations(x)
    J = mpmath.eye(len(x))
    for W, z, act in zip(net.weights, zs, net.activations, strict=True):
        Wm = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in W])
        if act.name == "tanh":
            d = [mpmath.sech(mpmath.mpf(float(v))) ** 2 for v in z]
        elif act.name == "identity":
            d = [mpmath.mpf(1)] * len(z)
        else:  # relu
            d = [mpmath.mpf(1) if float(v) > 0 else mpmath.mpf(0) for v in z]
        J = mpmath.diag(d) * Wm * J
    s = mpmath.svd_r(J, compute_uv=False)
    return np.array(sorted((float(mpmath.log(v)) for v in s), reverse=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("act", "width", "depth", "seed"),
    [("tanh", 16, 16, 2001), ("identity", 12, 16, 3), ("tanh", 10, 30, 7)],
)
def test_log_singular_values_match_80_digits(
    act: str, width: int, depth: int, seed: int, backend: str
) -> None:
    net = Network.random([width] * (depth + 1), activation=act, init="he", seed=seed)
    x = np.random.default_rng(seed).standard_normal(width)
    want = _mp_log_singular_values(net, x)
    got = net.log_singular_values(x, backend=backend)
    # Condition numbers beyond 1e14 (so a formed product could not give these values),
    # each value to a few L n eps relative.
    assert (want[0] - want[-1]) / math.log(10) > 13
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * depth * width * 2.2e-16)
    assert net.exact_rank(x, backend=backend) == width
    # Numerical rank: numpy's rule on the exact values.
    rtol = width * np.finfo(np.float64).eps
    assert net.rank(x, backend=backend) == np.count_nonzero(want > want[0] + math.log(rtol))


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_condition_number_against_the_inverse_product(backend: str) -> None:
    # An independent check for square networks: log cond = log s_max(J) + log s_max(J^-1),
    # each largest singular value from a formed float64 product (accurate to a few digits),
    # J^-1 = W_1^-1 D_1^-1 ... W_L^-1 D_L^-1 by solves.
    n, L = 12, 16
    net = Network.random([n] * (L + 1), activation="tanh", seed=11)
    x = np.random.default_rng(5).standard_normal(n)
    zs = net.preactivations(x)
    tanh = jacgeom.activation("tanh")
    J = np.eye(n)
    Jinv = np.eye(n)
    for W, z in zip(net.weights, zs, strict=True):
        d = tanh.derivative(z)
        J = d[:, None] * W @ J
        Jinv = Jinv @ np.linalg.solve(W, np.diag(1.0 / d))
    want = math.log(np.linalg.norm(J, 2)) + math.log(np.linalg.norm(Jinv, 2))
    logs = net.log_singular_values(x, backend=backend)
    assert want / math.log(10) > 20
    assert logs[0] - logs[-1] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_units_count_and_their_logs_are_exact(backend: str, dtype: type) -> None:
    # W_l = c I, tanh: every unit at |z| in [500, 1500], phi' underflows to 0 in both
    # precisions; each log singular value is the sum over layers of log c + log tanh'(z_l)
    # of one unit, in closed form in log space.
    n, L, c = 6, 4, 1000.0
    net = Network([np.eye(n, dtype=dtype) * c] * L, activation="tanh")
    x = np.linspace(0.5, 1.5, n).astype(dtype)
    h = x.astype(np.float64)
    total = np.zeros(n)
    for _ in range(L):
        z = np.float64(dtype(c)) * h.astype(dtype).astype(np.float64)
        total += math.log(c) + (math.log(4) - 2 * np.abs(z) - 2 * np.log1p(np.exp(-2 * np.abs(z))))
        h = np.tanh(z)
    assert np.all(jacgeom.activation("tanh").derivative(total.astype(dtype) * 0 + 1000) == 0)
    got = net.log_singular_values(x, backend=backend)
    assert got.dtype == dtype
    np.testing.assert_allclose(
        got, np.sort(total)[::-1], rtol=1e-6 if dtype == np.float32 else 1e-12
    )
    assert net.exact_rank(x, backend=backend) == n
    assert net.log_abs_det(x, backend=backend) == pytest.approx(total.sum(), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_exact_rank_is_the_fewest_active_units(backend: str) -> None:
    # Gaussian weights: rank(J) = min(n_0, k_1, ..., k_L) almost surely.
    net = Network.random([10, 12, 9, 11, 10], activation="relu", seed=4)
    X = np.random.default_rng(6).standard_normal((40, 10))
    k = net.active_counts(X)
    want = np.minimum(10, np.minimum.accumulate(k, axis=1))
    np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), want)
    np.testing.assert_array_equal(net.exact_rank(X, backend=backend), want[:, -1])
    logs = net.log_singular_values(X, backend=backend)
    np.testing.assert_array_equal(np.isfinite(logs).sum(axis=1), want[:, -1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_rank_of_structured_weights(backend: str) -> None:
    # Diagonal weights, relu: the live units of layer 2 are a subset pattern of layer 1's,
    # so rank = |S_1 and S_2|, below min(|S_1|, |S_2|): a structural count no bound gives.
    n = 6
    W1 = np.eye(n)
    W2 = np.diag([1.0, -1.0, 1.0, -1.0, 1.0, 1.0])
    net = Network([W1, W2], activation="relu")
    x = np.array([1.0, 1.0, -1.0, 1.0, 1.0, -1.0])  # S_1 = {0, 1, 3, 4}, S_2 = {0, 4}
    assert net.exact_rank(x, backend=backend) == 2
    np.testing.assert_array_equal(net.layer_exact_ranks(x, backend=backend), [4, 2])
    # Weights of rank 3 in a tanh network: exact rank 3 at every later layer.
    rng = np.random.default_rng(0)
    low = rng.standard_normal((8, 3)) @ rng.standard_normal((3, 8))
    net = Network(
        [rng.standard_normal((8, 8)), low, rng.standard_normal((8, 8))], activation="tanh"
    )
    X = rng.standard_normal((5, 8))
    np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), [[8, 3, 3]] * 5)
    logs = net.log_singular_values(X, backend=backend)
    assert np.all(np.isfinite(logs[:, :3])) and np.all(np.isneginf(logs[:, 3:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_normalisation_loses_one_direction_per_layer(backend: str) -> None:
    # The normalisation's Jacobian annihilates the ones vector: rank n_l - 1 at a square
    # layer, never above a narrower layer's width (a rank above it was reported before).
    net = Network.random([3, 2, 3], activation="gelu", norm="layer", seed=2)
    X = np.random.default_rng(2).standard_normal((20, 3))
    assert np.all(net.exact_rank(X, backend=backend) <= 1)
    assert np.all(net.rank(X, backend=backend) <= 1)
    net = Network.random([6, 6, 6, 6], activation="tanh", norm="layer", seed=3)
    X = np.random.default_rng(3).standard_normal((10, 6))
    np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), [[5, 5, 5]] * 10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deep_smooth_networks_keep_their_exact_rank(backend: str) -> None:
    # The distinction the library exists to show: float64 rank drops, exact rank does not.
    net = Network.random([24] * 25, activation="tanh", seed=9)
    X = np.random.default_rng(9).standard_normal((6, 24))
    assert np.all(net.exact_rank(X, backend=backend) == 24)
    assert np.all(net.rank(X, backend=backend) < 24)
    assert np.all(np.isfinite(net.log_singular_values(X, backend=backend)))


def test_custom_activation_exact_zeros_delete_rows() -> None:
    step = jacgeom.Activation.custom(lambda z: max(z, 0.0) ** 2, lambda z: 2 * max(z, 0.0))
    net = Network.random([5, 7, 5], activation=step, seed=1)
    X = np.random.default_rng(1).standard_normal((8, 5))
    want = np.minimum(5, np.minimum.accumulate(net.active_counts(X), axis=1))[:, -1]
    for be in BACKENDS:
        np.testing.assert_array_equal(net.exact_rank(X, backend=be), want)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_derivative_is_an_error_not_a_rank(value: float) -> None:
    bad = jacgeom.Activation.custom(lambda z: z, lambda z: value if z > 0 else 1.0)
    net = Network([np.eye(3)], activation=bad)
    for be in BACKENDS:
        with pytest.raises(FloatingPointError, match="NaN or infinite"):
            net.exact_rank(np.array([1.0, -1.0, -1.0]), backend=be)
        with pytest.raises(FloatingPointError, match="NaN or infinite"):
            net.log_singular_values(np.array([1.0, -1.0, -1.0]), backend=be)


def _gelu_tanh_derivative(t: mpmath.mpf) -> mpmath.mpf:
    # 1 + tanh(u) and sech(u)^2 through exp(2u): no cancellation in the left tail.
    c = mpmath.sqrt(2 / mpmath.pi)
    u = c * (t + 0.044715 * t**3)
    e = mpmath.exp(2 * u)
    return e / (1 + e) + 0.5 * t * 4 * e / (1 + e) ** 2 * c * (1 + 3 * 0.044715 * t**2)


@pytest.mark.parametrize(
    "name", ["gelu", "gelu_tanh", "silu", "tanh", "sigmoid", "softplus", "elu"]
)
def test_log_abs_derivative_in_the_tails(name: str) -> None:
    mpmath.mp.dps = 50
    act = jacgeom.activation(name)
    z = np.array([-700.0, -60.0, -3.0, -0.3, 0.4, 5.0, 40.0, 800.0])
    got = act.log_abs_derivative(z)
    f = {
        "gelu": lambda t: mpmath.ncdf(t) + t * mpmath.npdf(t),
        "gelu_tanh": _gelu_tanh_derivative,
        "silu": lambda t: (1 + t / (1 + mpmath.exp(t))) / (1 + mpmath.exp(-t)),
        "tanh": lambda t: 4 * mpmath.exp(-2 * abs(t)) / (1 + mpmath.exp(-2 * abs(t))) ** 2,
        "sigmoid": lambda t: mpmath.exp(-abs(t)) / (1 + mpmath.exp(-abs(t))) ** 2,
        "softplus": lambda t: 1 / (1 + mpmath.exp(-t)),
        "elu": lambda t: 1 if t > 0 else mpmath.exp(t),
    }[name]
    want = np.array([float(mpmath.log(abs(f(mpmath.mpf(float(t)))))) for t in z])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(got))
    assert not act.derivative_is_zero(z).any()


def test_graded_jacobi_beyond_the_floating_point_range() -> None:
    # Rows 10^(-300 k): a spread no formed matrix holds. Against the same matrix with the
    # scales split off exactly: for a triangular V with unit diagonal and small
    # off-diagonal entries the values are e^(g_i) to within the coupling, which we bound.
    rng = np.random.default_rng(3)
    n = 6
    V = np.eye(n) + np.triu(rng.standard_normal((n, n)) * 1e-3, 1)
    g = -np.arange(n) * 300 * math.log(10)
    got = ref_graded.graded_log_singular_values(g, V)
    np.testing.assert_allclose(got, g, atol=1e-5)
    from jacgeom._numba.graded import graded_log_singular_values as numba_graded

    np.testing.assert_allclose(numba_graded(g[None], V[None])[0], got, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_exact_rank(backend: str, dtype: type) -> None:
    rng = np.random.default_rng(8)
    W = rng.standard_normal((7, 5)).astype(dtype)
    X = (rng.standard_normal((30, 5)) * 400).astype(dtype)  # many tanh units saturated
    # relu: exact = numerical = the rank of the live rows, min(k, 5) for Gaussian W.
    k = np.count_nonzero(X @ W.T > 0, axis=1)
    exact = jacgeom.jacobian_rank(W, X, activation="relu", exact=True, backend=backend)
    np.testing.assert_array_equal(exact, np.minimum(k, 5))
    # tanh: phi' underflows for most units, but no row is deleted in exact arithmetic.
    tanh = jacgeom.jacobian_rank(W, X, activation="tanh", backend=backend)
    assert np.all(jacgeom.jacobian_rank(W, X, activation="tanh", exact=True, backend=backend) == 5)
    assert np.any(tanh < 5)
    with pytest.raises(TypeError, match="exact must be a bool"):
        jacgeom.jacobian_rank(W, X, exact="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_units_saturated_far_apart_against_80_digits(backend: str) -> None:
    # tanh units at |z| = 0.5 ... 9000 (log phi' from -0.4 to -18000): the gaps between them
    # (1600 to 13000 nats) are wider than the frame applies as factors, so its shortcut
    # for wide gaps is what is measured, after a dense second layer mixes the units.
    n = 5
    W1 = np.diag([0.5, -3.0, 800.0, 2500.0, -9000.0])
    W2 = np.random.default_rng(3).standard_normal((n, n)) / 3
    net = Network([W1, W2], activation="tanh")
    x = np.ones(n)
    want = _mp_log_singular_values(net, x)
    assert want[0] - want[-1] > 15000
    got = net.log_singular_values(x, backend=backend)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert net.exact_rank(x, backend=backend) == n


@pytest.mark.parametrize("backend", BACKENDS)
def test_phi_prime_of_e_to_minus_five_billion_is_a_value(backend: str) -> None:
    # gelu at z = -1e5: phi'(z) ~ z npdf(z) = e^-5e9. Diagonal weights, so each log singular
    # value is log|w_i| + log|phi'(z_i)| in closed form (50 digits); the frame takes a few
    # steps, not one per e^-600 of spread.
    mpmath.mp.dps = 50
    w = np.array([1e5, -1e5, 1e3, 2.0])
    net = Network([np.diag(w)], activation="gelu")
    x = np.array([-1.0, 1.0, 1.0, 0.3])
    z = w * x

    def log_gelu_prime(t: float) -> float:
        t = mpmath.mpf(t)
        return float(mpmath.log(abs(mpmath.ncdf(t) + t * mpmath.npdf(t))))

    want = np.sort([math.log(abs(wi)) + log_gelu_prime(zi) for wi, zi in zip(w, z, strict=True)])
    got = net.log_singular_values(x, backend=backend)
    np.testing.assert_allclose(got, want[::-1], rtol=1e-12)
    assert got[-1] < -4e9
    assert net.exact_rank(x, backend=backend) == 4


def _fraction_rank(rows: list[list[Fraction]]) -> int:
    """Rank by Gaussian elimination in exact rational arithmetic."""
    M = [list(r) for r in rows]
    rank, cols = 0, len(M[0]) if M else 0
    for c in range(cols):
        pivot = next((i for i in range(rank, len(M)) if M[i][c] != 0), None)
        if pivot is None:
            continue
        M[rank], M[pivot] = M[pivot], M[rank]
        for i in range(len(M)):
            if i != rank and M[i][c] != 0:
                f = M[i][c] / M[rank][c]
                M[i] = [a - f * b for a, b in zip(M[i], M[rank], strict=True)]
        rank += 1
    return rank


def _exact_partial_ranks(net: Network, x: np.ndarray) -> list[int]:
    """Ranks of D_l W_l ... D_1 W_1 in rational arithmetic: every float is a dyadic
    rational, and relu / leaky_relu / identity have rational phi'."""
    zs = net.preactivations(x)
    n0 = len(x)
    J = [[Fraction(int(i == j)) for j in range(n0)] for i in range(n0)]
    out = []
    for W, z, act in zip(net.weights, zs, net.activations, strict=True):
        d = [Fraction(float(v)) for v in act.derivative(np.asarray(z))]
        Wf = [[Fraction(float(v)) for v in row] for row in W]
        J = [
            [d[i] * sum(Wf[i][k] * J[k][j] for k in range(len(J))) for j in range(n0)]
            for i in range(len(Wf))
        ]
        out.append(_fraction_rank(J))
    return out


@functools.cache
def _sparse_integer_cases(act: str) -> list[tuple[Network, np.ndarray, np.ndarray]]:
    """Six networks with weights in {-1, 0, 1}, 60% zeros, 24 inputs each, and their
    partial ranks in rational arithmetic (computed once, shared by the backends)."""
    rng = np.random.default_rng(17)
    n, L, B = 6, 3, 24
    cases = []
    for _ in range(6):
        Ws = [rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=(n, n)) for _ in range(L)]
        bs = [rng.choice([-1.0, 0.0, 1.0], size=n) for _ in range(L)]
        net = Network(Ws, bs, activation=act)
        X = rng.choice([-2.0, -1.0, 1.0, 3.0], size=(B, n))
        want = np.array([_exact_partial_ranks(net, x) for x in X])
        X.setflags(write=False)  # shared by the backends: none may change it for the next
        want.setflags(write=False)
        cases.append((net, X, want))
    return cases


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["relu", "identity", "leaky_relu"])
def test_sparse_integer_weights_exact_rank_in_rational_arithmetic(backend: str, act: str) -> None:
    # Blocks of W on the live units are often rank-deficient although W is not, which no
    # zero row reveals.
    deficient = 0
    for trial, (net, X, want) in enumerate(_sparse_integer_cases(act)):
        deficient += int(np.sum(want[:, -1] < X.shape[1]))
        np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), want, f"{trial}")
        np.testing.assert_array_equal(net.exact_rank(X, backend=backend), want[:, -1])
    assert deficient > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_nonzero_weights_keep_their_rank(backend: str) -> None:
    # diag(1, 1e-20, 1e-200): exact rank 3 (every stored number is exact and nonzero),
    # whatever a formed product's float64 rank says.
    net = Network([np.diag([1.0, 1e-20, 1e-200]), np.eye(3)], activation="identity")
    x = np.ones(3)
    assert net.exact_rank(x, backend=backend) == 3
    np.testing.assert_allclose(
        net.log_singular_values(x, backend=backend),
        [0.0, math.log(1e-20), math.log(1e-200)],
        atol=1e-12,
    )
    assert net.rank(x, backend=backend) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_layer_with_fewer_centres_than_units(backend: str) -> None:
    # A grad k(h) with p = 2 centres: rank <= 2 whatever the width (5).
    rng = np.random.default_rng(4)
    K = jacgeom.KernelLayer(rng.standard_normal((2, 5)), rng.standard_normal((5, 2)), gamma=0.5)
    net = Network([rng.standard_normal((5, 5)), K, rng.standard_normal((5, 5))], activation="tanh")
    X = rng.standard_normal((7, 5))
    np.testing.assert_array_equal(net.exact_rank(X, backend=backend), 2)
    np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend)[:, 1:], 2)
    assert np.all(np.isneginf(net.log_singular_values(X, backend=backend)[:, 2:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_networks_with_non_finite_values_are_an_error(backend: str) -> None:
    net = Network([np.eye(3) * 1e200, np.eye(3) * 1e200], activation="identity", residual=True)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="not finite"):
        net.exact_rank(np.full(3, 1e200), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_narrow_layer_normalised_networks_stay_within_their_structural_rank(backend: str) -> None:
    # A layer normalisation of width w has a Jacobian of rank w - 1 (the ones vector is
    # its null direction); gelu's phi' is non-zero here, so the exact rank is exactly
    # min(n_0, w_l - 1) and the float64 rank never above it. Width 2 is the sharp case:
    # J_N is then delta P / sigma, delta = eps / (var + eps), and formed as
    # I - 1 1^T / m - u u^T / m its rounding looked like a second direction. The numpy
    # reference runs one sample at a time in Python (about 0.1 s a network): there, the
    # first seed of each distinct widths (63 of the 64 possible among the 300 seeds).
    seen: set[tuple[int, ...]] = set()
    for seed in range(300):
        widths = [int(w) for w in np.random.default_rng(seed).integers(1, 5, size=3)]
        if backend == "numpy" and tuple(widths) in seen:
            continue
        seen.add(tuple(widths))
        net = Network.random(widths, activation="gelu", norm="layer", seed=seed)
        X = np.random.default_rng(seed).standard_normal((20, widths[0]))
        bound = max(0, min(widths[0], *(w - 1 for w in widths[1:])))
        exact = net.exact_rank(X, backend=backend)
        np.testing.assert_array_equal(exact, bound, err_msg=f"widths {widths}")
        assert np.all(net.rank(X, backend=backend) <= exact), widths


def _mp_layer_norm_log_singular_values(
    W: np.ndarray, b: np.ndarray, x: np.ndarray, eps: float
) -> np.ndarray:
    """log singular values of diag(tanh'(u)) J_N W at 60 digits, from the float64 inputs:
    J_N = (I - 1 1^T / m - u u^T / m) / sigma, u = (z - mean z) / sigma."""
    mpmath.mp.dps = 60
    m, n = W.shape
    z = [
        mpmath.fsum(mpmath.mpf(float(W[i, j])) * mpmath.mpf(float(x[j])) for j in range(n))
        + mpmath.mpf(float(b[i]))
        for i in range(m)
    ]
    mu = mpmath.fsum(z) / m
    sigma = mpmath.sqrt(mpmath.fsum((v - mu) ** 2 for v in z) / m + mpmath.mpf(eps))
    u = [(v - mu) / sigma for v in z]
    J = mpmath.matrix(m, n)
    for i in range(m):
        d = mpmath.sech(u[i]) ** 2
        for k in range(n):
            J[i, k] = d * mpmath.fsum(
                ((1 if i == j else 0) - mpmath.mpf(1) / m - u[i] * u[j] / m)
                / sigma
                * mpmath.mpf(float(W[j, k]))
                for j in range(m)
            )
    s = mpmath.svd_r(J, compute_uv=False)
    return np.array(sorted((float(mpmath.log(v)) for v in s if v > 0), reverse=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1.0, 1e6, 1e8])
def test_layer_normalisation_at_large_weights_against_60_digits(backend: str, scale: float) -> None:
    # The u-direction of J_N is scaled by delta = eps / (var + eps): 1e-17 at weights of
    # 1e6, below float64's resolution of 1 - |u|^2 / m. It is a scale, not a lost
    # direction: the exact rank stays m - 1, and its singular value is found to full
    # relative accuracy (the frame computes delta as eps / sigma^2).
    rng = np.random.default_rng(int(scale))
    for m in (2, 3, 4):
        W = rng.standard_normal((m, 3)) * scale
        b = rng.standard_normal(m)
        x = rng.standard_normal(3)
        net = Network([W], biases=[b], activation="tanh", norm="layer")
        k = min(m - 1, 3)
        assert int(net.exact_rank(x, backend=backend)) == k
        want = _mp_layer_norm_log_singular_values(W, b, x, net.norm_eps)[:k]
        got = net.log_singular_values(x, backend=backend)[:k]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"m={m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_rank_does_not_depend_on_the_batch_or_dead_rows(backend: str) -> None:
    # The live block [[1, 0], [1, 1e-15]] has determinant 1e-15 exactly: rank 2, as
    # numpy.linalg.matrix_rank of that block says. The tolerance counts the sample's own
    # live rows and directions, not the batch's widest frame nor the dead rows.
    W2 = np.zeros((2, 8))
    W2[0, 0] = W2[1, 0] = 1.0
    W2[1, 1] = 1e-15
    net = Network([np.eye(8), W2], activation=["relu", "identity"])
    xa = np.array([1.0, 1.0] + [-1.0] * 6)
    alone = net.exact_rank(xa, backend=backend)
    assert alone == np.linalg.matrix_rank(W2[:, :2]) == 2
    assert net.exact_rank(np.stack([xa, np.ones(8)]), backend=backend)[0] == alone
    W = np.zeros((8, 2))
    W[0], W[1], W[2:] = [1.0, 0.0], [1.0, 1e-15], [-1.0, 0.0]
    assert Network([W], activation="relu").exact_rank(np.array([1.0, 0.5]), backend=backend) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_normalisation_of_a_map_along_the_ones_vector_is_exactly_zero(backend: str) -> None:
    # Every weight row the same: z is constant across units, so N(z) does not depend on x
    # and J = 0 exactly; H B_1^T W cancels to rounding, which must stay noise. With a
    # rank-k perturbation the exact rank is k (against the weights' own matrix_rank).
    rng = np.random.default_rng(5)
    x = rng.standard_normal(4)
    const = Network(
        [np.full((5, 4), 0.1), rng.standard_normal((3, 5))], activation="tanh", norm="layer"
    )
    assert const.layer_exact_ranks(x, backend=backend).tolist() == [0, 0]
    assert np.all(np.isneginf(const.log_singular_values(x, backend=backend)))
    c = rng.standard_normal(4)
    for k in (0, 1, 2):
        A = rng.standard_normal((6, k)) @ rng.standard_normal((k, 4))
        net = Network([np.outer(np.ones(6), c) + A], activation="identity", norm="layer")
        assert int(net.exact_rank(x, backend=backend)) == k
        assert np.count_nonzero(np.isfinite(net.log_singular_values(x, backend=backend))) == k


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_rows_near_both_ends_of_the_float64_range(backend: str) -> None:
    # A subnormal weight row is a nonzero row: rank 4 and four finite log singular values
    # (the fourth against 60-digit arithmetic). Weights of 1.5e308: J = W2 W1 overflows
    # float64 but its spectrum does not.
    rng = np.random.default_rng(9)
    W1 = rng.standard_normal((4, 4))
    W1[1] = 0.0
    W1[1, 2] = 5e-324
    W2 = rng.standard_normal((4, 4))
    tiny = Network([W1, W2], activation="identity")
    x = rng.standard_normal(4)
    assert int(tiny.exact_rank(x, backend=backend)) == 4
    mpmath.mp.dps = 400  # the fourth value is e^-745 of the first
    J = mpmath.matrix(W2.tolist()) * mpmath.matrix(W1.tolist())
    want = sorted((float(mpmath.log(v)) for v in mpmath.svd_r(J, compute_uv=False)), reverse=True)
    np.testing.assert_allclose(tiny.log_singular_values(x, backend=backend), want, rtol=1e-12)
    big = Network(
        [np.array([[1.0, 1.0], [1.0, -1.0]]), np.array([[1.5e308, 1.5e308], [1.0e308, -0.5e308]])],
        activation="identity",
    )
    x2 = np.array([0.3, 0.1])
    assert int(big.exact_rank(x2, backend=backend)) == 2
    np.testing.assert_allclose(
        big.log_singular_values(x2, backend=backend), _mp_log_singular_values(big, x2), rtol=1e-13
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_normalisation_whose_variance_overflows(backend: str, dtype: type) -> None:
    # Pre-activations beyond sqrt(max float) (1.3e154 in float64, 1.8e19 in float32): the
    # variance's squares overflow, sigma must not. Normalisation is scale-invariant but for
    # eps (a relative 1e-5 at scale 1, 1e-25 at 1e10), so the two largest log singular
    # values at the large scale equal those of the float64 network at scale 1e10.
    base = Network.random([4, 4, 4], activation="tanh", norm="layer", seed=3, sigma_b=0.5)
    x = np.random.default_rng(0).standard_normal(4).astype(dtype)
    scale = 1e20 if dtype == np.float32 else 1e160
    ref = Network(
        [w * 1e10 for w in base.weights],
        [b * 1e10 for b in base.biases],
        activation="tanh",
        norm="layer",
    )
    one = ref.log_singular_values(x.astype(np.float64), backend=backend)
    for s in (1e10, scale):
        net = Network(
            [(w * s).astype(dtype) for w in base.weights],
            [(b * s).astype(dtype) for b in base.biases],
            activation="tanh",
            norm="layer",
        )
        assert int(net.exact_rank(x, backend=backend)) == 3
        logs = net.log_singular_values(x, backend=backend)
        assert np.all(np.isfinite(logs[:3])) and np.isneginf(logs[3])
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(logs[:2], one[:2], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [None, "layer"])
def test_weights_meeting_dead_units_take_no_part(backend: str, norm: str | None) -> None:
    # Unit 2 of layer 1 is dead (relu, z = -4), so layer 2's second column meets a zero row
    # of the frame. Huge entries there (up to 1e30) must not make the used part of each
    # row look like noise: the exact rank stays 1 (the first column alone), as exact
    # arithmetic says, on every backend, with or without layer normalisation.
    W1 = np.array([[1.0, 0.5, -0.3, 0.2], [-1.0, -1.0, -1.0, -1.0]])
    x = np.ones(4)
    for big in (1.0, 1e12, 1e17, 1e30):
        W2 = np.array([[1.0, big], [2.0, big], [-1.0, big]])
        net = Network([W1, W2], activation="relu", norm=norm)
        assert net.layer_exact_ranks(x, backend=backend).tolist() == [1, 1], big
        small = Network(
            [W1, np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])], activation="relu", norm=norm
        )
        np.testing.assert_allclose(
            net.log_singular_values(x, backend=backend)[0],
            small.log_singular_values(x, backend=backend)[0],
            rtol=1e-12,
        )


def _graded_unread_network(rng: np.random.Generator, act: str) -> tuple[Network, np.ndarray]:
    """Three layers: layer 1's rows graded e^0 down to e^-150 (integer directions), layer 2
    reads its largest unit nowhere (identity: a zero weight column; relu: only in a row
    that is dead), the rest small integers; biases keep every other relu unit alive."""
    n0, n1, n2, n3 = 5, 4, 3, 3
    s = np.exp(-np.sort(rng.uniform(0, 150, n1)))
    s[0] = 1.0
    R = rng.integers(-2, 3, (n1, n0)).astype(float)
    R[:, 0] = 1.0  # no zero row
    W2 = rng.integers(-2, 3, (n2, n1)).astype(float)
    W2[:, 0] = 0.0
    b2 = np.full(n2, 1e3)
    if act == "relu":
        W2[0, 0], b2[0] = 1.0, -1e3  # row 0 reads unit 0 and is dead
    W3 = rng.integers(-2, 3, (n3, n2)).astype(float)
    biases = [np.full(n1, 20.0), b2, np.full(n3, 1e4)]
    x = np.full(n0, 0.5)
    return Network([s[:, None] * R, W2, W3], biases, activation=act), x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["identity", "relu"])
def test_units_the_next_layer_does_not_read_keep_a_graded_frame_accurate(
    backend: str, act: str
) -> None:
    # The values of J are carried by layer 1's small rows alone; layer 2's mixing rounded
    # them against their couplings to the unread e^0 row (values off by up to e^0.5 before
    # that unit left the frame first). In 300 digits: mpmath's values of an exactly
    # singular J are below e^-650.
    rng = np.random.default_rng(11)
    for trial in range(6):
        net, x = _graded_unread_network(rng, act)
        zs = net.preactivations(x)
        with mpmath.workdps(300):
            J = mpmath.eye(len(x))
            for W, z in zip(net.weights, zs, strict=True):
                d = [1 if act == "identity" or float(v) > 0 else 0 for v in z]
                J = mpmath.diag(d) * mpmath.matrix(W.tolist()) * J
            want = sorted(float(mpmath.log(v)) for v in mpmath.svd_r(J, compute_uv=False))[::-1]
        got = net.log_singular_values(x, backend=backend)
        exact = sum(v > -650 for v in want)
        assert net.exact_rank(x, backend=backend) == exact, trial
        assert np.all(got[exact:] == -np.inf)
        np.testing.assert_allclose(got[:exact], want[:exact], rtol=0, atol=1e-9, err_msg=trial)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [None, "layer"])
def test_a_unit_the_next_layer_does_not_read_counts_in_its_own_layer(
    backend: str, norm: str | None
) -> None:
    # Layer 2 never reads the last unit of layer 1: the rank after layer 1 is still that of
    # D_1 W_1 (without normalisation that unit alone carries the third direction), on every
    # backend as in the reference, and the values agree with the reference's.
    if norm is None:
        W1 = np.diag([1.0, 1e-40, 1e-80])
        W2 = np.array([[1.0, 2.0, 0.0], [3.0, -1.0, 0.0], [0.5, 0.5, 0.0]])
    else:  # J_N W_1 of four units has rank 3, J_N W_2 of three rank 2
        W1 = np.array([[1.0, 2.0, 0.0], [-1.0, 1.0, 1.0], [0.0, -2.0, 1.0], [2.0, 1.0, 1.0]])
        W2 = np.array([[1.0, 2.0, -1.0, 0.0], [3.0, -1.0, 1.0, 0.0], [0.5, 0.5, 2.0, 0.0]])
    net = Network([W1, W2], activation="tanh", norm=norm)
    X = np.array([[0.3, -0.2, 0.1], [2.0, 1.0, -1.0]])
    want = reference_network.layer_exact_ranks(net, X)
    assert want.tolist() == [[3, 2]] * 2
    np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), want)
    np.testing.assert_allclose(
        net.log_singular_values(X, backend=backend),
        reference_network.log_singular_values(net, X),
        rtol=1e-12,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_layer_redone_without_unread_units_keeps_its_rank(backend: str) -> None:
    # Review of the unread-unit rule: fewer rows lowered the rank tolerance (max(m, r) eps
    # sqrt(m)), so the layer redone without units 0 and 3 kept a direction of 9e-16 that
    # the whole layer's decision removed: ranks rose from layer 1 to layer 2, and on the
    # compiled backends the answer depended on the other samples in the batch. The redo is
    # now decided with the whole layer's tolerance. In the second sample the direction
    # e_2 reaches layer 2 only through unit 2's 1.1e-15 (unit 3 is not read), below that
    # tolerance: it counts as lost, as weights closer than the tolerance do (theory.md).
    W1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.1e-15], [0.0, 1.0]])
    W2 = np.array([[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, -1.0, 0.0]])
    net = Network([W1, W2], [np.zeros(4), np.zeros(2)], activation="relu")
    X = np.array([[0.3, -0.2], [0.3, 0.2]])  # unit 3 dead in the first sample only
    want = reference_network.layer_exact_ranks(net, X)
    assert want.tolist() == [[1, 1], [2, 1]]
    np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), want)
    for i in range(2):
        np.testing.assert_array_equal(net.layer_exact_ranks(X[i], backend=backend), want[i])
        assert net.log_singular_values(X[i], backend=backend)[1] == -np.inf
    assert np.all(net.log_singular_values(X, backend=backend)[:, 1] == -np.inf)


def _mp_log_values(J: object) -> list[float]:
    return [float(mpmath.log(v)) for v in mpmath.svd_r(J, compute_uv=False) if v > 1e-150]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_residual_layer_that_cancels_a_unit_does_not_read_it(backend: str) -> None:
    # I + W_2 has a zero last column (W_2's -1 on the diagonal): the residual layer does
    # not read layer 1's largest unit, so its small units' values stay accurate (e^0.8 off
    # on the compiled backends when only the reference dropped the unit).
    s = np.exp([-121.24, -83.39, -19.95])
    R = np.array([[2.0, -2, 0, 2, 0, 0], [-2, 2, 1, 1, 0, 1], [0, 2, 1, 1, 0, 1]])
    W2 = np.array([[1.0, -1, 0], [0, 1, 0], [0, 0, -1]])
    net = Network([s[:, None] * R, W2], activation="identity", residual=[False, True])
    with mpmath.workdps(200):
        want = _mp_log_values(
            (mpmath.eye(3) + mpmath.matrix(W2.tolist())) * mpmath.matrix((s[:, None] * R).tolist())
        )
    got = net.log_singular_values(np.zeros(6), backend=backend)
    np.testing.assert_allclose(got[:2], want, rtol=0, atol=1e-9)
    assert got[2] == -np.inf


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_normalisation_does_not_read_a_constant_column(backend: str) -> None:
    # J_N removes the ones vector exactly, so a constant column of W_2 is not read: layer
    # 1's largest unit leaves the frame (every backend gave e^26 too much before).
    s = np.exp([-121.24, -83.39, -19.95])
    R = np.array([[2.0, -2, 0, 2, 0, 0], [-2, 2, 1, 1, 0, 1], [0, 2, 1, 1, 0, 1]])
    W2 = np.array([[2.0, -1, 3], [1, 2, 3]])
    W3 = np.array([[1.0, 2.0]])
    net = Network([s[:, None] * R, W2, W3], activation="identity", norm=[None, "layer", None])
    x = np.array([0.5, -1, 2, 1, 0.3, -2])
    z = net.preactivations(x)[1]
    with mpmath.workdps(300):
        zm = [mpmath.mpf(float(v)) for v in z]
        mean = sum(zm) / 2
        sigma = mpmath.sqrt(sum((v - mean) ** 2 for v in zm) / 2 + mpmath.mpf(net.norm_eps))
        u = mpmath.matrix([(v - mean) / sigma for v in zm])
        Jn = (mpmath.eye(2) - mpmath.ones(2, 2) / 2 - u * u.T / 2) / sigma
        J = mpmath.matrix(W3.tolist()) * Jn * mpmath.matrix(W2.tolist())
        want = _mp_log_values(J * mpmath.matrix((s[:, None] * R).tolist()))
    np.testing.assert_allclose(net.log_singular_values(x, backend=backend), want, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_layer_redone_without_unread_units_is_decided_with_the_whole_tolerance(
    backend: str,
) -> None:
    # Review of the unread-unit rule: a fourth unit e^-300 (R0 + d e_4) is within the whole
    # layer's rank tolerance of R0's direction but outside the tolerance of the three rows
    # left without the unread e^-20 unit. Redone with its own tolerance, the layer kept it,
    # the sample fell back to the whole frame, and sigma_2 was lost (-inf; mpmath e^-119.6).
    s = np.exp([-121.24, -83.39, -19.95])
    R0 = np.array([2.0, -2, 0, 2, 0, 0])
    R1 = np.array([-2.0, 2, 1, 1, 0, 1])
    W1 = np.array(
        [s[0] * R0, s[1] * R1, s[2] * (R0 + R1), np.exp(-300) * (R0 / 4 + 3.3e-15 * np.eye(6)[4])]
    )
    W2 = np.array([[2.0, -1, 0, 1], [0, 2, 0, -1]])
    net = Network([W1, W2], activation="identity")
    with mpmath.workdps(400):
        want = _mp_log_values(mpmath.matrix(W2.tolist()) * mpmath.matrix(W1.tolist()))
    assert len(want) == 2
    x = np.zeros((1, 6))
    np.testing.assert_array_equal(
        net.layer_exact_ranks(x, backend=backend), reference_network.layer_exact_ranks(net, x)
    )
    np.testing.assert_allclose(net.log_singular_values(x, backend=backend)[0], want, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_normalised_residual_layer_with_a_zero_column_does_not_read_it(backend: str) -> None:
    # Review: I + D J_N W_2 with an exactly zero first column (u = 0, only unit 0 alive,
    # W_2[0, 0] solved for it): the reference dropped layer 1's unit 0 and the compiled
    # backends did not (e^4 and e^39 off).
    m, eps = 4, 0.25
    W2 = np.random.default_rng(1).integers(-3, 4, (m, m)).astype(float)
    W2[0, 0] = (-np.sqrt(eps) + (W2[:, 0].sum() - W2[0, 0]) / m) / (1 - 1 / m)
    C = np.array([[1.0, 2, 0, 1], [0, 1, -1, 2], [1, 0, 1, 1], [2, 1, 1, 0]])
    W1 = np.exp([0.0, -40.0, -80.0, -120.0])[:, None] * C
    net = Network(
        [W1, W2],
        [np.zeros(m), np.zeros(m)],
        activation=["identity", "relu"],
        residual=[False, True],
        norm=[None, "layer"],
        norm_eps=eps,
        norm_biases=[None, np.array([1.0, -1, -1, -1])],
    )
    x = np.zeros(m)
    with mpmath.workdps(300):
        Jn = (mpmath.eye(m) - mpmath.ones(m, m) / m) / mpmath.sqrt(mpmath.mpf(eps))  # u = 0
        J2 = mpmath.eye(m) + mpmath.diag([1, 0, 0, 0]) * Jn * mpmath.matrix(W2.tolist())
        assert all(v == 0 for v in J2[:, 0])
        want = _mp_log_values(J2 * mpmath.matrix(W1.tolist()))
    got = net.log_singular_values(x, backend=backend)
    np.testing.assert_allclose(got[:3], want, rtol=0, atol=1e-9)
    assert got[3] == -np.inf


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_a_redo_without_unread_units_is_not_restricted_through_an_svd(
    backend: str, seed: int
) -> None:
    # Review: the redo counted its dropped rows in the rank the structure leaves, so it
    # went through the SVD restriction, which mixes eps e^0 into the e^-70 directions
    # (cpp/numba e^30 off; the reference never restricts there).
    rng = np.random.default_rng(seed)
    R = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    W0 = np.exp([0.0, 0.0, -70.0, -71.0])[:, None] * R
    W1 = rng.standard_normal((4, 4))
    W1[2:, :2] = 0.0
    W2 = rng.standard_normal((2, 4))
    W2[:, :2] = 0.0  # layer 2 reads units 2 and 3 only
    net = Network([W0, W1, W2], activation="identity")
    with mpmath.workdps(300):
        J = mpmath.matrix(W2.tolist()) * mpmath.matrix(W1.tolist()) * mpmath.matrix(W0.tolist())
        want = _mp_log_values(J)
    x = rng.standard_normal(4)
    np.testing.assert_allclose(net.log_singular_values(x, backend=backend), want, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_residual_next_layer_is_checked_after_the_layer_before_it(backend: str) -> None:
    # Review: forming the next residual layer ahead named it in the error for a non-finite
    # input, where the reference names the layer that first meets it.
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((3, 3)) for _ in range(3)]
    X = np.array([[np.nan, 1.0, 2.0], [1.0, 2.0, 3.0]])
    for residual in ([False, True, False], [False, False, True]):
        net = Network(W, activation="tanh", residual=residual)
        with pytest.raises(FloatingPointError, match="layer 0 "):
            net.log_singular_values(X, backend=backend, check_finite=False)


def test_the_rank_decision_is_skipped_only_for_injective_weights() -> None:
    # Where W has full column rank well beyond the rank tolerance, the frame skips the
    # per-sample decision (one SVD each): it cannot lose a direction. Nearly dependent
    # columns, wide layers and rank-deficient W keep the decision.
    from jacgeom._frame import _injective

    rng = np.random.default_rng(3)
    assert _injective(rng.standard_normal((8, 8)))
    assert _injective(rng.standard_normal((12, 8)) * np.logspace(-200, 200, 12)[:, None])
    assert not _injective(rng.standard_normal((6, 8)))
    W = rng.standard_normal((8, 8))
    W[:, 5] = W[:, 4] + 1e-9 * rng.standard_normal(8)
    assert not _injective(W)
    W[:, 5] = W[:, 4]
    assert not _injective(W)
    # Through a network: the layer with two equal columns loses a direction, on every
    # backend as in the reference (the mutation "every W injective" fails here).
    net = Network([np.eye(8), W], activation="tanh")
    X = rng.standard_normal((5, 8))
    want = reference_network.layer_exact_ranks(net, X)
    assert want[:, 1].tolist() == [7] * 5
    for backend in BACKENDS:
        np.testing.assert_array_equal(net.layer_exact_ranks(X, backend=backend), want)


def _structured_integer_network(
    rng: np.random.Generator, act: str | jacgeom.Activation
) -> tuple[Network, np.ndarray]:
    """Integer weights with the structure that makes exact rank drops: a zero column, two
    rows equal or opposite; biases and inputs dyadic, so the float pre-activations are the
    exact ones."""
    L = int(rng.integers(1, 4))
    widths = [int(w) for w in rng.integers(2, 7, size=L + 1)]
    Ws = []
    for i in range(L):
        W = rng.integers(-2, 3, size=(widths[i + 1], widths[i])).astype(float)
        if rng.random() < 0.4:
            W[:, rng.integers(W.shape[1])] = 0.0
        if W.shape[0] > 1 and rng.random() < 0.5:
            a, b = rng.choice(W.shape[0], 2, replace=False)
            W[b] = -W[a] if rng.random() < 0.5 else W[a]
        Ws.append(W)
    bs = [rng.integers(-2, 3, size=w) / 2.0 for w in widths[1:]]
    X = rng.integers(-12, 13, size=(3, widths[0])) / 4.0
    return Network(Ws, bs, activation=act), X


@pytest.mark.parametrize("backend", BACKENDS)
def test_structural_rank_drops_behind_graded_layers_in_rational_arithmetic(backend: str) -> None:
    # leaky_relu's slope alpha grades a layer's rows; where a later layer's structure
    # removes a direction of the frame's range, the frame's basis is rounded by eps / alpha
    # in the direction that matters, above numpy's rank tolerance: such drops were counted
    # as rank (network 8 below, two layers at one input, on every backend and in the numpy
    # reference, before the rank floor of a graded frame). alpha is dyadic, so that no
    # network is singular only for a decimal alpha that float64 rounds.
    rng = np.random.default_rng(0)
    deficient = 0
    for trial in range(60):
        if rng.random() < 0.7:
            act: str | jacgeom.Activation = jacgeom.activation(
                "leaky_relu", alpha=float(rng.choice([2.0**-7, 2.0**-3, 2.0**-10]))
            )
        else:
            act = str(rng.choice(["relu", "identity"]))
        net, X = _structured_integer_network(rng, act)
        want = np.array([_exact_partial_ranks(net, x) for x in X])
        deficient += int(np.sum(want[:, -1] < min(net.widths)))
        got = net.layer_exact_ranks(X, backend=backend)
        np.testing.assert_array_equal(got, want, f"network {trial}")
        if backend == "numpy":
            ref = reference_network.layer_exact_ranks(net, X)
            np.testing.assert_array_equal(ref, want, f"reference, network {trial}")
    assert deficient > 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_networks_keep_their_rank_without_warnings(backend: str) -> None:
    # Saturated units (phi' down to e^-5000) beside live ones: no warning on the way (an
    # earlier bound on the frame's rounding overflowed at x = 11.2 in the gelu network),
    # and the exact rank stays the narrowest width so far (Gaussian weights, phi' zero
    # nowhere they are evaluated): the rank floor of a graded frame drops nothing here.
    cases = [
        ([6, 14, 19, 8, 17, 19, 18, 14, 1, 11, 13, 12, 9, 2, 5], "silu", 550465582),
        ([1, 12, 8, 15, 19, 8, 9], "gelu", 603477878),
    ]
    for widths, act, seed in cases:
        net = Network.random(widths, activation=act, seed=seed)
        X = np.random.default_rng(0).standard_normal((8, widths[0])) * 100.0
        X[0, 0] = 11.2
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = net.layer_exact_ranks(X, backend=backend)
            if backend == "numpy":
                got_ref = reference_network.layer_exact_ranks(net, X[:2])
                np.testing.assert_array_equal(got_ref, got[:2])
        want = np.minimum.accumulate(widths)[1:]
        np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape), act)


def _leaky(alpha: float) -> jacgeom.Activation:
    return jacgeom.activation("leaky_relu", alpha=alpha)


def _leaky_drop_network(alpha: float, pass_through: bool) -> tuple[Network, np.ndarray]:
    """Found by review (helper-33): leaky_relu, integer weights; layer 1's units 0 and 1
    (phi' = 1) have rows r and -r beside three units on the slope alpha, so rank J = 3 for
    every alpha (sympy, symbolic alpha). With ``pass_through``, an identity layer (every
    unit on slope 1, bias 64) sits between the two and the last bias is shifted so that
    its pre-activations are unchanged (review of the first fix, helper-38)."""
    W1 = np.array(
        [[-2, -2, 0, 2, -2, -1], [2, 2, 0, -2, 2, 1], [-1, -2, 0, 2, -2, -1],
         [-2, -2, 0, -2, -1, 0], [0, -2, 0, 0, 1, 2]], float,
    )  # fmt: skip
    W2 = np.array(
        [[-1, -1, 0, -2, 0], [-1, -1, 0, -2, 0], [0, 0, 0, -1, 2], [-2, -1, 0, 2, 0],
         [-2, 0, 0, 2, 0], [0, -2, 0, -2, -2]], float,
    )  # fmt: skip
    b1, b2, shift = np.array([2, 1, 0, 0, 0.0]), np.array([2, 0, 0, 2, -1, -1.0]), np.full(5, 64.0)
    x = np.array([-3, 3, 1, 2, 2, 1.0])
    if not pass_through:
        return Network([W1, W2], [b1, b2], _leaky(alpha)), x
    return Network([W1, np.eye(5), W2], [b1, shift, b2 - W2 @ shift], _leaky(alpha)), x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [0.01, 2.0**-7, 2.0**-10, 2.0**-14])
@pytest.mark.parametrize("pass_through", [False, True])
def test_structural_drop_behind_a_graded_layer(
    backend: str, alpha: float, pass_through: bool
) -> None:
    # The formed float64 J has sigma_4 = 9e-18, but every backend said exact rank 4: the
    # frame's basis after layer 1 is rounded by eps / alpha in its normal direction
    # (e_0 + e_1, on the large rows), so layer 2's map on it had a smallest value of
    # 2.2e-14, above numpy's tolerance (3.3e-15); a bound on one step's own rounding then
    # missed the pass-through variant. The rank floor of a graded frame catches both.
    net, x = _leaky_drop_network(alpha, pass_through)
    want = [4, 4, 3] if pass_through else [4, 3]
    assert _exact_partial_ranks(net, x) == want
    assert net.layer_exact_ranks(x[None], backend=backend)[0].tolist() == want
    if backend == "numpy":
        assert reference_network.layer_exact_ranks(net, x[None])[0].tolist() == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_structural_drop_behind_a_widening_graded_layer(backend: str) -> None:
    # Review (helper-38): leaky_relu alpha = 1e-4, a widening identity layer on graded
    # units: the basis is rounded by 7e-13 (60-digit distance to the exact range), the
    # last map's false singular value 9.6e-13; exact rank [3, 3, 3, 3, 2].
    Ws = [
        [[1, 0, -2], [-1, 0, 1], [0, 2, 1], [-1, -1, -2]],
        [[-2, 0, 0, -2], [-2, -2, 0, 2], [2, 2, 0, -2], [2, 1, -1, -2]],
        [[-2, 0, -2, 1], [1, 0, 0, -1], [2, 0, 0, 1], [2, 0, 0, 1], [2, 0, 2, -1]],
        np.eye(5).tolist(),
        [[2, 0, 1, -1, -1], [2, 0, 2, 0, -1], [2, 0, 2, 0, -1], [2, 0, -2, -2, 0],
         [0, 0, -2, 1, -2], [-2, 0, 2, 0, -2]],
    ]  # fmt: skip
    bs = [
        [-0.5, 0.0, -1.0, -1.5],
        [0.5, -0.5, -1.0, -2.0],
        [2.0, -2.0, -1.5, -1.0, -0.5],
        [-1.0, -1.5, 1.0, -1.0, 1.0],
        [1.0, 0.0, -2.0, -0.5, 1.5, 0.5],
    ]
    net = Network([np.array(W, float) for W in Ws], [np.array(b) for b in bs], _leaky(1e-4))
    x = np.array([2.0, 2.25, -0.25])
    want = [3, 3, 3, 3, 2]
    assert _exact_partial_ranks(net, x) == want
    assert net.layer_exact_ranks(x[None], backend=backend)[0].tolist() == want
    if backend == "numpy":
        assert reference_network.layer_exact_ranks(net, x[None])[0].tolist() == want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["identity", "relu", "tanh"])
def test_ungraded_frames_keep_numpys_tolerance_at_every_layer(backend: str, act: str) -> None:
    # Review (helper-39) of a constant 1e-11 floor from the second layer on: a well-resolved
    # J lost a singular value (and its numerical rank and log|det|) only because its weights
    # sat in the second layer. Where no rows were graded (phi' = 1 on every unit, equal row
    # norms) the basis is as exact as the identity, and numpy's tolerance stays.
    W2 = np.array([[1.0, 0.0], [1.0, 1e-12]])
    net = Network([np.eye(2), W2], activation=act)
    x = np.array([1.0, 1.0]) if act == "relu" else np.zeros(2)
    J = net.jacobian(x, backend="numpy")
    want = np.log(np.linalg.svd(J, compute_uv=False))
    assert net.exact_rank(x, backend=backend) == 2
    assert net.rank(x, backend=backend) == np.linalg.matrix_rank(J) == 2
    np.testing.assert_allclose(net.log_singular_values(x, backend=backend), want, rtol=1e-9)
    np.testing.assert_allclose(
        net.log_abs_det(x, backend=backend), np.linalg.slogdet(J)[1], rtol=1e-9
    )


def _mp_network_singular_values(net: Network, x: np.ndarray, dps: int) -> list[mpmath.mpf]:
    """Singular values, descending, of D_L W_L ... D_1 W_1 in ``dps`` digits at the
    network's own (float) pre-activations, for tanh, gelu and identity layers."""
    mpmath.mp.dps = dps
    derivative = {
        "tanh": lambda t: mpmath.sech(t) ** 2,
        "gelu": lambda t: mpmath.ncdf(t) + t * mpmath.npdf(t),
        "identity": lambda t: mpmath.mpf(1),
    }
    J = mpmath.eye(len(x))
    for W, z, act in zip(net.weights, net.preactivations(x), net.activations, strict=True):
        Wm = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in W])
        J = mpmath.diag([derivative[act.name](mpmath.mpf(float(v))) for v in z]) * Wm * J
    return sorted(mpmath.svd_r(J, compute_uv=False), reverse=True)


# Two exactly dependent weight rows (one unit twice its neighbour, or Net2Net's duplicated
# unit with its outgoing weights halved) beside a unit whose phi' is e^-93 (e^-68) of
# theirs: the rounding the pair leaves must not take the small unit's place.
_DEPENDENT_CASES = [
    (
        [[[1.0, 0.3], [2.0, 0.6], [0.2, 1.0]], [[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]],
        ["tanh", "identity"],
        [-15.0, 50.0],
    ),
    (
        [[[1.0, 0.3], [1.0, 0.3], [0.2, 1.0]], [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]],
        ["gelu", "identity"],
        [1.0, -12.0],
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(_DEPENDENT_CASES)))
def test_dependent_rows_beside_a_saturated_unit(backend: str, case: int) -> None:
    weights, acts, point = _DEPENDENT_CASES[case]
    net = Network([np.array(W) for W in weights], activation=acts)
    x = np.array(point)
    want = _mp_network_singular_values(net, x, 300)
    want_logs = np.array([float(mpmath.log(v)) for v in want])
    assert want_logs[-1] < -60  # far below what a formed product resolves next to sigma_1
    assert net.exact_rank(x, backend=backend) == 2
    np.testing.assert_array_equal(net.layer_exact_ranks(x, backend=backend), [2, 2])
    np.testing.assert_allclose(net.log_singular_values(x, backend=backend), want_logs, rtol=1e-12)
    np.testing.assert_allclose(
        net.log_abs_det(x, backend=backend), float(mpmath.log(want[0] * want[1])), rtol=1e-12
    )
    # the formed float64 determinant is accurate here (a 2 x 2 product): a second witness
    det = np.linalg.det(net.jacobian(x))
    assert abs(net.log_abs_det(x, backend=backend) - math.log(abs(det))) < 1e-9


@functools.cache
def _dependent_fuzz_cases() -> list[tuple[Network, np.ndarray, list[float]]]:
    """Small tanh and gelu networks with a weight row copied (times 1, 2, -1 or 1/2) in
    most layers and inputs large enough to saturate units, with their log singular values
    in 700 digits; cases whose values leave that resolution are left out."""
    rng = np.random.default_rng(20261204)
    cases = []
    for _ in range(80):
        depth = int(rng.integers(1, 4))
        widths = [int(rng.integers(2, 4))] + [int(v) for v in rng.integers(2, 5, size=depth)]
        weights = []
        for l in range(depth):
            W = rng.standard_normal((widths[l + 1], widths[l]))
            if rng.random() < 0.8:
                i, j = rng.choice(widths[l + 1], 2, replace=False)
                W[j] = W[i] * float(rng.choice([1.0, 2.0, -1.0, 0.5]))
            weights.append(W)
        acts = [str(rng.choice(["tanh", "gelu"])) for _ in range(depth)]
        net = Network(weights, activation=acts)
        x = rng.standard_normal(widths[0]) * float(rng.choice([5.0, 20.0]))
        s = _mp_network_singular_values(net, x, 700)
        if s[0] == 0 or any(0 < v < s[0] * mpmath.mpf(10) ** -600 for v in s):
            continue
        logs = [float(mpmath.log(v)) if v > s[0] * mpmath.mpf(10) ** -650 else -math.inf for v in s]
        cases.append((net, x, logs))
    return cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_dependent_rows_fuzz_against_700_digits(backend: str) -> None:
    cases = _dependent_fuzz_cases()
    assert len(cases) >= 40
    for net, x, want in cases:
        got = net.log_singular_values(x, backend=backend)
        exact = int(np.count_nonzero(np.isfinite(want)))
        assert net.exact_rank(x, backend=backend) == exact, (net.widths, x, got, want)
        np.testing.assert_allclose(got[:exact], want[:exact], rtol=1e-9, atol=1e-9)


def test_fold_dependent_rows_refactors_the_step() -> None:
    # M = diag(sign e^t) Y with rows 1 = -2 row 0 and 3 = row 0 + row 2 (both exactly
    # dependent on larger rows) before the small independent row 4: M = T Mhat exactly,
    # T's kept columns orthonormal, the dependent rows of Mhat zero. Two samples: the
    # second without a dependent row before a smaller independent one (nothing to do).
    rng = np.random.default_rng(5)
    Y = rng.standard_normal((5, 3))
    t = np.array([0.0, -0.5, -1.0, -2.0, -40.0])
    Y[1] = -2.0 * Y[0] * math.exp(t[0] - t[1])
    Y[3] = (Y[0] * math.exp(t[0]) + Y[2] * math.exp(t[2])) * math.exp(-t[3])
    sign = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    norms = np.linalg.norm(Y, axis=1)
    late = [0, 2, 4, 1, 3]  # the dependent rows last
    t2 = np.array([0.0, -1.0, -40.0, -50.0, -60.0])
    tol = float(ref_graded.rank_tolerance(5, 3))
    folded, Yhat, Tk, kept, through = ref_graded.fold_dependent_rows(
        np.stack([Y, Y[late]]),
        np.stack([norms, norms[late]]),
        np.stack([t, t2]),
        np.stack([sign, sign[late]]),
        [3, 3],
        [tol, tol],
    )
    np.testing.assert_array_equal(folded, [True, False])
    np.testing.assert_array_equal(Yhat[1], Y[late])
    np.testing.assert_array_equal(kept[0], [0, 2, 4])
    M = (sign * np.exp(t))[:, None] * Y
    Mhat = (sign * np.exp(t))[:, None] * Yhat[0]
    np.testing.assert_allclose(Tk[0] @ Mhat[kept[0]], M, rtol=0, atol=1e-14 * np.abs(M).max())
    np.testing.assert_array_equal(Yhat[0][[1, 3]], 0.0)
    np.testing.assert_allclose(Tk[0].T @ Tk[0], np.eye(3), atol=1e-15)
    # the smallest row is untouched: only larger rows gain multiples of smaller ones
    np.testing.assert_array_equal(Yhat[0][4], Y[4])
    # a difference far above rounding (1e-12) is a direction, not a dependence
    Y3 = Y.copy()
    Y3[1] += 1e-12 * np.linalg.norm(Y3[1]) * rng.standard_normal(3)
    folded3 = ref_graded.fold_dependent_rows(
        Y3[None], np.linalg.norm(Y3, axis=1)[None], t[None], sign[None], [3], [tol]
    )[0]
    np.testing.assert_array_equal(folded3, [False])


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_apart_by_more_than_rounding_are_not_folded(backend: str) -> None:
    # A row 3 w + 3e-12 v beside w (dependent only to 1e-12, below the graded rank floor
    # of 1e-11 but far above rounding) after a graded layer and next to a saturated unit:
    # its residual is a direction of the product, e^-42.07 in 200 digits, not the
    # saturated unit's e^-103 that folding it away would leave.
    x = np.array([0.3, -0.2])
    w = np.array([1.0, 0.5])
    W2 = np.array([w, 3 * w + 3e-12 * np.array([0.5, -1.0]), [0.2, 1.0]])
    b1 = np.array([0.0, 8.0]) - x
    h = np.tanh(x + b1)
    b2 = np.array([0.0, 0.0, 45.0]) - W2 @ h
    net = Network([np.eye(2), W2], biases=[b1, b2], activation="tanh")
    want = _mp_network_singular_values(net, x, 200)
    want_logs = np.array([float(mpmath.log(v)) for v in want])
    assert -43 < want_logs[1] < -41
    got = net.log_singular_values(x, backend=backend)
    # to the accuracy such a near-dependence leaves (eps / 1e-12 relative), not 60 nats off
    np.testing.assert_allclose(got, want_logs, rtol=0, atol=1e-3)


def test_fold_with_nearly_dependent_kept_rows() -> None:
    # Kept rows 1e-9 apart make the folded row's coefficients 1e9: I + C^T C is then
    # singular in float64 (its Cholesky failed, and a Monte Carlo chunk with it), the QR of
    # [I; C] is not. M = T Mhat still holds to rounding.
    Y = np.array([[1.0, 0.0, 0.0], [1.0, 1e-9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    t = np.array([0.0, -0.1, -0.2, -50.0])
    sign = np.ones(4)
    norms = np.linalg.norm(Y, axis=1)
    tol = float(ref_graded.rank_tolerance(4, 3))
    folded, Yhat, Tk, kept, through = ref_graded.fold_dependent_rows(
        Y[None], norms[None], t[None], sign[None], [3], [tol]
    )
    assert folded[0]
    np.testing.assert_array_equal(kept[0], [0, 1, 3])
    M = np.exp(t)[:, None] * Y
    Mhat = np.exp(t)[:, None] * Yhat[0]
    np.testing.assert_allclose(Tk[0] @ Mhat[kept[0]], M, rtol=0, atol=1e-6)
    np.testing.assert_allclose(Tk[0].T @ Tk[0], np.eye(3), atol=1e-12)
    assert np.all(Yhat[0][2] == 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_late_dependent_rows_pass_through_the_fold(backend: str) -> None:
    # Dyadic leaky_relu weights, the exact Jacobian in rational arithmetic: the second
    # layer keeps two nearly parallel rows (7e-13 apart), and every later row is dependent
    # only because the frame is 2-D. Folding those late rows cancelled terms of 1e4 and
    # moved sigma_2 by 3e-5 nats; only the row before a kept one (-row 3) is folded now.
    W1 = [[0.0, -1.0], [2.0**-20, 2.0**-20], [0.0, 0.0], [-1.0, -1.0]]
    W2 = [
        [0.0, -2.0, -2.0, 1.0],
        [0.0, -(2.0**-14), -(2.0**-14), 2.0**-15],
        [2.0, 2.0, -2.0, -1.0],
        [-2.0, 0.0, 1.0, 1.0],
        [0.0, 2.0, -2.0, -1.0],
        [2.0, -0.0, -1.0, -1.0],
    ]
    W3 = [
        [2.0, -1.0, -2.0, -1.0, 0.0, -2.0],
        [-2.0, -1.0, -1.0, -1.0, 1.0, -2.0],
        [-1.0, 2.0, 2.0, 2.0, 1.0, -1.0],
        [-2.0, 4.0, 4.0, 4.0, 2.0, -2.0],
        [2.0, 0.0, 1.0, 0.0, -2.0, 0.0],
    ]
    b = [[-1.5, 0.0, 1.5, -2.0], [-0.5, -1.5, 1.0, 2.0, -1.5, 0.5], [-0.5, 2.0, 2.0, 1.0, -1.5]]
    acts = [jacgeom.activation("leaky_relu", alpha=2.0**e) for e in (-20, -14, -20)]
    net = Network([np.array(W) for W in (W1, W2, W3)], [np.array(v) for v in b], activation=acts)
    x = np.array([0.0, -3.0])
    J = [[Fraction(int(i == j)) for j in range(2)] for i in range(2)]
    for W, z, act in zip(net.weights, net.preactivations(x), net.activations, strict=True):
        d = [Fraction(float(v)) for v in act.derivative(np.asarray(z))]
        J = [
            [
                d[i] * sum(Fraction(float(W[i][k])) * J[k][j] for k in range(len(J)))
                for j in range(2)
            ]
            for i in range(len(W))
        ]
    mpmath.mp.dps = 120
    Jm = mpmath.matrix([[mpmath.mpf(v.numerator) / v.denominator for v in row] for row in J])
    want = sorted((float(mpmath.log(v)) for v in mpmath.svd_r(Jm, compute_uv=False)), reverse=True)
    np.testing.assert_allclose(net.log_singular_values(x, backend=backend), want, rtol=1e-12)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
@pytest.mark.parametrize(
    ("act", "sigma_w"), [("tanh", 1000.0), ("gelu", 100.0), ("sigmoid", 1000.0)]
)
def test_units_whose_derivative_underflows_are_live(backend: str, act: str, sigma_w: float) -> None:
    # phi' below float64's range rounds to 0.0, but the unit's row of the Jacobian is not
    # zero: active_counts agrees with exact_rank (full), not with the rounded phi'.
    if backend not in jacgeom.backends():
        pytest.skip(f"{backend} backend not built")
    net = Network.random([4, 4, 4], activation=act, init="gaussian", sigma_w=sigma_w, seed=0)
    X = np.random.default_rng(0).standard_normal((200, 4))
    rounded = np.stack([np.count_nonzero(d, axis=1) for _, d, _ in net._layers(X, "numpy")], 1)
    assert (rounded < 4).any()  # the case at stake: some phi' rounded to zero
    assert (net.exact_rank(X, backend=backend) == 4).all()
    np.testing.assert_array_equal(net.active_counts(X, backend=backend), np.full((200, 2), 4))
