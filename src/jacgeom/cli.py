"""Command line: ``jacgeom mc`` (the Monte Carlo of rank collapse), ``jacgeom figures``
and ``jacgeom demo``.

Errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backends import backends
from .layer import layer_derivatives, layer_singular_values


def _binomial_below(m: int, n: int) -> float:
    """P(Binomial(m, 1/2) < n)."""
    return sum(math.comb(m, k) for k in range(min(n, m + 1))) / 2.0**m


def demo(samples: int = 4000, seed: int = 0, backend: str = "auto") -> str:
    """Rank collapse of one random relu layer against the closed forms of THEORY.md.

    Every sample draws a fresh W with iid N(0, 1/n) entries and a Gaussian input x; then
    the pre-activations are independent and symmetric, the rank of D W is min(|S|, n) almost
    surely with |S| ~ Binomial(m, 1/2), so P(rank < n) = P(Bin(m, 1/2) < n) (1 - 2^-n when
    m = n). (With one W shared by all samples the law is that of W's hyperplane arrangement,
    not the binomial.) Returns the table as markdown.
    """
    rng = np.random.default_rng(seed)
    lines = [
        f"relu layer, fresh W ~ N(0, 1/n) per sample, x ~ N(0, I), {samples} samples per row, "
        "backend "
        f"{backend if backend != 'auto' else backends()[0]}",
        "",
        "| m | n | P(rank < n) measured | 95% interval | theory | mean active fraction |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    for m, n in [(4, 4), (10, 10), (32, 32), (12, 6), (20, 10), (40, 32)]:
        deficient = 0
        active = 0.0
        for _ in range(samples):
            W = rng.standard_normal((m, n)) / math.sqrt(n)
            x = rng.standard_normal(n)
            s = layer_singular_values(W, x, backend=backend)
            deficient += int(np.sum(s > s[0] * max(m, n) * np.finfo(s.dtype).eps) < n)
            active += float(layer_derivatives(W, x, backend=backend).mean())
        p = deficient / samples
        active /= samples
        half = 1.96 * math.sqrt(max(p * (1 - p), 1.0 / samples) / samples)
        lines.append(
            f"| {m} | {n} | {p:.5f} | [{max(0.0, p - half):.5f}, {min(1.0, p + half):.5f}] "
            f"| {_binomial_below(m, n):.5f} | {active:.4f} |"
        )
    return "\n".join(lines)


DEFAULT_ACTIVATIONS = ["relu", "leaky_relu", "tanh", "gelu", "identity"]


def _default_sweep(samples: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(point, spec fields) of the default story: width at depth 1, then depth at width 32."""
    points: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for act in DEFAULT_ACTIVATIONS:
        for width in (8, 16, 32, 64, 128):
            points.append(({"activation": act, "width": width, "depth": 1}, {}))
        for depth in (4, 16):
            points.append(({"activation": act, "width": 32, "depth": depth}, {}))
    return [
        (p, {**p, "samples": samples if p["width"] < 128 else max(1, samples // 4)})
        for p, _ in points
    ]


def _mc(args: argparse.Namespace) -> int:
    from .montecarlo import Result, Spec, run, sweep_table

    executor = None
    client = None
    if args.scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise SystemExit(
                '--scheduler needs dask.distributed: pip install "jacgeom[dask]"'
            ) from None
        try:
            if args.scheduler.endswith(".json"):
                client = Client(scheduler_file=args.scheduler, timeout=args.timeout)
            else:
                client = Client(args.scheduler, timeout=args.timeout)
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise SystemExit(
                f"cannot reach scheduler {args.scheduler}: {type(exc).__name__}: {exc}"
            ) from None
        executor = client.get_executor(pure=False)
    base: dict[str, Any] = {
        k: v
        for k, v in {
            "init": args.init,
            "sigma_w": args.sigma_w,
            "sigma_b": args.sigma_b,
            "residual": args.residual,
            "norm": args.norm,
            "inputs": args.inputs,
            "fresh_weights": not args.shared_weights,
            "layer": args.layer,
            "kernel": args.kernel,
            "centers": args.centers,
            "gamma": args.gamma,
            "seed": args.seed,
            "chunk_size": args.chunk_size,
            "layer_ranks": False if args.no_layer_ranks else None,
            "spectra": False if args.no_spectra else None,
        }.items()
        if v is not None
    }
    if args.widths or args.width or args.depth or args.activation or args.layer:
        point: dict[str, Any] = {}
        if args.widths:
            point["widths"] = tuple(args.widths)
        else:
            point["width"] = args.width or 32
            point["depth"] = args.depth or 1
        if args.layer == "kernel":
            point["layer"] = "kernel"
            point["kernel"] = args.kernel or "rbf"
        else:
            point["activation"] = args.activation or "relu"
        plan = [({k: v for k, v in point.items()}, {**point, "samples": args.samples or 20000})]
    else:
        plan = _default_sweep(args.samples or 4000)
    progress: bool | str = False if args.quiet else True
    results: list[tuple[dict[str, Any], Result]] = []
    start = time.perf_counter()
    try:
        for point, fields in plan:
            spec = Spec(**{**base, **fields})
            out = None
            if args.out:
                from pathlib import Path

                from .montecarlo.sweep import run_directory_name

                # Every field that changes the samples is in the name (the seed too), so
                # another experiment never lands in, and is refused by, this one's directory.
                out = Path(args.out) / run_directory_name(point, spec)
            results.append(
                (
                    point,
                    run(spec, executor=executor, progress=progress, out=out, workers=args.workers),
                )
            )
    finally:
        if client is not None:
            client.close()
    elapsed = time.perf_counter() - start
    if args.json:
        json.dump(
            _strict_json(
                [
                    {
                        "point": {
                            k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()
                        },
                        "spec": r.spec.to_dict(),
                        "logs": "natural",
                        "summary": r.summary(),
                    }
                    for p, r in results
                ]
            ),
            sys.stdout,
            indent=1,
            allow_nan=False,
        )
        print()
    else:
        print(sweep_table(results))
        total = sum(r.samples for _, r in results)
        print(
            f"\n{total} samples in {elapsed:.1f} s. n = min(n_0, n_L). Exact rank: singular "
            "values non-zero in exact arithmetic (lost only through structure, e.g. relu's "
            "dead units); float64 rank: numpy.linalg.matrix_rank's rule on the exact singular "
            "values. log10 cond is finite wherever the exact rank is full; inf only where the "
            "smallest singular value is exactly 0. Theory: relu's binomial law (fresh Gaussian "
            "weights), full exact rank for every other activation, and for linear networks the "
            "Lyapunov limit L (mu_1 - mu_d), the large-depth growth of log cond (at finite "
            "depth the median lies above it by O(1)); empty where no closed form applies."
        )
    if args.plot:
        from .plot import monte_carlo_figure

        monte_carlo_figure(results).savefig(args.plot, dpi=120)
    return 0


def _strict_json(x: Any) -> Any:
    """JSON that strict parsers read: numpy scalars as Python numbers, non-finite floats as
    the strings "inf", "-inf" and "nan"."""
    if isinstance(x, dict):
        return {str(k): _strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else str(v)
    return x


def _bench(rest: list[str]) -> int:
    """Run bench/report.py of the checkout in the current directory (or JACGEOM_BENCH_DIR):
    the suite is part of the source tree, not of the installed package."""
    import os
    import runpy
    from pathlib import Path

    where = Path(os.environ.get("JACGEOM_BENCH_DIR", "bench"))
    report = where / "report.py"
    if not report.is_file():
        raise ValueError(
            f"no benchmark suite at {str(report)!r}: run `jacgeom bench` from a jacgeom source "
            "checkout, or set JACGEOM_BENCH_DIR to its bench/ directory"
        )
    sys.path.insert(0, str(where.resolve()))
    saved = sys.argv
    sys.argv = [str(report), *rest]
    try:
        runpy.run_path(str(report), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    finally:
        sys.argv = saved
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jacgeom", description="What activations do to the geometry of networks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mc = sub.add_parser(
        "mc", help="Monte Carlo of rank collapse (default: a sweep that tells the story)"
    )
    mc.add_argument("--widths", type=int, nargs="+", help="n0 n1 ... nL (one experiment)")
    mc.add_argument("--width", type=int)
    mc.add_argument("--depth", type=int)
    mc.add_argument("--activation")
    mc.add_argument("--init", choices=["he", "xavier", "lecun", "orthogonal", "gaussian"])
    mc.add_argument("--sigma-w", type=float)
    mc.add_argument("--sigma-b", type=float)
    mc.add_argument("--residual", action="store_true", default=None)
    mc.add_argument("--norm", choices=["layer"])
    mc.add_argument("--inputs", choices=["gaussian", "sphere", "manifold"])
    mc.add_argument("--shared-weights", action="store_true", help="one network for all samples")
    mc.add_argument(
        "--layer", choices=["activation", "kernel"], help="kernel: every layer a kernel layer"
    )
    mc.add_argument("--kernel", choices=["rbf", "laplacian", "polynomial"])
    mc.add_argument("--centers", type=int, help="centers per kernel layer")
    mc.add_argument("--gamma", type=float, help="kernel scale (default 1 / input width)")
    mc.add_argument("--samples", type=int)
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--chunk-size", type=int)
    mc.add_argument(
        "--no-layer-ranks",
        action="store_true",
        help="leave out each layer's rank (deep relu runs draw half the normals)",
    )
    mc.add_argument(
        "--no-spectra",
        action="store_true",
        help="ranks and active counts only: no singular-value statistics",
    )
    mc.add_argument("--out", help="checkpoint directory (resumes when rerun)")
    mc.add_argument(
        "--resume", action="store_true", help="resume from --out (the default when --out exists)"
    )
    mc.add_argument(
        "--scheduler", help="dask scheduler address tcp://HOST:PORT or a scheduler file .json"
    )
    mc.add_argument("--timeout", type=float, default=10.0, help="seconds to reach the scheduler")
    mc.add_argument("--workers", type=int, help="local threads")
    mc.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    mc.add_argument("--plot", help="write figures to this PNG (needs matplotlib)")
    mc.add_argument("--quiet", action="store_true", help="no progress bar")
    figs = sub.add_parser(
        "figures",
        help="write the seed's figures as PNG files (needs matplotlib)",
        description="Write the figures of the story as PNG files: activations.png, warp.png, "
        "dead_coordinates.png, rank_depth.png (exact rank, float64 rank and log10 condition "
        "number against depth), metric_distortion.png, kernel_comparison.png.",
    )
    figs.add_argument("--out", required=True, help="directory for the PNG files (created)")
    figs.add_argument("--gif", action="store_true", help="also the warp animation (pillow)")
    figs.add_argument(
        "--samples",
        type=int,
        default=2000,
        help="Monte Carlo samples per point of dead_coordinates.png; rank_depth.png takes a "
        "quarter of it per point, kernel_comparison.png a tenth (at least 50 each; "
        "default 2000)",
    )
    bench = sub.add_parser(
        "bench",
        help="run the benchmark report of a source checkout (bench/report.py); "
        "arguments after 'bench' are passed to it",
        add_help=False,
    )
    bench.add_argument("rest", nargs="*")
    demo_p = sub.add_parser("demo", help="rank collapse of a random relu layer vs theory")
    demo_p.add_argument("--samples", type=int, default=4000)
    demo_p.add_argument("--seed", type=int, default=0)
    demo_p.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba", "numpy"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" belongs to the report's own parser (--help included).
        try:
            return _bench(argv[1:])
        except ValueError as exc:
            print(f"jacgeom: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "mc":
            if args.samples is not None and args.samples < 1:
                raise ValueError("--samples must be >= 1")
            return _mc(args)
        if args.samples < 1:
            raise ValueError("--samples must be >= 1")
        if args.command == "figures":
            from .plot import _pyplot, write_figures

            try:
                _pyplot()
            except ImportError as exc:  # before any work, as one line
                raise ValueError(str(exc)) from None

            for path in write_figures(args.out, gif=args.gif, samples=args.samples):
                print(path)
            return 0
        start = time.perf_counter()
        print(demo(args.samples, args.seed, args.backend))
        print(f"\n({time.perf_counter() - start:.2f} s)")
        return 0
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"jacgeom: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"jacgeom: error: {exc.code}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
