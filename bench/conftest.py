"""pytest-benchmark configuration: --workloads, the floor fixture, the machine and a summary.

    python -m pytest bench -q --workloads quick     # CI-sized, well under 3 minutes
    python -m pytest bench -q --workloads full      # issue 2's sizes (B=4096, m=n=256)

Speed never fails a test: every benchmark asserts its answer against jacgeom.reference,
nothing asserts a time. ``--benchmark-disable`` turns the suite into a correctness check
(one call per case, no timing).
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
from workloads import WORKLOAD_SETS


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


@pytest.fixture(scope="session")
def floor() -> harness.Floor:
    """Copy bandwidth and dgemm / sgemm rates, measured before the benchmarks (and again
    after them for the summary, which uses the better of the two)."""
    measured = harness.measure_floor()
    _FLOOR.append(measured)
    return measured


@pytest.fixture(scope="session")
def bench_results() -> list[harness.Measurement]:
    """Medians recorded by the benchmarks, summarised at the end of the session."""
    return _RESULTS


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _RESULTS or not _FLOOR:
        return
    tr = terminalreporter
    tr.write_sep("=", "jacgeom benchmark summary (medians; ratios and floor from this run)")
    for line in harness.machine_lines():
        tr.write_line(line)
    tr.write_line("")
    floor = _FLOOR[0].best(harness.measure_floor())  # measured again after the kernels
    tr.write_line(harness.markdown_tables(_RESULTS, floor))
