"""Single-layer kernels (issue 2): naive numpy loop vs vectorised numpy vs each backend.

One pytest-benchmark group per (workload, kernel); see suite.py for what each test does.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
import suite


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    suite.parametrize(metafunc, "layer_case", family="layer")


def test_layer_kernel(
    benchmark: Any,
    layer_case: suite.Case,
    floor: harness.Floor,
    bench_results: list[harness.Measurement],
) -> None:
    suite.run_case(benchmark, layer_case, floor, bench_results)
