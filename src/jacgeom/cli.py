"""Command line: ``jacgeom demo`` (or ``python -m jacgeom demo``)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

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
        f"relu layer, fresh W ~ N(0, 1/n) per sample, x ~ N(0, I), {samples} samples per row, backend "
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jacgeom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="rank collapse of a random relu layer vs theory")
    p_demo.add_argument("--samples", type=int, default=4000)
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba", "numpy"])
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.samples < 1:
            parser.error("--samples must be >= 1")
        start = time.perf_counter()
        print(demo(args.samples, args.seed, args.backend))
        print(f"\n({time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
