"""Network.from_jax against jax.jacfwd of the same MLP written in JAX (issue 22)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jacgeom

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

JAX_ACTIVATIONS = {
    "relu": lambda z: jax.nn.relu(z),
    "leaky_relu": lambda z: jax.nn.leaky_relu(z, 0.01),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
}


@pytest.fixture(scope="module", autouse=True)
def _x64() -> Any:
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _flax_params(widths: list[int], dtype: Any, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "params": {
            f"Dense_{i}": {
                "kernel": jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), dtype=dtype),
                "bias": jnp.asarray(0.1 * rng.standard_normal(b), dtype=dtype),
            }
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        }
    }


def _apply(params: dict[str, Any], x: Any, act: Any) -> Any:
    layers = params["params"]
    for i in range(len(layers)):
        p = layers[f"Dense_{i}"]
        x = x @ p["kernel"] + p["bias"]
        if i < len(layers) - 1:
            x = act(x)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(JAX_ACTIVATIONS))
def test_flax_style_params_match_jacfwd(name: str, dtype: Any) -> None:
    widths = [4, 7, 5, 3]
    params = _flax_params(widths, dtype, seed=0)
    X = jnp.asarray(np.random.default_rng(1).standard_normal((6, 4)) * 1.5, dtype=dtype)
    act = JAX_ACTIVATIONS[name]
    want = jax.jit(jax.vmap(jax.jacfwd(lambda x: _apply(params, x, act))))(X)
    net = jacgeom.Network.from_jax(params, activation=name)
    assert net.dtype == dtype
    got = net.jacobian(X)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, np.asarray(want), **tol)
    np.testing.assert_allclose(
        net.forward(X), np.asarray(jax.jit(lambda x: _apply(params, x, act))(X)), **tol
    )


def test_pair_and_mapping_conventions_agree() -> None:
    params = _flax_params([3, 5, 2], np.float64, seed=2)["params"]
    pairs = [(p["kernel"].T, p["bias"]) for p in (params["Dense_0"], params["Dense_1"])]
    dicts = [{"W": W, "b": b} for W, b in pairs]
    X = np.random.default_rng(3).standard_normal((4, 3))
    nets = [
        jacgeom.Network.from_jax(p, activation=["tanh", "identity"]) for p in (params, pairs, dicts)
    ]
    for net in nets[1:]:
        np.testing.assert_array_equal(net.jacobian(X), nets[0].jacobian(X))


def test_bad_params_named() -> None:
    with pytest.raises(ValueError, match=r"needs 'kernel'"):
        jacgeom.Network.from_jax([{"w": np.ones((2, 2))}])
    with pytest.raises(ValueError, match=r"names ending in their number"):
        jacgeom.Network.from_jax({"first": {"kernel": np.ones((2, 2))}, "last": {}})
    with pytest.raises(ValueError, match=r"activation has 1 entries for 2 layers"):
        jacgeom.Network.from_jax([(np.ones((2, 2)), None)] * 2, activation=["relu"])
