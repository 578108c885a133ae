"""Monte Carlo on Dask process workers: 2 workers against 1, each worker one process with
one thread, on a 16 x 16 relu layer (the chunks' kernels run on one thread there).

    python bench/dask_scaling.py                 # 3e6 samples, chunks of 1e5, one round
    python bench/dask_scaling.py --rounds 5      # 1 and 2 workers alternating, 5 ratios
    python bench/dask_scaling.py --samples 4e5   # quicker
    python bench/dask_scaling.py --executor process   # no dask: a ProcessPoolExecutor

What is timed is the steady state: each cluster's workers first run one chunk each
(imports, first calls), so process start-up is not in the ratio. Each round times both
clusters (in turn 1 then 2 workers, 2 then 1, so a drift in the machine's load does not
favour one), and prints the seconds, the ratio and where the CPU went during each timed
run, in CPU seconds and as a share of the machine's cores over that run:

- workers: the worker processes (the chunks, and dask's own work there);
- driver: this process, which holds the client, the scheduler and the nannies of a
  LocalCluster, and merges the chunks' summaries;
- others: every other process on the machine (/proc/stat's busy time less the two above;
  Linux only), which the workers share the cores with; steal: the hypervisor's.

Besides the ratio of the seconds, it prints the ratio at the same core speed: the workers'
CPU seconds per second in the 2-worker run over that of the 1-worker run (the cores the
workers kept busy), which does not move when the speed of a core drifts between the two
timed runs, as it does on a shared virtual machine.

It checks that both runs count the same rank deficiencies (the result depends on the spec,
never on the executor). Needs dask.distributed (the dask extra).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterator
from typing import NamedTuple

import dask
import psutil
from dask.distributed import Client, LocalCluster

from jacgeom.montecarlo import Spec, run
from jacgeom.montecarlo.runner import chunk_task


class Timing(NamedTuple):
    seconds: float
    count: int
    workers_cpu: float
    driver_cpu: float
    others_cpu: float | None  # other processes on the machine
    steal: float | None  # the hypervisor's: the machine's cores running another guest


def machine_seconds() -> tuple[float, float] | None:
    """(busy, stolen) CPU seconds of the whole machine since boot (None off Linux)."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq, steal = (
                int(x) for x in stat.readline().split()[1:9]
            )
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


@contextlib.contextmanager
def executor_of(kind: str, n_workers: int, warm: Spec) -> Iterator[cf.Executor]:
    """An executor of n_workers one-thread worker processes, each of which has run one
    chunk of ``warm`` (imports, the kernels' first calls: process start-up is not timed)."""
    task = (chunk_task, warm.to_dict(), 0, False, True)
    if kind == "dask":
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(*task)  # on every worker
            yield client.get_executor(pure=False)
    else:
        # Each submit starts a process until there are n_workers; each warms up first.
        spawn = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(
            n_workers, spawn, initializer=task[0], initargs=task[1:]
        ) as pool:
            for f in [pool.submit(os.getpid) for _ in range(n_workers)]:
                f.result()
            yield pool


def timed(spec: Spec, n_workers: int, kind: str) -> Timing:
    """run(spec) on n_workers warmed one-thread worker processes: the seconds, the count of
    rank-deficient samples and where the CPU went."""
    with executor_of(kind, n_workers, spec.replace(samples=spec.chunk_size)) as executor:
        driver = psutil.Process()
        # The workers (dask's or the pool's) and any helper of theirs.
        workers = driver.children(recursive=True)
        machine0, driver0, workers0 = machine_seconds(), cpu_seconds([driver]), cpu_seconds(workers)
        start = time.perf_counter()
        result = run(spec, executor=executor, progress=False)
        seconds = time.perf_counter() - start
        machine1, driver1, workers1 = machine_seconds(), cpu_seconds([driver]), cpu_seconds(workers)
    driver_cpu, workers_cpu = driver1 - driver0, workers1 - workers0
    others = steal = None
    if machine0 is not None and machine1 is not None:
        others = max(0.0, machine1[0] - machine0[0] - driver_cpu - workers_cpu)
        steal = machine1[1] - machine0[1]
    count = int(result.summary()["p_exact_rank_deficient"]["count"])
    return Timing(seconds, count, workers_cpu, driver_cpu, others, steal)


def describe(t: Timing, cores: int) -> str:
    share = cores * t.seconds

    def part(name: str, cpu: float | None) -> str:
        return f"{name} {cpu:.2f} s ({cpu / share:.0%})" if cpu is not None else f"{name} ?"

    return (
        f"{t.seconds:.2f} s; CPU: {part('workers', t.workers_cpu)}, "
        f"{part('driver', t.driver_cpu)}, {part('others', t.others_cpu)}, "
        f"{part('steal', t.steal)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=float, default=3e6)
    parser.add_argument("--chunk-size", type=float, default=1e5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--executor",
        choices=("dask", "process"),
        default="dask",
        help="process: a ProcessPoolExecutor (the same run without dask's scheduler)",
    )
    parser.add_argument(
        "--no-worker-profile",
        action="store_true",
        help="turn off dask's statistical profiler in the workers (it samples the task "
        "thread every 10 ms)",
    )
    args = parser.parse_args()
    spec = Spec(
        widths=(16, 16),
        activation="relu",
        samples=int(args.samples),
        chunk_size=int(args.chunk_size),
        seed=5,
    )
    cores = os.cpu_count() or 1
    print(
        f"16x16 relu, {spec.samples:,} samples in chunks of {spec.chunk_size:,}; {cores} "
        "cores; CPU shares are of all cores over each run"
    )
    if args.no_worker_profile:
        dask.config.set({"distributed.worker.profile.enabled": False})
    ratios, same_speed = [], []
    for k in range(args.rounds):
        order = (1, 2) if k % 2 == 0 else (2, 1)
        timings = {n: timed(spec, n, args.executor) for n in order}
        one, two = timings[1], timings[2]
        assert one.count == two.count, (one.count, two.count)
        ratios.append(one.seconds / two.seconds)
        # The workers' cores in each run: the ratio at the same speed of a core, which
        # drifts between the two runs on a shared host.
        same_speed.append((two.workers_cpu / two.seconds) / (one.workers_cpu / one.seconds))
        print(f"round {k + 1}: ratio {ratios[-1]:.2f}, at the same core speed {same_speed[-1]:.2f}")
        print(f"  1 worker:  {describe(one, cores)}")
        print(f"  2 workers: {describe(two, cores)}")
    if len(ratios) > 1:
        for name, values in (("ratios", ratios), ("at the same core speed", same_speed)):
            listed = ", ".join(f"{r:.2f}" for r in values)
            print(f"{name}: {listed}; median {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
