"""bench/report.py --render: the tables of a saved --json run, printed without timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import render
import report


def _row(impl: str, median: float, **extra: Any) -> dict[str, Any]:
    return {
        "workload": "quick-relu-512x64x64-float64",
        "kernel": "layer_jacobian",
        "implementation": impl,
        "median_s": median,
        "times_s": [median * 0.9, median, median * 1.5],
        "others_load_cores": 0.0,
        "samples_timed": 512,
        "samples": 512,
        "floor_s": 0.001,
        "floor_formula": "bytes / copy bandwidth",
        "diagnosis": None,
        "attempts": 1,
        **extra,
    }


# A run as report.py --json writes it, before the records named their family and
# description (both then come from the registry), with one Monte Carlo experiment.
RUN: dict[str, Any] = {
    "date": "2026-12-03T09:56:04.010413+00:00",
    "command": "python bench/report.py --workloads quick --json run.json",
    "machine": ["CPU: test machine, 2 logical cores"],
    "floor": {
        "copy_bandwidth_bytes_per_s": 4e10,
        "gemm_flops_per_s": {"float64": 1e11, "float32": 2e11},
    },
    "results": [
        _row("naive", 0.008, samples_timed=128),
        _row("vectorised", 0.004),
        _row("cpp", 0.002, attempts=2),
        {
            "workload": "quick-mc-16x16",
            "kernel": "montecarlo",
            "implementation": "naive numpy loop",
            "median_s": 0.5,
            "times_s": [0.5, 0.5, 0.6],
            "samples": 20000,
            "samples_timed": 20000,
            "samples_per_s": 40000.0,
            "others_load_cores": 0.0,
            "attempts": 1,
        },
        {
            "workload": "quick-mc-16x16",
            "kernel": "montecarlo",
            "implementation": "montecarlo.run workers=2",
            "median_s": 0.25,
            "times_s": [0.25, 0.24, 0.3],
            "samples": 20000,
            "samples_timed": 20000,
            "samples_per_s": 80000.0,
            "others_load_cores": 0.5,
            "attempts": 1,
        },
    ],
}


def test_render_tables_of_a_saved_run() -> None:
    text = render.render(RUN)
    lines = text.splitlines()
    assert "Measured 2026-12-03 09:56 UTC with `python bench/report.py --workloads quick" in text
    assert "CPU: test machine, 2 logical cores" in lines
    assert "copy bandwidth 40.00 GB/s; float64 gemm 100.0 GFLOP/s, float32 gemm 200.0" in text
    assert "### Single-layer kernels" in lines and "### Monte Carlo throughput" in lines
    # the description from the registry, the columns of the report's own tables
    assert "#### quick-relu-512x64x64-float64 (B=512, m=64, n=64, float64, relu)" in lines
    assert "| layer_jacobian | naive † (128 of 512 samples ×4) | 0.0080 (0.0072–0.0120) |" in text
    cpp = next(x for x in lines if x.startswith("| layer_jacobian | cpp § (2 attempts) |"))
    assert cpp.split(" | ")[3:8] == ["4.00×", "2.00×", "0.0010", "50%", "0.0 |"]
    mc = next(x for x in lines if x.startswith("| montecarlo.run workers=2 |"))
    assert mc.split(" | ")[1:6] == ["20,000", "0.2500 (0.2400–0.3000)", "80,000", "2.0×", "0.5 |"]
    assert "- † extrapolated" in text and "- § timed again" in text


def test_render_reads_family_and_description_of_new_records() -> None:
    rows = [_row("cpp", 0.002, family="rank", description="a described workload")]
    text = render.render({**RUN, "results": rows})
    assert "### Masked-row ranks" in text
    assert "#### quick-relu-512x64x64-float64 (a described workload)" in text


def test_report_render_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(RUN))
    assert report.main(["--render", str(saved)]) == 0
    assert capsys.readouterr().out.strip() == render.render(RUN)
    with pytest.raises(SystemExit):
        report.main(["--render", str(saved), "--json", str(tmp_path / "x.json")])
    assert "--render prints a saved run" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SystemExit, match="is not a --json file of bench/report.py"):
        report.main(["--render", str(tmp_path / "bad.json")])
