"""The body of every pytest-benchmark test: one (workload, kernel, implementation) case.

Each test module (test_bench_<family>.py) parametrises over the cases of its family with
:func:`parametrize` and calls :func:`run_case`. A case warms up first (numba JIT, thread
pools, JAX compilation; not timed), is timed with ``workload.rounds`` rounds and asserts its
result against jacgeom.reference on a few samples (not timed). Implementations that loop
over samples are timed on the first ``slice_samples`` samples at the full size; their
recorded times are scaled by B / slice_samples and their test id says "extrapolated".
Backends missing from this installation and peers (torch, JAX) that are not installed are
skipped with the reason, never failed.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
from registry import Implementation, Kernel, Workload, unavailable
from workloads import cases

Case = tuple[Workload, Kernel, Implementation]


def case_id(case: Case) -> str:
    w, kernel, impl = case
    name = impl.name.replace(" (out=)", "_out").replace(" ", "_")
    if impl.slow and w.slice_samples and w.slice_samples < w.B:
        name += f"_extrapolated_x{w.B // w.slice_samples}"
    return f"{w.name}:{kernel.name}:{name}"


def parametrize(metafunc: pytest.Metafunc, fixture: str, family: str) -> None:
    if fixture in metafunc.fixturenames:
        selected = cases(metafunc.config.getoption("workloads"), family=family)
        metafunc.parametrize(fixture, selected, ids=[case_id(c) for c in selected])


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


def run_case(
    benchmark: Any,
    case: Case,
    floor: harness.Floor,
    bench_results: list[harness.Measurement],
) -> None:
    workload, kernel, impl = case
    reason = unavailable(impl)
    if reason:
        pytest.skip(reason)
    prepared = harness.prepare_case(workload, kernel, impl)
    benchmark.group = f"{workload.name} {kernel.name}"
    benchmark.extra_info.update(
        samples=workload.B, samples_timed=prepared.count, scale=prepared.scale, note=impl.note
    )

    load = harness.LoadMonitor()
    result = benchmark.pedantic(prepared.call, rounds=workload.rounds, iterations=1)
    others_load = load.others()

    timed = benchmark.stats is not None  # None under --benchmark-disable
    if timed and prepared.extrapolated:
        _extrapolate(benchmark, prepared.scale)
    diagnosis = harness.check_case(prepared, result)
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
                prepared.count,
                others_load,
                diagnosis,
            )
        )
