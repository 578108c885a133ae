"""Kernel layers in the Monte Carlo (Spec(layer="kernel")): chains of h -> [h +] A k(h),
drawn fresh for every sample or shared, with their Jacobians batched over samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _dispatch
from ..reference.montecarlo import numerical_rank
from .sampling import SHARED_KERNEL_LAYERS_KEY
from .spec import Spec

__all__ = ["kernel_chain", "kernel_features"]


def kernel_chain(
    spec: Spec, rng: np.random.Generator, X: NDArray[Any], backend: str
) -> tuple[list[NDArray[Any]], NDArray[np.int64], NDArray[np.int64] | None]:
    """The layer Jacobians of a chain of kernel layers at the inputs X (n, n_0).

    Layer l has ``spec.centers`` (default n_{l-1}) centers C ~ N(0, I) and coefficients
    A ~ N(0, 1 / centers), drawn from ``rng`` per sample, or once from the seed when the
    network is shared (spec.fresh_weights False).

    Returns
    -------
    Js : list of (n, n_l, n_(l-1)), each layer's Jacobian (the identity included for a
        residual chain)
    active : (n, L) int64, every unit (a kernel layer has no dead units)
    layer_ranks : (n, L) int64, numerical rank of each layer's Jacobian; None unless
        spec.layer_ranks
    """
    widths = spec.resolved_widths()
    n, L = X.shape[0], len(widths) - 1
    if spec.fresh_weights:
        draw, count = rng, n
    else:
        seed = np.random.SeedSequence(spec.seed, spawn_key=SHARED_KERNEL_LAYERS_KEY)
        draw, count = np.random.default_rng(seed), 1
    active = np.tile(np.asarray(widths[1:], dtype=np.int64), (n, 1))
    layer_ranks = np.empty((n, L), dtype=np.int64) if spec.layer_ranks else None
    h, Js = X, []
    for l, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        p = spec.centers or fan_in
        C = draw.standard_normal((count, p, fan_in))
        A = draw.standard_normal((count, fan_out, p)) / math.sqrt(p)
        k, G = kernel_features(
            spec.kernel, 1.0 / fan_in if spec.gamma is None else spec.gamma, h, C
        )
        out = np.einsum("bip,bp->bi", A, k)
        Jl = np.matmul(A, G)  # (n, fan_out, fan_in)
        if spec.residual:
            out = out + h
            Jl = Jl + np.eye(fan_in)
        if layer_ranks is not None:
            layer_ranks[:, l] = numerical_rank(
                _dispatch.batched_singular_values(Jl, backend), (fan_out, fan_in)
            )
        Js.append(Jl)
        h = out
    return Js, active, layer_ranks


def kernel_features(
    kernel: str, gamma: float, h: NDArray[Any], C: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """k_j(h) (n, p) and its gradients in h (n, p, n_in), per sample, for C (n or 1, p, n_in):
    the formulas of jacgeom.KernelLayer (polynomial: degree 3, coef0 1), batched over samples
    that each have their centers."""
    diff = h[:, None, :] - C
    if kernel == "rbf":
        k = np.exp(-gamma * np.einsum("bpi,bpi->bp", diff, diff))
        return k, -2 * gamma * k[:, :, None] * diff
    if kernel == "laplacian":
        k = np.exp(-gamma * np.abs(diff).sum(axis=2))
        return k, -gamma * k[:, :, None] * np.sign(diff)
    base = np.einsum("bpi,bi->bp", np.broadcast_to(C, diff.shape), h) + 1.0
    return base**3, 3 * (base**2)[:, :, None] * C
