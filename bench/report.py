"""Print the benchmark report: one markdown table per workload, the floor and the machine.

    python bench/report.py --workloads full                  # every table; ~15 min, 2 cores
    python bench/report.py --workloads full --families rank network
    python bench/report.py --workloads quick --json q.json
    python bench/report.py --workloads quick --compare q.json # the change since q.json
    python bench/report.py --compare old.json --current new.json   # two saved runs, no timing
    python bench/report.py --render run.json                 # a saved run's tables, no timing
    python bench/report.py --scaling --plot scaling.png      # cost vs B, width, depth; ~3 min

Runs the kernel registry (bench/workloads.py) directly (no pytest): for each workload, kernel and
implementation it warms up once (not timed), times ``rounds`` calls with time.perf_counter,
quotes the median, and asserts the last result against jacgeom.reference on a few samples.
On a shared machine a case is timed again (--attempts, --max-load) while other processes
keep the cores busy, and the quietest attempt is kept; each row shows that load.
Implementations that loop over samples are timed on the first samples only at the full size
and scaled by B / samples (marked † in the table). The floor (copy bandwidth, dgemm / sgemm
rates) is measured in the same process before and after the kernels; the better of the two
is used (other work on a shared machine only ever slows it down). Peers (torch, JAX) that
are not installed are skipped with a message. The Monte Carlo family (throughput.py) is
timed in samples per second, outside the kernel registry.

--scaling times each kernel's implementations (--scaling-implementations, default cpp) at 4
sizes along B, width and depth and fits the exponent of cost against size (scaling.py);
--plot draws it. --compare OLD.json prints, per row of OLD.json also measured now (or in
--current NEW.json), the old and new medians and their ratio; rows more than --threshold
slower are marked. --render RUN.json prints the tables of a saved --json run (render.py);
the benchmark page quotes its tables from such files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import render  # noqa: E402
import throughput  # noqa: E402
from registry import WORKLOAD_SETS, unavailable  # noqa: E402
from workloads import KERNELS, WORKLOADS  # noqa: E402

FAMILIES = render.FAMILIES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("--workloads", choices=WORKLOAD_SETS, default="quick")
    parser.add_argument(
        "--families",
        nargs="+",
        choices=list(FAMILIES),
        default=list(FAMILIES),
        help="only these groups of kernels (default: all)",
    )
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
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="OLD.json",
        help="print the change of every row since this saved --json run",
    )
    parser.add_argument(
        "--current",
        type=Path,
        default=None,
        metavar="NEW.json",
        help="with --compare: compare this saved run instead of timing anything",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RUN.json",
        help="print the tables of this saved --json run instead of timing anything",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=1.15,
        help="with --compare: mark rows whose median grew by more than this factor (default: 1.15)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead of the workload tables: time each kernel at 4 sizes along B, "
        "width and depth and fit the exponent of cost against size",
    )
    parser.add_argument(
        "--scaling-implementations",
        nargs="+",
        default=["cpp"],
        help="implementations timed by --scaling (default: cpp)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="with --scaling: draw cost against size (matplotlib)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.current and not args.compare:
        parser.error("--current needs --compare OLD.json")
    if args.plot and not args.scaling:
        parser.error("--plot draws the --scaling study; add --scaling")
    if args.render and (args.compare or args.json or args.scaling):
        parser.error("--render prints a saved run: no --compare, --json or --scaling")
    if args.render:
        print(render.render(_load(args.render)))
        return 0
    if args.compare and args.current:
        print(compare_markdown(_load(args.compare), _load(args.current), args.threshold))
        return 0
    old = _load(args.compare) if args.compare else None  # fail before timing, not after

    started = datetime.datetime.now(datetime.UTC)
    command = "python bench/report.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    progress = sys.stderr
    run_load = harness.LoadMonitor()
    record: dict[str, Any] = {
        "date": started.isoformat(),
        "command": command,
        "machine": harness.machine_lines(),
    }
    sections: list[str] = []

    if args.scaling:
        import scaling

        series = scaling.run(args.scaling_implementations, kernels=args.kernels)
        sections += ["#### Scaling: cost against size", "", scaling.markdown(series)]
        record["scaling"] = scaling.as_records(series)
        if args.plot:
            title = (
                f"jacgeom scaling, {started:%Y-%m-%d}, {harness._cpu_model()}, "
                f"{os.cpu_count()} cores, numpy {np.__version__}"
            )
            scaling.plot(series, args.plot, title=title)
            sections += ["", f"Plot written to {args.plot}."]
    else:
        print("measuring the floor ...", file=progress, flush=True)
        floor = harness.measure_floor()
        by_family: dict[str, list[harness.Measurement]] = {}
        for w in WORKLOADS[args.workloads]:
            for name in w.kernels:
                kernel = KERNELS[name]
                if args.kernels and name not in args.kernels:
                    continue
                if kernel.family not in args.families:
                    continue
                for impl in kernel.implementations:
                    reason = unavailable(impl)
                    if reason:
                        print(f"skip {w.name} {name} {impl.name}: {reason}", file=progress)
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
                    by_family.setdefault(kernel.family, []).append(measured)
                    print(
                        f"{w.name} {name} {impl.name}: median {measured.median:.4g} s "
                        f"({len(measured.times)} rounds, {measured.count}/{w.B} samples, "
                        f"others' load {measured.others_load or 0:.2f} cores, "
                        f"{measured.attempts} attempt(s); "
                        f"{time.perf_counter() - t0:.1f} s wall)",
                        file=progress,
                        flush=True,
                    )
        rows: list[harness.Measurement] = [m for ms in by_family.values() for m in ms]
        mc_rows: list[throughput.Row] = []
        if "montecarlo" in args.families and not args.kernels:
            mc_rows = throughput.run_all(
                args.workloads,
                attempts=args.attempts,
                max_load=args.max_load,
                progress=progress,
            )
        print("measuring the floor again ...", file=progress, flush=True)
        floor = floor.best(harness.measure_floor())
        for family, title in FAMILIES.items():
            if family in by_family:
                sections += [
                    f"#### {title}",
                    "",
                    harness.markdown_tables(by_family[family], floor),
                    "",
                ]
        if mc_rows:
            sections += [f"#### {FAMILIES['montecarlo']}", "", throughput.markdown(mc_rows)]
        record["floor"] = {
            "copy_bandwidth_bytes_per_s": floor.copy_bandwidth,
            "fresh_write_bandwidth_bytes_per_s": floor.fresh_write_bandwidth,
            "gemm_flops_per_s": floor.gemm_rate,
            "copy_bytes": floor.copy_bytes,
            "gemm_size": floor.gemm_size,
        }
        record["results"] = harness.as_records(rows, floor) + throughput.as_records(mc_rows)

    others = run_load.others()
    finished = datetime.datetime.now(datetime.UTC)
    record["others_load_cores"] = others
    what = "scaling study" if args.scaling else f"{args.workloads} workloads"
    print(f"### jacgeom benchmarks, {what}")
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
    print("\n".join(sections).rstrip())
    if old is not None:
        print()
        print(compare_markdown(old, record, args.threshold))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    return 0


# ---------------------------------------------------------------------------------------
# --compare


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"report.py: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not ("results" in data or "scaling" in data):
        raise SystemExit(f"report.py: {path} is not a --json file of bench/report.py")
    return data


def _change(ratio: float, threshold: float) -> str:
    if ratio > threshold:
        return f"**{ratio:.2f}× slower**"
    if ratio < 1 / threshold:
        return f"{1 / ratio:.2f}× faster"
    return "≈ same"


def _hardware(run: dict[str, Any]) -> list[str]:
    """The machine lines of a saved run without the one that describes jacgeom's own build
    (which math functions its gelu and tanh take): a change of the code is not a new
    machine."""
    return [line for line in run.get("machine", []) if not line.startswith("gelu, gelu'")]


def compare_markdown(old: dict[str, Any], new: dict[str, Any], threshold: float) -> str:
    """Per row present in both runs: old and new median, new / old, and a verdict."""
    out = [
        f"#### Change since {old.get('date', '?')[:16]} (`{old.get('command', '?')}`)",
        "",
    ]
    if _hardware(old) != _hardware(new):
        out += ["Machines differ: compare with care.", ""]
    key_of = ("workload", "kernel", "implementation")
    olds = {tuple(r[k] for k in key_of): r for r in old.get("results", [])}
    news = {tuple(r[k] for k in key_of): r for r in new.get("results", [])}
    common = [k for k in news if k in olds]
    slower = 0
    if common:
        out += [
            "| workload | kernel | implementation | old median s | new median s | new / old | "
            "change | others' load old, new |",
            "|---|---|---|---:|---:|---:|---|---:|",
        ]
        for k in common:
            o, n = olds[k], news[k]
            ratio = n["median_s"] / o["median_s"] if o["median_s"] > 0 else float("nan")
            slower += ratio > threshold
            out.append(
                f"| {k[0]} | {k[1]} | {k[2]} | {harness._seconds(o['median_s'])} | "
                f"{harness._seconds(n['median_s'])} | {ratio:.2f} | "
                f"{_change(ratio, threshold)} | {harness._load(o.get('others_load_cores'))}, "
                f"{harness._load(n.get('others_load_cores'))} |"
            )
        out += [
            "",
            f"{slower} of {len(common)} rows more than {threshold:.2f}× slower than before "
            "(median times; a row whose others' load is high in either run says little).",
        ]
    only_old = [k for k in olds if k not in news]
    only_new = [k for k in news if k not in olds]
    if only_old:
        out.append(f"Rows only in the old run: {len(only_old)}.")
    if only_new:
        out.append(f"Rows only in the new run: {len(only_new)}.")
    scale_key = ("kernel", "implementation", "axis")
    so = {tuple(s[k] for k in scale_key): s for s in old.get("scaling", [])}
    sn = {tuple(s[k] for k in scale_key): s for s in new.get("scaling", [])}
    both = [k for k in sn if k in so]
    if both:
        out += [
            "",
            "| kernel | implementation | axis | old exponent | new exponent | "
            "new / old time at the largest size |",
            "|---|---|---|---:|---:|---:|",
        ]
        for k in both:
            o, n = so[k], sn[k]
            same_sizes = o["sizes"] == n["sizes"]
            last = f"{n['median_s'][-1] / o['median_s'][-1]:.2f}" if same_sizes else "—"
            out.append(
                f"| {k[0]} | {k[1]} | {k[2]} | {o['exponent']:.2f} | {n['exponent']:.2f} | {last} |"
            )
    if not common and not both:
        out.append("No rows in common.")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
