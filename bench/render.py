"""The markdown tables of a saved run, without timing anything.

    python bench/report.py --render RUN.json

RUN.json is what ``bench/report.py --json RUN.json`` wrote: the date, the command, the
machine, the floor and one record per timed row (harness.as_records, throughput.as_records).
The tables have the columns of the report's own; the benchmark page quotes them from such
files. Records of runs older than the "family" and "description" fields take both from the
registry by workload name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import harness
from registry import NAIVE, VECTORISED

# The report's groups, in the order of its sections.
FAMILIES = {
    "layer": "Single-layer kernels",
    "rank": "Masked-row ranks",
    "network": "Network Jacobians, ranks and singular values",
    "montecarlo": "Monte Carlo throughput",
}
MONTECARLO_NAIVE = "naive numpy loop"


def _registry() -> tuple[dict[str, str], dict[str, str]]:
    """(kernel name -> family, workload name -> description) of the current registry."""
    import throughput
    from workloads import KERNELS, WORKLOADS

    families = {name: k.family for name, k in KERNELS.items()}
    described = {w.name: w.describe() for ws in WORKLOADS.values() for w in ws}
    described |= {e.name: e.describe() for es in throughput.EXPERIMENTS.values() for e in es}
    return families, described


def _unique(items: Any) -> list[Any]:
    """Equal items once, in order of appearance."""
    return list(dict.fromkeys(items))


def _family(record: dict[str, Any], families: dict[str, str]) -> str:
    if "family" in record:
        return str(record["family"])
    if record["kernel"] == "montecarlo":
        return "montecarlo"
    return families.get(record["kernel"], "other")


def _spread(r: dict[str, Any]) -> str:
    times = r["times_s"]
    return (
        f"{harness._seconds(r['median_s'])} "
        f"({harness._seconds(min(times))}–{harness._seconds(max(times))})"
    )


def _label(r: dict[str, Any]) -> str:
    label = str(r["implementation"])
    timed, samples = r.get("samples_timed"), r.get("samples")
    if r["kernel"] != "montecarlo" and timed and samples and timed < samples:
        label += f" † ({timed} of {samples} samples ×{samples / timed:g})"
    if r.get("attempts", 1) > 1:
        label += f" § ({r['attempts']} attempts)"
    if r.get("diagnosis"):
        label += " ‡"
    return label


def kernel_table(workload: str, description: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """One workload's table: the columns of harness.markdown_tables."""
    out = [
        f"#### {workload} ({description})" if description else f"#### {workload}",
        "",
        "| kernel | implementation | median s (min–max) | vs naive | vs vectorised | "
        "floor s | floor / time | others' load |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kernel in _unique(r["kernel"] for r in rows):
        krows = [r for r in rows if r["kernel"] == kernel]
        base = {r["implementation"]: r["median_s"] for r in krows}
        for r in krows:
            floor_s = r.get("floor_s")
            out.append(
                f"| {kernel} | {_label(r)} | {_spread(r)} | "
                f"{harness._ratio(base.get(NAIVE), r['median_s'])} | "
                f"{harness._ratio(base.get(VECTORISED), r['median_s'])} | "
                f"{harness._seconds(floor_s)} | {harness._percent(floor_s, r['median_s'])} | "
                f"{harness._load(r.get('others_load_cores'))} |"
            )
    return out


def montecarlo_table(workload: str, description: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """One Monte Carlo experiment: samples per second against the naive loop."""
    rates = {r["implementation"]: r["samples_per_s"] for r in rows}
    naive = rates.get(MONTECARLO_NAIVE)
    out = [
        f"#### {workload} ({description})" if description else f"#### {workload}",
        "",
        "| implementation | samples timed | median s (min–max) | samples/s | vs naive | "
        "others' load |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = r["samples_per_s"]
        vs = f"{rate / naive:.1f}×" if naive else "—"
        out.append(
            f"| {_label(r)} | {r['samples_timed']:,} | {_spread(r)} | "
            f"{rate:,.0f} | {vs} | {harness._load(r.get('others_load_cores'))} |"
        )
    return out


def render(record: dict[str, Any]) -> str:
    """The report of a saved run: its date, command and machine, then one table per
    workload, grouped as the report groups them."""
    families, described = _registry()
    results = record.get("results", [])
    out = [
        "### jacgeom benchmarks, a saved run",
        "",
        f"Measured {str(record.get('date', '?'))[:16].replace('T', ' ')} UTC with "
        f"`{record.get('command', '?')}`.",
        "",
        "```",
        *record.get("machine", []),
        "```",
    ]
    floor = record.get("floor")
    if floor:
        gemm = ", ".join(
            f"{dtype} gemm {rate / 1e9:.1f} GFLOP/s"
            for dtype, rate in floor.get("gemm_flops_per_s", {}).items()
        )
        out += [
            "",
            f"Floor measured in the same run: copy bandwidth "
            f"{floor.get('copy_bandwidth_bytes_per_s', 0) / 1e9:.2f} GB/s; {gemm}.",
        ]
    notes: list[str] = []
    for family, title in {**FAMILIES, "other": "Other kernels"}.items():
        rows = [r for r in results if _family(r, families) == family]
        if not rows:
            continue
        out += ["", f"### {title}"]
        for workload in _unique(r["workload"] for r in rows):
            wrows = [r for r in rows if r["workload"] == workload]
            description = str(wrows[0].get("description") or described.get(workload, ""))
            table = montecarlo_table if family == "montecarlo" else kernel_table
            out += ["", *table(workload, description, wrows)]
            notes += [
                f"- ‡ {workload}, {r['kernel']}, {r['implementation']}: {r['diagnosis']}."
                for r in wrows
                if r.get("diagnosis")
            ]
    if any(r["kernel"] != "montecarlo" for r in results):
        out += [
            "",
            "- vs naive, vs vectorised: time of that numpy baseline divided by this row's "
            "time (> 1: faster than the baseline); floor / time: the fraction of the floor "
            "reached.",
            "- median of the rounds timed (min–max in brackets); others' load: CPU cores "
            "other processes kept busy while the row was timed.",
        ]
        if any(_label(r).count("†") for r in results):
            out.append(
                "- † extrapolated: timed on the first samples only and scaled by B / samples."
            )
        if any(r.get("attempts", 1) > 1 for r in results):
            out.append(
                "- § timed again because other processes were busy: the attempt with the "
                "least others' load is shown."
            )
    out += notes
    return "\n".join(out)
