"""The command line: ``jacgeom mc`` (validation before any work, progress, Ctrl-C, resume
reporting, strict JSON, the closing theory lines, plots, kernel layers, lean runs), its
default sweep, and ``jacgeom demo``."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import jacgeom
import jacgeom.cli
import jacgeom.montecarlo
from jacgeom.cli import EXIT_INTERRUPTED, build_parser, main
from jacgeom.montecarlo import Spec
from jacgeom.montecarlo.sampling import SAMPLER


def _default_sigint() -> None:
    """In a child, SIGINT as a shell starts a command: default. A process that ignores
    SIGINT (some test before, or a launcher) passes SIG_IGN to its children, where Python
    then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, as strict parsers do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the Monte Carlo starts: errors must come before any work."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr(jacgeom.montecarlo, "run", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--width", "0"], "argument --width: must be >= 1, got 0"),
        (["--depth", "0"], "argument --depth: must be >= 1, got 0"),
        (["--width", "4", "--depth", "-2"], "argument --depth: must be >= 1, got -2"),
        (["--samples", "0"], "argument --samples: must be >= 1, got 0"),
        (["--widths", "4", "0"], "argument --widths: must be >= 1, got 0"),
        (["--width", "2.5"], "argument --width: expected an integer >= 1, got '2.5'"),
        (["--chunk-size", "0"], "argument --chunk-size: must be >= 1"),
        (["--workers", "0"], "argument --workers: must be >= 1"),
        (["--seed", "-1"], "argument --seed: must be >= 0"),
        (["--sigma-b", "nan"], "argument --sigma-b: must be >= 0, got nan"),
        (["--layer", "kernel", "--gamma", "0"], "argument --gamma: must be > 0"),
        (["--activation", "swish"], "argument --activation: invalid choice: 'swish'"),
        (["--widths", "4", "4", "--width", "4"], "--widths gives every width: drop --width"),
        (
            ["--layer", "kernel", "--activation", "tanh"],
            "--activation: not used by kernel layers",
        ),
        (["--layer", "kernel", "--init", "xavier"], "--init: not used by kernel layers"),
        (["--kernel", "rbf"], "--kernel: only for kernel layers; add --layer kernel"),
        (["--width", "4", "--centers", "3"], "--centers: only for kernel layers"),
        (["--sigma-w", "2"], "--sigma-w is the gain of --init gaussian or orthogonal"),
        (["--manifold-dim", "3"], "--manifold-dim: only with --inputs manifold"),
        (["--resume"], "--resume needs --out DIR"),
        (["--width", "4", "--records"], "--records writes every sample's statistics as Parquet"),
        (["--timeout", "3"], "--timeout is the time to reach --scheduler"),
        (["--width", "4", "--plot", "figure.txt"], "give a file name ending in .png"),
        (["--widths", "3"], "widths must hold at least two positive integers, got [3]"),
        (
            ["--widths", "4", "4", "4", "--residual", "--norm", "layer", "--layer", "kernel"],
            "normalise",
        ),
        (["--width", "4", "--activation", "relu", "tanh"], "activation has 2 entries for 1 layers"),
    ],
)
def test_invalid_command_lines_fail_before_any_work(
    argv: list[str], message: str, no_run: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mc", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert err[0].startswith("jacgeom mc: error: ")
    assert message in err[0]
    assert captured.out == ""


def test_output_paths_and_matplotlib_checked_before_the_run(
    tmp_path: Path,
    no_run: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "mc.png"
    assert main(["mc", "--width", "4", "--plot", str(missing)]) == 2
    assert f"directory {str(missing.parent)!r} does not exist" in capsys.readouterr().err
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["mc", "--width", "3", "--out", str(blocker / "x")]) == 2
    assert "--out" in (err := capsys.readouterr().err) and "not writable" in err
    assert main(["mc", "--width", "3", "--out", str(tmp_path / "absent"), "--resume"]) == 2
    assert "no checkpoint directory" in capsys.readouterr().err

    import jacgeom.plot

    def no_matplotlib() -> None:
        raise ImportError('figures need matplotlib: pip install "jacgeom[plot]"')

    monkeypatch.setattr(jacgeom.plot, "_pyplot", no_matplotlib)
    assert main(["mc", "--width", "4", "--plot", str(tmp_path / "mc.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        'jacgeom mc: error: --plot: figures need matplotlib: pip install "jacgeom[plot]"'
    ]


def test_every_spec_field_has_a_flag_with_help_and_default() -> None:
    parser = build_parser()
    (mc,) = [
        a.choices["mc"]  # type: ignore[index]
        for a in parser._actions
        if a.dest == "command"
    ]
    options = {o: a for a in mc._actions for o in a.option_strings}
    flag = {
        "fresh_weights": "--shared-weights",
        "layer_ranks": "--no-layer-ranks",
        "spectra": "--no-spectra",
    }
    for field in dataclasses.fields(Spec):
        name = flag.get(field.name, "--" + field.name.replace("_", "-"))
        assert name in options, f"Spec.{field.name} has no flag {name}"
        text = options[name].help or ""
        assert text, f"{name} has no help text"
        assert "default" in text, f"{name} does not state its default"
    text = mc.format_help()
    assert "4000 samples per point" in text and "20000 samples" in text
    assert "exit code 130" in text


def test_one_experiment_progress_theory_lines_and_timing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["mc", "--width", "6", "--samples", "200"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["point 1/1: width 6, depth 1, relu, 200 samples"]
    out = captured.out
    assert "| width | depth | activation | samples |" in out
    assert "relu: P(exact rank < n) = 1 - prod_l P(Binomial(n_l, 1/2) >= n)" in out
    assert "phi' vanishes nowhere" not in out and "Lyapunov" not in out
    assert "200 samples: 200 computed in " in out and "reused" not in out
    assert main(["mc", "--width", "6", "--samples", "200", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_log_progress_line_per_chunk_interval(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # stderr captured, not a terminal: no bar, but "point k/N: c/C chunks" lines at most
    # every PROGRESS_LINE_SECONDS (0 here: after every chunk but the last).
    monkeypatch.setattr(jacgeom.cli, "PROGRESS_LINE_SECONDS", 0.0)
    argv = ["mc", "--width", "6", "--samples", "600", "--chunk-size", "200", "--workers", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().err.splitlines() == [
        "point 1/1: width 6, depth 1, relu, 600 samples",
        "point 1/1: 1/3 chunks",
        "point 1/1: 2/3 chunks",
    ]
    monkeypatch.setattr(jacgeom.cli, "PROGRESS_LINE_SECONDS", 3600.0)
    assert main(argv) == 0
    assert capsys.readouterr().err.splitlines() == [
        "point 1/1: width 6, depth 1, relu, 600 samples"
    ]


def test_theory_lines_name_the_closed_form_of_each_activation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from jacgeom.cli import _theory_notes
    from jacgeom.montecarlo import run

    def result(**fields: Any) -> tuple[dict[str, Any], Any]:
        return {}, run(Spec(samples=20, **fields), progress=False)

    notes = _theory_notes(
        [
            result(width=4, depth=1, activation="relu"),
            result(width=4, depth=1, activation="tanh"),
            result(width=4, depth=1, activation="gelu"),
            result(width=4, depth=4, activation="identity"),
            result(width=4, depth=1, layer="kernel"),
            result(width=4, depth=1, activation="relu", fresh_weights=False),
        ]
    )
    by_text = {n.split(": ", 1)[1]: n.split(": ", 1)[0].strip() for n in notes}
    binomial = next(t for t in by_text if "Binomial" in t)
    assert by_text[binomial] == "relu"
    full = next(t for t in by_text if "phi' vanishes nowhere" in t)
    assert by_text[full] == "tanh, gelu, identity"
    lyapunov = next(t for t in by_text if "Lyapunov" in t)
    assert by_text[lyapunov] == "identity"
    none = next(t for t in by_text if "no closed form" in t)
    assert by_text[none] == "kernel layers (rbf), relu"


def test_json_is_strict_with_spec_versions_and_log_base(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["mc", "--width", "6", "--samples", "200", "--seed", "3", "--json", "--quiet"]
    assert main(argv) == 0
    (record,) = strict_json(capsys.readouterr().out)
    assert record["jacgeom"] == jacgeom.__version__ and record["sampler"] == SAMPLER
    assert record["log_base"] == "e" and "natural" in record["logs"]
    assert record["spec"] == Spec(width=6, depth=1, samples=200, seed=3).to_dict()
    assert record["point"] == {"width": 6, "depth": 1, "activation": "relu"}
    summary = record["summary"]
    assert summary["samples"] == 200
    # most one-layer relu samples lose rank: the median condition number is infinite
    assert summary["log_cond"]["median"] == "inf"
    assert record["run"]["computed"] == 200 and record["run"]["reused"] == 0
    assert any("Binomial" in n for n in record["theory_notes"])


def test_strict_json_values() -> None:
    import numpy as np

    from jacgeom._json import strict as _strict_json

    value = {"a": [np.inf, -np.inf, np.nan, np.float32(0.5), np.int64(3), np.bool_(True)]}
    assert _strict_json(value) == {"a": ["inf", "-inf", None, 0.5, 3, True]}


def test_resumed_run_reports_computed_and_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["mc", "--width", "5", "--chunk-size", "100", "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--samples", "300"]) == 0
    assert "300 samples: 300 computed in " in capsys.readouterr().out
    assert main([*argv, "--samples", "500", "--json"]) == 0
    (record,) = strict_json(capsys.readouterr().out)
    assert record["run"]["computed"] == 200 and record["run"]["reused"] == 300
    assert record["summary"]["samples"] == 500
    assert main([*argv, "--samples", "500", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "500 samples, all reused from the checkpoints in " in out
    assert "none computed" in out


def test_records_written_as_one_parquet_table_per_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    argv = ["mc", "--width", "5", "--samples", "300", "--chunk-size", "100", "--quiet"]
    assert main([*argv, "--out", str(tmp_path), "--records", "--json"]) == 0
    (record,) = strict_json(capsys.readouterr().out)
    records = Path(record["run"]["records"])
    assert records.parent == Path(record["run"]["out"]) and records.name == "records"
    assert sorted(p.name for p in records.iterdir()) == [f"chunk-{i:06d}.parquet" for i in range(3)]
    table = pq.read_table(records)
    assert table.num_rows == 300
    assert sorted(table.column("sample").to_pylist()) == list(range(300))
    spec = json.loads(table.schema.metadata[b"jacgeom.spec"])
    assert spec["widths"] == [5, 5] and spec["samples"] == 300
    # The records agree with the summary the run printed.
    exact = table.column("exact_rank").to_numpy()
    deficient = record["summary"]["p_exact_rank_deficient"]["count"]
    assert int((exact < 5).sum()) == deficient
    # Without --records, no records (and the JSON says so).
    assert main([*argv, "--out", str(tmp_path / "plain"), "--json"]) == 0
    (plain,) = strict_json(capsys.readouterr().out)
    assert plain["run"]["records"] is None
    assert not list((tmp_path / "plain").rglob("*.parquet"))


def test_records_without_pyarrow_fail_before_any_work(
    tmp_path: Path,
    no_run: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import jacgeom.montecarlo.records

    def no_pyarrow() -> None:
        raise ImportError('records need pyarrow: pip install "jacgeom[records]"')

    monkeypatch.setattr(jacgeom.montecarlo.records, "_pyarrow", no_pyarrow)
    assert main(["mc", "--width", "4", "--out", str(tmp_path), "--records"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        'jacgeom mc: error: --records: records need pyarrow: pip install "jacgeom[records]"'
    ]


def test_interrupted_run_without_out_says_nothing_was_saved(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(jacgeom.montecarlo, "run", interrupt)
    assert main(["mc", "--samples", "10"]) == EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert "interrupted at point 1/35: nothing saved" in err and "--out DIR" in err
    assert "Traceback" not in err


def test_counts_in_messages_agree_in_number() -> None:
    assert [jacgeom.cli._count(n, "chunk") for n in (0, 1, 2)] == [
        "0 chunks",
        "1 chunk",
        "2 chunks",
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_saves_chunks_and_a_rerun_resumes(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "jacgeom", "mc", "--width", "12", "--depth", "3"]
    argv += ["--samples", "200000", "--chunk-size", "200", "--workers", "1"]
    argv += ["--out", str(tmp_path), "--json"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("*/chunk-*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
    saved = len(list(tmp_path.glob("*/chunk-*.npz")))
    assert saved >= 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("jacgeom: interrupted at point 1/1: ")
    assert line.endswith(f"saved under {tmp_path}; rerun the same command to resume")
    n = int(line.split(": ")[-1].split(" chunk")[0])
    assert n >= 2 and f"({n * 200} samples)" in line
    # the rerun, with fewer samples so it ends quickly, reuses what was saved
    argv[argv.index("200000")] = str(n * 200)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, check=True, preexec_fn=_default_sigint
    )
    (record,) = strict_json(done.stdout)
    assert record["run"] == {**record["run"], "computed": 0, "reused": n * 200}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_second_ctrl_c_while_chunks_finish_exits_at_once_with_one_line(tmp_path: Path) -> None:
    # The first Ctrl-C waits for the running chunks (seconds each here); a second one there
    # interrupted the wait for the worker threads inside Thread.join, which then counted
    # them as finished: the interpreter shut down under them and aborted (SIGABRT,
    # "terminate called without an active exception"), or exited only once the chunks ended.
    argv = [sys.executable, "-m", "jacgeom", "mc", "--width", "16", "--depth", "4"]
    argv += ["--samples", "100000", "--chunk-size", "25000", "--workers", "2"]
    argv += ["--out", str(tmp_path)]
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        preexec_fn=_default_sigint,
    ) as proc:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # "point 1/1: ...": the run starts now
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        after = time.monotonic() - sent
    assert first.startswith("point 1/1: width 16, depth 4"), first + err
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert [line for line in err.splitlines() if line] == [
        f"jacgeom: interrupted at point 1/1: 0 chunks (0 samples) saved under {tmp_path}; "
        "rerun the same command to resume"
    ]
    assert out == ""
    assert after < 1.5, f"{after:.2f} s after the second Ctrl-C"


def test_main_in_a_program_keeps_its_sigint_handler(capsys: pytest.CaptureFixture[str]) -> None:
    # The two-step handler and the ignored Ctrl-C at exit belong to the command line's own
    # process only.
    before = signal.getsignal(signal.SIGINT)
    assert main(["mc", "--width", "4", "--samples", "20", "--quiet"]) == 0
    assert signal.getsignal(signal.SIGINT) is before
    capsys.readouterr()


def _console_script() -> list[list[str]]:
    script = Path(sys.executable).parent / "jacgeom"
    return [[str(script)]] if script.is_file() else []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("command", [[sys.executable, "-m", "jacgeom"], *_console_script()])
def test_ctrl_c_while_starting_is_one_line(command: list[str]) -> None:
    # Python reports each import on stderr as it completes (PYTHONPROFILEIMPORTTIME): the
    # signal goes out once jacgeom._startup is imported, while numpy, scipy, numba and the
    # compiled modules are still to come.
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    argv = [*command, "mc", "--width", "4", "--samples", "100", "--quiet"]
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
    ) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.split("|")[-1].strip() == "jacgeom._startup":
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    assert lines[-1].split("|")[-1].strip() == "jacgeom._startup", "".join(lines[-5:])
    assert proc.returncode == EXIT_INTERRUPTED, rest
    messages = [x for x in rest.splitlines() if x and not x.startswith("import time:")]
    assert messages == ["jacgeom: interrupted while starting"]


def test_importing_jacgeom_keeps_pythons_sigint_handler() -> None:
    code = "import signal, jacgeom; print(signal.getsignal(2) is signal.default_int_handler)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_default_sigint,
    )
    assert done.stdout.strip() == "True"


def test_a_program_called_jacgeom_keeps_pythons_sigint_handler(tmp_path: Path) -> None:
    # Only the installed console script gets the start-up handler, not any file whose
    # name is jacgeom, nor one that imports jacgeom.cli's main for its own use; a copy of
    # the console script's lines does.
    code = "import signal, jacgeom; print(signal.getsignal(2) is signal.default_int_handler)\n"
    uses_main = "from jacgeom.cli import main\n" + code
    script = (
        "import sys\nfrom jacgeom.cli import main\n"
        + code
        + "if __name__ == '__main__':\n    pass  # sys.exit(main())\n"
    )
    results = []
    for folder, text in (("user", code), ("uses-main", uses_main), ("installed", script)):
        (tmp_path / folder).mkdir()
        program = tmp_path / folder / "jacgeom"
        program.write_text(text)
        done = subprocess.run(
            [sys.executable, str(program)],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=_default_sigint,
        )
        results.append(done.stdout.strip())
    assert results == ["True", "True", "False"]


def test_cli_json_plot_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "mc.png"
    argv = ["mc", "--widths", "6", "6", "--samples", "300", "--json", "--quiet"]
    assert main([*argv, "--plot", str(png)]) == 0
    summary = strict_json(capsys.readouterr().out)[0]["summary"]
    assert summary["samples"] == 300 and "p_rank_deficient" in summary
    assert png.stat().st_size > 10000


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
    assert len(plan) == 35
    assert {p["activation"] for p, _ in plan} == set(DEFAULT_ACTIVATIONS)
    assert min(p["width"] for p, _ in plan) == 8 and max(p["width"] for p, _ in plan) == 128
    assert max(p["depth"] for p, _ in plan) == 16
    assert {f["samples"] for p, f in plan if p["width"] == 128} == {25}


def test_cli_kernel_layers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mc", "--layer", "kernel", "--widths", "4", "4", "--samples", "300", "--json"]
    assert main([*argv, "--quiet"]) == 0
    (record,) = strict_json(capsys.readouterr().out)
    assert record["point"]["layer"] == "kernel" and record["summary"]["samples"] == 300
    assert record["theory_notes"] == [
        "kernel layers (rbf): no closed form applies: the theory columns are empty"
    ]


def test_cli_no_layer_ranks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mc", "--widths", "5", "6", "5", "--samples", "300", "--quiet", "--json"]
    assert main([*argv, "--no-layer-ranks", "--out", str(tmp_path)]) == 0
    lean = strict_json(capsys.readouterr().out)[0]["summary"]
    (sub,) = [p for p in tmp_path.glob("*") if p.is_dir()]
    assert json.loads((sub / "spec.json").read_text())["layer_ranks"] is False
    assert main(argv) == 0
    assert strict_json(capsys.readouterr().out)[0]["summary"] == lean


def test_cli_no_spectra_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "mc.png"
    argv = ["mc", "--width", "6", "--depth", "2", "--samples", "300", "--quiet"]
    assert main([*argv, "--no-spectra", "--plot", str(png)]) == 0
    assert png.stat().st_size > 0 and "not recorded" in capsys.readouterr().out


def test_demo_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--samples", "0"]) == 2
    assert "argument --samples: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "P(float64 rank < n)" in out and "P(Binomial(m, 1/2) < n)" in out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("mc", "figures", "demo", "bench"):
        assert command in out
    assert main(["bogus"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_analyze_is_a_command(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    assert main(["--help"]) == 0
    assert "analyze" in capsys.readouterr().out
    assert main(["analyze", "--help"]) == 0
    assert "--data" in capsys.readouterr().out
    missing = tmp_path / "absent.pt"
    X = tmp_path / "x.npy"
    X.write_bytes(b"")
    assert main(["analyze", str(missing), "--data", str(X)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err, err


def test_relu_gain_line_beside_its_exact_law(capsys: pytest.CaptureFixture[str]) -> None:
    from jacgeom.theory import he_relu_log_gain

    assert main(["mc", "--widths", "6", "6", "6", "--samples", "600", "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("  relu, widths 6-6-6:"))
    law = he_relu_log_gain((6, 6, 6))
    assert f"exact law {law['mean']:.4f}" in line and f"law {law['p_zero']:.4f}" in line
    # Not for tanh, where no such law is known.
    assert main(["mc", "--widths", "6", "6", "--activation", "tanh", "--samples", "50"]) == 0
    assert "Gain of one input direction" not in capsys.readouterr().out


def test_table_legend_states_the_level_and_the_widened_median_intervals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The legend's level is the level of the table's intervals: the printed P(float64 rank
    # < n) interval is Clopper-Pearson at that level, computed here with scipy.
    import re

    from scipy.stats import beta

    argv = ["mc", "--widths", "6", "6", "6", "--samples", "500", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    legend = " ".join(out.split())
    level = float(re.search(r"Intervals at level (\d+)%", legend).group(1)) / 100  # type: ignore[union-attr]
    assert "for the median log10 cond, the distribution-free interval between two order" in (legend)
    assert "each end widened outward to the edge of its bin" in legend and "1/256" in legend
    assert "order statistics for medians" not in legend
    head, _, row = (line.split("|") for line in out.splitlines()[:3])
    cell = row[[h.strip() for h in head].index("P(float64 rank < n) [95% CI]")]
    p, lo, hi = map(float, re.findall(r"[\d.]+", cell))
    k, n = round(p * 500), 500
    alpha = 1 - level
    want_lo = 0.0 if k == 0 else beta.ppf(alpha / 2, k, n - k + 1)
    want_hi = 1.0 if k == n else beta.ppf(1 - alpha / 2, k + 1, n - k)
    assert (lo, hi) == (round(want_lo, 4), round(want_hi, 4))


@pytest.mark.parametrize(
    ("body", "status", "err"),
    [
        (
            'raise SystemExit("report.py: cannot read x.json: gone")',
            2,
            "jacgeom bench: error: report.py: cannot read x.json: gone\n",
        ),
        ("raise SystemExit(3)", 3, ""),
        ("print('ran')", 0, ""),
    ],
)
def test_bench_passes_on_the_reports_exit_and_prints_its_message(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
    status: int,
    err: str,
) -> None:
    # sys.exit("message") in bench/report.py became exit 2 without the message
    (tmp_path / "report.py").write_text(body + "\n")
    monkeypatch.setenv("JACGEOM_BENCH_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["bench", "--anything"]) == status
    assert capsys.readouterr().err == err
