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
