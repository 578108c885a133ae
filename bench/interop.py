"""Bench row of issue 22: from_torch + layer_report on a trained-model-sized torch MLP.

Compares, in one process, medians of ``--repeat`` runs:

- jacgeom: ``Network.from_torch(mlp)`` then ``net.layer_report(X)``;
- one ``Network.jacobian(X)`` of the same network (the issue's yardstick: report <= 3x);
- what a user writes without jacgeom: ``torch.func.vmap(torch.func.jacrev(layer))`` per
  layer (Linear + activation), then numpy reductions: ``np.linalg.svd`` values for the
  float64 numerical rank (matrix_rank's rule), log-volume and log condition, and the
  dead / saturated fractions from the pre-activations;
- the floor of any report that reads each layer's singular values (its ranks, log-volume
  and condition number are functions of them): jacgeom.layer_singular_values of every
  layer on its inputs, nothing else.

    python bench/interop.py                 # the issue's size: L = 6, width 256, B = 1024
    python bench/interop.py --batch 64      # a quick run

Prints the machine (cores, BLAS, numpy and torch versions) with the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _torch_baseline(mlp: Any, X: Any) -> list[dict[str, Any]]:
    import torch

    rows = []
    h = X
    mods = list(mlp)
    eps = np.finfo(np.float64).eps
    for i in range(0, len(mods), 2):
        layer = torch.nn.Sequential(*mods[i : i + 2])
        J = torch.func.vmap(torch.func.jacrev(layer))(h).detach().numpy()
        with torch.no_grad():
            z = mods[i](h).numpy()
            h = layer(h)
        s = np.linalg.svd(J, compute_uv=False)
        with np.errstate(divide="ignore"):
            logs = np.log(s)
        m, n = J.shape[1:]
        rows.append(
            {
                "dead": float((z <= 0).all(axis=0).mean()),
                "numerical_rank": np.median((s > max(m, n) * eps * s[:, :1]).sum(axis=1)),
                "log_volume": np.median(logs.sum(axis=1)),
                "log_condition": np.median(logs[:, 0] - logs[:, -1]),
            }
        )
    return rows


def _svd_floor(net: Any, X: Any) -> Any:
    """Each layer's singular values by jacgeom's compiled kernel (layer_singular_values) on
    that layer's inputs, which are computed before the timing starts."""
    import jacgeom

    zs = net.preactivations(X)
    H = [X] + [act.phi(z) for act, z in zip(net.activations[:-1], zs[:-1], strict=True)]

    def run() -> None:
        for l in range(net.depth):
            jacgeom.layer_singular_values(net.weights[l], H[l], net.biases[l], net.activations[l])

    return run


def main() -> None:
    import threadpoolctl
    import torch

    import jacgeom

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--activation", default="relu", choices=("relu", "tanh"))
    args = p.parse_args()

    torch.manual_seed(0)
    act = torch.nn.ReLU if args.activation == "relu" else torch.nn.Tanh
    mods: list[Any] = []
    for _ in range(args.depth):
        mods += [torch.nn.Linear(args.width, args.width), act()]
    mlp = torch.nn.Sequential(*mods).double()
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((args.batch, args.width)))

    def ours() -> Any:
        return jacgeom.Network.from_torch(mlp).layer_report(X)

    net = jacgeom.Network.from_torch(mlp)
    t_report, rep = _median_time(ours, args.repeat)
    t_jac, J = _median_time(lambda: net.jacobian(X.numpy()), args.repeat)
    t_torch, base = _median_time(lambda: _torch_baseline(mlp, X), args.repeat)
    t_floor, _ = _median_time(_svd_floor(net, X.numpy()), args.repeat)

    # Each timing's answer checked: the two reports agree layer by layer.
    assert J.shape == (args.batch, args.width, args.width)
    for g, b in zip(rep.layers, base, strict=True):
        assert abs(g.dead_fraction - b["dead"]) < 1e-12
        assert abs(g.numerical_rank.median - b["numerical_rank"]) <= 1

    blas = threadpoolctl.threadpool_info()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
        f"torch {torch.__version__}, BLAS "
        + ", ".join(f"{b['internal_api']} {b.get('version')} x{b['num_threads']}" for b in blas)
        + f"; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"
        f" OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}"
    )
    print(
        f"workload: {args.depth} layers, width {args.width}, {args.activation}, "
        f"B = {args.batch}, float64, median of {args.repeat}"
    )
    print(f"{'':44} {'seconds':>9} {'/ jacobian':>11}")
    for name, t in (
        ("from_torch + layer_report", t_report),
        ("one Network.jacobian", t_jac),
        ("torch.func.jacrev per layer + numpy svd", t_torch),
        ("floor: the layers' singular values alone", t_floor),
    ):
        print(f"{name:44} {t:9.3f} {t / t_jac:11.2f}")
    print(f"speed-up of layer_report over the torch.func baseline: {t_torch / t_report:.2f}x")


if __name__ == "__main__":
    main()
