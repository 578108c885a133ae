"""Network.layer_jacobians and Network.layer_report (issue 22)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jacgeom
from jacgeom.report import Distribution, LayerReport


def _finite_difference(net: jacgeom.Network, l: int, H: np.ndarray, h: float = 1e-6) -> np.ndarray:
    sub = jacgeom.Network(
        [net.weights[l]],
        [net.biases[l]],
        activation=[net.activations[l]],
        residual=net.residual,
        norm=net.norm,
    )
    n = H.shape[1]
    cols = [(sub.forward(H + h * e) - sub.forward(H - h * e)) / (2 * h) for e in np.eye(n)]
    return np.stack(cols, axis=2)


@pytest.mark.parametrize("kw", [{}, {"norm": "layer"}, {"residual": True}], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_jacobians_multiply_to_the_jacobian(kw: dict[str, object], dtype: type) -> None:
    widths = [5, 5, 5, 5] if kw.get("residual") else [4, 7, 6, 3]
    net = jacgeom.Network.random(widths, activation="tanh", seed=0, dtype=dtype, **kw)
    X = np.random.default_rng(1).standard_normal((9, widths[0])).astype(dtype)
    Js = net.layer_jacobians(X)
    assert [J.shape for J in Js] == [
        (9, m, n) for n, m in zip(widths[:-1], widths[1:], strict=True)
    ]
    assert all(J.dtype == dtype for J in Js)
    P = Js[0]
    for J in Js[1:]:
        P = J @ P
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(P, net.jacobian(X), rtol=rtol, atol=rtol)
    # Each against finite differences of the layer at its own inputs.
    net64 = jacgeom.Network.random(widths, activation="tanh", seed=0, **kw)
    H = X.astype(np.float64)
    for l, J in enumerate(net64.layer_jacobians(H, lazy=True)):
        np.testing.assert_allclose(J, _finite_difference(net64, l, H), rtol=1e-6, atol=1e-7)
        H = jacgeom.Network([net64.weights[l]], [net64.biases[l]], activation="tanh", **kw).forward(
            H
        )


def test_lazy_is_a_generator_and_1d_input_drops_the_batch_axis() -> None:
    net = jacgeom.Network.random([3, 4, 2], seed=0)
    gen = net.layer_jacobians(np.ones((2, 3)), lazy=True)
    assert iter(gen) is gen
    assert [J.shape for J in net.layer_jacobians(np.ones(3))] == [(4, 3), (2, 4)]


def test_layer_jacobians_bad_input_named() -> None:
    net = jacgeom.Network.random([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"X has shape \(2, 5\)"):
        net.layer_jacobians(np.ones((2, 5)))


def test_report_relu_dead_units_and_exact_rank() -> None:
    W1 = np.eye(4)
    b1 = np.array([0.0, 0.0, -100.0, 0.0])  # unit 2 dead on every sample
    W2 = np.ones((2, 4))
    net = jacgeom.Network([W1, W2], [b1, np.zeros(2)], activation=["relu", "identity"])
    X = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, -2.0, 3.0, 4.0], [-1.0, -2.0, 3.0, -4.0]])
    rep = net.layer_report(X)
    assert isinstance(rep, LayerReport) and rep.samples == 3
    g0, g1 = rep.layers
    assert g0.dead_fraction == 0.25
    assert g0.inactive_fraction == pytest.approx((1 + 2 + 4) / 12)
    assert (g0.exact_rank.min, g0.exact_rank.max) == (0.0, 3.0)  # min over samples: 0 live
    assert g0.numerical_rank.max == 3.0
    assert g0.rank_lost_samples == 3 and g0.verdict == "rank lost"
    assert g0.log_volume.infinite == 3 and g0.log_condition.infinite == 3
    assert g1.exact_rank.max == 1.0 and g1.verdict == "not injective"
    assert g1.saturated_fraction == 0.0


def test_report_exact_vs_numerical_rank_and_log_volume() -> None:
    # A layer with singular values 1 and 1e-20: exact rank 2, float64 numerical rank 1.
    W = np.diag([1.0, 1e-20])
    net = jacgeom.Network([W], activation="identity")
    g = net.layer_report(np.ones((4, 2))).layers[0]
    assert (g.exact_rank.median, g.numerical_rank.median) == (2.0, 1.0)
    assert g.log_volume.median == pytest.approx(np.log(1e-20))
    assert g.log_condition.median == pytest.approx(np.log(1e20))
    # The criterion reads rank W with numpy.linalg.matrix_rank (numerical): it fails,
    # while no sample loses exact rank.
    assert g.verdict == "criterion fails" and g.rank_lost_samples == 0
    assert (
        jacgeom.Network([np.eye(2)], activation="tanh")
        .layer_report(np.ones((1, 2)))
        .layers[0]
        .verdict
        == "injective"
    )


def test_report_saturation_and_folds() -> None:
    net = jacgeom.Network([np.eye(2)], activation="tanh")
    g = net.layer_report(np.array([[10.0, 0.0], [0.0, 0.0]])).layers[0]
    assert g.saturated_fraction == 0.25
    gelu = jacgeom.Network([np.eye(2)], activation="gelu")
    g = gelu.layer_report(np.array([[-0.7518, 1.0], [2.0, 1.0]])).layers[0]
    assert g.near_fold_samples == 1 and g.verdict == "criterion fails"


def test_report_matches_the_network_machinery() -> None:
    net = jacgeom.Network.random([6, 6, 6], activation="relu", seed=3)
    X = np.random.default_rng(4).standard_normal((40, 6))
    rep = net.layer_report(X)
    one = jacgeom.Network([net.weights[0]], [net.biases[0]], activation="relu")
    np.testing.assert_array_equal(
        Distribution.of(one.exact_rank(X)).as_dict(), rep.layers[0].exact_rank.as_dict()
    )
    np.testing.assert_array_equal(
        Distribution.of(one.rank(X)).as_dict(), rep.layers[0].numerical_rank.as_dict()
    )


def test_report_serialises_and_prints() -> None:
    net = jacgeom.Network.random([3, 5, 2], activation="silu", seed=0, dtype=np.float32)
    rep = net.layer_report(np.random.default_rng(0).standard_normal((8, 3)), names=["a", "b"])
    d = json.loads(rep.to_json())
    assert d["dtype"] == "float32" and [x["name"] for x in d["layers"]] == ["a", "b"]
    text = rep.table()
    assert "exact rank" in text and "f64 rank" in text and "natural" in text
    with pytest.raises(ValueError, match=r"names has 1 entries for 2 layers"):
        net.layer_report(np.ones((2, 3)), names=["a"])
    with pytest.raises(ValueError, match=r"saturation_tol must be"):
        net.layer_report(np.ones((2, 3)), saturation_tol=-1.0)


def _analyze_args(**kw: object) -> object:
    import argparse

    from jacgeom import analyze

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    analyze.add_parser(sub)
    argv = ["analyze", str(kw.pop("model")), "--data", str(kw.pop("data"))]
    for k, v in kw.items():
        argv += [f"--{k}"] + ([] if v is True else [str(v)])
    return parser.parse_args(argv)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_analyze_command(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    from jacgeom import analyze

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Tanh()
    )
    saved, scripted = tmp_path / "mlp.pt", tmp_path / "mlp.ts"
    torch.save(mlp, saved)
    torch.jit.save(torch.jit.script(mlp), scripted)
    X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    for model in (saved, scripted):
        args = _analyze_args(model=model, data=tmp_path / "X.npy")
        assert args.func(args) == 0
        out = capsys.readouterr().out
        assert "0:Linear+1:ReLU" not in out  # names are in JSON, the table stays narrow
        assert "exact rank" in out and "relu" in out and "tanh" in out
    args = _analyze_args(model=saved, data=tmp_path / "X.npy", json=True, plot=tmp_path / "f.png")
    assert analyze.main(args) == 0  # type: ignore[arg-type]
    d = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in d["layers"]] == ["0:Linear+1:ReLU", "2:Linear+3:Tanh"]
    assert (tmp_path / "f.png").stat().st_size > 0
    torch.save(mlp.state_dict(), tmp_path / "sd.pt")
    args = _analyze_args(model=tmp_path / "sd.pt", data=tmp_path / "X.npy")
    assert analyze.main(args) == 2  # type: ignore[arg-type]
    assert "state_dict" in capsys.readouterr().err
    torch.save(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 1)), tmp_path / "conv.pt")
    args = _analyze_args(model=tmp_path / "conv.pt", data=tmp_path / "X.npy")
    assert analyze.main(args) == 2  # type: ignore[arg-type]
    assert "Conv1d" in capsys.readouterr().err


def test_geometry_monitor_records_every_k_steps() -> None:
    torch = pytest.importorskip("torch")
    from jacgeom.torch import GeometryMonitor

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Tanh()
    )
    probe = torch.randn(32, 4)
    monitor = GeometryMonitor(model, probe, every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(5):
        opt.zero_grad()
        model(probe).pow(2).sum().backward()
        opt.step()
        rep = monitor.step(step)
        assert (rep is None) == (step % 2 == 1)
    rows = monitor.table()
    assert [(r["step"], r["layer"]) for r in rows] == [(s, l) for s in (0, 2, 4) for l in (0, 1)]
    steps, ranks = monitor.series("exact_rank")
    assert steps.tolist() == [0, 2, 4] and ranks.shape == (3, 2)
    assert np.all(ranks <= 4)
    with pytest.raises(ValueError, match=r"unknown quantity 'rank'"):
        monitor.series("rank")
    with pytest.raises(ValueError, match=r"every must be an integer >= 1"):
        GeometryMonitor(model, probe, every=0)


@pytest.mark.slow
def test_trained_networks_tutorial_runs() -> None:
    import re
    from pathlib import Path

    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    page = Path(__file__).resolve().parents[1] / "docs" / "user-guide" / "trained-networks.md"
    blocks = re.findall(r"^```\{code-block\} python\n(.*?)^```", page.read_text(), re.M | re.S)
    assert len(blocks) == 3
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, page.name, "exec"), namespace)
    runs = namespace["runs"]
    relu_dead = runs["relu"][1].series("exact_rank")[1]  # type: ignore[index]
    tanh_rank = runs["tanh"][1].series("exact_rank")[1]  # type: ignore[index]
    assert np.all(tanh_rank[:, :2] == 32) and relu_dead.shape[1] == 3


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "gelu"])
@pytest.mark.parametrize("shape", [(8, 8), (12, 5), (5, 12), (1, 3)])
def test_report_spectra_agree_with_the_graded_frame(
    activation: str, shape: tuple[int, int]
) -> None:
    # Most samples' spectra come from one SVD of D W where its smallest structural value is
    # certified; rank-deficient W (two parallel rows), dead units and saturated samples
    # (inputs x 200) go through the graded frame. Either way the report equals what
    # log_singular_values of the layer alone gives.
    rng = np.random.default_rng(sum(shape))
    m, n = shape
    W = rng.standard_normal((m, n))
    if m > 2:
        W[1] = 2.0 * W[0]
    net = jacgeom.Network([W], biases=[rng.standard_normal(m)], activation=activation)
    X = 3.0 * rng.standard_normal((40, n))
    X[:3] *= 200.0
    rep = net.layer_report(X).layers[0]
    logs = net.log_singular_values(X).reshape(40, min(m, n))
    exact = np.isfinite(logs).sum(axis=1)
    with np.errstate(invalid="ignore"):
        volume = logs.sum(axis=1)
        cond = np.where(exact < min(m, n), np.inf, logs[:, 0] - logs[:, -1])
    assert rep.exact_rank.as_dict() == Distribution.of(exact).as_dict()
    for got, want in ((rep.log_volume, volume), (rep.log_condition, cond)):
        g, w = got.as_dict(), Distribution.of(want).as_dict()
        assert g["count"] == w["count"] and g["infinite"] == w["infinite"]
        for key in ("min", "q05", "median", "q95", "max"):
            np.testing.assert_allclose(g[key], w[key], rtol=1e-9, atol=1e-9)  # type: ignore[literal-required]


def test_table_shows_exact_zeros_as_infinite_not_nan() -> None:
    # Every sample of a square relu layer loses exact rank here, so its smallest singular
    # value is exactly 0: log volume -inf and log condition inf, never "nan".
    net = jacgeom.Network.random([8, 8, 8], activation="relu", seed=0)
    rep = net.layer_report(np.random.default_rng(0).standard_normal((64, 8)))
    assert all(g.rank_lost_samples == 64 for g in rep.layers)
    rows = rep.table().splitlines()[2:4]
    for row in rows:
        assert "nan" not in row and " -inf " in row and " inf " in row, row


def test_analyze_unloadable_torch_files_are_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # A module pickled with a class that cannot be imported where analyze runs (defined in
    # the saving script, or a module since removed), and a file torch cannot read: one
    # line and exit 2, not an AttributeError or a parser's message.
    torch = pytest.importorskip("torch")
    import importlib
    import sys

    from jacgeom import analyze

    (tmp_path / "jg_blocks_tmp.py").write_text(
        "import torch\n"
        "class Block(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 4)\n"
        "    def forward(self, x):\n"
        "        return x + torch.tanh(self.fc(x))\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        blocks = importlib.import_module("jg_blocks_tmp")
        torch.save(torch.nn.Sequential(blocks.Block()), tmp_path / "res.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("jg_blocks_tmp", None)
    (tmp_path / "jg_blocks_tmp.py").unlink()
    (tmp_path / "bad.pt").write_bytes(b"not a model\n")
    np.save(tmp_path / "X.npy", np.zeros((3, 4), dtype=np.float32))
    for name, message in (
        ("res.pt", "whose class cannot be imported here"),
        ("bad.pt", "neither a TorchScript archive nor a file written by torch.save"),
    ):
        args = _analyze_args(model=tmp_path / name, data=tmp_path / "X.npy")
        assert analyze.main(args) == 2  # type: ignore[arg-type]
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_distribution_counts_infinite_samples_in_its_quantiles() -> None:
    import statistics

    inf = float("inf")
    d = Distribution.of([3.0, inf, 1.0, 2.0])
    assert (d.count, d.infinite, d.min, d.max) == (4, 1, 1.0, inf)
    assert d.median == statistics.median([1.0, 2.0, 3.0, inf]) == 2.5
    assert d.q95 == inf  # between 3 and inf, with weight on inf
    # more than half infinite: the median is infinite, as it is
    assert Distribution.of([0.5, inf, 1.0, inf, inf]).median == inf
    # an order statistic hit exactly is itself, even beside an infinite one (the linear
    # formula gives inf * 0 = nan there): 21 values, q05 at index 1
    d = Distribution.of([0.0, 1.0] + [inf] * 19)
    assert (d.min, d.q05, d.median, d.q95, d.max) == (0.0, 1.0, inf, inf, inf)
    lost = Distribution.of(np.full(6, -np.inf))
    assert [lost.min, lost.q05, lost.median, lost.q95, lost.max] == [-inf] * 5
    assert lost.infinite == 6
    # finite values: numpy's default quantiles
    v = np.random.default_rng(0).standard_normal(37)
    d = Distribution.of(v)
    np.testing.assert_array_equal(
        [d.min, d.q05, d.median, d.q95, d.max], np.quantile(v, [0, 0.05, 0.5, 0.95, 1])
    )
    assert np.isnan(Distribution.of([]).median) and Distribution.of([]).count == 0
    with pytest.raises(ValueError, match=r"values holds 1 NaN of 3"):
        Distribution.of([1.0, np.nan, 2.0])


def _relu_layer_truth(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per sample: exact rank lost (fewer live units than inputs, W's rows in general
    position), and the natural-log volume and condition number of D W from numpy's SVD of
    the live rows (-inf and inf where rank is lost)."""
    n = W.shape[1]
    rows = [W[z > 0] for z in X @ W.T + b]
    lost = np.array([r.shape[0] < n for r in rows])
    volume = np.full(len(rows), -np.inf)
    cond = np.full(len(rows), np.inf)
    for i, r in enumerate(rows):
        if not lost[i]:
            s = np.linalg.svd(r, compute_uv=False)
            volume[i], cond[i] = np.log(s).sum(), np.log(s[0] / s[-1])
    return lost, volume, cond


@pytest.mark.parametrize("bias", [-0.5, 0.6, -50.0])
def test_report_medians_count_the_samples_that_lost_exact_rank(bias: float) -> None:
    # The median log condition number and log-volume are over all samples: a sample whose
    # exact rank is lost is +inf and -inf (they were medians of the finite values only,
    # 2.3 where 194 of 200 samples had lost rank, and NaN where all had).
    import itertools
    import statistics

    rng = np.random.default_rng(0)
    W = rng.standard_normal((8, 4))
    for rows in itertools.combinations(range(8), 4):  # any 4 rows independent
        assert abs(np.linalg.det(W[list(rows)])) > 1e-6
    b = np.full(8, bias)
    X = rng.standard_normal((200, 4))
    rep = jacgeom.Network([W], [b], activation="relu").layer_report(X)
    g = rep.layers[0]
    lost, volume, cond = _relu_layer_truth(W, b, X)
    assert g.rank_lost_samples == g.log_condition.infinite == g.log_volume.infinite == lost.sum()
    for got, want in ((g.log_condition, cond), (g.log_volume, volume)):
        assert got.median == pytest.approx(statistics.median(want.tolist()), rel=1e-9)
        assert got.min == pytest.approx(want.min(), rel=1e-9)
        assert got.max == pytest.approx(want.max(), rel=1e-9)
        assert not np.isnan([got.q05, got.median, got.q95]).any()
    if lost.mean() > 0.5:
        assert g.log_condition.median == np.inf and g.log_volume.median == -np.inf
    if 0.05 < lost.mean() < 0.5:  # finite medians, infinite 5% / 95% ends
        assert np.isfinite(g.log_condition.median) and g.log_condition.q95 == np.inf
        assert g.log_volume.q05 == -np.inf
    row = rep.table().splitlines()[2].split()
    assert row[9:12] == [
        f"{g.log_volume.median:.3g}",
        f"{g.log_condition.median:.3g}",
        str(lost.sum()),
    ]
    assert "medians over all samples, a sample with exact rank lost counting as -inf, inf" in (
        rep.table().replace("\n", " ")
    )


def test_report_biases_give_every_case() -> None:
    # the cases the test above means to cover: most, some and all samples rank-lost
    rng = np.random.default_rng(0)
    W = rng.standard_normal((8, 4))
    X = rng.standard_normal((200, 4))
    fractions = [_relu_layer_truth(W, np.full(8, b), X)[0].mean() for b in (-0.5, 0.6, -50.0)]
    assert fractions[0] > 0.5 and 0.05 < fractions[1] < 0.5 and fractions[2] == 1.0
