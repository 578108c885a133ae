"""Single-layer kernels: naive numpy loop vs vectorised numpy vs each jacgeom backend.

One pytest-benchmark group per (workload, kernel). Each benchmark warms up first (numba JIT,
thread pools; not timed), is timed with ``workload.rounds`` rounds and asserts its result
against jacgeom.reference on a few samples (not timed). Implementations that loop over
samples at the full size are timed on the first ``slice_samples`` samples; their recorded
times are scaled by B / slice_samples and their test id says "extrapolated".
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
from workloads import Implementation, Kernel, Workload, cases

import jacgeom


def _case_id(case: tuple[Workload, Kernel, Implementation]) -> str:
    w, kernel, impl = case
    name = impl.name.replace(" (out=)", "_out")
    if impl.slow and w.slice_samples and w.slice_samples < w.B:
        name += f"_extrapolated_x{w.B // w.slice_samples}"
    return f"{w.name}:{kernel.name}:{name}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "layer_case" in metafunc.fixturenames:
        selected = cases(metafunc.config.getoption("workloads"), family="layer")
        metafunc.parametrize("layer_case", selected, ids=[_case_id(c) for c in selected])


def _extrapolate(benchmark: Any, scale: float) -> None:
    """Scale the recorded round times of a sliced run to all B samples.

    pytest-benchmark has no public hook for this; its Stats keeps the raw durations in a
    list and derives every statistic lazily from it, so scaling that list before anything
    reads it scales the whole report (table, --benchmark-json).
    """
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    data = getattr(stats, "data", None)
    if not isinstance(data, list):
        raise RuntimeError("cannot scale pytest-benchmark's timings (internals changed?)")
    data[:] = [t * scale for t in data]


def test_layer_kernel(
    benchmark: Any,
    layer_case: tuple[Workload, Kernel, Implementation],
    floor: harness.Floor,
    bench_results: list[harness.Measurement],
) -> None:
    workload, kernel, impl = layer_case
    if impl.backend is not None and impl.backend not in jacgeom.backends():
        pytest.skip(f"backend {impl.backend!r} is not available in this installation")
    case = harness.prepare_case(workload, kernel, impl)
    benchmark.group = f"{workload.name} {kernel.name}"
    benchmark.extra_info.update(
        samples=workload.B, samples_timed=case.count, scale=case.scale, note=impl.note
    )

    load = harness.LoadMonitor()
    result = benchmark.pedantic(case.call, rounds=workload.rounds, iterations=1)
    others_load = load.others()

    timed = benchmark.stats is not None  # None under --benchmark-disable
    if timed and case.extrapolated:
        _extrapolate(benchmark, case.scale)
    diagnosis = harness.check_case(case, result)
    if diagnosis:
        benchmark.extra_info["diagnosis"] = diagnosis
    if timed:
        floor_s, _ = harness.floor_of(kernel, workload, floor)
        benchmark.extra_info.update(floor_s=floor_s, others_load_cores=others_load)
        bench_results.append(
            harness.Measurement(
                workload,
                kernel,
                impl,
                list(benchmark.stats.stats.data),
                case.count,
                others_load,
                diagnosis,
            )
        )
