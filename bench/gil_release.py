"""Do the kernels release the GIL? Two Python threads against the same calls one after
another, with the kernels pinned to one thread each (jacgeom.set_num_threads(1)) so the
only parallelism is the callers'. Results are asserted identical to the serial ones.

    python bench/gil_release.py [--repeats 5]

Reports the median wall time of both and their ratio (2.0 = perfect on 2 cores).
layer_jacobian writes into preallocated buffers. At 256 x 256 it is bandwidth-bound: one
thread already streams its output at the memory's write rate (about 36 GB/s here), so a
second thread has nothing left to use and the ratio stays near 1 although the GIL is
released; the cache-resident 64 x 64 row shows the kernel itself running in parallel.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import jacgeom

_pools: dict[tuple[int, ...], queue.SimpleQueue[np.ndarray]] = {}


def _touched_buffers(shape: tuple[int, ...]) -> None:
    """Two touched float64 buffers of this shape, one per calling thread at most."""
    _pools[shape] = queue.SimpleQueue()
    for _ in range(2):
        _pools[shape].put(np.ones(shape))


def _into_pooled_buffer(shape: tuple[int, ...], fn: Callable[[np.ndarray], Any]) -> Any:
    """fn(out) with out one of the buffers of this shape: every call computes the same
    values, so a buffer handed back holds its caller's result."""
    buf = _pools[shape].get()
    try:
        return fn(buf)
    finally:
        _pools[shape].put(buf)


def workloads() -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((256, 256))
    X = rng.standard_normal((512, 256))
    Ws, Xs = W[:64, :64].copy(), X[:64, :64].copy()
    masks = rng.random((2048, 256)) < 0.5
    large, small = (512, 256, 256), (64, 64, 64)
    _touched_buffers(large)
    _touched_buffers(small)
    net = jacgeom.Network.random([128] * 9, activation="tanh", seed=0)
    Xn = rng.standard_normal((512, 128))
    return {
        # into a buffer of the calling thread: fresh 128 MiB outputs would time the page
        # faults, which the kernel serialises per process, not the kernel
        "layer_jacobian ×8 (B=512, 256x256, out=)": lambda: _into_pooled_buffer(
            large, lambda out: [jacgeom.layer_jacobian(W, X, out=out) for _ in range(8)][-1]
        ),
        # 2 MiB outputs that stay in cache: what the kernel does when memory is not the limit
        "layer_jacobian gelu ×400 (B=64, 64x64, out=)": lambda: _into_pooled_buffer(
            small,
            lambda out: [
                jacgeom.layer_jacobian(Ws, Xs, activation="gelu", out=out) for _ in range(400)
            ][-1],
        ),
        "masked_rank (2048 masks, 256x256)": lambda: jacgeom.masked_rank(W, masks),
        "Network.jacobian (L=8, width 128, B=512)": lambda: net.jacobian(Xn),
    }


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()
    serial, threaded = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a, b = fn(), fn()
        serial.append(time.perf_counter() - t)
        results: list[Any] = [None, None]

        def run(i: int, results: list[Any] = results) -> None:
            results[i] = fn()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        threaded.append(time.perf_counter() - t)
        for r in results:
            np.testing.assert_array_equal(r, a)
        np.testing.assert_array_equal(a, b)
    return statistics.median(serial), statistics.median(threaded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = jacgeom.get_num_threads()
    jacgeom.set_num_threads(1)
    try:
        print("| kernel | two calls in sequence (s) | two threads (s) | speed-up |")
        print("|---|---:|---:|---:|")
        for name, fn in workloads().items():
            s, t = measure(fn, args.repeats)
            print(f"| {name} | {s:.3f} | {t:.3f} | {s / t:.2f} |")
    finally:
        jacgeom.set_num_threads(before)


if __name__ == "__main__":
    main()
