"""Kernel layers: Jacobian against finite differences, metric, spectra, ranks, RKHS norms."""

from __future__ import annotations

import numpy as np
import pytest

import jacgeom
from jacgeom import KernelLayer


def custom_rbf() -> tuple:
    def K(X: np.ndarray, C: np.ndarray) -> np.ndarray:
        return np.exp(-np.sum((X[:, None] - C[None]) ** 2, -1))

    def grad(X: np.ndarray, C: np.ndarray) -> np.ndarray:
        return -2 * K(X, C)[:, :, None] * (X[:, None] - C[None])

    return K, grad


@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "polynomial", "custom"])
def test_jacobian_matches_finite_differences(kernel: str) -> None:
    rng = np.random.default_rng(0)
    C, A = rng.standard_normal((7, 3)), rng.standard_normal((4, 7))
    layer = KernelLayer(
        C, A, kernel=custom_rbf() if kernel == "custom" else kernel, gamma=0.7, degree=2
    )
    X = rng.standard_normal((5, 3)) + 0.05  # away from the laplacian's kinks
    J = layer.jacobian(X)
    assert J.shape == (5, 4, 3)
    h = 1e-6
    for x, Jx in zip(X, J, strict=True):
        fd = np.stack(
            [(layer.forward(x + h * e) - layer.forward(x - h * e)) / (2 * h) for e in np.eye(3)], 1
        )
        np.testing.assert_allclose(Jx, fd, rtol=1e-5, atol=1e-7)
    G = layer.pullback_metric(X)
    np.testing.assert_allclose(G, np.swapaxes(J, 1, 2) @ J)
    for backend in jacgeom.backends():
        np.testing.assert_allclose(
            layer.singular_values(X, backend=backend),
            np.linalg.svd(J, compute_uv=False),
            atol=1e-12,
        )
    np.testing.assert_array_equal(layer.rank(X), [np.linalg.matrix_rank(j) for j in J])
    assert layer.rank(X[0]) == np.linalg.matrix_rank(J[0])


def test_rkhs_norm_and_rank_loss() -> None:
    C = np.array([[0.0, 0.0], [1.0, 0.0]])
    A = np.array([[1.0, 0.0], [1.0, 1.0]])
    layer = KernelLayer(C, A, gamma=1.0)
    K = np.exp(-np.array([[0.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(layer.rkhs_norms(), np.sqrt([A[0] @ K @ A[0], A[1] @ K @ A[1]]))
    # at a center, the gradient of its own rbf bump vanishes: a row of grad k is zero
    assert layer.rank([0.0, 0.0]) == 1
    assert layer.rank([0.3, 0.7]) == 2


@pytest.mark.parametrize(
    ("args", "kw", "error", "match"),
    [
        (
            (np.ones((3, 2)), np.ones((4, 2))),
            {},
            ValueError,
            r"coefficients has shape \(4, 2\) but there are 3 centers",
        ),
        ((np.ones(3), np.ones((4, 3))), {}, ValueError, r"centers has 1 dimension"),
        (
            (np.ones((3, 2)), np.ones((4, 3))),
            {"kernel": "sigmoid"},
            ValueError,
            "unknown kernel 'sigmoid'",
        ),
        ((np.ones((3, 2)), np.ones((4, 3))), {"kernel": (1, 2)}, TypeError, "pair of callables"),
        ((np.ones((3, 2)), np.ones((4, 3))), {"gamma": 0.0}, ValueError, "gamma must be"),
        ((np.ones((3, 2)), np.ones((4, 3))), {"degree": 0}, ValueError, "degree must be"),
        ((np.full((3, 2), np.nan), np.ones((4, 3))), {}, ValueError, "centers contains NaN"),
    ],
)
def test_bad_inputs(args: tuple, kw: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        KernelLayer(*args, **kw)
    with pytest.raises(ValueError, match=r"X has shape \(2, 5\) but the centers have 2"):
        KernelLayer(np.ones((3, 2)), np.ones((4, 3))).jacobian(np.ones((2, 5)))


def _mixed_network(dtype: type, residual: bool = False, kernel: str = "rbf") -> jacgeom.Network:
    rng = np.random.default_rng(3)
    w = 5 if residual else None
    K1 = KernelLayer(
        rng.standard_normal((7, w or 6)).astype(dtype),
        (rng.standard_normal((w or 4, 7)) / 3).astype(dtype),
        kernel=kernel,
        gamma=0.3,
    )
    if residual:
        Ws = [
            (rng.standard_normal((5, 5)) * 0.5).astype(dtype),
            K1,
            (rng.standard_normal((5, 5)) * 0.5).astype(dtype),
        ]
        return jacgeom.Network(Ws, activation=["tanh", None, "relu"], residual=True)
    Ws = [rng.standard_normal((6, 5)), K1, rng.standard_normal((3, 4))]
    biases = [rng.standard_normal(6), None, rng.standard_normal(3)]
    return jacgeom.Network(
        [W.astype(dtype) for W in Ws[:1]] + Ws[1:2] + [Ws[2].astype(dtype)],
        biases=[b if b is None else b.astype(dtype) for b in biases],
        activation=["relu", None, "gelu"],
    )


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("kernel", ["rbf", "polynomial"])
def test_kernel_layers_mix_with_activation_layers(
    backend: str, dtype: type, residual: bool, kernel: str
) -> None:
    net = _mixed_network(dtype, residual, kernel)
    assert net.dtype == dtype and net.kernel_layers == [False, True, False]
    X = np.random.default_rng(1).standard_normal((11, 5)).astype(dtype)[::-1]
    J = net.jacobian(X, backend="numpy")
    tol = {"rtol": 2e-4, "atol": 2e-4} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-11}
    np.testing.assert_allclose(net.jacobian(X, backend=backend), J, **tol)
    np.testing.assert_allclose(
        net.singular_values(X, backend=backend), np.linalg.svd(J, compute_uv=False), **tol
    )
    np.testing.assert_array_equal(
        net.active_counts(X, backend=backend)[:, 1], np.full(11, net.widths[2])
    )
    np.testing.assert_array_equal(
        net.preactivations(X)[1], net.weights[1].forward(_first_layer(net, X))
    )
    np.testing.assert_array_equal(
        net.layer_ranks(X, backend=backend)[:, -1], net.rank(X, backend="numpy")
    )
    np.testing.assert_array_equal(net.rank(X, backend=backend), net.rank(X, backend="numpy"))
    with np.errstate(divide="ignore"):
        want = np.log(np.linalg.svd(J.astype(np.float64), compute_uv=False))
    got = net.log_singular_values(X, backend=backend)
    keep = want > want[:, :1] + np.log(1e-4 if dtype == np.float32 else 1e-8)
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-3 if dtype == np.float32 else 1e-8)
    if residual:
        np.testing.assert_allclose(
            net.log_abs_det(X, backend=backend),
            np.linalg.slogdet(J.astype(np.float64))[1],
            rtol=1e-3 if dtype == np.float32 else 1e-8,
        )


def _first_layer(net: jacgeom.Network, X: np.ndarray) -> np.ndarray:
    one = jacgeom.Network(net.weights[:1], net.biases[:1], net.activations[:1], net.residual)
    return one.forward(X)


def test_mixed_network_jacobian_matches_finite_differences() -> None:
    net = _mixed_network(np.float64, kernel="rbf")
    x = np.random.default_rng(2).standard_normal(5)
    h = 1e-6
    fd = np.stack(
        [(net.forward(x + h * e) - net.forward(x - h * e)) / (2 * h) for e in np.eye(5)], 1
    )
    np.testing.assert_allclose(net.jacobian(x), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda K: jacgeom.Network([np.ones((3, 2)), K]),
            r"weights\[1\] has shape \(4, 5\) but weights\[0\] has 3 rows",
        ),
        (
            lambda K: jacgeom.Network([np.ones((5, 2)), K], norm="layer"),
            "which a kernel layer does not have",
        ),
        (
            lambda K: jacgeom.Network([np.ones((5, 2)), K], biases=[np.ones(5), np.ones(4)]),
            r"biases\[1\] must be None",
        ),
        (lambda K: jacgeom.Network([K], residual=True), r"square weights; weights\[0\]"),
    ],
)
def test_kernel_layer_network_bad_inputs(build: object, match: str) -> None:
    K = KernelLayer(np.ones((3, 5)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=match):
        build(K)  # type: ignore[operator]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rbf_near_centres_far_from_the_origin(dtype: type) -> None:
    # |x|^2 - 2 x.c + |c|^2 cancels where x is near a centre far from the origin (a Unix
    # timestamp with a 10-second width gave exp(-gamma d^2) = 0.077 for 0.88). Against the
    # distances summed from the differences in float64, and the Jacobian's closed form.
    rng = np.random.default_rng(0)
    for offset, width in [(1.7e9, 10.0), (1e6, 1.0)]:
        C = (offset + rng.standard_normal((5, 3)) * width).astype(dtype)
        X = (C[rng.integers(0, 5, 40)] + rng.standard_normal((40, 3)) * width).astype(dtype)
        gamma = 1 / (2 * width**2)
        layer = KernelLayer(C, rng.standard_normal((2, 5)).astype(dtype), gamma=gamma)
        diff = X.astype(np.float64)[:, None, :] - C.astype(np.float64)[None]
        k = np.exp(-gamma * np.sum(diff * diff, axis=-1))
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(layer.features(X), k, rtol=tol, atol=tol)
        J = np.einsum("oj,bj,bjn->bon", layer.coefficients.astype(np.float64), k, -2 * gamma * diff)
        np.testing.assert_allclose(
            layer.jacobian(X), J, rtol=100 * tol, atol=100 * tol * np.abs(J).max()
        )
    # the timestamp case itself, exactly as reported
    t0 = 1.7e9
    one = KernelLayer(np.array([[t0]]), np.array([[1.0]]), gamma=1 / 200)
    np.testing.assert_allclose(
        one.features(np.array([[t0 + 5.0], [t0 + 20.0]]))[:, 0], np.exp([-25 / 200, -400 / 200])
    )


def test_float32_layer_refuses_float64_inputs_beyond_its_range() -> None:
    # the cast would make 1e39 infinite and the Jacobian silently 0 (rbf's exp(-inf))
    C = np.eye(2, dtype=np.float32)
    layer = KernelLayer(C, np.ones((1, 2), dtype=np.float32), gamma=0.5)
    X = np.array([[1e39, 0.0]])
    with pytest.raises(
        ValueError,
        match=r"X holds finite values beyond the range of the layer's dtype float32 "
        r"\(largest magnitude 1e\+39",
    ):
        layer.jacobian(X)
    np.testing.assert_array_equal(X, [[1e39, 0.0]])
    # within range: numpy's own cast
    x = np.array([[0.1, 0.2]])
    np.testing.assert_array_equal(layer.jacobian(x), layer.jacobian(x.astype(np.float32)))
