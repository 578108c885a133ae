"""The types of the benchmark registry: workloads, kernels, implementations, work models.

A *workload* fixes sizes, dtype, activation and a seed; its inputs come from a numpy
Generator seeded with that seed, so every run times (and checks) the same numbers. A *kernel*
lists its implementations (the naive numpy loop a user writes first, the vectorised numpy
expression, each jacgeom backend, peers such as torch.func and JAX), the reference it is
checked against and its work model (bytes or flops) from which the floor is derived. The
pytest suite (test_bench_*.py) and the report (report.py) both read the registry: what is
timed is also what is checked.

The layout mirrors the package: this module holds the types; baselines.py and checks.py the
pieces the numpy baselines and the reference checks share; one module per kernel family
holds its inputs, implementations, checks, work models and kernels (layer.py: the
single-layer kernels, issue 2; rank.py: masked_rank, issue 3; network.py: Network.jacobian /
.rank / .singular_values, issue 4); peers.py the torch.func and JAX implementations; and
workloads.py the workload tables and :data:`workloads.KERNELS`, every family's kernels. The
Monte Carlo throughput of issue 5 is not a kernel on shared inputs; it lives in
throughput.py.

Adding a kernel: in its family's module write the ``prepare`` functions of its
implementations (inputs -> zero-argument callable; allocation, compilation and other set-up
belong in ``prepare``, outside the timing), a ``compare``, a ``work`` model and a
``result_shape``, and add a :class:`Kernel` with a ``family`` (the test module
test_bench_<family>.py that runs it) to the module's ``KERNELS``; name it in the ``kernels``
of the workloads (workloads.py) that should run it. A new family needs its module, its
``KERNELS`` merged in workloads.py, a three-line test module like test_bench_rank.py and an
entry in report.FAMILIES. A kernel with other inputs gets its own ``Inputs`` type and
``generate`` function (see rank.MaskInputs, network.NetworkInputs); the harness only needs
``head`` (the first samples) and ``take`` (a subset, for the reference check). An
implementation that needs an optional package names its module in ``requires`` and is
skipped, with the reason, where that package is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import Any, ClassVar

import numpy as np

import jacgeom

WORKLOAD_SETS = ("quick", "full")
NAIVE = "naive"
VECTORISED = "vectorised"


# ---------------------------------------------------------------------------------------
# Workloads and their inputs


class SampleBatch:
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
    # The seeded inputs of this workload: a family's ``*_inputs`` function.
    generate: Callable[[Workload], Any] = field(repr=False, compare=False)
    slice_samples: int | None = None
    check_samples: int = 8
    depth: int = 1  # layers L of a network workload (widths [n] + [m] * L)
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


@lru_cache(maxsize=8)
def _inputs(w: Workload) -> Any:
    return w.generate(w)


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


# ---------------------------------------------------------------------------------------
# Optional implementations: an implementation that ``requires`` a peer (torch.func, JAX) is
# skipped with a message when it is not installed (pip install ".[peers]"), one that needs a
# jacgeom backend where that backend is not built.


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
