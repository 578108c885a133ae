"""pytest-benchmark configuration: --workloads, the floor fixture, the machine and a summary.

    python -m pytest bench -q --workloads quick     # CI-sized, well under 3 minutes
    python -m pytest bench -q --workloads full      # the sizes of docs/benchmarks.md

Speed never fails a test: every benchmark asserts its answer against jacgeom.reference,
nothing asserts a time. ``--benchmark-disable`` turns the suite into a correctness check
(one call per case, no timing, no floor measured, no summary): the step of .ci/run

    python -m pytest bench -q --benchmark-disable
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
import throughput
from registry import WORKLOAD_SETS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--workloads",
        choices=WORKLOAD_SETS,
        default="quick",
        help="benchmark workload set of bench/workloads.py (default: quick)",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"workloads: {config.getoption('workloads')}", *harness.machine_lines()]


_RESULTS: list[harness.Measurement] = []
_FLOOR: list[harness.Floor] = []
_THROUGHPUT: list[throughput.Row] = []


def _timing(config: pytest.Config) -> bool:
    return not config.getoption("benchmark_disable", False)


@pytest.fixture(scope="session")
def floor(request: pytest.FixtureRequest) -> harness.Floor:
    """Copy bandwidth and dgemm / sgemm rates, measured before the benchmarks (and again
    after them for the summary, which uses the better of the two). Under
    --benchmark-disable nothing reads it: a token measurement on small sizes instead of
    the seconds of the real one."""
    if not _timing(request.config):
        return harness.measure_floor(copy_bytes=2**16, gemm_size=16, repeats=1)
    measured = harness.measure_floor()
    _FLOOR.append(measured)
    return measured


@pytest.fixture(scope="session")
def bench_results() -> list[harness.Measurement]:
    """Medians recorded by the benchmarks, summarised at the end of the session."""
    return _RESULTS


@pytest.fixture(scope="session")
def throughput_results() -> list[throughput.Row]:
    """Monte Carlo throughput rows, summarised at the end of the session."""
    return _THROUGHPUT


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _timing(config):
        # one call per case: the answers were checked, the times mean nothing
        return
    if not (_RESULTS and _FLOOR) and not _THROUGHPUT:
        return
    tr = terminalreporter
    tr.write_sep("=", "jacgeom benchmark summary (medians; ratios and floor from this run)")
    for line in harness.machine_lines():
        tr.write_line(line)
    tr.write_line("")
    if _RESULTS and _FLOOR:
        floor = _FLOOR[0].best(harness.measure_floor())  # measured again after the kernels
        tr.write_line(harness.markdown_tables(_RESULTS, floor))
        tr.write_line("")
    if _THROUGHPUT:
        tr.write_line(throughput.markdown(_THROUGHPUT))
