"""The one registry of benchmark workloads and of the implementations they compare.

A *workload* fixes sizes, dtype, activation and a seed; its inputs come from a numpy
Generator seeded with that seed, so every run times (and checks) the same numbers. A *kernel*
lists its implementations (the naive numpy loop a user writes first, the vectorised numpy
expression, each jacgeom backend, peers such as torch.func and JAX), the reference it is
checked against and its work model (bytes or flops) from which the floor is derived. The
pytest suite (test_bench_*.py) and the report (report.py) both read this registry: what is
timed is also what is checked.

Kernels registered: the single-layer kernels (family "layer", issue 2), masked_rank ("rank",
issue 3) and Network.jacobian / .rank / .singular_values ("network", issue 4). The Monte
Carlo throughput of issue 5 is not a kernel on shared inputs; it lives in throughput.py.

Adding a kernel: write the ``prepare`` functions of its implementations (inputs ->
zero-argument callable; allocation, compilation and other set-up belong in ``prepare``,
outside the timing), a ``compare``, a ``work`` model and a ``result_shape``, register a
:class:`Kernel` in :data:`KERNELS` with a ``family`` (the test module
test_bench_<family>.py that runs it; a new family needs a three-line module like
test_bench_rank.py and an entry in report.FAMILIES), and name it in the ``kernels`` of the
workloads that should run it. A kernel with other inputs gets its own ``Inputs`` type and
``generate`` function (see MaskInputs, NetworkInputs); the harness only needs ``head`` (the
first samples) and ``take`` (a subset, for the reference check). An implementation that
needs an optional package names its module in ``requires`` and is skipped, with the
reason, where that package is missing.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import Any, ClassVar

import numpy as np
import scipy.special

import jacgeom
from jacgeom import reference
from jacgeom.reference import network as reference_network

WORKLOAD_SETS = ("quick", "full")
NAIVE = "naive"
VECTORISED = "vectorised"


# ---------------------------------------------------------------------------------------
# Inputs


class _SampleBatch:
    """Inputs whose samples are the rows of one array field, named by ``_samples``: the
    batch size, the first samples (a view) and a subset (for the reference check)."""

    _samples: ClassVar[str]

    @property
    def B(self) -> int:
        return int(getattr(self, self._samples).shape[0])

    def head(self, count: int) -> Any:
        """The first ``count`` samples (a view: no copy)."""
        return replace(self, **{self._samples: getattr(self, self._samples)[:count]})  # type: ignore[type-var]

    def take(self, indices: np.ndarray) -> Any:
        """The samples at ``indices``, for the reference check."""
        rows = np.ascontiguousarray(getattr(self, self._samples)[indices])
        return replace(self, **{self._samples: rows})  # type: ignore[type-var]


@dataclass(frozen=True)
class LayerInputs(_SampleBatch):
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
    depth: int = 1  # layers L of a network workload (widths [n] + [m] * L)
    generate: Callable[[Workload], Any] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    what: str = ""  # what B counts and what m, n are, when not samples of an m x n layer

    def inputs(self) -> Any:
        """The seeded inputs (cached per workload: generated once per process)."""
        return _inputs(self)

    def describe(self) -> str:
        if self.what:
            return f"{self.what}, {self.dtype}" + (
                f", {self.activation}" if self.activation else ""
            )
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
    requires: str | None = None  # a peer's module (torch, jax): skipped when not installed


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


# LAPACK on stacks of small matrices (numpy's svd, matrix_rank over samples or masks) runs
# with numpy's BLAS on one thread: at these sizes gesdd's BLAS-2 calls gain nothing from a
# second thread and lose to the hand-over (4096 SVDs of 256 x 256: 19.3 s on one thread,
# 28.9 s on two; the network loop's rank 0.58 s on one, 0.59-1.3 s on two, 2.4 s beside one
# busy thread). One thread makes these baselines both steady and their fastest; batched
# matrix products keep numpy's threads.
def _one_blas_thread(run: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    # jacgeom's own pin: one thread lowers and restores the count (OpenBLAS ignores a count
    # restored from a thread other than the one that lowered it, and the main thread's
    # threadpool_limits left later rows of a full run on one thread).
    from jacgeom import _backends

    def pinned() -> np.ndarray:
        with _backends.single_threaded_blas():
            return run()

    return pinned


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

    return _one_blas_thread(run)


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

    return _one_blas_thread(run)


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
    return _one_blas_thread(lambda: np.linalg.svd(_stacked_jacobian(inp), compute_uv=False))


def vectorised_log_volume(inp: LayerInputs) -> Callable[[], np.ndarray]:
    rtol, n = _rank_tolerance(inp), inp.n

    def run() -> np.ndarray:
        s = np.linalg.svd(_stacked_jacobian(inp), compute_uv=False)
        full_rank = np.count_nonzero(s > s[:, :1] * rtol, axis=1) == n
        with np.errstate(divide="ignore"):
            logs = np.log(s).sum(axis=1)
        return np.where(full_rank, logs, -np.inf).astype(inp.dtype)

    return _one_blas_thread(run)


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

# ---------------------------------------------------------------------------------------
# Peers (torch.func, JAX): optional; an implementation that ``requires`` one is skipped with
# a message when it is not installed (pip install ".[peers]").


@cache
def peer_missing(module: str) -> str | None:
    """Why a peer cannot run (None: it can)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip this peer
        return (
            f"peer {module} is not installed ({type(exc).__name__}: {exc}); pip install '.[peers]'"
        )
    return None


def unavailable(impl: Implementation) -> str | None:
    """Why an implementation is skipped here (a missing backend or peer); None: it runs."""
    if impl.backend is not None and impl.backend not in jacgeom.backends():
        return f"backend {impl.backend!r} is not available in this installation"
    if impl.requires is not None:
        return peer_missing(impl.requires)
    return None


# ---------------------------------------------------------------------------------------
# masked_rank (issue 3): rank(W[mask_b]) for many masks against one W.


@dataclass(frozen=True)
class MaskInputs(_SampleBatch):
    """W (m, n) and masks (B, m) bool."""

    _samples: ClassVar[str] = "masks"
    W: np.ndarray
    masks: np.ndarray

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.W.dtype


def mask_inputs(w: Workload) -> MaskInputs:
    """W Gaussian (m, n); B Bernoulli(1/2) masks of its rows."""
    rng = np.random.default_rng(np.random.SeedSequence(w.seed))
    W = rng.standard_normal((w.m, w.n)).astype(w.dtype)
    masks = rng.random((w.B, w.m)) < 0.5
    return MaskInputs(W, masks)


def naive_masked_rank(inp: MaskInputs) -> Callable[[], np.ndarray]:
    W, masks = inp.W, inp.masks
    return _one_blas_thread(
        lambda: np.array([np.linalg.matrix_rank(W[m]) for m in masks], dtype=np.int64)
    )


def stacked_masked_rank(inp: MaskInputs) -> Callable[[], np.ndarray]:
    """matrix_rank of the stacked (B, m, n) array with the masked rows zeroed."""
    W, masks = inp.W, inp.masks
    return _one_blas_thread(lambda: np.linalg.matrix_rank(W * masks[:, :, None]))


def masked_rank_backend(backend: str) -> Prepare:
    def prepare(inp: MaskInputs) -> Callable[[], np.ndarray]:
        return lambda: jacgeom.masked_rank(inp.W, inp.masks, backend=backend)

    return prepare


def compare_ranks(actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Ranks are integers: equal, sample by sample (peers may return int32)."""
    actual = np.asarray(actual)
    assert np.issubdtype(actual.dtype, np.integer), f"ranks of dtype {actual.dtype}"
    bad = np.flatnonzero(actual.astype(np.int64) != expected)
    assert bad.size == 0, (
        f"rank differs from the reference at {bad.size} of {expected.size} checked samples; "
        f"first: {actual[bad[0]]} vs {expected[bad[0]]}"
    )


def work_masked_rank(w: Workload) -> Work:
    k = w.inputs().masks.sum(axis=1).astype(np.float64)
    q = np.minimum(k, w.n)
    return Work(
        float(np.sum(q**3 / 3 + np.where(k > w.n, k * w.n * w.n, 0.0))),
        "flops",
        "Σ_b (q_b³/3 + [k_b > n]·k_b·n²) flops, k_b = kept rows, q_b = min(k_b, n): a "
        "Cholesky of the q_b × q_b Gram matrix (gathered from a precomputed W Wᵀ when "
        "k_b ≤ n, a syrk of the kept rows otherwise) / gemm rate; deduplicating masks can "
        "beat it (16 rows have at most 65,536 distinct masks)",
    )


# ---------------------------------------------------------------------------------------
# Network.jacobian, .rank, .singular_values (issue 4): L layers of width m on n = n0 inputs.

NETWORK_SEED = 0


@dataclass(frozen=True)
class NetworkInputs(_SampleBatch):
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

    return _one_blas_thread(run)


def naive_network_rank(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    layers, X = _numpy_layers(inp), inp.X
    return _one_blas_thread(
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

    return _one_blas_thread(run)


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
        return _one_blas_thread(lambda: np.linalg.matrix_rank(J))()

    return run


def vectorised_network_singular_values(inp: NetworkInputs) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        J = _stacked_network_jacobian(inp)
        return _one_blas_thread(lambda: np.linalg.svd(J, compute_uv=False))()

    return run


def network_backend(method: str, backend: str) -> Prepare:
    def prepare(inp: NetworkInputs) -> Callable[[], np.ndarray]:
        fn = getattr(inp.net, method)
        return lambda: fn(inp.X, backend=backend)

    return prepare


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


def _network_reference(function: str) -> Callable[[NetworkInputs], np.ndarray]:
    fn = getattr(reference_network, function)
    return lambda inp: fn(inp.net, inp.X)


def compare_network_jacobian(
    actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]
) -> None:
    _check_dtype(actual, dtype)
    tol = 1e-4 if _is_float32(dtype) else 1e-10
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    _assert_within(actual, expected, tol * scale, "Network.jacobian")


def compare_network_singular_values(
    actual: np.ndarray, expected: np.ndarray, dtype: np.dtype[Any]
) -> None:
    _check_dtype(actual, dtype)
    tol = 1e-4 if _is_float32(dtype) else 1e-10
    _assert_within(actual, expected, tol * expected[:, :1], "Network.singular_values")


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


def _peers(reduce: str | None, slow_jacfwd: bool) -> tuple[Implementation, ...]:
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


def _network_backends(method: str) -> tuple[Implementation, ...]:
    return tuple(
        Implementation(be, network_backend(method, be), backend=be) for be in ("cpp", "numba")
    )


KERNELS.update(
    {
        k.name: k
        for k in (
            Kernel(
                name="masked_rank",
                family="rank",
                implementations=(
                    Implementation(NAIVE, naive_masked_rank, slow=True),
                    Implementation(
                        VECTORISED,
                        stacked_masked_rank,
                        slow=True,
                        note="np.linalg.matrix_rank(W * mask[:, :, None]); its tolerance "
                        "uses max(m, n), not the kept rows",
                    ),
                    *(
                        Implementation(be, masked_rank_backend(be), backend=be)
                        for be in ("cpp", "numba")
                    ),
                ),
                reference=lambda inp: reference.masked_rank(inp.W, inp.masks),
                compare=compare_ranks,
                work=work_masked_rank,
                result_shape=lambda B, m, n: (B,),
            ),
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
                    *_peers(None, slow_jacfwd=True),
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
                    *_peers("rank", slow_jacfwd=False),
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
                    *_peers("singular_values", slow_jacfwd=False),
                    *_network_backends("singular_values"),
                ),
                reference=_network_reference("singular_values"),
                compare=compare_network_singular_values,
                work=work_network_reduction,
                result_shape=lambda B, m, n: (B, min(m, n)),
            ),
        )
    }
)

MASK_KERNELS = ("masked_rank",)
NETWORK_JACOBIAN_KERNELS = ("network_jacobian",)
NETWORK_REDUCTION_KERNELS = ("network_rank", "network_singular_values")


LAYER_KERNELS = ("layer_jacobian", "pullback_metric", "layer_singular_values", "log_volume")
# log_volume needs m >= n.
WIDE_LAYER_KERNELS = LAYER_KERNELS[:3]


# ---------------------------------------------------------------------------------------
# The workloads


def mask_workload(
    name: str,
    B: int,
    m: int,
    n: int,
    seed: int,
    rounds: int,
    slice_samples: int | None = None,
    dtype: str = "float64",
) -> Workload:
    """masked_rank on B Bernoulli(1/2) masks of a Gaussian m × n W."""
    return Workload(
        name,
        B=B,
        m=m,
        n=n,
        dtype=dtype,
        activation="",
        seed=seed,
        kernels=MASK_KERNELS,
        rounds=rounds,
        slice_samples=slice_samples,
        check_samples=32,
        generate=mask_inputs,
        what=f"W {m}×{n} Gaussian, B={B:,} Bernoulli(1/2) masks",
    )


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


def _issue4_networks() -> tuple[Workload, ...]:
    """Issue 4's sizes: L = 16, widths 128; the Jacobian at B = 1024 in float64 and float32,
    rank and singular values at B = 256 (float64). The naive loops time the first samples."""
    jac = tuple(
        network_workload(
            f"net-{act}-L16-w128-B1024-{dtype}",
            B=1024,
            depth=16,
            width=128,
            dtype=dtype,
            activation=act,
            seed=20240641 + i,
            kernels=NETWORK_JACOBIAN_KERNELS,
            rounds=3,
            slice_samples=128,
        )
        for i, (act, dtype) in enumerate(
            [(a, d) for a in ("tanh", "relu") for d in ("float64", "float32")]
        )
    )
    red = tuple(
        network_workload(
            f"net-{act}-L16-w128-B256-float64",
            B=256,
            depth=16,
            width=128,
            dtype="float64",
            activation=act,
            seed=20240651 + i,
            kernels=NETWORK_REDUCTION_KERNELS,
            rounds=3,
            slice_samples=64,
        )
        for i, act in enumerate(("tanh", "relu"))
    )
    return jac + red


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
        mask_workload("quick-mask-64x64-B512", B=512, m=64, n=64, seed=20240621, rounds=5),
        mask_workload(
            "quick-mask-16x16-B20000",
            B=20000,
            m=16,
            n=16,
            seed=20240622,
            rounds=5,
            slice_samples=2000,
        ),
        network_workload(
            "quick-net-relu-L4-w32-B128-float64",
            B=128,
            depth=4,
            width=32,
            dtype="float64",
            activation="relu",
            seed=20240631,
            kernels=NETWORK_JACOBIAN_KERNELS + NETWORK_REDUCTION_KERNELS,
            rounds=5,
        ),
        network_workload(
            "quick-net-tanh-L4-w32-B128-float32",
            B=128,
            depth=4,
            width=32,
            dtype="float32",
            activation="tanh",
            seed=20240632,
            kernels=NETWORK_JACOBIAN_KERNELS + NETWORK_REDUCTION_KERNELS,
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
        # Issue 3's sizes. The naive loop and the stacked matrix_rank time the first 64
        # (20,000 for 16 x 16) masks; the stacked (2,048, 512, 256) array alone is 2 GiB.
        mask_workload(
            "mask-256x256-B2048-float64",
            B=2048,
            m=256,
            n=256,
            seed=20240621,
            rounds=3,
            slice_samples=64,
        ),
        mask_workload(
            "mask-512x256-B2048-float64",
            B=2048,
            m=512,
            n=256,
            seed=20240622,
            rounds=3,
            slice_samples=64,
        ),
        mask_workload(
            "mask-16x16-B1000000-float64",
            B=1_000_000,
            m=16,
            n=16,
            seed=20240623,
            rounds=3,
            slice_samples=20000,
        ),
        *_issue4_networks(),
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
