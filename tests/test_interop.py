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


def test_torch_lazy_negation_and_bfloat16_are_read_as_their_values() -> None:
    # A tensor with torch's negative bit (the imaginary part of a conjugate view) holds -W
    # in memory as W: DLPack does not carry the bit, so a view read the wrong sign.
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
    W = Z.conj().imag
    X = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    assert W.is_neg()
    values = -Z.imag.numpy()  # what W holds, computed without the bit
    np.testing.assert_array_equal(jacgeom.preactivations(W, X), X.numpy() @ values.T)
    np.testing.assert_array_equal(jacgeom.active_rank(W, X), jacgeom.active_rank(values, X.numpy()))
    np.testing.assert_array_equal(jacgeom.Network([W]).weights[0], values)
    # bfloat16 (no numpy dtype) widens to float32, as to_numpy documents
    Wb = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16)
    got = jacgeom.preactivations(Wb, np.ones((1, 2), np.float32))
    assert got.dtype == np.float32 and got.tolist() == [[-0.5]]


def test_jax_arrays_accepted() -> None:
    jnp = pytest.importorskip("jax.numpy")
    W = jnp.ones((3, 2))
    X = jnp.ones((4, 2))
    np.testing.assert_allclose(jacgeom.layer_jacobian(W, X), np.ones((4, 3, 2)))


def test_requires_grad_tensors_detached_and_results_returned_as_tensors() -> None:
    torch = pytest.importorskip("torch")
    from jacgeom.interop import to_array_library, to_numpy

    mlp = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    X = torch.randn(5, 4, requires_grad=True)
    assert isinstance(to_numpy(X), np.ndarray)
    net = jacgeom.Network.from_torch(mlp)
    Js = net.layer_jacobians(X, as_input=True)
    assert all(isinstance(J, torch.Tensor) and J.dtype == torch.float32 for J in Js)
    assert [tuple(J.shape) for J in Js] == [(5, 6, 4), (5, 2, 6)]
    assert X.grad is None and not any(J.requires_grad for J in Js)
    rep = net.layer_report(X)
    assert rep.samples == 5
    # The documented way back for any result: jacgeom.interop.to_array_library.
    J = to_array_library(net.jacobian(to_numpy(X)), like=X)
    assert isinstance(J, torch.Tensor)
    torch.testing.assert_close(J, Js[1] @ Js[0])
    W = to_array_library(net.weights[0], like=X)  # read-only numpy arrays are copied
    assert isinstance(W, torch.Tensor) and W.shape == (6, 4)


def test_jax_arrays_in_and_out() -> None:
    jnp = pytest.importorskip("jax.numpy")
    net = jacgeom.Network.random([3, 4, 2], activation="tanh", seed=0, dtype=np.float32)
    X = jnp.ones((2, 3), dtype=jnp.float32)
    Js = net.layer_jacobians(X, as_input=True)
    assert all(type(J).__module__.startswith("jax") for J in Js)
    np.testing.assert_allclose(np.asarray(Js[0]), net.layer_jacobians(np.ones((2, 3)))[0])


def test_requires_grad_tensors_are_read_by_every_function() -> None:
    # A tensor in an autograd graph is read through its values (detached), as numpy arrays
    # are, by the functions that are not interop-aware too; its graph is left alone.
    torch = pytest.importorskip("torch")
    net = jacgeom.Network.random([3, 4, 2], activation="tanh", seed=0)
    X = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    want = net.jacobian(X.detach().numpy())
    np.testing.assert_array_equal(net.jacobian(X), want)
    W, b = net.weights[0], net.biases[0]
    np.testing.assert_array_equal(
        jacgeom.layer_jacobian(W, X, b, activation="tanh"),
        jacgeom.layer_jacobian(W, X.detach().numpy(), b, activation="tanh"),
    )
    assert X.grad is None and X.requires_grad
