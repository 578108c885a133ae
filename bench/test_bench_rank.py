"""masked_rank (issue 3): the naive loop of np.linalg.matrix_rank(W[mask]), matrix_rank on
the stacked (B, m, n) array with masked rows zeroed, and each backend.

One pytest-benchmark group per workload; see suite.py for what each test does.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
import suite


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    suite.parametrize(metafunc, "rank_case", family="rank")


def test_rank_kernel(
    benchmark: Any,
    rank_case: suite.Case,
    floor: harness.Floor,
    bench_results: list[harness.Measurement],
) -> None:
    suite.run_case(benchmark, rank_case, floor, bench_results)
