"""Monte Carlo on Dask process workers: 2 workers against 1, each worker one process with
one thread, on a 16 x 16 relu layer (the chunks' kernels run on one thread there).

    python bench/dask_scaling.py                 # 3e6 samples, chunks of 1e5
    python bench/dask_scaling.py --samples 4e5   # quicker

Prints the seconds of each run, their ratio, and checks that both count the same rank
deficiencies (the result depends on the spec, never on the executor). Needs
dask.distributed (the dask extra).
"""

from __future__ import annotations

import argparse
import os
import time

from dask.distributed import Client, LocalCluster

from jacgeom.montecarlo import Spec, run


def timed(spec: Spec, n_workers: int) -> tuple[float, int]:
    """Seconds of run(spec) on n_workers one-thread process workers, and its count of
    rank-deficient samples; the workers are warmed up on a small run first."""
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        executor = client.get_executor(pure=False)
        warm = Spec(widths=spec.widths, samples=2 * spec.chunk_size, chunk_size=spec.chunk_size)
        run(warm, executor=executor, progress=False)
        start = time.perf_counter()
        result = run(spec, executor=executor, progress=False)
        seconds = time.perf_counter() - start
    return seconds, int(result.summary()["p_exact_rank_deficient"]["count"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=float, default=3e6)
    parser.add_argument("--chunk-size", type=float, default=1e5)
    args = parser.parse_args()
    spec = Spec(
        widths=(16, 16),
        activation="relu",
        samples=int(args.samples),
        chunk_size=int(args.chunk_size),
        seed=5,
    )
    one, count_one = timed(spec, 1)
    two, count_two = timed(spec, 2)
    assert count_one == count_two, (count_one, count_two)
    print(
        f"16x16 relu, {spec.samples:,} samples: 1 worker {one:.1f} s, 2 workers {two:.1f} s, "
        f"ratio {one / two:.2f} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
