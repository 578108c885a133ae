"""Monte Carlo: closed forms reproduced, determinism across executors (dask included),
checkpoints, resume after SIGKILL, retries, the command line."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import jacgeom
from jacgeom import montecarlo as mc
from jacgeom import theory
from jacgeom.cli import main
from jacgeom.montecarlo import Result, Spec, run, sweep_table

LEVEL = 1 - 1e-4  # fixed seeds; intervals from the sample count, not hand-picked tolerances


def assert_same(a: Result, b: Result) -> None:
    assert a.data.keys() == b.data.keys()
    for k in a.data:
        np.testing.assert_array_equal(a.data[k], b.data[k], err_msg=k)


@pytest.mark.parametrize(
    ("widths", "expected"),
    [
        ((4, 4), 1 - 2.0**-4),
        ((10, 10), 1 - 2.0**-10),
        ((6, 12), theory.binomial_cdf_below(12, 6)),
        ((12, 6), 1 - 2.0**-6),
        ((4, 8, 8, 4), 1 - theory.p_rank_at_least([4, 8, 8, 4], 4)),
        ((5, 6, 7, 8), 1 - theory.p_rank_at_least([5, 6, 7, 8], 5)),
    ],
)
def test_closed_forms(widths: tuple[int, ...], expected: float) -> None:
    res = run(Spec(widths=widths, samples=20000, seed=3, sigma_b=0.5), progress=False)
    s = res.summary(level=LEVEL)
    assert s["p_rank_deficient"]["lo"] <= expected <= s["p_rank_deficient"]["hi"]
    assert s["theory"]["p_rank_deficient"] == pytest.approx(expected)
    # active fraction 1/2 at every width: binomial interval on the pooled unit count
    counts = res.data["active_counts"]
    units = counts.size and int(np.sum(np.array(widths[1:]) * np.ones_like(counts)))
    lo, hi = theory.clopper_pearson(int(counts.sum()), units, LEVEL)
    assert lo <= 0.5 <= hi
    # rank = min(n0, k_1, ..., k_L) almost surely
    bound = np.minimum(min(widths[0], widths[-1]), counts.min(axis=1))
    np.testing.assert_array_equal(res.data["rank"], bound)


def test_any_zeroed_closed_form() -> None:
    res = run(Spec(widths=(10, 10), samples=20000, seed=5), progress=False)
    s = res.summary(level=LEVEL)
    assert s["p_any_zeroed"]["lo"] <= theory.p_any_zeroed(10) <= s["p_any_zeroed"]["hi"]


def test_same_results_on_every_executor() -> None:
    spec = Spec(
        width=6, depth=3, activation="tanh", samples=900, chunk_size=100, seed=11, sigma_b=0.3
    )
    one = run(spec, progress=False, workers=1)
    two = run(spec, progress=False, workers=2)
    # spawn, not fork: forking a process whose BLAS / JAX threads are running is unsafe
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        procs = run(spec, progress=False, executor=pool)
    assert_same(one, two)
    assert_same(one, procs)
    assert one.samples == 900


def test_dask_local_cluster_matches_local_run() -> None:
    distributed = pytest.importorskip("dask.distributed")
    spec = Spec(width=5, depth=2, samples=600, chunk_size=100, seed=2)
    local = run(spec, progress=False)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = run(spec, progress=False, executor=client.get_executor(pure=False))
    assert_same(local, remote)


@pytest.mark.parametrize(
    "kw",
    [
        {"residual": True},
        {"norm": "layer"},
        {"residual": True, "norm": "layer"},
        {"fresh_weights": False},
        {"inputs": "sphere"},
        {"inputs": "manifold", "manifold": "linear"},
        {"inputs": "manifold"},
        {"init": "orthogonal"},
        {"init": "gaussian", "sigma_w": 2.0},
        {"activation": ("relu", "tanh", "gelu")},
    ],
)
def test_variants_run_and_are_consistent(kw: dict[str, Any]) -> None:
    res = run(Spec(width=6, depth=3, samples=300, chunk_size=128, seed=1, **kw), progress=False)
    d = res.data
    assert d["active_counts"].shape == (300, 3) and d["layer_ranks"].shape == (300, 3)
    assert np.all(d["rank"] <= 6) and np.all(d["layer_ranks"] <= 6)
    full = d["rank"] == 6
    np.testing.assert_allclose(d["log_volume"][full], d["log_volume"][full])
    assert np.all(d["log_volume"][~full] == -np.inf)
    assert np.all(d["log_smax"] >= d["log_smin"])
    if kw.get("inputs") == "manifold" and kw.get("manifold") == "linear":
        assert res.summary()["samples"] == 300


def test_layer_ranks_match_jacobian_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    import jacgeom

    # The direct sampler (every weight drawn up front), forced for relu.
    monkeypatch.setattr(mc, "_DEAD_HALF_LINE", frozenset())
    spec = Spec(widths=(5, 7, 4), activation="relu", samples=50, seed=4, sigma_b=0.2, chunk_size=50)
    d = mc.chunk_statistics(spec, 0)
    # redraw the same chunk's inputs and weights and check layer 1 against jacobian_rank
    rng = mc._chunk_rng(spec, 0)
    X = mc._draw_inputs(spec, rng, 50)
    Ws, bs = mc._draw_weights(spec, rng, 50)
    want = [jacgeom.jacobian_rank(Ws[0][i], X[i], bs[0][i], backend="numpy") for i in range(50)]
    np.testing.assert_array_equal(d["layer_ranks"][:, 0], want)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_conditional_sampler_ranks(backend: str) -> None:
    spec = Spec(widths=(5, 7, 4), activation="relu", samples=60, seed=4, sigma_b=0.2, chunk_size=60)
    d = mc.chunk_statistics(spec, 0, backend=backend)
    # redraw the first layer exactly as the chunk does (in the frame where x = |x| e_1)
    # and check its rank and active counts
    rng = mc._chunk_rng(spec, 0)
    norms = mc._input_norms(spec, rng, 60)
    b = mc._draw_biases(spec, rng, 60, 7)
    std = mc._init_std(spec, 5, 7)
    P, z, dphi = mc._draw_first_layer(rng, norms, 5, std, b, jacgeom.activation("relu"), "numpy")
    live = dphi != 0
    np.testing.assert_array_equal(live, z > 0)
    np.testing.assert_array_equal(d["active_counts"][:, 0], live.sum(axis=1))
    owner = np.nonzero(live)[0]
    want = [np.linalg.matrix_rank(std * P[owner == i]) if live[i].any() else 0 for i in range(60)]
    np.testing.assert_array_equal(d["layer_ranks"][:, 0], want)
    # the rows reproduce their pre-activations: w . (|x| e_1) = z - b
    np.testing.assert_allclose(std * P[:, 0] * norms[owner], (z - b)[live], atol=1e-12)


def test_conditional_rows_have_the_gaussian_law() -> None:
    # With every row live (identity) the rows drawn given z must be iid N(0, std^2 I).
    rng = np.random.default_rng(0)
    h = np.tile([[3.0, -1.0, 0.5, 0.0]], (20000, 1))
    h[0] = 0.0  # h = 0: the row is unconstrained
    W, z, _ = mc._draw_layer_given_input(
        rng, h, 3, 0.5, np.zeros((20000, 3)), jacgeom.activation("identity"), "numpy"
    )
    rows = W.reshape(-1, 4)
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(np.cov(rows.T), 0.25 * np.eye(4), atol=0.01)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", W, h), z, atol=1e-12)


@pytest.mark.parametrize("inputs", ["gaussian", "sphere", "manifold"])
def test_conditional_and_direct_samplers_agree_in_law(
    monkeypatch: pytest.MonkeyPatch, inputs: str
) -> None:
    # The conditional sampler draws the first layer in the frame where x = |x| e_1, the
    # layers above it given their inputs: the same law as drawing every weight.
    spec = Spec(
        widths=(6, 8, 5, 4), samples=6000, chunk_size=2000, seed=3, sigma_b=0.3, inputs=inputs
    )
    cond = run(spec, progress=False).data
    monkeypatch.setattr(mc, "_DEAD_HALF_LINE", frozenset())
    direct = run(spec, progress=False).data
    for key in ("frobenius2", "rank", "log_smax", "active_counts", "layer_ranks"):
        a, b = np.asarray(cond[key], float), np.asarray(direct[key], float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 5 * se + 1e-12, key


def test_checkpoints_resume_and_refuse_other_specs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = Spec(widths=(6, 6), samples=500, chunk_size=100, seed=9)
    first = run(spec, progress=False, out=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("chunk-*.npz")) == [
        f"chunk-{i:06d}.npz" for i in range(5)
    ]
    assert not list(tmp_path.glob("*.tmp"))
    # resume computes nothing: every chunk is on disk
    monkeypatch.setattr(
        mc, "_chunk_task", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed"))
    )
    assert_same(first, run(spec, progress=False, out=tmp_path))
    with pytest.raises(
        ValueError, match=r"holds results of a different spec \(seed: 9 there, 10 here\)"
    ):
        run(spec.replace(seed=10), progress=False, out=tmp_path)


def test_checkpoints_of_another_sampler_are_refused(tmp_path: Path) -> None:
    # A directory written before the sampler changed (no "sampler" entry, or an older one)
    # holds chunks drawn another way: they must not be mixed with new ones.
    spec = Spec(widths=(6, 6), samples=200, chunk_size=100, seed=9)
    run(spec, progress=False, out=tmp_path)
    recorded = json.loads((tmp_path / "spec.json").read_text())
    assert recorded["sampler"] == mc._SAMPLER
    del recorded["sampler"]
    (tmp_path / "spec.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"different spec \(sampler: None there, \d+ here\)"):
        run(spec, progress=False, out=tmp_path)


def test_partial_directory_computes_only_missing(tmp_path: Path) -> None:
    spec = Spec(widths=(6, 6), samples=500, chunk_size=100, seed=9)
    full = run(spec, progress=False, out=tmp_path)
    (tmp_path / "chunk-000002.npz").unlink()
    (tmp_path / "chunk-000004.npz").write_bytes(b"damaged")
    assert_same(full, run(spec, progress=False, out=tmp_path))


def test_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not writable"):
        run(Spec(widths=(3, 3), samples=10), progress=False, out=blocker / "sub")


class FlakyExecutor(cf.ThreadPoolExecutor):
    """Fails chunk 1 the first ``failures`` times it is submitted."""

    def __init__(self, failures: int) -> None:
        super().__init__(2)
        self.failures = failures

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        if args[1] == 1 and self.failures > 0:
            self.failures -= 1
            return super().submit(_boom)
        return super().submit(fn, *args, **kwargs)


def _boom() -> None:
    raise OSError("worker lost")


def test_retries_then_named_failure(tmp_path: Path) -> None:
    spec = Spec(widths=(4, 4), samples=300, chunk_size=100, seed=1)
    with FlakyExecutor(failures=2) as ex:
        assert_same(run(spec, progress=False, executor=ex), run(spec, progress=False))
    with (
        FlakyExecutor(failures=10) as ex,
        pytest.raises(
            RuntimeError,
            match=r"chunk 1 \(samples 100 to 199\) failed 3 times; "
            r"last error: OSError: worker lost",
        ),
    ):
        run(spec, progress=False, executor=ex, out=tmp_path)
    assert not (tmp_path / "chunk-000001.npz").exists()
    kept = {p.name for p in tmp_path.glob("chunk-*.npz")}
    assert_same(run(spec, progress=False, out=tmp_path), run(spec, progress=False))  # resumes
    assert kept <= {p.name for p in tmp_path.glob("chunk-*.npz")}


def test_sigkill_then_resume_gives_identical_totals(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "jacgeom",
        "mc",
        "--widths",
        "12",
        "12",
        "12",
        "--samples",
        "60000",
        "--chunk-size",
        "1000",
        "--seed",
        "7",
        "--out",
        str(tmp_path),
        "--quiet",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sub = None
    deadline = time.time() + 120
    while time.time() < deadline:
        sub = next(iter([p for p in tmp_path.glob("*") if p.is_dir()]), None)
        if sub is not None and len(list(sub.glob("chunk-*.npz"))) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sub is not None
    done_before = len(list(sub.glob("chunk-*.npz")))
    assert 3 <= done_before < 60
    out = subprocess.run(args[:-1] + ["1", "--json"], capture_output=True, text=True, check=True)
    resumed = json.loads(out.stdout)[0]["summary"]
    spec = Spec(widths=(12, 12, 12), samples=60000, chunk_size=1000, seed=7)
    fresh = run(spec, progress=False).summary()
    assert resumed["p_rank_deficient"] == fresh["p_rank_deficient"]
    assert resumed["log_volume"] == pytest.approx(fresh["log_volume"], nan_ok=True)
    assert len(list(sub.glob("chunk-*.npz"))) == 60


def test_result_save_load_and_dict(tmp_path: Path) -> None:
    res = run(
        Spec(width=4, depth=2, samples=50, seed=1, activation=("relu", "tanh")), progress=False
    )
    res.save(tmp_path / "r.npz")
    back = Result.load(tmp_path / "r.npz")
    assert back.spec == res.spec
    assert_same(res, back)
    d = res.to_dict()
    assert d["spec"]["activation"] == ["relu", "tanh"] and len(d["data"]["rank"]) == 50
    assert Spec.from_dict(d["spec"]) == res.spec


def test_sweep_and_table() -> None:
    out = mc.sweep(
        Spec(width=4, depth=1, samples=200),
        {"width": [4, 8], "activation": ["relu", "tanh"]},
        progress=False,
    )
    assert [p for p, _ in out] == [
        {"width": 4, "activation": "relu"},
        {"width": 4, "activation": "tanh"},
        {"width": 8, "activation": "relu"},
        {"width": 8, "activation": "tanh"},
    ]
    table = mc.sweep_table(out)
    assert table.count("\n") == 5 and "0.9375" in table


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"widths": (3,)}, "widths must hold at least two"),
        ({"width": 3}, "give widths, or width and depth"),
        ({"widths": (3, 3), "activation": "swish"}, "unknown activation 'swish'"),
        ({"widths": (3, 4), "residual": True}, "residual networks need equal widths"),
        ({"widths": (3, 3), "inputs": "cube"}, "unknown inputs 'cube'"),
        (
            {"widths": (3, 3), "inputs": "manifold", "manifold_dim": 5},
            r"manifold_dim must be in \[1, 3\]",
        ),
        ({"widths": (3, 3), "samples": 0}, "samples and chunk_size must be >= 1"),
        ({"widths": (3, 3), "init": "kaiming"}, "unknown init 'kaiming'"),
        (
            {"widths": (3, 3), "activation": ("relu", "tanh")},
            "activation has 2 entries for 1 layers",
        ),
    ],
)
def test_bad_specs(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Spec(**kw)
    with pytest.raises(ValueError, match="unknown spec field 'colour'"):
        Spec.from_dict({"widths": [3, 3], "colour": 1})
    with pytest.raises(TypeError, match="spec must be"):
        run({"widths": [3, 3]})  # type: ignore[arg-type]


def test_cli_json_plot_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "mc.png"
    assert (
        main(
            [
                "mc",
                "--widths",
                "6",
                "6",
                "--samples",
                "300",
                "--json",
                "--quiet",
                "--plot",
                str(png),
            ]
        )
        == 0
    )
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
    assert (
        main(["mc", "--width", "3", "--samples", "10", "--out", str(blocker / "x"), "--quiet"]) == 2
    )
    assert "not writable" in capsys.readouterr().err


def test_cli_unreachable_scheduler(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dask.distributed")
    start = time.time()
    assert (
        main(
            [
                "mc",
                "--width",
                "3",
                "--samples",
                "10",
                "--scheduler",
                "tcp://127.0.0.1:9",
                "--timeout",
                "2",
                "--quiet",
            ]
        )
        == 2
    )
    assert time.time() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach scheduler tcp://127.0.0.1:9" in err[-1]


def test_default_sweep_plan() -> None:
    from jacgeom.cli import DEFAULT_ACTIVATIONS, _default_sweep

    plan = _default_sweep(100)
    assert {p["activation"] for p, _ in plan} == set(DEFAULT_ACTIVATIONS)
    assert min(p["width"] for p, _ in plan) == 8 and max(p["width"] for p, _ in plan) == 128
    assert max(p["depth"] for p, _ in plan) == 16


def test_plot_data() -> None:
    pytest.importorskip("matplotlib")
    from jacgeom.plot import monte_carlo_figure

    results = [
        (
            {"activation": "relu", "width": w, "depth": 1},
            run(Spec(width=w, depth=1, samples=400, seed=w), progress=False),
        )
        for w in (2, 4)
    ]
    fig = monte_carlo_figure(results)
    w, p = fig.jacgeom_data["width"]["relu"]
    np.testing.assert_array_equal(w, [2, 4])
    assert p[0] == pytest.approx(0.75, abs=0.1) and p[1] == pytest.approx(1 - 1 / 16, abs=0.05)


def test_progress_bar_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    run(Spec(widths=(3, 3), samples=20, chunk_size=5), progress="always")
    assert "samples" in capsys.readouterr().err
    os.environ.get("CI")  # no terminal here: progress=True stays silent
    run(Spec(widths=(3, 3), samples=20, chunk_size=5), progress=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "polynomial"])
@pytest.mark.parametrize("residual", [False, True])
def test_kernel_layer_runs_match_kernel_networks(kernel: str, residual: bool) -> None:
    # A shared kernel network, redrawn as a jacgeom.Network of KernelLayers from the same
    # seed: the batched formulas of the Monte Carlo against KernelLayer's.
    widths = (5, 5, 5) if residual else (5, 7, 4)
    spec = Spec(
        widths=widths,
        layer="kernel",
        kernel=kernel,
        residual=residual,
        fresh_weights=False,
        samples=40,
        chunk_size=40,
        seed=2,
        gamma=0.4 if kernel != "polynomial" else None,
    )
    d = mc.chunk_statistics(spec, 0)
    draw = np.random.default_rng(np.random.SeedSequence(2, spawn_key=(2**31, 2)))
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        C = draw.standard_normal((1, fan_in, fan_in))[0]
        A = draw.standard_normal((1, fan_out, fan_in))[0] / np.sqrt(fan_in)
        gamma = spec.gamma if spec.gamma is not None else 1.0 / fan_in
        layers.append(jacgeom.KernelLayer(C, A, kernel=kernel, gamma=gamma, coef0=1.0))
    net = jacgeom.Network(layers, residual=residual)
    X = mc._draw_inputs(spec, mc._chunk_rng(spec, 0), 40)
    np.testing.assert_array_equal(d["rank"], net.rank(X))
    s = net.singular_values(X)
    np.testing.assert_allclose(d["log_smax"], np.log(s[:, 0]), rtol=1e-9)
    np.testing.assert_allclose(d["frobenius2"], np.sum(s**2, axis=1), rtol=1e-9)
    np.testing.assert_array_equal(d["active_counts"], np.tile(widths[1:], (40, 1)))
    for l, layer in enumerate(layers):
        h = jacgeom.Network(layers[:l], residual=residual).forward(X) if l else X
        J = layer.jacobian(h) + (np.eye(5) if residual else 0)
        np.testing.assert_array_equal(d["layer_ranks"][:, l], np.linalg.matrix_rank(J))


def test_kernel_and_activation_side_by_side() -> None:
    base = Spec(widths=(6, 6, 6), samples=600, chunk_size=300, seed=1)
    results = mc.sweep(base, {"layer": ["activation", "kernel"]}, progress=False)
    act, ker = (r.summary() for _, r in results)
    # relu loses rank almost surely at width 6; rbf kernel layers keep it.
    assert act["p_rank_deficient"]["p"] > 0.9
    assert ker["p_rank_deficient"]["p"] < 0.05
    assert results[1][1].theory() == {}
    table = mc.sweep_table(results)
    assert "| kernel |" in table and "| activation |" in table
    fresh = run(base.replace(layer="kernel", fresh_weights=True), progress=False)
    assert fresh.data["rank"].shape == (600,)
    np.testing.assert_array_equal(
        fresh.data["rank"],
        run(base.replace(layer="kernel"), progress=False, workers=2).data["rank"],
    )


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"layer": "spline"}, "unknown layer 'spline'"),
        ({"layer": "kernel", "kernel": "sigmoid"}, "unknown kernel 'sigmoid'"),
        ({"layer": "kernel", "norm": "layer"}, "use norm=None"),
        ({"layer": "kernel", "centers": 0}, "centers must be >= 1"),
        ({"layer": "kernel", "gamma": -1.0}, "gamma must be a finite number > 0"),
    ],
)
def test_kernel_spec_errors(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Spec(widths=(4, 4), **fields)


def test_cli_kernel_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["mc", "--layer", "kernel", "--widths", "4", "4", "--samples", "300", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out[0]["point"]["layer"] == "kernel" and out[0]["summary"]["samples"] == 300


@pytest.mark.parametrize("fill_rest", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_live_row_placement_twins_agree(fill_rest: bool, seed: int) -> None:
    from jacgeom import _backends

    if _backends.numba_kernels is None:
        pytest.skip("numba is not importable here")
    rng = np.random.default_rng(seed)
    N, m, n = 7, 4, 6
    h = rng.standard_normal((N, n)) * (rng.random((N, n)) < 0.6)  # zeros: dead inputs
    h[2] = 0.0  # every input dead: rows unconstrained
    h[3, 0] = -2.0  # a negative pivot
    cols = (rng.random((N, n)) < 0.5) | (h != 0)
    u = rng.standard_normal((N, m))
    live = u > -0.3
    rows, n_cols = live.sum(axis=1), cols.sum(axis=1)
    G = rng.standard_normal(int(rows @ (n_cols - (h != 0).any(axis=1))))
    B = rng.standard_normal(int(rows @ (n - n_cols)))
    W_numpy, W_numba = np.full((N, m, n), np.nan), np.full((N, m, n), np.nan)
    mc._place_live_rows(h, cols, u, live, G, B, fill_rest, 0.7, W_numpy)
    _backends.numba_kernels.place_live_rows(h, cols, u, live, G, B, fill_rest, 0.7, W_numba)
    np.testing.assert_allclose(W_numba, W_numpy, rtol=1e-12, atol=1e-14)
    assert np.all(W_numba[~live] == 0)
    if not fill_rest:
        assert np.all(W_numba[:, :, :][np.broadcast_to(~cols[:, None, :], W_numba.shape)] == 0)
    # the rows reproduce their pre-activations, and the rest columns are B's entries
    np.testing.assert_allclose(
        np.einsum("sij,sj->si", W_numba, h)[live],
        (0.7 * np.linalg.norm(h, axis=1)[:, None] * u)[live],
        atol=1e-12,
    )
    if fill_rest:
        rest = np.broadcast_to(~cols[:, None, :], W_numba.shape) & live[:, :, None]
        np.testing.assert_allclose(W_numba[rest], 0.7 * B, rtol=1e-15)


@pytest.mark.parametrize(
    "widths, activation",
    [((6, 8, 5, 7), "relu"), ((5, 6, 6, 4), ("tanh", "relu", "relu")), ((4, 4), "relu")],
)
def test_leaving_layer_ranks_out_changes_nothing_else(
    widths: tuple[int, ...], activation: str | tuple[str, ...]
) -> None:
    spec = Spec(widths=widths, activation=activation, samples=600, chunk_size=250, seed=2)
    full = run(spec, progress=False).data
    lean = run(spec.replace(layer_ranks=False), progress=False).data
    assert "layer_ranks" in full and "layer_ranks" not in lean
    assert set(full) - set(lean) == {"layer_ranks"}
    for key, value in lean.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)
    with pytest.raises(TypeError, match="layer_ranks must be a bool"):
        Spec(widths=widths, layer_ranks="no")  # type: ignore[arg-type]


def _jacobians_with_dead_rows(
    rng: np.random.Generator, B: int, m: int, n: int, dtype: type
) -> NDArray[Any]:
    """Gaussian stacks with Bernoulli(1/2) dead rows, and awkward members: all rows dead, all
    live, repeated rows (rank below the live count), equal singular values, one row 1e-9
    smaller (near the tolerance in float32), huge and tiny scales."""
    J = rng.standard_normal((B, m, n))
    J *= (rng.random((B, m)) < 0.5)[:, :, None]
    J[0] = 0.0
    J[1] = rng.standard_normal((m, n))
    if m >= 3:
        J[2, 1] = J[2, 0]
        J[2, 2] = 3.0 * J[2, 0]
    q = np.linalg.qr(rng.standard_normal((max(m, n), max(m, n))))[0][:m, :n]
    J[3] = 2.0 * q
    J[3, m // 2 :] = 0.0  # orthogonal live rows of equal norm: one repeated singular value
    J[4, 0] *= 1e-9
    big = 1e150 if dtype == np.float64 else 1e15
    J[5] *= big
    J[6] /= big
    return J.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(16, 16), (7, 5), (5, 7), (64, 64), (1, 1), (3, 40), (70, 70)])
def test_spectral_summary_matches_numpy(shape: tuple[int, int], dtype: type) -> None:
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the compiled extension is not importable here")
    m, n = shape
    rng = np.random.default_rng(m * 100 + n)
    J = _jacobians_with_dead_rows(rng, 200, m, n, dtype)
    J_before = J.copy()
    rank, log_smax, log_smin, fro2, log_volume = _backends.core.spectral_summary(J)
    np.testing.assert_array_equal(J, J_before)
    s = np.linalg.svd(J.astype(np.float64), compute_uv=False)
    live = np.count_nonzero(np.any(J != 0, axis=2), axis=1)
    p = min(m, n)
    want_rank = np.array([np.linalg.matrix_rank(Jb) for Jb in J])  # in J's precision
    np.testing.assert_array_equal(rank, want_rank)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    has = s[:, 0] > 0
    np.testing.assert_allclose(np.exp(log_smax[has]), s[has, 0], rtol=rtol)
    assert np.all(np.isneginf(log_smax[~has]))
    # sigma_min: exactly zero where rows are dead, else numpy's to the SVD's accuracy.
    assert np.all(np.isneginf(log_smin[live < p]))
    full = (live >= p) & (rank == p)
    np.testing.assert_allclose(
        np.exp(log_smin[full]), s[full, -1], rtol=1e3 * rtol * max(m, n), atol=0
    )
    np.testing.assert_allclose(fro2, np.sum(J.astype(np.float64) ** 2, axis=(1, 2)), rtol=rtol)
    if m >= n:
        regular = rank == n
        assert np.all(np.isneginf(log_volume[~regular]))
        np.testing.assert_allclose(
            log_volume[regular], np.log(s[regular]).sum(axis=1), rtol=1e-4, atol=1e-4
        )
    else:
        assert np.all(np.isnan(log_volume))


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_dead_rows_give_exact_zero_singular_values(backend: str) -> None:
    spec = Spec(widths=(12, 12), samples=300, chunk_size=300, seed=4)
    d = mc.chunk_statistics(spec, 0, backend=backend)
    dead = d["active_counts"][:, 0] < 12
    assert np.all(np.isneginf(d["log_smin"][dead]))
    assert np.all(np.isinf(d["log_cond"][dead]))
    ref = mc.chunk_statistics(spec, 0, backend="numpy")
    np.testing.assert_array_equal(d["rank"], ref["rank"])
    np.testing.assert_allclose(d["log_smax"], ref["log_smax"], rtol=1e-12)
    np.testing.assert_allclose(d["frobenius2"], ref["frobenius2"], rtol=1e-12)


def test_cli_no_layer_ranks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mc", "--widths", "5", "6", "5", "--samples", "300", "--quiet", "--json"]
    assert main([*argv, "--no-layer-ranks", "--out", str(tmp_path)]) == 0
    lean = json.loads(capsys.readouterr().out)[0]["summary"]
    (sub,) = [p for p in tmp_path.glob("*") if p.is_dir()]
    assert json.loads((sub / "spec.json").read_text())["layer_ranks"] is False
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["summary"] == lean


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
@pytest.mark.parametrize(
    "widths, activation",
    [((16, 16), "relu"), ((6, 8, 5, 7), "relu"), ((5, 6, 6, 4), ("tanh", "relu", "gelu"))],
)
def test_ranks_only_gives_the_same_ranks(
    backend: str, widths: tuple[int, ...], activation: str | tuple[str, ...]
) -> None:
    spec = Spec(widths=widths, activation=activation, samples=500, chunk_size=500, seed=5)
    full = mc.chunk_statistics(spec, 0, backend=backend)
    lean = mc.chunk_statistics(spec.replace(spectra=False), 0, backend=backend)
    assert set(full) - set(lean) == set(mc._SPECTRA)
    for key, value in lean.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)


def test_ranks_only_summary_table_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run(Spec(widths=(6, 6), samples=400, spectra=False), progress=False)
    s = res.summary()
    assert "log_cond" not in s and s["p_rank_deficient"]["count"] >= 0
    assert "not recorded" in sweep_table([({"width": 6}, res)])
    pytest.importorskip("matplotlib")
    png = tmp_path / "mc.png"
    argv = ["mc", "--width", "6", "--depth", "2", "--samples", "300", "--quiet"]
    assert main([*argv, "--no-spectra", "--plot", str(png)]) == 0
    assert png.stat().st_size > 0 and "not recorded" in capsys.readouterr().out


def test_spectral_summary_rank_only_agrees() -> None:
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the C++ backend is not built here")
    rng = np.random.default_rng(8)
    for dtype in (np.float64, np.float32):
        J = rng.standard_normal((300, 9, 7)).astype(dtype)
        J[rng.random((300, 9)) < 0.5] = 0.0  # dead rows
        J[:50, :, 3] = J[:50, :, 2]  # rank below the live rows: the SVD decides
        full = _backends.core.spectral_summary(J)
        rank, *rest = _backends.core.spectral_summary(J, None, False)
        np.testing.assert_array_equal(rank, full[0])
        assert all(np.all(np.isnan(r)) for r in rest)


@pytest.mark.parametrize(
    "widths", [(16, 16), (9, 6), (6, 9), (6, 8, 5)], ids=["16x16", "narrow", "wide", "deep"]
)
def test_backends_draw_the_same_samples(widths: tuple[int, ...]) -> None:
    # One relu layer on the cpp backend hands its live rows to the spectral summary packed;
    # the other backends place them into a (n, n_1, n_0) stack. Same draws, same statistics.
    spec = Spec(widths=widths, samples=400, chunk_size=400, seed=11, sigma_b=0.1)
    ref = mc.chunk_statistics(spec, 0, backend="numpy")
    for backend in ("cpp", "numba"):
        got = mc.chunk_statistics(spec, 0, backend=backend)
        assert set(got) == set(ref)
        for key in ("active_counts", "layer_ranks", "rank"):
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{backend} {key}")
        # sigma_min of a rank-deficient J with live rows is rounding: compared where defined
        full = ref["rank"] == min(widths[0], widths[-1])
        for key in ("log_smax", "log_smin", "log_cond", "frobenius2", "log_volume"):
            a, b = got[key], ref[key]
            if key in ("log_smin", "log_cond"):
                a, b = a[full], b[full]
            np.testing.assert_allclose(a, b, rtol=1e-9, err_msg=f"{backend} {key}")


def test_spectral_summary_of_packed_rows() -> None:
    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the C++ backend is not built here")
    core = _backends.core
    rng = np.random.default_rng(12)
    for dtype in (np.float64, np.float32):
        for m, n in ((16, 16), (5, 9), (9, 5), (70, 80)):
            J = rng.standard_normal((60, m, n)).astype(dtype)
            live = rng.random((60, m)) < 0.5
            live[0] = False  # a sample without live rows
            J[~live] = 0.0
            counts = live.sum(axis=1).astype(np.int64)
            rows = np.ascontiguousarray(J[live] / dtype(0.5))
            for spectra in (True, False):
                want = core.spectral_summary(J, None, spectra)
                got = core.spectral_summary_rows(rows, counts, m, 0.5, None, spectra)
                np.testing.assert_array_equal(got[0], want[0])
                rtol = 1e-5 if dtype == np.float32 else 1e-12
                for a, b in zip(got[1:], want[1:], strict=True):
                    np.testing.assert_allclose(a, b, rtol=rtol)
            assert np.all(rows == J[live] / dtype(0.5))  # the input is not modified
    rows, counts = np.ones((3, 4)), np.array([2, 1], dtype=np.int64)
    with pytest.raises(ValueError, match=r"in \[0, m\]"):
        core.spectral_summary_rows(rows, counts, 1)
    with pytest.raises(ValueError, match="add up"):
        core.spectral_summary_rows(rows, np.array([1, 1], dtype=np.int64), 4)


def test_numpy_placement_twin_gives_the_same_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without numba the rows are placed by the numpy twin: the same samples to rounding.
    from jacgeom import _backends

    spec = Spec(widths=(6, 8, 5, 7), samples=300, chunk_size=300, seed=13, sigma_b=0.2)
    with_numba = mc.chunk_statistics(spec, 0)
    monkeypatch.setattr(_backends, "numba_kernels", None)
    without = mc.chunk_statistics(spec, 0, backend="cpp" if _backends.core else "numpy")
    for key in ("active_counts", "layer_ranks", "rank"):
        np.testing.assert_array_equal(without[key], with_numba[key], err_msg=key)
    np.testing.assert_allclose(without["log_smax"], with_numba["log_smax"], rtol=1e-12)
    np.testing.assert_allclose(without["frobenius2"], with_numba["frobenius2"], rtol=1e-12)


def test_numpy_bools_and_sampler_refusal_message(tmp_path: Path) -> None:
    spec = Spec(widths=(4, 4), samples=50, chunk_size=50, layer_ranks=np.bool_(False))
    assert spec.layer_ranks is False
    res = run(spec, progress=False, out=tmp_path)  # the spec serialises
    res.save(tmp_path / "r.npz")
    recorded = json.loads((tmp_path / "spec.json").read_text())
    recorded["sampler"] = mc._SAMPLER - 1
    recorded["layer_ranks"] = True  # a difference that sorts before "sampler"
    (tmp_path / "spec.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"\(sampler: \d+ there, \d+ here\)"):
        run(spec, progress=False, out=tmp_path)
