"""The command line: ``python -m jacgeom mc`` (JSON, plots, errors, kernel layers, lean
runs) and its default sweep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jacgeom.cli import main


def test_cli_json_plot_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "mc.png"
    argv = ["mc", "--widths", "6", "6", "--samples", "300", "--json", "--quiet"]
    assert main([*argv, "--plot", str(png)]) == 0
    summary = json.loads(capsys.readouterr().out)[0]["summary"]
    assert summary["samples"] == 300 and "p_rank_deficient" in summary
    assert png.stat().st_size > 10000
    assert main(["mc", "--width", "4", "--activation", "swish", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown activation 'swish'" in err[0]
    assert main(["mc", "--widths", "3", "--quiet"]) == 2
    assert "widths must hold at least two" in capsys.readouterr().err
    blocker = tmp_path / "f"
    blocker.write_text("")
    argv = ["mc", "--width", "3", "--samples", "10", "--out", str(blocker / "x"), "--quiet"]
    assert main(argv) == 2
    assert "not writable" in capsys.readouterr().err


def test_cli_unreachable_scheduler(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dask.distributed")
    start = time.time()
    argv = ["mc", "--width", "3", "--samples", "10", "--scheduler", "tcp://127.0.0.1:9"]
    assert main([*argv, "--timeout", "2", "--quiet"]) == 2
    assert time.time() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach scheduler tcp://127.0.0.1:9" in err[-1]


def test_default_sweep_plan() -> None:
    from jacgeom.cli import DEFAULT_ACTIVATIONS, _default_sweep

    plan = _default_sweep(100)
    assert {p["activation"] for p, _ in plan} == set(DEFAULT_ACTIVATIONS)
    assert min(p["width"] for p, _ in plan) == 8 and max(p["width"] for p, _ in plan) == 128
    assert max(p["depth"] for p, _ in plan) == 16


def test_cli_kernel_layers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mc", "--layer", "kernel", "--widths", "4", "4", "--samples", "300", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["point"]["layer"] == "kernel" and out[0]["summary"]["samples"] == 300


def test_cli_no_layer_ranks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mc", "--widths", "5", "6", "5", "--samples", "300", "--quiet", "--json"]
    assert main([*argv, "--no-layer-ranks", "--out", str(tmp_path)]) == 0
    lean = json.loads(capsys.readouterr().out)[0]["summary"]
    (sub,) = [p for p in tmp_path.glob("*") if p.is_dir()]
    assert json.loads((sub / "spec.json").read_text())["layer_ranks"] is False
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["summary"] == lean


def test_cli_no_spectra_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "mc.png"
    argv = ["mc", "--width", "6", "--depth", "2", "--samples", "300", "--quiet"]
    assert main([*argv, "--no-spectra", "--plot", str(png)]) == 0
    assert png.stat().st_size > 0 and "not recorded" in capsys.readouterr().out
