"""The activation registry: conventions, properties, stability, and every backend's phi'."""

from __future__ import annotations

import math

import numpy as np
import pytest

import jacgeom
from jacgeom.activations import CODES

NAMES = jacgeom.activation_names()


def test_registry_lists_every_builtin() -> None:
    assert NAMES == list(CODES)
    assert set(NAMES) == {
        "identity",
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "gelu",
        "gelu_tanh",
        "softplus",
        "elu",
        "silu",
    }


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'swish'.*relu, leaky_relu"):
        jacgeom.activation("swish")


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("relu", {"alpha": 0.1}, "has no parameter 'alpha'.*none"),
        ("leaky_relu", {"beta": 1.0}, "has no parameter 'beta'.*alpha"),
        ("softplus", {"beta": 0.0}, "beta of 'softplus' must be > 0"),
        ("softplus", {"beta": math.nan}, "must be finite"),
        ("elu", {"alpha": -1.0}, "alpha of 'elu' must be > 0"),
        ("leaky_relu", {"alpha": 0.0}, "alpha of 'leaky_relu' must be > 0"),
    ],
)
def test_bad_parameters(name: str, params: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        jacgeom.activation(name, **params)


def test_activation_type_error() -> None:
    with pytest.raises(TypeError, match="activation must be a name"):
        jacgeom.activation(3)  # type: ignore[arg-type]


def test_parameters_are_used() -> None:
    assert jacgeom.activation("leaky_relu").parameter == 0.01
    assert jacgeom.activation("leaky_relu", alpha=0.2).derivative([-1.0])[0] == 0.2
    assert jacgeom.activation("elu", alpha=2.0).derivative([0.0])[0] == 2.0
    np.testing.assert_allclose(
        jacgeom.activation("softplus", beta=3.0).derivative([0.5])[0], 1 / (1 + math.exp(-1.5))
    )


def test_derivative_conventions_at_zero() -> None:
    assert jacgeom.activation("relu").derivative([0.0])[0] == 0.0
    assert jacgeom.activation("leaky_relu").derivative([0.0])[0] == 0.01
    assert jacgeom.activation("identity").derivative([0.0])[0] == 1.0


GRID = np.linspace(-6, 6, 4001)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_differences(name: str) -> None:
    act = jacgeom.activation(name)
    z = GRID[np.abs(GRID) > 1e-3]  # away from the kinks of relu, leaky_relu and elu
    h = 1e-6
    fd = (act.phi(z + h) - act.phi(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_monotonicity_property(name: str) -> None:
    act = jacgeom.activation(name)
    values = act.phi(GRID)
    strictly_increasing = bool(np.all(np.diff(values) > 0))
    assert strictly_increasing == act.strictly_monotone
    d = act.derivative(GRID)
    assert bool(np.any(d <= 0)) == act.derivative_can_vanish


@pytest.mark.parametrize(("name", "root"), [("gelu", -0.75179), ("silu", -1.27846)])
def test_non_monotone_zero_crossing(name: str, root: float) -> None:
    dphi = jacgeom.activation(name).derivative
    lo, hi = -3.0, 0.0
    assert dphi(np.array([lo]))[0] < 0 < dphi(np.array([hi]))[0]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if dphi(np.array([mid]))[0] < 0:
            lo = mid
        else:
            hi = mid
    assert abs(lo - root) < 1e-5
    assert not jacgeom.activation(name).strictly_monotone


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_derivative_finite_over_whole_range(name: str, dtype: type, backend: str) -> None:
    big = 3e38 if dtype == np.float32 else 1e300
    finfo = np.finfo(dtype)
    z = np.array(
        [
            -big,
            -1e30,
            -1e4,
            -50.0,
            -1.0,
            -finfo.tiny,
            0.0,
            finfo.tiny,
            1.0,
            50.0,
            1e4,
            1e30,
            big,
            finfo.max,
            -finfo.max,
        ],
        dtype=dtype,
    )
    W = np.ones((1, 1), dtype=dtype)
    d = jacgeom.layer_derivatives(W, z[:, None], activation=name, backend=backend)[:, 0]
    assert d.dtype == dtype
    assert np.all(np.isfinite(d)), d
    expected = jacgeom.activation(name).derivative(z)
    np.testing.assert_allclose(
        d, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=np.finfo(dtype).tiny
    )


@pytest.mark.parametrize("name", NAMES)
def test_backends_agree_on_dense_grid(name: str, compiled_backend: str) -> None:
    z = np.linspace(-40, 40, 20001)
    W = np.ones((1, 1))
    d = jacgeom.layer_derivatives(W, z[:, None], activation=name, backend=compiled_backend)[:, 0]
    np.testing.assert_allclose(d, jacgeom.activation(name).derivative(z), rtol=1e-13, atol=1e-15)


def test_tails_are_accurate() -> None:
    # sech^2 and the sigmoid derivative keep full relative accuracy far in the tails.
    assert jacgeom.activation("tanh").derivative([30.0])[0] == pytest.approx(
        4 * math.exp(-60), rel=1e-12
    )
    assert jacgeom.activation("sigmoid").derivative([-50.0])[0] == pytest.approx(
        math.exp(-50), rel=1e-12
    )


def test_custom_activation_every_backend(backend: str) -> None:
    cube = jacgeom.Activation.custom(lambda z: z**3 / 3, lambda z: z * z, name="cube")
    rng = np.random.default_rng(1)
    W, X = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    expected = (X @ W.T) ** 2
    got = jacgeom.layer_derivatives(W, X, activation=cube, backend=backend)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    J = jacgeom.layer_jacobian(W, X, activation=cube, backend=backend)
    np.testing.assert_allclose(J, expected[:, :, None] * W, rtol=1e-13)


def test_custom_activation_numba_cannot_compile(backend: str) -> None:
    # A derivative numba cannot compile still works: phi' is then evaluated by numpy.
    table = {"scale": 2.0}
    act = jacgeom.Activation.custom(lambda z: z, lambda z: table["scale"] + 0 * z)
    got = jacgeom.layer_derivatives(np.eye(2), [[1.0, 2.0]], activation=act, backend=backend)
    np.testing.assert_array_equal(got, [[2.0, 2.0]])


def test_custom_requires_callables() -> None:
    with pytest.raises(TypeError, match="phi and dphi must be callables"):
        jacgeom.Activation.custom(1.0, 2.0)  # type: ignore[arg-type]
