"""The compiled backends' end-to-end Jacobian products for one chunk of samples.

:class:`jacgeom.Network` holds construction, the forward pass and the public reductions;
the products its compiled backends form live here:

- plain layers on the "cpp" backend: the per-sample chain (``chain_active``), rows of W_l
  scaled by phi' as they are gathered, only the active sub-blocks W_l[S_l, S_(l-1)] where
  phi' vanishes;
- every other layer (layer normalisation, residual, kernel layers, the numba backend): one
  BLAS gemm per layer for all samples of the chunk, from the input side or from the output
  side, whichever costs fewer flops.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from . import _backends, _dispatch

if TYPE_CHECKING:
    from .network import Network

FloatArray = NDArray[np.floating[Any]]

# The per-sample C++ chain (rows scaled while gathered, so no extra pass over the partial
# products) beats the shared dense gemm when a quarter of the units are dead, or when the
# layers are wide enough (16 units) for its per-sample products to beat the dense gemm plus
# its pass of row scaling; the measurements behind both thresholds are in
# docs/benchmarks.md.
ACTIVE_PATH_MIN_ZERO_FRACTION = 0.25
ACTIVE_PATH_MIN_WIDTH = 16

# The forward pass before the chain kernels runs with BLAS pinned to one thread up to this
# many gemm flops (float64; a float32 flop counts half). A threaded OpenBLAS gemm leaves
# its workers spinning for about 0.1 s after it returns, taking the cores from the
# kernels' threads that follow: a bounded cost. Pinned, the gemms lose the other cores: a
# cost that grows with the call and with the core count. Up to here it stays below about
# 0.05 s on one core (docs/benchmarks.md, "Single calls and small sizes").
FORWARD_PIN_MAX_FLOPS = 4e9


def zero_fraction(Ds: list[FloatArray]) -> float:
    """The fraction of exact zeros among all layers' phi'."""
    total = sum(d.size for d in Ds)
    return sum(int(d.size - np.count_nonzero(d)) for d in Ds) / total if total else 0.0


def reverse_is_cheaper(net: Network) -> bool:
    """Whether the products from the output side cost fewer flops than from the input side."""
    w = net.widths
    layers = sum(a * b for a, b in zip(w[:-1], w[1:], strict=True))
    return w[-1] * layers < w[0] * layers


def _plain_cpp(net: Network, backend: str) -> bool:
    """Whether the network's layers are ones the C++ active-sub-block kernels take."""
    return (
        backend == "cpp"
        and not any(net.residual_layers)
        and not any(net.norm_layers)
        and not any(net.kernel_layers)
        and net._finite_weights
    )


def active_chain(net: Network, layers: list[Any], backend: str) -> list[FloatArray] | None:
    """The contiguous phi'(z) of each layer when the C++ active-sub-block kernels apply
    (plain layers; many dead units, or every layer wide enough for per-sample gemms)."""
    Ds = [d for _, d, _ in layers]
    if (
        _plain_cpp(net, backend)
        and Ds[0].shape[0] > 0
        and (
            zero_fraction(Ds) >= ACTIVE_PATH_MIN_ZERO_FRACTION
            or min(net.widths) >= ACTIVE_PATH_MIN_WIDTH
        )
    ):
        return [np.ascontiguousarray(d) for d in Ds]
    return None


def _kept_layers(net: Network, X: FloatArray, backend: str) -> list[Any]:
    """``Network._layers`` without the pre-activations, which no product reads: one fresh
    (B_c, n_l) array per layer fewer held at once (their pages are the forward pass's
    largest cost after phi and phi').

    Where the C++ chain kernels are likely to multiply (plain layers on cpp, every one at
    least ACTIVE_PATH_MIN_WIDTH wide or some with a dead region, as relu's) and the forward
    pass is small (FORWARD_PIN_MAX_FLOPS), its gemms run with BLAS pinned to one thread, as
    the kernels themselves do, so that no OpenBLAS worker spins into the kernels."""
    w = net.widths
    flops = 2.0 * X.shape[0] * sum(a * b for a, b in zip(w[:-1], w[1:], strict=True))
    chain_likely = min(w) >= ACTIVE_PATH_MIN_WIDTH or any(
        act.derivative_can_vanish and not act.smooth for act in net.activations
    )
    pin = (
        _plain_cpp(net, backend)
        and chain_likely
        and flops * net.dtype.itemsize / 8 <= FORWARD_PIN_MAX_FLOPS
    )
    with _backends.single_threaded_blas() if pin else contextlib.nullcontext():
        return [(None, d, state) for _, d, state in net._layers(X, backend)]


def jacobian_chunk(
    net: Network, X: FloatArray, backend: str, out: FloatArray | None = None
) -> FloatArray:
    """(Bc, n_L, n_0) end-to-end Jacobians of one chunk, compiled backends; written into
    ``out`` (C-contiguous) when given, so that no chunk is copied."""
    layers = _kept_layers(net, X, backend)
    Ds = active_chain(net, layers, backend)
    if Ds is not None:
        return _dispatch.call(
            "chain_active", backend, net.weights, Ds, reverse_is_cheaper(net), out
        )
    with np.errstate(over="ignore", invalid="ignore"):  # Network checks what comes out
        J = dense_chunk(net, layers, X.shape[0])
    if out is None:
        return J
    out[...] = J
    return out


def dense_chunk(net: Network, layers: list[Any], B: int) -> FloatArray:
    """(B, n_L, n_0) Jacobians of one chunk by one gemm per layer (``layers`` from
    ``Network._layers``)."""
    if reverse_is_cheaper(net):
        return dense_reverse(net, layers, B)
    return dense_forward(net, layers, B)


def singular_values_chunk(net: Network, X: FloatArray, backend: str) -> FloatArray:
    """Singular values (B_c, min(n_L, n_0)) of the end-to-end Jacobians of one chunk,
    compiled backends.

    Where the C++ active-sub-block kernels apply, the product is split at its narrowest
    layer and no dense Jacobian is formed (jacgeom/chain.hpp)."""
    layers = _kept_layers(net, X, backend)
    Ds = active_chain(net, layers, backend)
    if Ds is not None:
        return _dispatch.call("chain_singular_values", backend, net.weights, Ds)
    with np.errstate(over="ignore", invalid="ignore"):  # Network checks what comes out
        J = dense_chunk(net, layers, X.shape[0])
    return _dispatch.batched_singular_values(J, backend)


def dense_forward(net: Network, layers: list[Any], B: int) -> FloatArray:
    # P holds the partial products of all samples side by side, (n_l, B, n_0), so that
    # W_{l+1} P is one gemm of (n_{l+1} x n_l) by (n_l x B n_0).
    n0 = net.widths[0]
    P = np.broadcast_to(np.eye(n0, dtype=net.dtype)[:, None, :], (n0, B, n0))
    for l, (_, d, state) in enumerate(layers):
        Y = apply_layer_forward(net, l, P, d, state, B)
        P = Y
    return np.ascontiguousarray(P.transpose(1, 0, 2))


def apply_layer_forward(
    net: Network, l: int, P: FloatArray, d: FloatArray, state: Any, B: int
) -> FloatArray:
    W = net.weights[l]
    n_in, n0 = P.shape[0], P.shape[2]
    if net.kernel_layers[l]:
        # Per-sample dense Jacobians: one batched matmul (Bc, n_l, n_in) @ (Bc, n_in, n0).
        Y = np.matmul(state, P.transpose(1, 0, 2)).transpose(1, 0, 2)
        return Y + P if net.residual_layers[l] else np.ascontiguousarray(Y)
    sigma = state.sigma if state is not None else None
    if sigma is not None:
        W, sigma = scaled_for_normalisation(W, sigma)
    if l == 0 and not net.residual_layers[l] and not net.norm_layers[l]:
        Y = np.empty((W.shape[0], B, n0), dtype=net.dtype)
        Y[...] = W[:, None, :]
    else:
        Y = (W @ np.ascontiguousarray(P).reshape(n_in, B * n0)).reshape(W.shape[0], B, n0)
    if sigma is not None:
        u = state.u
        m = W.shape[0]
        uY = np.einsum("bi,ibj->bj", u, Y)
        Y -= Y.mean(axis=0, keepdims=True)
        Y -= u.T[:, :, None] * (uY / m)[None, :, :]
        Y /= sigma[None, :, None]
    Y *= d.T[:, :, None]
    if net.residual_layers[l]:
        Y += P
    return Y


def scaled_for_normalisation(W: FloatArray, sigma: FloatArray) -> tuple[FloatArray, FloatArray]:
    """W and sigma (B,) both times 2^-k, so that a normalised layer's J_N W = (...) W / sigma
    is formed without overflow when W is near the float range (float32 W ~ 1e37: W P
    overflows where 2^-k W P does not, and J_N W is O(1)). Where max|W| >= 2^(maxexp / 2),
    k brings it down to that middle of the range, no further: a power of two is exact for
    every entry that stays a normal number, i.e. all but those below 2^(minexp - maxexp / 2)
    times max|W| (1e-57 in float32, 1e-462 in float64), which add nothing to any sum in
    which a larger entry takes part; k also keeps 2^-k sigma a normal number. Elsewhere k
    is 0 and nothing changes."""
    info = np.finfo(W.dtype)
    middle = info.maxexp // 2
    top = float(np.max(np.abs(W), initial=0.0))
    if not (np.isfinite(top) and top >= 2.0**middle):
        return W, sigma
    low = float(np.min(sigma, initial=np.inf))
    k = math.frexp(top)[1] - middle
    if np.isfinite(low) and low > 0:
        k = min(k, math.frexp(low)[1] - info.minexp - 1)
    if k <= 0:
        return W, sigma
    s = W.dtype.type(2.0**-k)
    return W * s, sigma * s


def dense_reverse(net: Network, layers: list[Any], B: int) -> FloatArray:
    # R holds the products from the output side, (B, n_L, n_l): R A_l is a column
    # scaling and one gemm of (B n_L x n_l) by (n_l x n_{l-1}).
    nL = net.widths[-1]
    R = np.broadcast_to(np.eye(nL, dtype=net.dtype), (B, nL, nL))
    for l in range(net.depth - 1, -1, -1):
        _, d, state = layers[l]
        if net.kernel_layers[l]:
            Rn = np.matmul(R, state)
            R = Rn + R if net.residual_layers[l] else Rn
            continue
        T = R * d[:, None, :]
        W = net.weights[l]
        if state is not None:
            W, sigma = scaled_for_normalisation(W, state.sigma)
            u = state.u
            m = u.shape[1]
            Tu = np.einsum("bki,bi->bk", T, u)
            T = T - T.mean(axis=2, keepdims=True) - Tu[:, :, None] * u[:, None, :] / m
            T /= sigma[:, None, None]
        Rn = (T.reshape(B * nL, W.shape[0]) @ W).reshape(B, nL, W.shape[1])
        if net.residual_layers[l]:
            Rn += R
        R = Rn
    return np.ascontiguousarray(R)
