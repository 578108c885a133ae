"""Peers: torch.func and JAX computing the same network Jacobians (and their reductions).

Optional: neither is imported here at module level, only inside an implementation's
``prepare``; an implementation ``requires`` its peer and is skipped, with the reason
(registry.unavailable), where that peer is not installed (pip install ".[peers]"). The
bench suite and the report run without them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from registry import Implementation, Prepare

if TYPE_CHECKING:
    from network import NetworkInputs


# torch.func: vmap over samples of jacrev / jacfwd of the one-sample forward pass.


def _torch_forward(inp: NetworkInputs) -> Callable[[Any], Any]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    act = {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "gelu": torch.nn.functional.gelu,
    }[inp.activation]
    # Copies: the network's arrays are read-only, which torch.from_numpy warns about.
    Ws = [torch.from_numpy(np.array(W)) for W in inp.net.weights]
    bs = [torch.from_numpy(np.array(b)) for b in inp.net.biases]

    def f(x: Any) -> Any:
        for W, b in zip(Ws, bs, strict=True):
            x = act(W @ x + b)
        return x

    return f


def torch_jacobian(mode: str, reduce: str | None = None) -> Prepare:
    def prepare(inp: NetworkInputs) -> Callable[[], Any]:
        import torch

        transform = torch.func.jacrev if mode == "jacrev" else torch.func.jacfwd
        jac = torch.vmap(transform(_torch_forward(inp)))
        X = torch.from_numpy(np.array(inp.X))
        with warnings.catch_warnings():
            # torch 2.13's jacfwd scripts a helper on first use and warns that
            # torch.jit.script is deprecated; the suite turns warnings into errors.
            warnings.simplefilter("ignore", DeprecationWarning)
            jac(X[:1])
        if reduce == "rank":
            return lambda: torch.linalg.matrix_rank(jac(X))
        if reduce == "singular_values":
            return lambda: torch.linalg.svdvals(jac(X))
        return lambda: jac(X)

    return prepare


# JAX: jit(vmap(jacfwd / jacrev)), compiled for the timed shape in prepare (not timed).


def jax_jacobian(mode: str, reduce: str | None = None) -> Prepare:
    def prepare(inp: NetworkInputs) -> Callable[[], Any]:
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 stays float64
        import jax.numpy as jnp

        act = {
            "relu": jax.nn.relu,
            "tanh": jnp.tanh,
            "gelu": lambda z: jax.nn.gelu(z, approximate=False),
        }[inp.activation]
        Ws = [jnp.asarray(W) for W in inp.net.weights]
        bs = [jnp.asarray(b) for b in inp.net.biases]

        def f(x: Any) -> Any:
            for W, b in zip(Ws, bs, strict=True):
                x = act(W @ x + b)
            return x

        transform = jax.jacfwd if mode == "jacfwd" else jax.jacrev
        jac = jax.vmap(transform(f))
        if reduce == "rank":
            fn = jax.jit(lambda X: jnp.linalg.matrix_rank(jac(X)))
        elif reduce == "singular_values":
            fn = jax.jit(lambda X: jnp.linalg.svd(jac(X), compute_uv=False))
        else:
            fn = jax.jit(jac)
        X = jnp.asarray(inp.X)
        fn(X).block_until_ready()  # compile for this shape
        return lambda: fn(X).block_until_ready()

    return prepare


def network_peers(reduce: str | None, slow_jacfwd: bool) -> tuple[Implementation, ...]:
    """torch.func and JAX, forward and reverse mode; ``reduce``: None (the Jacobian),
    "rank" or "singular_values" of it. ``slow_jacfwd`` times torch's jacfwd on a slice."""
    return (
        Implementation(
            "torch.func jacrev",
            torch_jacobian("jacrev", reduce),
            requires="torch",
            note="torch.vmap(torch.func.jacrev(f))",
        ),
        Implementation(
            "torch.func jacfwd",
            torch_jacobian("jacfwd", reduce),
            requires="torch",
            slow=slow_jacfwd,
            note="torch.vmap(torch.func.jacfwd(f))",
        ),
        Implementation(
            "JAX jacfwd",
            jax_jacobian("jacfwd", reduce),
            requires="jax",
            note="jax.jit(jax.vmap(jax.jacfwd(f))), compiled before timing",
        ),
        Implementation(
            "JAX jacrev",
            jax_jacobian("jacrev", reduce),
            requires="jax",
            note="jax.jit(jax.vmap(jax.jacrev(f))), compiled before timing",
        ),
    )
