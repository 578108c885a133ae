"""The single-layer kernels (family "layer", issue 2): layer_jacobian, pullback_metric,
layer_singular_values and log_volume on B samples of one m x n layer."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from baselines import numpy_derivative, one_blas_thread
from checks import (
    compare_jacobian,
    compare_log_volume,
    compare_metric,
    compare_singular_values,
    compare_slogdet,
)
from registry import (
    NAIVE,
    VECTORISED,
    Compare,
    Implementation,
    Kernel,
    Prepare,
    SampleBatch,
    Work,
    Workload,
)

import jacgeom
from jacgeom import reference

LAYER_KERNELS = ("layer_jacobian", "pullback_metric", "layer_singular_values", "log_volume")
# log_volume needs m >= n.
WIDE_LAYER_KERNELS = LAYER_KERNELS[:3]


@dataclass(frozen=True)
class LayerInputs(SampleBatch):
    """W (m, n), X (B, n), b (m,) of one dtype, and the activation name."""

    _samples: ClassVar[str] = "X"

    W: np.ndarray
    X: np.ndarray
    b: np.ndarray
    activation: str

    @property
    def m(self) -> int:
        return int(self.W.shape[0])

    @property
    def n(self) -> int:
        return int(self.W.shape[1])

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.W.dtype


def layer_inputs(w: Workload) -> LayerInputs:
    """W with He scaling (pre-activations of unit order), X standard normal, b small."""
    rng = np.random.default_rng(np.random.SeedSequence(w.seed))
    dtype = np.dtype(w.dtype)
    W = rng.standard_normal((w.m, w.n)) * math.sqrt(2.0 / w.n)
    X = rng.standard_normal((w.B, w.n))
    b = 0.1 * rng.standard_normal(w.m)
    return LayerInputs(W.astype(dtype), X.astype(dtype), b.astype(dtype), w.activation)


@lru_cache(maxsize=8)
def active_rows(w: Workload) -> np.ndarray:
    """k_b: the number of rows with phi'(z_bi) != 0 in each sample, (B,) int."""
    inp = w.inputs()
    d = reference.layer_derivatives(inp.W, inp.X, inp.b, inp.activation)
    return np.count_nonzero(d, axis=1)


def layer_workload(
    name: str,
    B: int,
    m: int,
    n: int,
    dtype: str,
    activation: str,
    seed: int,
    kernels: tuple[str, ...],
    rounds: int,
    slice_samples: int | None = None,
) -> Workload:
    """B samples X of one m × n layer (see layer_inputs)."""
    return Workload(
        name,
        B=B,
        m=m,
        n=n,
        dtype=dtype,
        activation=activation,
        seed=seed,
        kernels=kernels,
        rounds=rounds,
        slice_samples=slice_samples,
        generate=layer_inputs,
    )


def _unpack(inp: LayerInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    return inp.W, inp.X, inp.b, numpy_derivative(inp.activation)


def _rank_tolerance(inp: LayerInputs) -> float:
    # numpy.linalg.matrix_rank's, relative to sigma_max (the reference's convention).
    return max(inp.m, inp.n) * float(np.finfo(inp.dtype).eps)


# naive: the loop over samples a user writes first, one small numpy problem per sample.


def naive_layer_jacobian(inp: LayerInputs) -> Callable[[], np.ndarray]:
    W, X, b, dphi = _unpack(inp)

    def run() -> np.ndarray:
        J = np.empty((len(X), *W.shape), dtype=W.dtype)
        for i, x in enumerate(X):
            J[i] = dphi(W @ x + b)[:, None] * W
        return J

    return run


def naive_pullback_metric(inp: LayerInputs) -> Callable[[], np.ndarray]:
    W, X, b, dphi = _unpack(inp)

    def run() -> np.ndarray:
        G = np.empty((len(X), inp.n, inp.n), dtype=W.dtype)
        for i, x in enumerate(X):
            J = dphi(W @ x + b)[:, None] * W
            G[i] = J.T @ J
        return G

    return run


def naive_layer_singular_values(inp: LayerInputs) -> Callable[[], np.ndarray]:
    W, X, b, dphi = _unpack(inp)

    def run() -> np.ndarray:
        S = np.empty((len(X), min(inp.m, inp.n)), dtype=W.dtype)
        for i, x in enumerate(X):
            J = dphi(W @ x + b)[:, None] * W
            S[i] = np.linalg.svd(J, compute_uv=False)
        return S

    return one_blas_thread(run)


def naive_log_volume(inp: LayerInputs) -> Callable[[], np.ndarray]:
    W, X, b, dphi = _unpack(inp)
    rtol, n = _rank_tolerance(inp), inp.n

    def run() -> np.ndarray:
        v = np.empty(len(X), dtype=W.dtype)
        for i, x in enumerate(X):
            J = dphi(W @ x + b)[:, None] * W
            s = np.linalg.svd(J, compute_uv=False)
            full_rank = np.count_nonzero(s > s[0] * rtol) == n
            v[i] = np.sum(np.log(s)) if full_rank else -np.inf
        return v

    return one_blas_thread(run)


# vectorised: the best plain numpy on the stacked (B, m, n) Jacobian.


def _stacked_jacobian(inp: LayerInputs) -> np.ndarray:
    W, X, b, dphi = _unpack(inp)
    return dphi(X @ W.T + b)[:, :, None] * W


def vectorised_layer_jacobian(inp: LayerInputs) -> Callable[[], np.ndarray]:
    return lambda: _stacked_jacobian(inp)


def vectorised_pullback_metric(inp: LayerInputs) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        J = _stacked_jacobian(inp)
        return J.transpose(0, 2, 1) @ J

    return run


def vectorised_layer_singular_values(inp: LayerInputs) -> Callable[[], np.ndarray]:
    return one_blas_thread(lambda: np.linalg.svd(_stacked_jacobian(inp), compute_uv=False))


def vectorised_log_volume(inp: LayerInputs) -> Callable[[], np.ndarray]:
    rtol, n = _rank_tolerance(inp), inp.n

    def run() -> np.ndarray:
        s = np.linalg.svd(_stacked_jacobian(inp), compute_uv=False)
        full_rank = np.count_nonzero(s > s[:, :1] * rtol, axis=1) == n
        with np.errstate(divide="ignore"):
            logs = np.log(s).sum(axis=1)
        return np.where(full_rank, logs, -np.inf).astype(inp.dtype)

    return one_blas_thread(run)


def vectorised_slogdet_log_volume(inp: LayerInputs) -> Callable[[], np.ndarray]:
    """0.5 log det(J^T J) by LU: fast, but blind to rank (a singular G rarely gives -inf)."""

    def run() -> np.ndarray:
        J = _stacked_jacobian(inp)
        return 0.5 * np.linalg.slogdet(J.mT @ J)[1]

    return run


# jacgeom's public functions on one backend.


def backend_call(function: str, backend: str, with_out: bool = False) -> Prepare:
    fn = getattr(jacgeom, function)
    shape = KERNEL_SHAPES[function]

    def prepare(inp: LayerInputs) -> Callable[[], np.ndarray]:
        if with_out:
            # Allocated and touched here: first-touch page faults are not the kernel's cost.
            out = np.zeros(shape(inp.B, inp.m, inp.n), dtype=inp.dtype)
            return lambda: fn(inp.W, inp.X, inp.b, inp.activation, backend=backend, out=out)
        return lambda: fn(inp.W, inp.X, inp.b, inp.activation, backend=backend)

    return prepare


def accepts_out(function: str) -> bool:
    """Whether jacgeom.<function> takes a preallocated ``out=`` (checked at import)."""
    return "out" in inspect.signature(getattr(jacgeom, function)).parameters


def backends_of(function: str) -> list[Implementation]:
    impls = [
        Implementation(name, backend_call(function, name), backend=name)
        for name in ("cpp", "numba")
    ]
    if accepts_out(function):
        impls.insert(
            1,
            Implementation(
                "cpp (out=)",
                backend_call(function, "cpp", with_out=True),
                backend="cpp",
                note="preallocated, already touched output",
            ),
        )
    return impls


def diagnose_slogdet(w: Workload, result: np.ndarray, count: int) -> str | None:
    """Samples with fewer than n non-zero phi' have volume exactly 0 (-inf); count misses."""
    deficient = active_rows(w)[:count] < w.n
    missed = int(np.count_nonzero(deficient & np.isfinite(result)))
    if missed:
        return (
            f"reports a finite log-volume for {missed} of {int(deficient.sum())} samples "
            f"whose Jacobian has rank < n (fewer than n active rows)"
        )
    return None


def _reference(function: str) -> Callable[[LayerInputs], np.ndarray]:
    fn = getattr(reference, function)
    return lambda inp: fn(inp.W, inp.X, inp.b, inp.activation)


# ---------------------------------------------------------------------------------------
# Work models for the floor. k_b = active rows (phi'(z_bi) != 0) of sample b: rows with
# phi' = 0 contribute nothing to the metric, the spectrum or the volume, so the least work
# counts only the active ones (for gelu and tanh k_b = m).


def work_layer_jacobian(w: Workload) -> Work:
    return Work(
        float(w.B * w.m * w.n * np.dtype(w.dtype).itemsize),
        "bytes",
        "B·m·n·itemsize bytes written / copy bandwidth (bytes read + written per second)",
    )


def work_pullback_metric(w: Workload) -> Work:
    k = active_rows(w).astype(np.float64)
    return Work(
        float(np.sum(k * w.n * w.n)),
        "flops",
        "Σ_b k_b·n² flops (the Gram matrix of the k_b × n active rows) / gemm rate",
    )


def work_layer_singular_values(w: Workload) -> Work:
    k = active_rows(w).astype(np.float64)
    p, q = np.maximum(k, w.n), np.minimum(k, w.n)
    return Work(
        float(np.sum(4 * p * q * q - 4.0 / 3.0 * q**3)),
        "flops",
        "Σ_b (4·p·q² − 4/3·q³) flops, p = max(k_b, n), q = min(k_b, n) "
        "(Golub–Kahan bidiagonalisation, values only; the O(q²) iteration ignored) / gemm rate",
    )


def work_log_volume(w: Workload) -> Work:
    k = active_rows(w).astype(np.float64)
    k = k[k >= w.n]
    return Work(
        float(np.sum(2 * k * w.n * w.n - 2.0 / 3.0 * w.n**3)),
        "flops",
        "Σ over samples with k_b ≥ n of (2·k_b·n² − 2/3·n³) flops (Householder QR of the "
        "active rows: |det R| is the volume); samples with k_b < n are −inf by counting, "
        "0 flops / gemm rate",
    )


KERNEL_SHAPES: dict[str, Callable[[int, int, int], tuple[int, ...]]] = {
    "layer_jacobian": lambda B, m, n: (B, m, n),
    "pullback_metric": lambda B, m, n: (B, n, n),
    "layer_singular_values": lambda B, m, n: (B, min(m, n)),
    "log_volume": lambda B, m, n: (B,),
}


def _layer_kernel(
    name: str,
    naive: Prepare,
    vectorised: Prepare,
    compare: Compare,
    work: Callable[[Workload], Work],
    naive_slow: bool,
    vectorised_slow: bool,
    extra: Sequence[Implementation] = (),
) -> Kernel:
    return Kernel(
        name=name,
        family="layer",
        implementations=(
            Implementation(NAIVE, naive, slow=naive_slow),
            Implementation(VECTORISED, vectorised, slow=vectorised_slow),
            *extra,
            *backends_of(name),
        ),
        reference=_reference(name),
        compare=compare,
        work=work,
        result_shape=KERNEL_SHAPES[name],
    )


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        _layer_kernel(
            "layer_jacobian",
            naive_layer_jacobian,
            vectorised_layer_jacobian,
            compare_jacobian,
            work_layer_jacobian,
            naive_slow=False,
            vectorised_slow=False,
        ),
        _layer_kernel(
            "pullback_metric",
            naive_pullback_metric,
            vectorised_pullback_metric,
            compare_metric,
            work_pullback_metric,
            naive_slow=True,
            vectorised_slow=False,
        ),
        _layer_kernel(
            "layer_singular_values",
            naive_layer_singular_values,
            vectorised_layer_singular_values,
            compare_singular_values,
            work_layer_singular_values,
            naive_slow=True,
            vectorised_slow=True,
        ),
        _layer_kernel(
            "log_volume",
            naive_log_volume,
            vectorised_log_volume,
            compare_log_volume,
            work_log_volume,
            naive_slow=True,
            vectorised_slow=True,
            extra=(
                Implementation(
                    "vectorised_slogdet",
                    vectorised_slogdet_log_volume,
                    compare=compare_slogdet,
                    diagnose=diagnose_slogdet,
                    note="0.5·slogdet(JᵀJ): does not detect rank; checked where the "
                    "reference is finite only",
                ),
            ),
        ),
    )
}
