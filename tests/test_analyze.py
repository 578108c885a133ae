"""jacgeom analyze on safetensors weights with an architecture spec (no torch needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jacgeom
from jacgeom.analyze import analyze, load_safetensors_model
from jacgeom.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy")

ARCH = {
    "layers": [
        {"weight": "net.0.weight", "bias": "net.0.bias", "activation": "tanh"},
        {
            "weight": "net.2.weight",
            "bias": "net.2.bias",
            "activation": {"name": "leaky_relu", "alpha": 0.2},
        },
        {"weight": "net.4.weight", "activation": "identity"},
    ]
}


def _saved(tmp_path: Path, dtype: Any = np.float64) -> tuple[Path, dict[str, np.ndarray], Path]:
    rng = np.random.default_rng(5)
    tensors = {
        "net.0.weight": rng.standard_normal((6, 4)),
        "net.0.bias": rng.standard_normal(6),
        "net.2.weight": rng.standard_normal((5, 6)),
        "net.2.bias": rng.standard_normal(5),
        "net.4.weight": rng.standard_normal((3, 5)),
        "unused": np.zeros(2),
    }
    tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    path = tmp_path / "mlp.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    X = rng.standard_normal((7, 4)).astype(dtype)
    np.save(tmp_path / "X.npy", X)
    return path, tensors, tmp_path / "X.npy"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_safetensors_network_is_the_named_layers(tmp_path: Path, dtype: Any) -> None:
    path, t, _ = _saved(tmp_path, dtype)
    spec = load_safetensors_model(path, ARCH)
    net = jacgeom.Network(**spec.network_kwargs())
    assert net.dtype == dtype and net.widths == [4, 6, 5, 3]
    assert [a.name for a in net.activations] == ["tanh", "leaky_relu", "identity"]
    assert net.activations[1].parameter == 0.2
    # independent forward pass: y = W3 lrelu(W2 tanh(W1 x + b1) + b2), x one sample
    x = np.random.default_rng(1).standard_normal(4).astype(dtype)
    h = np.tanh(t["net.0.weight"] @ x + t["net.0.bias"])
    z = t["net.2.weight"] @ h + t["net.2.bias"]
    h = np.where(z > 0, z, 0.2 * z)
    y = t["net.4.weight"] @ h
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(net.forward(x), y, rtol=tol, atol=tol)
    assert spec.names == [
        "layer 0 (net.0.weight)",
        "layer 1 (net.2.weight)",
        "layer 2 (net.4.weight)",
    ]


def test_analyze_command_on_safetensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, data = _saved(tmp_path)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    assert main(["analyze", str(path), "--data", str(data), "--arch", str(arch), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in report["layers"]] == [
        "layer 0 (net.0.weight)",
        "layer 1 (net.2.weight)",
        "layer 2 (net.4.weight)",
    ]
    # tanh and leaky_relu never zero a unit: exact rank is the layer's own, min(m, n)
    direct = analyze(path, data, arch=arch)
    assert [(g.exact_rank.min, g.exact_rank.max) for g in direct.layers] == [(4, 4), (5, 5), (3, 3)]
    assert [g.rank_lost_samples for g in direct.layers] == [0, 0, 0]
    assert main(["analyze", str(path), "--data", str(data), "--arch", str(arch)]) == 0
    assert "exact rank" in capsys.readouterr().out


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"not strict JSON: {name}")


def test_analyze_json_is_strict_where_no_sample_keeps_full_rank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # relu with W = 0 kills every unit: exact rank 0 on every sample, so every log-volume
    # is -inf, the median too, written as the string "-inf"
    path = tmp_path / "dead.safetensors"
    safetensors_numpy.save_file({"w": np.zeros((3, 4)), "b": -np.ones(3)}, str(path))
    np.save(tmp_path / "X.npy", np.ones((5, 4)))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"layers": [{"weight": "w", "bias": "b", "activation": "relu"}]}))
    argv = ["analyze", str(path), "--data", str(tmp_path / "X.npy"), "--arch", str(arch)]
    assert main([*argv, "--json"]) == 0
    (layer,) = json.loads(capsys.readouterr().out, parse_constant=_refuse_constant)["layers"]
    assert layer["rank_lost_samples"] == 5 and layer["exact_rank"]["max"] == 0
    assert layer["log_volume"]["median"] == "-inf" and layer["log_volume"]["infinite"] == 5
    assert layer["log_condition"]["median"] == "inf" and layer["log_condition"]["min"] == "inf"


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((0, 4)), "X has no rows: a layer report summarises at least one sample"),
        (
            np.array([[0.0, 1, 2, 3], [1, np.nan, 0, 0]]),
            r"X\.npy holds NaN or infinite values in the model's dtype float64 \(first in row 1\)",
        ),
    ],
)
def test_analyze_refuses_empty_or_non_finite_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], X: np.ndarray, message: str
) -> None:
    path, _, _ = _saved(tmp_path)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    np.save(tmp_path / "X.npy", X)
    assert main(["analyze", str(path), "--data", str(tmp_path / "X.npy"), "--arch", str(arch)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "check_finite" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        (None, "--arch"),
        ({"layers": []}, "non-empty list"),
        ({"layers": [{"weight": "net.0.weight"}]}, '"weight" and "activation"'),
        ({"layers": [{"weight": "nope", "activation": "relu"}]}, "'nope'"),
        ({"layers": [{"weight": "net.0.weight", "activation": "reluu"}]}, "reluu"),
        ({"layers": [{"weight": "net.0.weight", "activation": "relu", "x": 1}]}, "unknown keys"),
        (
            {"layers": [{"weight": "net.0.weight", "activation": "relu"}], "depth": 3},
            "unknown keys",
        ),
        ({"layers": [{"weight": "net.0.weight", "activation": "relu"}], "residual": 1}, "residual"),
        (
            {"layers": [{"weight": "net.0.weight", "activation": {"name": "elu", "alpha": "1"}}]},
            "numbers",
        ),
        ({"layers": [{"weight": "net.0.bias", "activation": "relu"}]}, "2-D"),
    ],
)
def test_bad_architecture_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arch: Any, message: str
) -> None:
    path, _, data = _saved(tmp_path)
    argv = ["analyze", str(path), "--data", str(data)]
    if arch is not None:
        (tmp_path / "a.json").write_text(json.dumps(arch))
        argv += ["--arch", str(tmp_path / "a.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_arch_errors_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, data = _saved(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    assert (
        main(["analyze", str(path), "--data", str(data), "--arch", str(tmp_path / "bad.json")]) == 2
    )
    assert "not valid JSON" in capsys.readouterr().err
    assert (
        main(["analyze", str(path), "--data", str(data), "--arch", str(tmp_path / "no.json")]) == 2
    )
    assert "is not a file" in capsys.readouterr().err
    # --arch with a torch model is refused, not ignored
    assert main(["analyze", str(tmp_path / "m.pt"), "--data", str(data), "--arch", str(path)]) == 2
    assert "safetensors MODEL only" in capsys.readouterr().err


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    """A safetensors file written by hand (8-byte header length, JSON header, data)."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_bfloat16_weights_are_widened_exactly(tmp_path: Path) -> None:
    # bfloat16 is float32's top 16 bits: these values are exact in both
    W0 = np.array([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]], dtype=np.float32)
    W1 = np.array([[0.75, -0.125]], dtype=np.float32)

    def bf16(a: np.ndarray) -> bytes:
        return (a.view(np.uint32) >> 16).astype("<u2").tobytes()

    path = tmp_path / "bf16.safetensors"
    _write_safetensors(path, {"w0": ("BF16", [2, 3], bf16(W0)), "w1": ("BF16", [1, 2], bf16(W1))})
    arch = {
        "layers": [
            {"weight": "w0", "activation": "tanh"},
            {"weight": "w1", "activation": "identity"},
        ]
    }
    spec = load_safetensors_model(path, arch)
    assert [w.dtype for w in spec.weights] == [np.float32, np.float32]
    np.testing.assert_array_equal(spec.weights[0], W0)
    np.testing.assert_array_equal(spec.weights[1], W1)


@pytest.mark.parametrize(
    ("content", "arch", "message"),
    [
        (b"", None, "not a safetensors file"),
        (b"\xff" * 100, None, "not a safetensors file"),
        (None, {"layers": [{"weight": ["net.0.weight"], "activation": "relu"}]}, "must be strings"),
        (None, {"layers": [{"weight": 0, "activation": "relu"}]}, "must be strings"),
        ("complex", {"layers": [{"weight": "c", "activation": "relu"}]}, "real numbers"),
    ],
)
def test_unreadable_models_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: Any, arch: Any, message: str
) -> None:
    path, _, data = _saved(tmp_path)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "complex":
        safetensors_numpy.save_file({"c": np.ones((2, 4), dtype=np.complex64)}, str(path))
    (tmp_path / "a.json").write_text(json.dumps(arch or ARCH))
    argv = ["analyze", str(path), "--data", str(data), "--arch", str(tmp_path / "a.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("model_dtype", "dtype_option"),
    [(np.float32, []), (np.float64, ["--dtype", "float32"]), (np.float32, ["--dtype", "float32"])],
)
def test_analyze_checks_the_range_in_the_models_dtype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dtype: Any, dtype_option: list[str]
) -> None:
    # 1e39 is finite in the float64 file and inf in a float32 model, whether float32 comes
    # from the weights or from --dtype (that path exited 1 with a FloatingPointError
    # traceback blaming check_finite=False)
    path, _, _ = _saved(tmp_path, model_dtype)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    X = np.ones((3, 4))
    X[2, 1] = 1e39
    np.save(tmp_path / "big.npy", X)
    argv = ["analyze", str(path), "--data", str(tmp_path / "big.npy"), "--arch", str(arch)]
    assert main(argv + dtype_option) == 2
    err = capsys.readouterr().err
    assert (
        "big.npy holds finite values beyond the range of the model's dtype float32 "
        "(first in row 2; float32 holds magnitudes up to 3.40282e+38)" in err
    ), err
    assert "check_finite" not in err and err.count("\n") == 1


def test_analyze_casts_in_range_data_to_the_models_dtype(tmp_path: Path) -> None:
    # float64 probe data below float32's largest value: the report of the data cast to
    # float32 by numpy, whichever way float32 was chosen
    path, _, data = _saved(tmp_path, np.float32)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    X = np.load(data).astype(np.float64) * 3.0
    np.save(tmp_path / "X64.npy", X)
    np.save(tmp_path / "X32.npy", X.astype(np.float32))
    want = analyze(path, tmp_path / "X32.npy", arch=arch).as_dict()
    assert analyze(path, tmp_path / "X64.npy", arch=arch).as_dict() == want
    (tmp_path / "f64").mkdir()
    path64, _, _ = _saved(tmp_path / "f64")  # float64 weights, float32 from --dtype
    got = analyze(path64, tmp_path / "X64.npy", dtype="float32", arch=arch).as_dict()
    ref = analyze(path64, tmp_path / "X32.npy", dtype="float32", arch=arch).as_dict()
    assert got == ref


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.ones((3, 4), dtype=np.longdouble), "float128 values"),
        (np.ones((3, 4), dtype=np.complex128), "complex128 values"),
        (np.array([["a"] * 4] * 3), "<U1 values"),
    ],
)
def test_analyze_refuses_data_the_library_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: np.ndarray, message: str
) -> None:
    # longdouble data was rounded to the model's dtype without a word (the library refuses
    # it with TypeError), complex data ended in a TypeError traceback
    if values.dtype.kind == "f" and values.dtype.itemsize <= 8:
        pytest.skip("longdouble is float64 on this platform")
    path, _, _ = _saved(tmp_path)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    np.save(tmp_path / "odd.npy", values)
    argv = ["analyze", str(path), "--data", str(tmp_path / "odd.npy"), "--arch", str(arch)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"odd.npy holds {message}; expected a real" in err and err.count("\n") == 1, err
    with pytest.raises(TypeError, match=re.escape(message)):
        analyze(path, tmp_path / "odd.npy", arch=arch)


def test_analyze_forward_overflow_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # finite data, finite float32 weights, pre-activations beyond float32's range (1e40):
    # the FloatingPointError it raises was a traceback and exit 1
    path = tmp_path / "big.safetensors"
    w = np.full((3, 4), 1e30, dtype=np.float32)
    safetensors_numpy.save_file({"w": w}, str(path))
    np.save(tmp_path / "X.npy", np.full((2, 4), 1e10, dtype=np.float32))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"layers": [{"weight": "w", "activation": "tanh"}]}))
    argv = ["analyze", str(path), "--data", str(tmp_path / "X.npy"), "--arch", str(arch)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pre-activations of layer 0 are not finite" in err and err.count("\n") == 1, err


def _relu_model(tmp_path: Path, bias: float) -> tuple[list[str], np.ndarray]:
    """An 8x4 relu layer then a 3x8 identity layer in safetensors, and 60 probe inputs."""
    rng = np.random.default_rng(4)
    safetensors_numpy.save_file(
        {
            "w0": rng.standard_normal((8, 4)),
            "b0": np.full(8, bias),
            "w1": rng.standard_normal((3, 8)),
        },
        str(tmp_path / "mlp.safetensors"),
    )
    arch = {
        "layers": [
            {"weight": "w0", "bias": "b0", "activation": "relu"},
            {"weight": "w1", "activation": "identity"},
        ]
    }
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    X = rng.standard_normal((60, 4))
    np.save(tmp_path / "X.npy", X)
    return [str(tmp_path / "mlp.safetensors"), "--arch", str(tmp_path / "arch.json")], X


def test_analyze_reads_an_npz_of_one_array_or_of_one_named_x(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, X = _relu_model(tmp_path, 0.0)
    argv = ["analyze", *model, "--json", "--data"]
    assert main([*argv, str(tmp_path / "X.npy")]) == 0
    want = json.loads(capsys.readouterr().out)
    assert want["samples"] == 60
    np.savez(tmp_path / "one.npz", probe=X)
    np.savez(tmp_path / "named.npz", labels=np.arange(60), X=X)
    for name in ("one.npz", "named.npz"):
        assert main([*argv, str(tmp_path / name)]) == 0
        assert json.loads(capsys.readouterr().out) == want


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (
            lambda p: np.savez(p, a=np.ones((3, 4)), b=np.ones(3)),
            r"--data '.*data\.npz' holds 2 arrays \('a', 'b'\); expected one array, or one "
            r"named 'X'",
        ),
        (lambda p: np.savez(p), r"--data '.*data\.npz' holds 0 arrays; expected one array"),
        (
            lambda p: p.write_text('{"layers": []}'),
            r"--data '.*data\.npz' is neither a \.npy nor an \.npz file",
        ),
        (lambda p: p.write_bytes(b""), r"--data '.*data\.npz' is neither a \.npy nor an \.npz"),
        (
            lambda p: (
                np.save(p.with_suffix(".npy"), np.array([1, None], dtype=object))
                or p.with_suffix(".npy").rename(p)
            ),
            r"--data '.*data\.npz': numpy cannot read it without pickle \(Object arrays",
        ),
        (lambda p: None, r"--data '.*data\.npz' is not a file"),
    ],
)
def test_unreadable_data_is_one_line_exit_2_before_the_model_is_read(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    write: Any,
    message: str,
) -> None:
    import jacgeom.analyze

    model, _ = _relu_model(tmp_path, 0.0)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was read")

    monkeypatch.setattr(jacgeom.analyze, "load_safetensors_model", refuse)
    write(tmp_path / "data.npz")
    assert main(["analyze", *model, "--data", str(tmp_path / "data.npz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert re.search("jacgeom analyze: error: " + message, captured.err), captured.err


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        (
            "/nonexistent/f.png",
            "--plot /nonexistent/f.png: directory '/nonexistent' does not exist",
        ),
        ("out.xyz", "--plot out.xyz: give a file name ending in .png, .pdf or .svg"),
    ],
)
def test_analyze_plot_path_checked_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plot: str,
    message: str,
) -> None:
    import jacgeom.analyze

    model, _ = _relu_model(tmp_path, 0.0)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the analysis started")

    monkeypatch.setattr(jacgeom.analyze, "analyze", refuse)
    argv = [*model, "--data", str(tmp_path / "X.npy"), "--plot", plot]
    for run in (lambda: main(["analyze", *argv]), lambda: jacgeom.analyze._standalone(argv)):
        assert run() == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # no table printed before the error
        assert captured.err == f"jacgeom analyze: error: {message}\n"


def test_analyze_plot_write_failure_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the directory checked before the run can be gone when the figure is written
    pytest.importorskip("matplotlib")
    import jacgeom.analyze

    model, _ = _relu_model(tmp_path, 0.0)

    def gone(report: Any, path: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(jacgeom.analyze, "plot_report", gone)
    argv = [*model, "--data", str(tmp_path / "X.npy"), "--plot", str(tmp_path / "f.png")]
    assert jacgeom.analyze._standalone(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jacgeom analyze: error: --plot {tmp_path / 'f.png'}: ")
    assert err.count("\n") == 1


def test_python_dash_m_analyze_bad_plot_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    model, _ = _relu_model(tmp_path, 0.0)
    argv = [*model, "--data", str(tmp_path / "X.npy"), "--plot", "/nonexistent/f.png"]
    done = subprocess.run(
        [sys.executable, "-m", "jacgeom.analyze", *argv], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr == (
        "jacgeom analyze: error: --plot /nonexistent/f.png: directory '/nonexistent' does not "
        "exist\n"
    )


@pytest.mark.parametrize("bias", [-0.5, -50.0, 0.6])
def test_report_figure_draws_infinite_medians_on_the_edge(tmp_path: Path, bias: float) -> None:
    # Where most (or all) samples lost exact rank the medians are infinite: a labelled
    # marker on the panel's edge, nothing infinite in data coordinates; the figure drew
    # nothing there before (and medians of the finite samples where some were).
    pytest.importorskip("matplotlib")
    from jacgeom.analyze import _report_figure, plot_report

    model, X = _relu_model(tmp_path, bias)
    report = analyze(model[0], tmp_path / "X.npy", arch=model[2])
    g = report.layers[0]
    fig = _report_figure(report)
    volume, cond = fig.jacgeom_data["log_volume"], fig.jacgeom_data["log_condition"]
    assert volume["median"][0] == g.log_volume.median
    assert cond["q95"][0] == g.log_condition.q95
    assert volume["lost"].tolist() == [g.rank_lost_samples, 0]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    label = f"exact rank lost\n({g.rank_lost_samples} of 60 samples)"
    assert (f"inf: {label}" in texts) == (g.rank_lost_samples > 30)
    assert (f"-inf: {label}" in texts) == (g.rank_lost_samples > 30)
    if bias == -50.0:
        assert g.rank_lost_samples == 60 and g.log_condition.median == np.inf
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        for line in ax.get_lines():
            if line.get_transform() == ax.transData:
                assert np.isfinite(np.asarray(line.get_ydata(), dtype=float)).all()
        for bars in ax.collections:
            assert np.isfinite(np.asarray(bars.get_segments(), dtype=float)).all()
    # the lost samples are named under each layer
    assert fig.axes[3].get_xticklabels()[0].get_text() == (
        f"0\n{g.rank_lost_samples} lost" if g.rank_lost_samples else "0"
    )
    plot_report(report, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10000
