"""Print the benchmark report: one markdown table per workload, the floor and the machine.

    python bench/report.py --workloads full               # issue 2's sizes; about 7 minutes
    python bench/report.py --workloads quick --json q.json

Runs the registry of bench/workloads.py directly (no pytest): for each workload, kernel and
implementation it warms up once (not timed), times ``rounds`` calls with time.perf_counter,
quotes the median, and asserts the last result against jacgeom.reference on a few samples.
On a shared machine a case is timed again (--attempts, --max-load) while other processes
keep the cores busy, and the quietest attempt is kept; each row shows that load.
Implementations that loop over samples are timed on the first samples only at the full size
and scaled by B / samples (marked † in the table). The floor (copy bandwidth, dgemm / sgemm
rates) is measured in the same process before and after the kernels; the better of the two
is used (other work on a shared machine only ever slows it down).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from workloads import KERNELS, WORKLOAD_SETS, WORKLOADS  # noqa: E402

import jacgeom  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", choices=WORKLOAD_SETS, default="quick")
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=sorted(KERNELS),
        default=None,
        help="only these kernels (default: every kernel of each workload)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed calls per implementation (default: the workload's)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="time a case again (at most this many times in all) while other "
        "processes keep more than --max-load cores busy (default: 3)",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.25,
        help="cores of others' load tolerated during a timing (default: 0.25)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    started = datetime.datetime.now(datetime.UTC)
    command = "python bench/report.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    progress = sys.stderr
    run_load = harness.LoadMonitor()
    print("measuring the floor ...", file=progress, flush=True)
    floor = harness.measure_floor()

    results: list[harness.Measurement] = []
    for w in WORKLOADS[args.workloads]:
        for name in w.kernels:
            if args.kernels and name not in args.kernels:
                continue
            kernel = KERNELS[name]
            for impl in kernel.implementations:
                if impl.backend is not None and impl.backend not in jacgeom.backends():
                    print(f"skip {impl.name}: backend unavailable", file=progress)
                    continue
                t0 = time.perf_counter()
                measured = harness.measure_case(
                    w,
                    kernel,
                    impl,
                    args.rounds or w.rounds,
                    attempts=args.attempts,
                    max_load=args.max_load,
                )
                results.append(measured)
                print(
                    f"{w.name} {name} {impl.name}: median {measured.median:.4g} s "
                    f"({len(measured.times)} rounds, {measured.count}/{w.B} samples, "
                    f"others' load {measured.others_load or 0:.2f} cores, "
                    f"{measured.attempts} attempt(s); "
                    f"{time.perf_counter() - t0:.1f} s wall)",
                    file=progress,
                    flush=True,
                )

    print("measuring the floor again ...", file=progress, flush=True)
    floor = floor.best(harness.measure_floor())
    others = run_load.others()
    finished = datetime.datetime.now(datetime.UTC)
    print(f"### jacgeom benchmarks, {args.workloads} workloads")
    print()
    print(
        f"Measured {started:%Y-%m-%d %H:%M} UTC ({(finished - started).total_seconds() / 60:.1f}"
        f" min) with `{command}`. Machine: {harness.machine_summary()}. Other processes "
        f"kept {'?' if others is None else f'{others:.1f}'} cores busy on average meanwhile."
    )
    print()
    print("```")
    print("\n".join(harness.machine_lines()))
    print("```")
    print()
    print(harness.markdown_tables(results, floor))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": started.isoformat(),
                    "command": command,
                    "machine": harness.machine_lines(),
                    "floor": {
                        "copy_bandwidth_bytes_per_s": floor.copy_bandwidth,
                        "gemm_flops_per_s": floor.gemm_rate,
                        "copy_bytes": floor.copy_bytes,
                        "gemm_size": floor.gemm_size,
                    },
                    "results": harness.as_records(results, floor),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
