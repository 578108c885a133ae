"""Monte Carlo throughput (issue 5), outside pytest-benchmark: see throughput.py for why.

Each experiment of the selected set is timed as a whole (samples per second of the naive
loop, of numpy's generator alone and of montecarlo.run with 1 and 2 workers) and checked:
the run's ranks follow the naive loop's distribution and do not depend on the number of
workers. Speed never fails the test; the numbers go to the summary at the end. Under
--benchmark-disable every row runs once.
"""

from __future__ import annotations

import dataclasses

import peak_rss
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


@pytest.mark.parametrize("samples", [100_000, 400_000])
def test_montecarlo_peak_rss(samples: int, request: pytest.FixtureRequest) -> None:
    # Summaries, not samples: the checkpoint directory holds one small summary per chunk,
    # whatever the chunk's size, and the run's P(rank-deficient) interval contains the
    # closed form. Peak RSS (flat in the sample count: compare the two rows) is printed;
    # memory, like time, never fails the test.
    got = peak_rss.peak_rss(samples, chunk_size=100_000, workers=2)
    print(f"\n16x16 relu, {samples:,} samples: {got}")
    assert got["directory_mb"] < 1.0
    p = got["p_exact_rank_deficient"]
    assert p["lo"] <= got["theory"] <= p["hi"]
