"""The one registry of benchmark workloads and of the implementations they compare.

A *workload* fixes sizes, dtype, activation and a seed; its inputs come from a numpy
Generator seeded with that seed, so every run times (and checks) the same numbers. A *kernel*
lists its implementations (the naive numpy loop a user writes first, the vectorised numpy
expression, each jacgeom backend), the reference it is checked against and its work model
(bytes or flops) from which the floor is derived. The pytest suite (test_bench_*.py) and the
report (report.py) both read this registry: what is timed is also what is checked.

Adding a kernel (masked_rank, Network.jacobian, ...): write the ``prepare`` functions of its
implementations (inputs -> zero-argument callable; allocation and other set-up belong in
``prepare``, outside the timing), a ``compare``, a ``work`` model and a ``result_shape``,
register a :class:`Kernel` in :data:`KERNELS`, and name it in the ``kernels`` of the
workloads that should run it. A kernel with other inputs gets its own ``Inputs`` type and
``generate`` function; the harness only needs ``head`` (the first samples) and ``take``
(a subset, for the reference check).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.special

import jacgeom
from jacgeom import reference

WORKLOAD_SETS = ("quick", "full")
NAIVE = "naive"
VECTORISED = "vectorised"


# ---------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class LayerInputs:
    """W (m, n), X (B, n), b (m,) of one dtype, and the activation name."""

    W: np.ndarray
    X: np.ndarray
    b: np.ndarray
    activation: str

    @property
    def B(self) -> int:
        return int(self.X.shape[0])

    @property
    def m(self) -> int:
        return int(self.W.shape[0])

    @property
    def n(self) -> int:
        return int(self.W.shape[1])

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.W.dtype

    def head(self, count: int) -> LayerInputs:
        """The first ``count`` samples (a view: no copy)."""
        return replace(self, X=self.X[:count])

    def take(self, indices: np.ndarray) -> LayerInputs:
        """The samples at ``indices``, for the reference check."""
        return replace(self, X=np.ascontiguousarray(self.X[indices]))


@dataclass(frozen=True)
class Workload:
    """One benchmark configuration.

    ``rounds`` timed calls per implementation, the median quoted. Implementations marked
    ``slow`` time only the first ``slice_samples`` samples and are scaled by
    B / slice_samples (they loop over samples, so their cost is linear in B); None times
    them on all B samples.
    """

    name: str
    B: int
    m: int
    n: int
    dtype: str
    activation: str
    seed: int
    kernels: tuple[str, ...]
    rounds: int
    slice_samples: int | None = None
    check_samples: int = 8
    generate: Callable[[Workload], Any] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def inputs(self) -> Any:
        """The seeded inputs (cached per workload: generated once per process)."""
        return _inputs(self)

    def describe(self) -> str:
        return f"B={self.B}, m={self.m}, n={self.n}, {self.dtype}, {self.activation}"


def layer_inputs(w: Workload) -> LayerInputs:
    """W with He scaling (pre-activations of unit order), X standard normal, b small."""
    rng = np.random.default_rng(np.random.SeedSequence(w.seed))
    dtype = np.dtype(w.dtype)
    W = rng.standard_normal((w.m, w.n)) * math.sqrt(2.0 / w.n)
    X = rng.standard_normal((w.B, w.n))
    b = 0.1 * rng.standard_normal(w.m)
    return LayerInputs(W.astype(dtype), X.astype(dtype), b.astype(dtype), w.activation)


@lru_cache(maxsize=8)
def _inputs(w: Workload) -> Any:
    return (w.generate or layer_inputs)(w)


@lru_cache(maxsize=8)
def active_rows(w: Workload) -> np.ndarray:
    """k_b: the number of rows with phi'(z_bi) != 0 in each sample, (B,) int."""
    inp = w.inputs()
    d = reference.layer_derivatives(inp.W, inp.X, inp.b, inp.activation)
    return np.count_nonzero(d, axis=1)


# ---------------------------------------------------------------------------------------
# phi' for the numpy baselines
#
# The baselines use the expression a numpy user writes, not jacgeom's activation registry:
# the registry's gelu' is exact but evaluates math.erfc element by element (about 0.1 s per
# million entries), which would handicap the baselines. Rounding differences against the
# reference are far inside the check tolerances.

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _relu_derivative(z: np.ndarray) -> np.ndarray:
    return (z > 0).astype(z.dtype)


def _gelu_derivative(z: np.ndarray) -> np.ndarray:
    return scipy.special.ndtr(z) + z * np.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _tanh_derivative(z: np.ndarray) -> np.ndarray:
    return 1 - np.tanh(z) ** 2


NUMPY_DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu_derivative,
    "gelu": _gelu_derivative,
    "tanh": _tanh_derivative,
}


def numpy_derivative(activation: str) -> Callable[[np.ndarray], np.ndarray]:
    """phi' as plain numpy; other activations fall back to jacgeom's registry."""
    return NUMPY_DERIVATIVES.get(activation) or jacgeom.activation(activation).derivative


# ---------------------------------------------------------------------------------------
# Kernels and implementations

Prepare = Callable[[Any], Callable[[], Any]]
Compare = Callable[[np.ndarray, np.ndarray, np.dtype[Any]], None]


@dataclass(frozen=True)
class Work:
    """What a kernel must at least do: ``amount`` bytes written or flops."""

    amount: float
    unit: str  # "bytes" (memory-bound: / copy bandwidth) or "flops" (/ gemm rate)
    formula: str


@dataclass(frozen=True)
class Implementation:
    name: str
    prepare: Prepare
    slow: bool = False
    backend: str | None = None  # a jacgeom backend that must be available
    compare: Compare | None = None  # replaces the kernel's check (see vectorised_slogdet)
    diagnose: Callable[[Workload, np.ndarray, int], str | None] | None = None
    note: str = ""


@dataclass(frozen=True)
class Kernel:
    name: str
    family: str  # which test module runs it
    implementations: tuple[Implementation, ...]
    reference: Callable[[Any], np.ndarray]
    compare: Compare
    work: Callable[[Workload], Work]
    result_shape: Callable[[int, int, int], tuple[int, ...]]


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

    return run


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

    return run


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
    return lambda: np.linalg.svd(_stacked_jacobian(inp), compute_uv=False)


def vectorised_log_volume(inp: LayerInputs) -> Callable[[], np.ndarray]:
    rtol, n = _rank_tolerance(inp), inp.n

    def run() -> np.ndarray:
        s = np.linalg.svd(_stacked_jacobian(inp), compute_uv=False)
        full_rank = np.count_nonzero(s > s[:, :1] * rtol, axis=1) == n
        with np.errstate(divide="ignore"):
            logs = np.log(s).sum(axis=1)
        return np.where(full_rank, logs, -np.inf).astype(inp.dtype)

    return run


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


# ---------------------------------------------------------------------------------------
# Checks: results on a few samples against jacgeom.reference


def _is_float32(dtype: np.dtype[Any]) -> bool:
    return np.dtype(dtype) == np.float32


def _assert_within(actual: np.ndarray, expected: np.ndarray, atol: Any, what: str) -> None:
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= atol)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), err.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(bad)} entries off; worst at {worst}: "
            f"{actual[worst]!r} vs reference {expected[worst]!r}"
        )


def _check_dtype(actual: np.ndarray, dtype: np.dtype[Any]) -> None:
    assert actual.dtype == dtype, f"result dtype {actual.dtype}, expected {dtype}"


def compare_jacobian(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    _check_dtype(actual, dtype)
    tol = 1e-5 if _is_float32(dtype) else 1e-12
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    _assert_within(actual, expected, tol * scale, "layer_jacobian")


def compare_metric(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    _check_dtype(actual, dtype)
    tol = 1e-4 if _is_float32(dtype) else 1e-11
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    _assert_within(actual, expected, tol * scale, "pullback_metric")


def compare_singular_values(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    _check_dtype(actual, dtype)
    tol = 1e-4 if _is_float32(dtype) else 1e-11
    _assert_within(actual, expected, tol * expected[:, :1], "layer_singular_values")


def _log_volume_tolerance(dtype: np.dtype[Any], expected: np.ndarray) -> np.ndarray:
    tol = 2e-2 if _is_float32(dtype) else 1e-8
    return tol * np.maximum(1.0, np.abs(expected))


def compare_log_volume(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    _check_dtype(actual, dtype)
    singular_a, singular_e = np.isneginf(actual), np.isneginf(expected)
    assert np.array_equal(singular_a, singular_e), (
        f"log_volume: -inf (rank < n) at samples {np.flatnonzero(singular_a).tolist()}, "
        f"reference at {np.flatnonzero(singular_e).tolist()}"
    )
    finite = ~singular_e
    _assert_within(
        actual[finite],
        expected[finite],
        _log_volume_tolerance(dtype, expected[finite]),
        "log_volume",
    )


def compare_slogdet(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Where the reference is finite only: slogdet cannot detect rank (see diagnose)."""
    _check_dtype(actual, dtype)
    finite = np.isfinite(expected)
    # G = J^T J squares the condition number; float32 loses correspondingly more.
    tol = (5e-2 if _is_float32(dtype) else 1e-6) * np.maximum(1.0, np.abs(expected[finite]))
    _assert_within(actual[finite], expected[finite], tol, "log_volume via slogdet")


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
        "Σ_b k_b·n² flops (one syrk of the k_b × n active rows) / gemm rate",
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

LAYER_KERNELS = ("layer_jacobian", "pullback_metric", "layer_singular_values", "log_volume")
# log_volume needs m >= n.
WIDE_LAYER_KERNELS = LAYER_KERNELS[:3]


# ---------------------------------------------------------------------------------------
# The workloads

WORKLOADS: dict[str, tuple[Workload, ...]] = {
    # Small enough that the whole quick suite (timed, checked) runs in well under 3 minutes
    # on 2 cores; shapes cover float32, m > n, m < n and a smooth activation.
    "quick": (
        Workload(
            "quick-relu-512x64x64-float64",
            B=512,
            m=64,
            n=64,
            dtype="float64",
            activation="relu",
            seed=20240601,
            kernels=LAYER_KERNELS,
            rounds=5,
        ),
        Workload(
            "quick-gelu-512x96x64-float32",
            B=512,
            m=96,
            n=64,
            dtype="float32",
            activation="gelu",
            seed=20240602,
            kernels=LAYER_KERNELS,
            rounds=5,
        ),
        Workload(
            "quick-tanh-256x48x64-float64",
            B=256,
            m=48,
            n=64,
            dtype="float64",
            activation="tanh",
            seed=20240603,
            kernels=WIDE_LAYER_KERNELS,
            rounds=5,
        ),
    ),
    # Issue 2's sizes: B = 4096, m = n = 256, float64, relu and gelu. The naive loops and
    # numpy's batched SVD would take minutes each at this size; they time 256 samples.
    "full": (
        Workload(
            "relu-4096x256x256-float64",
            B=4096,
            m=256,
            n=256,
            dtype="float64",
            activation="relu",
            seed=20240611,
            kernels=LAYER_KERNELS,
            rounds=3,
            slice_samples=256,
        ),
        Workload(
            "gelu-4096x256x256-float64",
            B=4096,
            m=256,
            n=256,
            dtype="float64",
            activation="gelu",
            seed=20240612,
            kernels=LAYER_KERNELS,
            rounds=3,
            slice_samples=256,
        ),
    ),
}


def cases(workload_set: str, family: str) -> list[tuple[Workload, Kernel, Implementation]]:
    """Every (workload, kernel, implementation) of a set whose kernel belongs to ``family``."""
    return [
        (w, KERNELS[name], impl)
        for w in WORKLOADS[workload_set]
        for name in w.kernels
        if KERNELS[name].family == family
        for impl in KERNELS[name].implementations
    ]
