"""The machine a benchmark runs on: its floor (copy bandwidth and gemm rates, measured in the
same process and run as the kernels), its description, and the load of other processes.

The floor: the copy bandwidth (np.copyto between two preallocated, touched float64 arrays of
about 1 GB; bytes read + written per second) for memory-bound kernels, the dgemm / sgemm rate
(numpy matmul of two 2048 x 2048 matrices into a preallocated result, 2 n^3 flops per call)
for compute-bound ones. Medians throughout.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import jacgeom

# ---------------------------------------------------------------------------------------
# Floor


@dataclass(frozen=True)
class Floor:
    copy_bandwidth: float  # bytes read + written per second
    gemm_rate: dict[str, float]  # flops per second, by dtype name
    copy_bytes: int
    gemm_size: int
    measurements: int = 1
    # bytes per second written into a freshly allocated array (np.empty, then fill): what a
    # kernel that returns a new result can reach at best, since the system zeroes each new
    # page first; quoted beside the floor, not used as one.
    fresh_write_bandwidth: float = 0.0

    def best(self, other: Floor) -> Floor:
        """The higher rates of two measurements (start and end of a run): a floor is the
        fastest the machine was seen to do the work, and other load only slows it."""
        return Floor(
            max(self.copy_bandwidth, other.copy_bandwidth),
            {k: max(v, other.gemm_rate[k]) for k, v in self.gemm_rate.items()},
            self.copy_bytes,
            self.gemm_size,
            self.measurements + other.measurements,
            max(self.fresh_write_bandwidth, other.fresh_write_bandwidth),
        )

    def seconds(self, amount: float, unit: str, dtype: str) -> float | None:
        if amount <= 0:
            return None
        if unit == "bytes":
            return amount / self.copy_bandwidth
        return amount / self.gemm_rate[dtype]

    def describe(self) -> str:
        rates = ", ".join(
            f"{'d' if k == 'float64' else 's'}gemm {v / 1e9:.1f} GFLOP/s"
            for k, v in self.gemm_rate.items()
        )
        return (
            f"copy bandwidth {self.copy_bandwidth / 1e9:.2f} GB/s (np.copyto of "
            f"{self.copy_bytes / 2**30:.0f} GiB float64, read + written); a fresh array "
            f"written once (np.empty, then fill): {self.fresh_write_bandwidth / 1e9:.2f} GB/s; "
            f"{rates} "
            f"(numpy matmul {self.gemm_size} x {self.gemm_size}); medians of 5 calls, the "
            f"best of {self.measurements} such measurements (start and end of the run)"
        )


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _copy_seconds(nbytes: int, repeats: int) -> float:
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)  # both touched: no first-touch page faults in the timing
    return _median_time(lambda: np.copyto(dst, src), repeats)


def _fresh_fill_seconds(nbytes: int, repeats: int) -> float:
    def fill() -> None:
        a = np.empty(nbytes // 8)
        a.fill(1.0)

    return _median_time(fill, repeats)


def measure_floor(copy_bytes: int = 2**30, gemm_size: int = 2048, repeats: int = 5) -> Floor:
    """Copy bandwidth and gemm rates, medians over ``repeats`` after one untimed call."""
    t_copy = _copy_seconds(copy_bytes, repeats)
    t_fresh = _fresh_fill_seconds(copy_bytes, repeats)
    rng = np.random.default_rng(0)
    rates = {}
    for dtype in ("float64", "float32"):
        A = rng.standard_normal((gemm_size, gemm_size)).astype(dtype)
        B = rng.standard_normal((gemm_size, gemm_size)).astype(dtype)
        C = np.empty_like(A)
        t = _median_time(lambda A=A, B=B, C=C: np.matmul(A, B, out=C), repeats)
        rates[dtype] = 2.0 * gemm_size**3 / t
    return Floor(2.0 * copy_bytes / t_copy, rates, copy_bytes, gemm_size, 1, copy_bytes / t_fresh)


# ---------------------------------------------------------------------------------------
# Machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "?"


def _blas_lines() -> list[str]:
    from threadpoolctl import threadpool_info

    lines = []
    libs = sorted(threadpool_info(), key=lambda lib: (lib.get("user_api", ""), lib["filepath"]))
    for lib in libs:
        details = [str(lib[key]) for key in ("architecture", "threading_layer") if lib.get(key)]
        details.append(f"{lib.get('num_threads')} threads")
        version = f" {lib['version']}" if lib.get("version") else ""
        lines.append(
            f"{lib.get('user_api')}: {lib.get('internal_api')}{version} "
            f"({', '.join(details)}) {os.path.basename(lib['filepath'])}"
        )
    return lines


def _peers_line() -> str:
    """Versions of the optional peers (from their metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "jax", "jaxlib"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return "peers: " + ", ".join(found) + " (torch on all cores; JAX on CPU with x64 enabled)"


def machine_lines() -> list[str]:
    """The machine, as printed beside every table."""
    import numba
    import scipy

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    lines = [
        f"CPU: {_cpu_model()}, {cores} logical cores ({usable} usable), {_memory()} memory",
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"numba {numba.__version__}, jacgeom {jacgeom.__version__} "
        f"(backends {', '.join(jacgeom.backends())}; {jacgeom.get_num_threads()} threads)",
    ]
    core = jacgeom._backends.core
    if core is not None and hasattr(core, "vector_math"):  # builds before it: libm's
        path = "glibc libmvec's four-lane erfc and exp" if core.vector_math() else "libm's erfc"
        lines.append(f"gelu, gelu', tanh' on cpp: {path}")
    lines += _blas_lines()
    lines.append(_peers_line())
    for var in (
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "JACGEOM_NUM_THREADS",
        "NUMBA_NUM_THREADS",
    ):
        value = os.environ.get(var)
        if value is not None:
            lines.append(f"{var}={value}")
    if "OPENBLAS_CORETYPE" not in os.environ and "OPENBLAS_L2_SIZE" not in os.environ:
        lines.append("OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE: not set")
    return lines


def machine_summary() -> str:
    """One line: CPU, cores, numpy, the BLAS libraries loaded (numpy's and scipy's)."""
    from threadpoolctl import threadpool_info

    blas = sorted(
        (lib for lib in threadpool_info() if lib.get("user_api") == "blas"),
        key=lambda lib: lib["filepath"],
    )
    libs = "; ".join(
        f"{lib.get('internal_api')} {lib.get('version')} {os.path.basename(lib['filepath'])} "
        f"({lib.get('architecture')}, {lib.get('num_threads')} threads)"
        for lib in blas
    )
    return f"{_cpu_model()}, {os.cpu_count()} cores, numpy {np.__version__}, BLAS: {libs}"


class LoadMonitor:
    """CPU time that *other* processes used while we measured, in cores (0 = a quiet machine).

    Busy time of the whole machine (/proc/stat) minus this process's CPU time (all its
    threads), over the wall time. On a shared machine this says which medians to distrust.
    """

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._busy = _machine_busy_seconds()

    def others(self) -> float | None:
        busy = _machine_busy_seconds()
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        return max(0.0, (busy - self._busy - own) / wall) if wall > 0 else None


def _machine_busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")
