"""Arrays from PyTorch (and JAX when installed) are accepted wherever numpy arrays are."""

from __future__ import annotations

import numpy as np
import pytest

import jacgeom


def test_torch_tensors_accepted_without_copy() -> None:
    torch = pytest.importorskip("torch")
    W = torch.randn(6, 4, dtype=torch.float64)
    X = torch.randn(5, 4, dtype=torch.float64)
    got = jacgeom.layer_jacobian(W, X, activation="tanh")
    want = jacgeom.layer_jacobian(W.numpy(), X.numpy(), activation="tanh")
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, want)
    from jacgeom._validation import as_float_array

    view = as_float_array(W, "W")
    assert np.shares_memory(view, W.numpy())  # DLPack view, no copy
    assert jacgeom.masked_rank(W, torch.ones(2, 6, dtype=torch.bool)).tolist() == [4, 4]
    net = jacgeom.Network([W.T.contiguous()], activation="relu")
    np.testing.assert_allclose(
        net.jacobian(torch.randn(3, 6, dtype=torch.float64)).shape, (3, 4, 6)
    )
    f32 = jacgeom.pullback_metric(W.float(), X.float())
    assert f32.dtype == np.float32


def test_jax_arrays_accepted() -> None:
    jnp = pytest.importorskip("jax.numpy")
    W = jnp.ones((3, 2))
    X = jnp.ones((4, 2))
    np.testing.assert_allclose(jacgeom.layer_jacobian(W, X), np.ones((4, 3, 2)))
