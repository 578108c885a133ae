"""The cost of the stable spectrum: exact and numerical rank, log singular values.

Three comparisons, each timed in this one process as a ratio (medians of ``--repeats``):

1. Monte Carlo, relu, width 64, depth 10, every statistic: samples per second of
   ``jacgeom.montecarlo.run`` against the naive numpy loop a user writes first (per
   sample: draw the weights, multiply the layer Jacobians, numpy.linalg.matrix_rank and
   an SVD for the spectral statistics).
2. Monte Carlo, tanh, width 32, depth 16: against a naive numpy loop that computes the same
   stable statistics (per sample, one QR per layer: Q R = D_l W_l Q, the sum of
   log|diag R| as log singular values).
3. ``Network.log_singular_values`` against ``Network.jacobian`` on the same inputs (tanh,
   L = 16, widths 128, float64).

    python bench/stable_spectra.py            # the sizes above
    python bench/stable_spectra.py --quick    # small sizes, seconds (used by the tests)

Each comparison also checks its answer: the Monte Carlo's mean exact rank against the naive
loop's within five standard errors (relu), exact rank full (tanh).

Beside each, the floor of any method that keeps a stable spectrum by one QR per layer per
sample (the frame's minimum work: nothing else, no rank decision, no bookkeeping): the
same draws, the product of each layer's map with the frame (numpy matmul) and its QR with Q
formed (numpy.linalg.qr, LAPACK geqrf + orgqr), batched over samples on every core, each
thread's BLAS pinned to one thread. Its ratio to the baseline is the most any such
implementation can reach on this machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import jacgeom
from jacgeom.montecarlo import Spec, run


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def naive_relu(width: int, depth: int, samples: int, seed: int) -> np.ndarray:
    """Per sample: fresh He weights, a Gaussian input, J formed, matrix_rank and an SVD."""
    rng = np.random.default_rng(seed)
    ranks = np.empty(samples, dtype=np.int64)
    for i in range(samples):
        h = rng.standard_normal(width)
        J = np.eye(width)
        for _ in range(depth):
            W = rng.standard_normal((width, width)) * math.sqrt(2.0 / width)
            z = W @ h
            d = (z > 0).astype(float)
            J = (d[:, None] * W) @ J
            h = np.maximum(z, 0)
        ranks[i] = np.linalg.matrix_rank(J)
        np.linalg.svd(J, compute_uv=False)
    return ranks


def naive_stable_tanh(width: int, depth: int, samples: int, seed: int) -> np.ndarray:
    """Per sample: fresh He weights; one QR per layer (Q R = D W Q), the sum of log|diag R|
    sorted as the log singular values; their spread as log cond."""
    rng = np.random.default_rng(seed)
    log_cond = np.empty(samples)
    for i in range(samples):
        h = rng.standard_normal(width)
        Q = np.eye(width)
        logs = np.zeros(width)
        for _ in range(depth):
            W = rng.standard_normal((width, width)) * math.sqrt(2.0 / width)
            z = W @ h
            d = 1.0 - np.tanh(z) ** 2
            Q, R = np.linalg.qr((d[:, None] * W) @ Q)
            logs += np.log(np.abs(np.diagonal(R)))
            h = np.tanh(z)
        logs = np.sort(logs)[::-1]
        log_cond[i] = logs[0] - logs[-1]
    return log_cond


def _on_every_core(part: Callable[[int, int], Any], samples: int) -> None:
    """part(seed, n) on every core, the samples split between them (numpy's linalg and matmul
    release the GIL), each thread's BLAS pinned to one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    cores = os.cpu_count() or 1
    sizes = [len(a) for a in np.array_split(np.arange(samples), cores)]
    with threadpool_limits(1), ThreadPoolExecutor(cores) as pool:
        list(pool.map(part, range(cores), sizes))


def floor_frame(width: int, depth: int, samples: int, live: int) -> None:
    """One QR per layer per sample and nothing else: draw the layer's weights, multiply the
    map's ``live`` rows (all for tanh, the live half for relu) with the frame, QR with Q."""

    def part(seed: int, n: int) -> None:
        rng = np.random.default_rng(seed)
        U = np.zeros((n, width, min(live, width)))
        U[:, : U.shape[2]] = np.eye(U.shape[2])
        for _ in range(depth):
            W = rng.standard_normal((n, width, width))
            U[:, :live] = np.linalg.qr(np.matmul(W[:, :live], U))[0]

    _on_every_core(part, samples)


def floor_network(widths: int, depth: int, samples: int) -> None:
    """One QR with Q formed per layer per sample of (widths x widths) products, as the frame
    of Network.log_singular_values needs at least (inputs drawn once, outside the loop)."""
    A = np.random.default_rng(0).standard_normal((samples, widths, widths))

    def part(seed: int, n: int) -> None:
        block = A[seed * n : (seed + 1) * n]
        for _ in range(depth):
            np.linalg.qr(block)

    _on_every_core(part, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    q = args.quick
    n_relu, n_tanh, batch = (200, 200, 64) if q else (2000, 2000, 1024)
    print(
        f"# {os.cpu_count()} cores, numpy {np.__version__}, jacgeom backends "
        f"{jacgeom.backends()}, threads {jacgeom.get_num_threads()}, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print("| comparison | jacgeom | baseline | ratio (baseline / jacgeom) |")
    print("|---|---|---|---|")

    spec = Spec(width=64, depth=10, samples=n_relu, activation="relu", seed=1)
    t_naive, naive = _median_time(lambda: naive_relu(64, 10, n_relu, 1), args.repeats)
    t_run, res = _median_time(lambda: run(spec, progress=False), args.repeats)
    exact = res.summary()["mean_exact_rank"]  # exact counts: mean and std to rounding
    se = math.sqrt(naive.var() / naive.size + exact["std"] ** 2 / n_relu)
    assert abs(naive.mean() - exact["mean"]) <= 5 * se + 1e-12, (naive.mean(), exact["mean"])
    print(
        f"| MC relu w64 L10, every statistic | {n_relu / t_run:,.0f} samples/s | "
        f"{n_relu / t_naive:,.0f} samples/s (naive loop) | {t_naive / t_run:.2f} |"
    )
    t_floor, _ = _median_time(lambda: floor_frame(64, 10, n_relu, 32), args.repeats)
    print(
        f"| floor: one QR per layer, relu w64 L10 (32 live rows) | {n_relu / t_floor:,.0f} "
        f"samples/s | {n_relu / t_naive:,.0f} samples/s (naive loop) | {t_naive / t_floor:.2f} |"
    )

    spec = Spec(width=32, depth=16, samples=n_tanh, activation="tanh", seed=1)
    t_naive, naive_cond = _median_time(lambda: naive_stable_tanh(32, 16, n_tanh, 1), args.repeats)
    t_run, res = _median_time(lambda: run(spec, progress=False), args.repeats)
    summary = res.summary()
    assert summary["p_exact_rank_deficient"]["count"] == 0  # exact rank 32 in every sample
    assert summary["log_cond"]["finite_fraction"] == 1.0
    print(
        f"| MC tanh w32 L16, stable statistics | {n_tanh / t_run:,.0f} samples/s | "
        f"{n_tanh / t_naive:,.0f} samples/s (naive QR loop) | {t_naive / t_run:.2f} |"
    )
    t_floor, _ = _median_time(lambda: floor_frame(32, 16, n_tanh, 32), args.repeats)
    print(
        f"| floor: one QR per layer, tanh w32 L16 | {n_tanh / t_floor:,.0f} samples/s | "
        f"{n_tanh / t_naive:,.0f} samples/s (naive QR loop) | {t_naive / t_floor:.2f} |"
    )

    net = jacgeom.Network.random([128] * 17, activation="tanh", seed=0)
    X = np.random.default_rng(0).standard_normal((batch, 128))
    net.jacobian(X[:2])
    net.log_singular_values(X[:2])
    t_jac, _ = _median_time(lambda: net.jacobian(X), args.repeats)
    t_log, logs = _median_time(lambda: net.log_singular_values(X), args.repeats)
    assert np.all(np.isfinite(logs))
    print(
        f"| Network tanh L16 w128 B{batch}: log_singular_values vs jacobian | {t_log:.3f} s | "
        f"{t_jac:.3f} s (jacobian) | {t_jac / t_log:.2f} |"
    )
    t_floor, _ = _median_time(lambda: floor_network(128, 16, batch), args.repeats)
    print(
        f"| floor: one QR per layer, L16 w128 B{batch} | {t_floor:.3f} s | "
        f"{t_jac:.3f} s (jacobian) | {t_jac / t_floor:.2f} |"
    )


if __name__ == "__main__":
    main()
