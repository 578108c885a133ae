"""Network.jacobian, .rank and .singular_values (issue 4): the per-sample numpy loop,
vectorised numpy on the stacked Jacobians, torch.func and JAX when installed (skipped with a
message otherwise), and each backend.

One pytest-benchmark group per (workload, kernel); see suite.py for what each test does.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
import suite


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    suite.parametrize(metafunc, "network_case", family="network")


def test_network_kernel(
    benchmark: Any,
    network_case: suite.Case,
    floor: harness.Floor,
    bench_results: list[harness.Measurement],
) -> None:
    suite.run_case(benchmark, network_case, floor, bench_results)
