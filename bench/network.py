"""Network.jacobian, .rank and .singular_values (family "network", issue 4): L layers of
width m on n = n0 inputs, at B inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from baselines import numpy_derivative, one_blas_thread
from checks import compare_network_jacobian, compare_network_singular_values, compare_ranks
from peers import network_peers
from registry import NAIVE, VECTORISED, Implementation, Kernel, Prepare, SampleBatch, Work, Workload

import jacgeom
from jacgeom.reference import network as reference_network

NETWORK_JACOBIAN_KERNELS = ("network_jacobian",)
NETWORK_REDUCTION_KERNELS = ("network_rank", "network_singular_values")

NETWORK_SEED = 0  # Network.random's seed: the weights; the workload's seed draws X


@dataclass(frozen=True)
class NetworkInputs(SampleBatch):
    """A jacgeom.Network and X (B, n0) of its dtype."""

    _samples: ClassVar[str] = "X"
    net: Any
    X: np.ndarray
    activation: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.X.dtype


def network_inputs(w: Workload) -> NetworkInputs:
    """Network.random([n] + [m] * L, seed=0) (He init, zero biases); X standard normal."""
    widths = [w.n] + [w.m] * w.depth
    net = jacgeom.Network.random(widths, activation=w.activation, seed=NETWORK_SEED, dtype=w.dtype)
    rng = np.random.default_rng(np.random.SeedSequence(w.seed))
    X = rng.standard_normal((w.B, w.n)).astype(w.dtype)
    return NetworkInputs(net, X, w.activation)


NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
}


def _numpy_layers(inp: NetworkInputs) -> list[tuple[np.ndarray, np.ndarray, Any, Any]]:
    phi = NUMPY_ACTIVATIONS.get(inp.activation) or jacgeom.activation(inp.activation).phi
    dphi = numpy_derivative(inp.activation)
    return [(W, b, phi, dphi) for W, b in zip(inp.net.weights, inp.net.biases, strict=True)]


def _naive_product(layers: list[Any], x: np.ndarray) -> np.ndarray:
    h, P = x, None
    for W, b, phi, dphi in layers:
        z = W @ h + b
        A = dphi(z)[:, None] * W
        h = phi(z)
        P = A if P is None else A @ P
    return P


def naive_network_jacobian(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    layers, X = _numpy_layers(inp), inp.X
    shape = (len(X), inp.net.widths[-1], inp.net.widths[0])

    def run() -> np.ndarray:
        J = np.empty(shape, dtype=X.dtype)
        for i, x in enumerate(X):
            J[i] = _naive_product(layers, x)
        return J

    return one_blas_thread(run)


def naive_network_rank(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    layers, X = _numpy_layers(inp), inp.X
    return one_blas_thread(
        lambda: np.array(
            [np.linalg.matrix_rank(_naive_product(layers, x)) for x in X], dtype=np.int64
        )
    )


def naive_network_singular_values(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    layers, X = _numpy_layers(inp), inp.X
    p = min(inp.net.widths[0], inp.net.widths[-1])

    def run() -> np.ndarray:
        S = np.empty((len(X), p), dtype=X.dtype)
        for i, x in enumerate(X):
            S[i] = np.linalg.svd(_naive_product(layers, x), compute_uv=False)
        return S

    return one_blas_thread(run)


def _stacked_network_jacobian(inp: NetworkInputs) -> np.ndarray:
    """Per layer P = (d[:, :, None] * W) @ P on the stacked (B, n_l, n0) array."""
    H, P = inp.X, None
    for W, b, phi, dphi in _numpy_layers(inp):
        Z = H @ W.T + b
        A = dphi(Z)[:, :, None] * W
        H = phi(Z)
        P = A if P is None else A @ P
    return P


def _one_gemm_network_jacobian(inp: NetworkInputs) -> np.ndarray:
    """P kept as (n_l, B, n0): one (n_l × n_{l-1}) @ (n_{l-1} × B·n0) gemm per layer, then the
    rows scaled by phi' in place. Returns the (B, n_L, n0) view."""
    H, P = inp.X, None
    for W, b, phi, dphi in _numpy_layers(inp):
        Z = H @ W.T + b
        D = dphi(Z).T  # (n_l, B)
        H = phi(Z)
        if P is None:
            P = D[:, :, None] * W[:, None, :]
        else:
            P = (W @ P.reshape(P.shape[0], -1)).reshape(W.shape[0], *P.shape[1:])
            P *= D[:, :, None]
    return P.transpose(1, 0, 2)


def vectorised_network_jacobian(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    return lambda: _stacked_network_jacobian(inp)


def one_gemm_network_jacobian(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    return lambda: _one_gemm_network_jacobian(inp)


def vectorised_network_rank(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        J = _stacked_network_jacobian(inp)  # batched products on numpy's threads
        return one_blas_thread(lambda: np.linalg.matrix_rank(J))()

    return run


def vectorised_network_singular_values(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        J = _stacked_network_jacobian(inp)
        return one_blas_thread(lambda: np.linalg.svd(J, compute_uv=False))()

    return run


def network_backend(method: str, backend: str) -> Prepare:
    def prepare(inp: NetworkInputs) -> Callable[[], np.ndarray]:
        fn = getattr(inp.net, method)
        return lambda: fn(inp.X, backend=backend)

    return prepare


def _network_reference(function: str) -> Callable[[NetworkInputs], np.ndarray]:
    fn = getattr(reference_network, function)
    return lambda inp: fn(inp.net, inp.X)


def _network_flops(w: Workload) -> float:
    widths = [w.n] + [w.m] * w.depth
    return 2.0 * w.B * w.n * sum(a * b for a, b in zip(widths[1:], widths[:-1], strict=True))


_NETWORK_FORMULA = (
    "2·B·n₀·Σ_l n_l·n_{l−1} flops (issue 4's 2·B·L·n²·n₀: the product of the layer "
    "Jacobians from the input side)"
)


def work_network_jacobian(w: Workload) -> Work:
    return Work(_network_flops(w), "flops", f"{_NETWORK_FORMULA} / gemm rate")


def work_network_reduction(w: Workload) -> Work:
    p, q = max(w.m, w.n), min(w.m, w.n)
    svd = w.B * (4 * p * q * q - 4.0 / 3.0 * q**3)
    return Work(
        _network_flops(w) + svd,
        "flops",
        f"{_NETWORK_FORMULA} + B·(4·p·q² − 4/3·q³) (values-only SVD of each n_L × n₀ "
        "product, p, q = its larger and smaller side) / gemm rate",
    )


def _network_backends(method: str) -> tuple[Implementation, ...]:
    return tuple(
        Implementation(be, network_backend(method, be), backend=be) for be in ("cpp", "numba")
    )


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel(
            name="network_jacobian",
            family="network",
            implementations=(
                Implementation(NAIVE, naive_network_jacobian, slow=True),
                Implementation(VECTORISED, vectorised_network_jacobian),
                Implementation(
                    "vectorised (one gemm per layer)",
                    one_gemm_network_jacobian,
                    note="P as (n_l, B, n0): W @ P.reshape(n, B·n0), rows scaled in place",
                ),
                *network_peers(None, slow_jacfwd=True),
                *_network_backends("jacobian"),
            ),
            reference=_network_reference("jacobian"),
            compare=compare_network_jacobian,
            work=work_network_jacobian,
            result_shape=lambda B, m, n: (B, m, n),
        ),
        Kernel(
            name="network_rank",
            family="network",
            implementations=(
                Implementation(NAIVE, naive_network_rank, slow=True),
                Implementation(VECTORISED, vectorised_network_rank),
                *network_peers("rank", slow_jacfwd=False),
                *_network_backends("rank"),
            ),
            reference=_network_reference("rank"),
            compare=compare_ranks,
            work=work_network_reduction,
            result_shape=lambda B, m, n: (B,),
        ),
        Kernel(
            name="network_singular_values",
            family="network",
            implementations=(
                Implementation(NAIVE, naive_network_singular_values, slow=True),
                Implementation(VECTORISED, vectorised_network_singular_values),
                *network_peers("singular_values", slow_jacfwd=False),
                *_network_backends("singular_values"),
            ),
            reference=_network_reference("singular_values"),
            compare=compare_network_singular_values,
            work=work_network_reduction,
            result_shape=lambda B, m, n: (B, min(m, n)),
        ),
    )
}


def network_workload(
    name: str,
    B: int,
    depth: int,
    width: int,
    dtype: str,
    activation: str,
    seed: int,
    kernels: tuple[str, ...],
    rounds: int,
    slice_samples: int | None = None,
) -> Workload:
    """Network.random([width] * (depth + 1), activation, seed=0, dtype) at B inputs."""
    return Workload(
        name,
        B=B,
        m=width,
        n=width,
        dtype=dtype,
        activation=activation,
        seed=seed,
        kernels=kernels,
        rounds=rounds,
        slice_samples=slice_samples,
        check_samples=4,
        depth=depth,
        generate=network_inputs,
        what=f"L={depth}, widths {width}, B={B}",
    )
