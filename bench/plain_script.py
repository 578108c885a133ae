"""End-to-end Jacobians as a user's script gets them: ``Network.jacobian`` against JAX.

The report's harness times kernels on prepared inputs; this script calls the public API
the way a plain script does, a fresh result every call, and JAX's
``jax.jit(jax.vmap(jax.jacfwd(f)))`` on the same weights (compiled once, outside the timing,
results waited for with ``block_until_ready``). For every activation and dtype it times
jacgeom's rounds, then JAX's, then both again (two passes: an order effect shows as a
difference between them), and prints medians with min-max and the ratio JAX / jacgeom
(above 1: jacgeom is faster). The floor is the gemm work of the dense chain,
2 B n_0 sum_l n_l n_(l-1) flops, at the rate of numpy's BLAS measured in the same process
just before each pass (the CPU's clock drifts by 10% and more between minutes on a shared
host; a rate measured once at the start would judge later passes at another clock).

    python bench/plain_script.py                       # L = 16, widths 128, B = 1024
    python bench/plain_script.py --width 256 --batch 512 --activations tanh
    python bench/plain_script.py --sweep               # tanh, L = 8, widths 64-512, B 64-8192
    python bench/plain_script.py --pause 0.3           # single calls, each after a pause
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine_lines  # noqa: E402

# Seconds of sleep after the gemm-rate measurement and after each peer's rounds: OpenBLAS's
# worker threads spin for about 0.1 s after a threaded call before they sleep (and a peer's
# own thread pool may too), and spinning they would take a core from whatever is timed next.
SETTLE = 0.3


def _times(fn: Callable[[], Any], rounds: int, pause: float = 0.0) -> list[float]:
    fn()
    out = []
    for _ in range(rounds):
        time.sleep(pause)
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _gemm_rate(dtype: type) -> float:
    n = 2048
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    C = A @ B
    best = min(_times(lambda: np.matmul(A, B, out=C), 5))
    time.sleep(SETTLE)
    return 2.0 * n**3 / best


def _jax_jacobian(net: Any, act: str) -> Callable[[Any], Any]:
    import jax
    import jax.numpy as jnp

    phi = {
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    }[act]
    Ws = [jnp.asarray(W) for W in net.weights]
    bs = [jnp.asarray(b) for b in net.biases]

    def f(x: Any) -> Any:
        for W, b in zip(Ws, bs, strict=True):
            x = phi(W @ x + b)
        return x

    return jax.jit(jax.vmap(jax.jacfwd(f)))  # type: ignore[no-any-return]


def _row(t: list[float]) -> str:
    return f"{statistics.median(t):.3f} [{min(t):.3f}-{max(t):.3f}]"


HEADER = (
    "| activation | dtype | L | width | B | pass | jacgeom | JAX jit(vmap(jacfwd)) "
    "| JAX / jacgeom | floor | floor / jacgeom | max/min jacgeom |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def measure(
    act: str, dtype: type, L: int, n: int, B: int, rounds: int, passes: int, pause: float = 0.0
) -> list[str]:
    """Rows of the table for one network: ``passes`` times jacgeom's rounds then JAX's,
    each round ``pause`` seconds after the last."""
    import jax.numpy as jnp

    import jacgeom

    net = jacgeom.Network.random([n] * (L + 1), activation=act, seed=0, dtype=dtype)
    X = np.random.default_rng(1).standard_normal((B, n)).astype(dtype)
    jf = _jax_jacobian(net, act)
    Xj = jnp.asarray(X)
    want = np.asarray(jf(Xj))
    err = np.abs(net.jacobian(X) - want).max()
    assert err <= 1e-3 * np.abs(want).max(), (act, dtype, err)
    del want
    rows = []
    for p in range(1, passes + 1):
        floor = 2.0 * B * n * L * n * n / _gemm_rate(dtype)
        tg = _times(lambda: net.jacobian(X), rounds, pause)
        time.sleep(SETTLE)
        tj = _times(lambda: jf(Xj).block_until_ready(), rounds, pause)
        time.sleep(SETTLE)  # before the next pass's gemm rate
        mg, mj = statistics.median(tg), statistics.median(tj)
        rows.append(
            f"| {act} | {np.dtype(dtype).name} | {L} | {n} | {B} | {p} | {_row(tg)} | "
            f"{_row(tj)} | {mj / mg:.2f}x | {floor:.3f} | {100 * floor / mg:.0f}% | "
            f"{max(tg) / min(tg):.2f} |"
        )
    return rows


# --sweep: widths 64-512 at B = 1024 (256 from width 256 on, to bound the time), and B 64-8192
# at width 128, L = 8.
SWEEP = [
    (64, 1024),
    (128, 1024),
    (256, 256),
    (512, 256),
    (128, 64),
    (128, 512),
    (128, 4096),
    (128, 8192),
]
SWEEP_ROUNDS = 5  # medians of five rounds, as the other tables of the benchmark docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--activations", nargs="+", default=["tanh", "gelu", "relu"])
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds of sleep before each round: single calls, as a script that calls once "
        "gets them (default 0: back to back)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=f"tanh at the SWEEP sizes, L = 8, {SWEEP_ROUNDS} rounds, one pass",
    )
    args = parser.parse_args()
    if not args.pause >= 0:
        parser.error(f"--pause must be a number of seconds >= 0, got {args.pause}")

    import jax

    import jacgeom

    jax.config.update("jax_enable_x64", True)
    print("\n".join(machine_lines()))
    print(f"jax {jax.__version__}, jacgeom {jacgeom.__version__}")
    spacing = f"each after a {args.pause:g} s pause" if args.pause else "back to back"
    print(f"\nseconds: median [min-max] of the rounds ({spacing})\n")
    print(HEADER)
    for dtype in (np.float64, np.float32):
        if args.sweep:
            for n, B in SWEEP:
                for row in measure("tanh", dtype, 8, n, B, SWEEP_ROUNDS, 1, args.pause):
                    print(row, flush=True)
            continue
        for act in args.activations:
            rows = measure(
                act, dtype, args.depth, args.width, args.batch, args.rounds, 2, args.pause
            )
            for row in rows:
                print(row, flush=True)


if __name__ == "__main__":
    main()
