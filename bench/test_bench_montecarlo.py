"""Monte Carlo throughput (issue 5), outside pytest-benchmark: see throughput.py for why.

Each experiment of the selected set is timed as a whole (samples per second of the naive
loop, of numpy's generator alone and of montecarlo.run with 1 and 2 workers) and checked:
the run's ranks follow the naive loop's distribution and do not depend on the number of
workers. Speed never fails the test; the numbers go to the summary at the end. Under
--benchmark-disable every row runs once.
"""

from __future__ import annotations

import dataclasses

import pytest
import throughput


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "experiment" in metafunc.fixturenames:
        selected = throughput.EXPERIMENTS[metafunc.config.getoption("workloads")]
        metafunc.parametrize("experiment", selected, ids=[e.name for e in selected])


def test_montecarlo_throughput(
    experiment: throughput.Experiment,
    request: pytest.FixtureRequest,
    throughput_results: list[throughput.Row],
) -> None:
    if request.config.getoption("benchmark_disable", False):
        experiment = dataclasses.replace(experiment, repeats=1)
    # One attempt: like the pytest-benchmark tests, no re-timing while the machine is busy
    # (the report does that); each row's load is shown beside it.
    throughput_results.extend(throughput.measure(experiment, attempts=1))
