"""Monte Carlo throughput (issue 5): samples per second of jacgeom.montecarlo.run.

Not in the kernel registry of workloads.py: a Monte Carlo run draws its own inputs from its
seed, so there are no shared inputs to time several implementations on and check sample by
sample. Instead each experiment here is timed as a whole, in samples per second, against

- the straightforward numpy loop a user writes first: per sample, draw the weights and x,
  multiply, mask by the relu active set, np.linalg.matrix_rank;
- the generator's own rate for the same normals (numpy's Generator on SFC64, as the run's
  chunks use, ``standard_normal`` in chunks of the run's chunk size into a reused buffer), in one
  thread and in two threads with a generator each: every sample needs
  sum_l n_l n_(l-1) + n_0 fresh normals, so this is the ceiling of any implementation that
  draws them with numpy;
- jacgeom.montecarlo.run(spec, progress=False, workers=w) for w = 1 and 2, and w = 1 with
  jacgeom.set_num_threads(1): one worker on one core, the base of the scaling ratio (with
  workers=1 alone the compiled kernels inside the chunk use both cores);
- the per-sample path that run took before its chunks returned mergeable summaries (issue
  18): the same chunks' chunk_statistics on a pool of 2 threads, their per-sample arrays
  concatenated in chunk order; run with summaries must stay within 5% of it. The two are
  timed in alternating rounds (run first in even rounds, the per-sample path in odd ones),
  and their ratio is the median over rounds of the per-round ratio, so that a change in the
  machine's load between the two rows does not decide it.

Peak memory against the sample count is measured by peak_rss.py.

The check: the naive loop's and the run's mean end-to-end rank agree within 5 standard
errors (they draw different samples of the same distribution), and for the one-layer case
the run's P(rank-deficient) interval contains the closed form 1 - 2^-n.

    python bench/report.py --workloads full --families montecarlo   # this section only
    python bench/throughput.py --rounds 21 mc-16x16    # summaries vs per-sample path only
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import harness
import numpy as np

import jacgeom
from jacgeom import montecarlo
from jacgeom.montecarlo.sampling import chunk_rng


@dataclass(frozen=True)
class Experiment:
    """One Monte Carlo experiment: fresh He-init relu weights per sample, zero biases."""

    name: str
    widths: tuple[int, ...]
    samples: int  # for montecarlo.run and the generator
    chunk_size: int
    naive_samples: int  # the naive loop is timed on this many and quoted per second
    repeats: int = 3

    @property
    def rounds(self) -> int:
        """Alternating rounds of the run against the per-sample path."""
        return max(3, 2 * self.repeats + 1)

    def spec(self, samples: int | None = None, **fields: Any) -> montecarlo.Spec:
        return montecarlo.Spec(
            widths=self.widths,
            samples=self.samples if samples is None else samples,
            chunk_size=self.chunk_size,
            **fields,
        )

    @property
    def normals_per_sample(self) -> int:
        w = self.widths
        return w[0] + sum(a * b for a, b in zip(w[1:], w[:-1], strict=True))

    def describe(self) -> str:
        L, width = len(self.widths) - 1, self.widths[-1]
        shape = f"one {width}×{self.widths[0]} layer" if L == 1 else f"L={L}, widths {width}"
        return (
            f"{shape}, fresh He relu weights and Gaussian x per sample, end-to-end rank; "
            f"{self.samples:,} samples in chunks of {self.chunk_size:,}; "
            f"{self.normals_per_sample:,} normals per sample"
        )


EXPERIMENTS: dict[str, tuple[Experiment, ...]] = {
    "quick": (
        Experiment("quick-mc-16x16", (16, 16), 40_000, 10_000, 2_000, repeats=1),
        Experiment("quick-mc-relu-L10-w64", (64,) * 11, 1_000, 250, 200, repeats=1),
    ),
    # Issue 5's two cases.
    "full": (
        Experiment("mc-16x16", (16, 16), 400_000, 20_000, 20_000),
        Experiment("mc-relu-L10-w64", (64,) * 11, 10_000, 1_000, 2_000),
    ),
}

NAIVE = "naive numpy loop"
GENERATOR_1 = "generator only, 1 thread"
GENERATOR_2 = "generator only, 2 threads"
RUN_1 = "montecarlo.run workers=1"
RUN_1_CORE = "montecarlo.run workers=1, kernels on 1 thread"
RUN_2 = "montecarlo.run workers=2"
RUN_2_RANK = "montecarlo.run workers=2, end-to-end rank only"
PER_SAMPLE_2 = "per-sample arrays, 2 threads (the path before summaries)"


# ---------------------------------------------------------------------------------------
# What is timed


def naive_ranks(widths: Sequence[int], samples: int, seed: int = 1) -> np.ndarray:
    """The loop a user writes first: draw, multiply, mask, np.linalg.matrix_rank."""
    rng = np.random.default_rng(seed)
    scales = [math.sqrt(2.0 / fan_in) for fan_in in widths[:-1]]
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    ranks = np.empty(samples, dtype=np.int64)
    if len(pairs) == 1:
        (n, m), scale = pairs[0], scales[0]
        for i in range(samples):
            W = rng.standard_normal((m, n)) * scale
            x = rng.standard_normal(n)
            ranks[i] = np.linalg.matrix_rank(W[W @ x > 0])
        return ranks
    for i in range(samples):
        h, J = rng.standard_normal(widths[0]), None
        for (fan_in, fan_out), scale in zip(pairs, scales, strict=True):
            W = rng.standard_normal((fan_out, fan_in)) * scale
            z = W @ h
            A = (z > 0)[:, None] * W
            h = np.maximum(z, 0)
            J = A if J is None else A @ J
        ranks[i] = np.linalg.matrix_rank(J)
    return ranks


def per_sample_run(spec: montecarlo.Spec, workers: int) -> dict[str, np.ndarray]:
    """What run did before summaries: every chunk's per-sample arrays on a thread pool
    (kernels on one thread), concatenated in chunk order."""
    import concurrent.futures as cf

    before = jacgeom.get_num_threads()
    jacgeom.set_num_threads(1)
    try:
        with cf.ThreadPoolExecutor(workers) as pool:
            parts = list(
                pool.map(lambda i: montecarlo.chunk_statistics(spec, i), range(spec.n_chunks))
            )
    finally:
        jacgeom.set_num_threads(before)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def draw_normals(per_sample: int, samples: int, chunk: int, threads: int) -> None:
    """Only the normals of ``samples`` samples, chunk by chunk into one buffer per thread
    (the generator's own rate: no fresh pages per chunk); each thread has its own generator
    and draws its share."""

    def work(seed: int, count: int) -> None:
        rng = chunk_rng(montecarlo.Spec(widths=(1, 1), seed=seed), 0)
        buf = np.empty((min(chunk, count), per_sample))
        for start in range(0, count, chunk):
            rng.standard_normal(out=buf[: min(chunk, count - start)])

    if threads == 1:
        work(0, samples)
        return
    share = -(-samples // threads)
    pool = [
        threading.Thread(target=work, args=(t, min(share, samples - t * share)))
        for t in range(threads)
    ]
    for th in pool:
        th.start()
    for th in pool:
        th.join()


# ---------------------------------------------------------------------------------------
# Measuring


@dataclass
class Row:
    experiment: Experiment
    implementation: str
    samples: int
    times: list[float]
    others_load: float | None
    attempts: int = 1
    result: Any = field(default=None, repr=False)
    # Per round of alternating timing, the rate of this row over its partner's.
    paired_ratios: list[float] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        return self.samples / self.median


def _timed(
    fn: Callable[[], Any], repeats: int, attempts: int, max_load: float, pause: float
) -> tuple[list[float], Any, float | None, int]:
    """Like harness.measure_case: retry while other processes keep the cores busy."""
    best: tuple[list[float], Any, float | None] | None = None
    for attempt in range(1, attempts + 1):
        load = harness.LoadMonitor()
        times, result = [], None
        for _ in range(repeats):
            result = None
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        others = load.others()
        if best is None or (others or 0.0) < (best[2] or 0.0):
            best = (times, result, others)
        if others is None or others <= max_load or attempt == attempts:
            break
        time.sleep(pause)
    assert best is not None
    return best[0], best[1], best[2], attempt


def _timed_pair(
    first: Callable[[], Any],
    second: Callable[[], Any],
    rounds: int,
    attempts: int,
    max_load: float,
    pause: float,
) -> tuple[list[float], list[float], Any, Any, float | None, int]:
    """Like _timed for two functions in alternating rounds (first, second; then second,
    first; ...): (first's times, second's, their last results, others' load, attempts)."""
    best: tuple[list[float], list[float], Any, Any, float | None] | None = None
    for attempt in range(1, attempts + 1):
        load = harness.LoadMonitor()
        times: tuple[list[float], list[float]] = ([], [])
        results: list[Any] = [None, None]
        for r in range(rounds):
            for k in (0, 1) if r % 2 == 0 else (1, 0):
                results[k] = None
                t0 = time.perf_counter()
                results[k] = (first, second)[k]()
                times[k].append(time.perf_counter() - t0)
        others = load.others()
        if best is None or (others or 0.0) < (best[4] or 0.0):
            best = (times[0], times[1], results[0], results[1], others)
        if others is None or others <= max_load or attempt == attempts:
            break
        time.sleep(pause)
    assert best is not None
    return (*best, attempt)


def measure(
    e: Experiment,
    attempts: int = 3,
    max_load: float = 0.25,
    pause: float = 5.0,
    progress: Any = None,
) -> list[Row]:
    """Time every row of one experiment and check the run against the naive loop."""
    jobs: list[tuple[str, int, Callable[[], Any]]] = [
        (NAIVE, e.naive_samples, lambda: naive_ranks(e.widths, e.naive_samples)),
        (
            GENERATOR_1,
            e.samples,
            lambda: draw_normals(e.normals_per_sample, e.samples, e.chunk_size, 1),
        ),
        (
            GENERATOR_2,
            e.samples,
            lambda: draw_normals(e.normals_per_sample, e.samples, e.chunk_size, 2),
        ),
    ]
    jobs.append((RUN_1, e.samples, lambda: montecarlo.run(e.spec(), progress=False, workers=1)))
    jobs.append((RUN_1_CORE, e.samples, lambda: _one_core_run(e)))
    # The naive loop's job: the end-to-end rank (and the active counts), no layer ranks and
    # no singular-value statistics.
    lean = e.spec(layer_ranks=False, spectra=False)
    jobs.append((RUN_2_RANK, e.samples, lambda: montecarlo.run(lean, progress=False, workers=2)))
    # Warm-up, not timed: the compiled kernels' first call, the thread pools.
    montecarlo.run(e.spec(samples=2 * e.chunk_size), progress=False, workers=2)
    naive_ranks(e.widths, 10)
    rows = []
    for name, samples, fn in jobs:
        t0 = time.perf_counter()
        times, result, load, tries = _timed(fn, e.repeats, attempts, max_load, pause)
        row = Row(e, name, samples, times, load, tries, result)
        rows.append(row)
        if progress is not None:
            print(
                f"{e.name} {name}: {row.rate:,.0f} samples/s (median of {len(times)}, others' "
                f"load {load or 0:.2f} cores, {tries} attempt(s); "
                f"{time.perf_counter() - t0:.1f} s wall)",
                file=progress,
                flush=True,
            )
    # The run with summaries against the per-sample path, in alternating rounds.
    t0 = time.perf_counter()
    summaries_times, per_sample_times, summaries_result, per_sample_result, load, tries = (
        _timed_pair(
            lambda: montecarlo.run(e.spec(), progress=False, workers=2),
            lambda: per_sample_run(e.spec(), 2),
            e.rounds,
            attempts,
            max_load,
            pause,
        )
    )
    ratios = [p / s for s, p in zip(summaries_times, per_sample_times, strict=True)]
    paired = [
        Row(e, RUN_2, e.samples, summaries_times, load, tries, summaries_result, ratios),
        Row(e, PER_SAMPLE_2, e.samples, per_sample_times, load, tries, per_sample_result),
    ]
    rows[len(rows) - 1 : len(rows) - 1] = paired  # before the rank-only row, as in the tables
    if progress is not None:
        print(
            f"{e.name} {RUN_2} vs {PER_SAMPLE_2}: rate ratio {statistics.median(ratios):.3f} "
            f"(median of {len(ratios)} alternating rounds, {min(ratios):.3f}-{max(ratios):.3f}; "
            f"others' load {load or 0:.2f} cores, {tries} attempt(s); "
            f"{time.perf_counter() - t0:.1f} s wall)",
            file=progress,
            flush=True,
        )
    check(rows)
    for row in rows:
        row.result = None
    return rows


def _one_core_run(e: Experiment) -> Any:
    """One worker on one core: the base of the scaling ratio. (workers=1 alone leaves the
    compiled kernels inside the chunk on every core.)"""
    before = jacgeom.get_num_threads()
    jacgeom.set_num_threads(1)
    try:
        return montecarlo.run(e.spec(), progress=False, workers=1)
    finally:
        jacgeom.set_num_threads(before)


def check(rows: Sequence[Row]) -> None:
    """The run and the naive loop sample the same distribution of ranks."""
    by = {r.implementation: r for r in rows}
    naive = np.asarray(by[NAIVE].result, dtype=np.float64)
    for name in (RUN_1, RUN_1_CORE, RUN_2, RUN_2_RANK):
        res = by[name].result
        # The run keeps counts per rank: its mean and variance are exact.
        counts = res.merged.integers["rank"]
        values = np.arange(counts.size, dtype=np.float64)
        mean = float(counts @ values) / res.samples
        var = float(counts @ (values - mean) ** 2) / res.samples
        se = math.sqrt(naive.var() / naive.size + var / res.samples)
        diff = abs(naive.mean() - mean)
        assert diff <= 5 * se + 1e-12, (
            f"{by[name].experiment.name}: mean rank {mean:.4f} ({name}) vs "
            f"{naive.mean():.4f} (naive loop), more than 5 standard errors ({se:.4f}) apart"
        )
        theory = res.summary()["theory"].get("p_exact_rank_deficient")
        p = res.summary()["p_exact_rank_deficient"]
        if theory is not None and len(res.spec.resolved_widths()) == 2:
            assert p["lo"] <= theory <= p["hi"], (
                f"{by[name].experiment.name}: P(rank-deficient) interval "
                f"[{p['lo']:.5f}, {p['hi']:.5f}] misses the closed form {theory:.5f}"
            )
    # Same seed, same chunks: the number of workers, and leaving statistics out, must not
    # change the run's ranks; the per-sample path counts the same ranks.
    want = by[RUN_1].result.merged.integers["rank"]
    for name in (RUN_1_CORE, RUN_2, RUN_2_RANK):
        got = by[name].result.merged.integers["rank"]
        assert np.array_equal(want, got), f"montecarlo.run: {RUN_1!r} and {name!r} differ"
    per_sample = np.bincount(by[PER_SAMPLE_2].result["rank"], minlength=want.size)
    assert np.array_equal(want, per_sample), "summaries and per-sample arrays count other ranks"


def run_all(workload_set: str, **kwargs: Any) -> list[Row]:
    return [row for e in EXPERIMENTS[workload_set] for row in measure(e, **kwargs)]


# ---------------------------------------------------------------------------------------
# Reporting


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def markdown(rows: Sequence[Row]) -> str:
    out: list[str] = []
    for e in harness._unique(r.experiment for r in rows):
        rs = {r.implementation: r for r in rows if r.experiment is e}
        naive = rs[NAIVE].rate
        gen = {1: rs[GENERATOR_1].rate, 2: rs[GENERATOR_2].rate}
        out += [
            f"#### {e.name} ({e.describe()})",
            "",
            "| implementation | samples timed | median s (min–max) | samples/s | vs naive | "
            "vs generator (same threads) | others' load |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in rs.items():
            threads = 2 if name in (GENERATOR_2, RUN_2, RUN_2_RANK, RUN_1, PER_SAMPLE_2) else 1
            vs_gen = "—" if name == NAIVE else f"{100 * r.rate / gen[threads]:.0f}%"
            label = name + (f" § ({r.attempts} attempts)" if r.attempts > 1 else "")
            out.append(
                f"| {label} | {r.samples:,} | {harness._seconds(r.median)} "
                f"({harness._seconds(min(r.times))}–{harness._seconds(max(r.times))}) | "
                f"{_rate(r.rate)} | {r.rate / naive:.1f}× | {vs_gen} | "
                f"{harness._load(r.others_load)} |"
            )
        ratios = rs[RUN_2].paired_ratios or [rs[RUN_2].rate / rs[PER_SAMPLE_2].rate]
        out += [
            "",
            f"- end-to-end rank only (the naive loop's job; Spec(layer_ranks=False, "
            f"spectra=False), active counts still recorded): {rs[RUN_2_RANK].rate / naive:.1f}× "
            f"the naive loop; every statistic: {rs[RUN_2].rate / naive:.1f}×.",
            f"- summaries / per-sample arrays (workers=2, every statistic; rate ratio, median "
            f"of {len(ratios)} alternating rounds): {statistics.median(ratios):.3f}× "
            f"({min(ratios):.3f}–{max(ratios):.3f}; target: at least 0.95).",
            f"- workers=2 / one worker on one core: {rs[RUN_2].rate / rs[RUN_1_CORE].rate:.2f}×"
            f"; workers=2 / workers=1 (its kernels on both cores): "
            f"{rs[RUN_2].rate / rs[RUN_1].rate:.2f}×; generator 2 threads / 1 thread: "
            f"{gen[2] / gen[1]:.2f}×.",
            f"- montecarlo.run reaches {100 * rs[RUN_1_CORE].rate / gen[1]:.0f}% (1 worker, "
            "1 core) and "
            f"{100 * rs[RUN_2].rate / gen[2]:.0f}% (2 workers) of the rate at which numpy's "
            f"generator alone draws the {e.normals_per_sample:,} normals of a sample with as "
            "many threads; the generator alone is "
            f"{gen[1] / naive:.1f}× (1 thread) and {gen[2] / naive:.1f}× (2 threads) the naive "
            "loop's rate.",
            "",
        ]
    out.append(
        "- vs generator: samples/s of the row over those of drawing only its normals with "
        "numpy's Generator.standard_normal (SFC64, the generator of montecarlo's chunks) in "
        "the same number of threads (workers=1 counts as 1 thread only with its kernels on "
        "1 thread); 100% "
        "would mean everything but the random numbers is free, for a run that draws every "
        "weight. montecarlo.run draws fewer: a relu layer draws its pre-activations and then "
        "only the rows of its live units (jacgeom.montecarlo.sampling.draw_layer_given_input); the "
        "first layer in the frame where x = |x| e_1 (one chi-square variate for x, n_0 "
        "normals per live row, the first replaced by its pre-activation's; "
        "draw_first_layer), the others only the columns that meet live units below "
        "unless the layer ranks are recorded: about n_1 + n_1 n_0 / 2 and "
        "n_l + n_l n_(l-1) / 4 normals instead of n_l n_(l-1), so it can pass 100%. The "
        "naive loop draws its "
        "normals one sample at a time, so its row is quoted against nothing. Checked: the "
        "run's mean end-to-end rank matches the naive loop's within 5 standard errors, "
        "workers=1 and workers=2 give identical ranks, and for one layer the run's "
        "P(rank-deficient) interval contains 1 - 2^-n."
    )
    return "\n".join(out)


def as_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [
        {
            "workload": r.experiment.name,
            "description": r.experiment.describe(),
            "family": "montecarlo",
            "kernel": "montecarlo",
            "implementation": r.implementation,
            "median_s": r.median,
            "times_s": r.times,
            "samples": r.samples,
            "samples_timed": r.samples,
            "samples_per_s": r.rate,
            "others_load_cores": r.others_load,
            "attempts": r.attempts,
            **({"paired_ratios": r.paired_ratios} if r.paired_ratios is not None else {}),
        }
        for r in rows
    ]


def compare_paths(e: Experiment, rounds: int, scale: float = 1.0) -> dict[str, Any]:
    """Only the run with summaries (workers=2, every statistic) against the per-sample path,
    in ``rounds`` alternating rounds, on ``scale`` times the experiment's samples: the
    per-round rate ratios (wall clock, and process CPU time of both threads)."""
    spec = e.spec(samples=max(e.chunk_size, round(e.samples * scale)))
    fns = (
        lambda: montecarlo.run(spec, progress=False, workers=2),
        lambda: per_sample_run(spec, 2),
    )
    for fn in fns:  # warm-up, not timed
        fn()
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            t0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {
        "samples": spec.samples,
        "wall_s": wall,
        "ratios": [p / s for s, p in zip(*wall, strict=True)],
        "cpu_ratios": [p / s for s, p in zip(*cpu, strict=True)],
    }


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="montecarlo.run with summaries against the per-sample path it replaced "
        "(issue 18's target: at least 0.95), in alternating rounds; the full report is "
        "bench/report.py --workloads full --families montecarlo"
    )
    names = [e.name for e in EXPERIMENTS["full"]]
    parser.add_argument("experiments", nargs="*", help=f"of {names} (default: both)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--scale", type=float, default=1.0, help="of the experiment's samples")
    args = parser.parse_args()
    if unknown := set(args.experiments) - set(names):
        parser.error(f"unknown experiments {sorted(unknown)}; choose from {names}")
    args.experiments = args.experiments or names
    for e in EXPERIMENTS["full"]:
        if e.name not in args.experiments:
            continue
        got = compare_paths(e, args.rounds, args.scale)
        r, c = got["ratios"], got["cpu_ratios"]
        print(
            f"{e.name} ({got['samples']:,} samples, {args.rounds} rounds): summaries / "
            f"per-sample rate ratio, median {statistics.median(r):.3f} "
            f"({min(r):.3f}–{max(r):.3f}); by CPU time {statistics.median(c):.3f} "
            f"({min(c):.3f}–{max(c):.3f}); run {statistics.median(got['wall_s'][0]):.3f} s, "
            f"per-sample {statistics.median(got['wall_s'][1]):.3f} s (medians)",
            flush=True,
        )


if __name__ == "__main__":
    _main()
