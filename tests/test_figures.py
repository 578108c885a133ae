"""Figures: the data they draw, checked against independent values (closed forms computed
here with scipy, numpy's rank of small well-conditioned matrices, the mathematics of exact
rank), and what a reader sees (labelled axes, nothing infinite drawn as a value); the
homeomorphism report; the figures command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binom

import jacgeom
from jacgeom.cli import main
from jacgeom.homeomorphism import derivative_zeros, homeomorphism_report
from jacgeom.montecarlo import Spec, run

plot = pytest.importorskip("jacgeom.plot")


def relu_p_rank_at_least(widths: tuple[int, ...], r: int) -> float:
    """P(exact rank >= r) of a relu network with fresh Gaussian weights: the rank is
    min(n_0, |S_1|, ..., |S_L|), |S_l| ~ Bin(n_l, 1/2) independent (scipy, not jacgeom)."""
    if r > widths[0]:
        return 0.0
    return float(np.prod([binom.sf(r - 1, n, 0.5) for n in widths[1:]]))


def assert_readable(fig: Any) -> None:
    """Every visible panel has a title and labelled axes; every line drawn in data
    coordinates has finite values (infinite medians sit on an edge, in axes coordinates)."""
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        assert ax.get_title(), "panel without a title"
        assert ax.get_xlabel(), f"no x label on {ax.get_title()!r}"
        # a row of panels sharing one y axis is labelled once, on its left
        siblings = ax.get_shared_y_axes().get_siblings(ax)
        assert any(a.get_ylabel() for a in siblings), f"no y label on {ax.get_title()!r}"
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            assert not np.isinf(y).any(), f"infinite value drawn on {ax.get_title()!r}"


def test_activations_figure_data_and_titles() -> None:
    fig = plot.activations_figure()
    data = fig.jacgeom_data
    titles = data.pop("titles")
    assert set(data) == set(jacgeom.activation_names()) == set(titles)
    for name, (z, phi, dphi, _zeros) in data.items():
        act = jacgeom.activation(name)
        np.testing.assert_allclose(phi, act.phi(z))
        np.testing.assert_allclose(dphi, act.derivative(z))
    assert data["gelu"][3] == pytest.approx([-0.75179], abs=1e-5)
    assert data["silu"][3] == pytest.approx([-1.27846], abs=1e-5)
    assert data["tanh"][3].size == 0 and data["relu"][3].size == 0
    # relu is monotone (phi' >= 0), just not strictly; gelu and silu decrease somewhere
    assert titles["relu"] == "relu: monotone, not strictly"
    for name in ("gelu", "gelu_tanh", "silu"):
        assert "not monotone" in titles[name]
    for name in ("tanh", "leaky_relu", "identity", "sigmoid", "softplus", "elu"):
        assert "strictly increasing" in titles[name]
    assert_readable(fig)


def test_warp_data_relu_folds_and_circle() -> None:
    d = plot.warp_data(np.pi / 6, "relu")
    W = d["W"]
    np.testing.assert_allclose(W @ W.T, np.eye(2), atol=1e-12)
    circle, image = d["curves"][-1], d["mapped"][-1]
    np.testing.assert_allclose(image, np.maximum(circle @ W.T, 0))
    assert 0.7 < d["folded"].mean() < 0.8  # three of four quadrants of the rotated frame
    tanh = plot.warp_data(np.pi / 6, "tanh")
    assert not tanh["folded"].any()
    fig = plot.warp_figure()
    assert set(fig.jacgeom_data) == {"relu", "leaky_relu", "tanh", "gelu", "silu"}
    assert_readable(fig)


def test_dead_coordinate_figure_matches_closed_form() -> None:
    from jacgeom.montecarlo.sampling import weight_std

    fig = plot.dead_coordinate_figure(widths=(1, 2, 4), samples=3000)
    d = fig.jacgeom_data
    np.testing.assert_allclose(d["theory"], [0.5, 0.75, 0.9375])
    # the title states the weights' law the Monte Carlo draws: variance 2/n (He), not 1/n
    assert weight_std(Spec(widths=(4, 4), init=d["init"]), 4, 4) ** 2 * 4 == pytest.approx(2.0)
    title = fig.axes[0].get_title()
    assert "N(0, 2/n)" in title and "1/n" not in title, title
    # 95% intervals at three points: generous check that measurements straddle theory
    assert np.all(np.abs(d["p"] - d["theory"]) < 4 * np.sqrt(0.25 / 3000))
    assert_readable(fig)


def test_rank_depth_exact_rank_full_float64_rank_drops() -> None:
    """Strictly monotone activations (and gelu, whose phi' vanishes only at one point) keep
    the exact rank at any depth, while their float64 rank falls once the condition number
    passes 1 / (n eps): width 16, depth 16."""
    threshold = -math.log10(16 * np.finfo(np.float64).eps)
    for act in ("leaky_relu", "tanh", "gelu", "identity"):
        d = plot.rank_depth_data(16, (16,), act, samples=150)
        assert d["exact"][0] == 1.0 and d["p_exact"][0] == 0.0 and d["p_exact_theory"][0] == 0.0
        assert d["float64"][0] < 1.0  # numpy's rule drops what exact arithmetic keeps
        assert np.isfinite(d["log10_cond_median"][0]) and d["log10_cond_median"][0] > threshold
        assert d["samples"][0] == 150
    identity = plot.rank_depth_data(16, (16,), "identity", samples=150)
    assert identity["log10_cond_theory"][0] == pytest.approx(13.82, abs=0.01)


def test_rank_depth_relu_matches_binomial_law() -> None:
    width, depths = 6, (1, 2, 4)
    d = plot.rank_depth_data(width, depths, "relu", samples=600)
    for i, L in enumerate(depths):
        widths = (width,) * (L + 1)
        mean = sum(relu_p_rank_at_least(widths, r) for r in range(1, width + 1)) / width
        assert d["exact_theory"][i] == pytest.approx(mean, rel=1e-12)
        # the closed form lies in the drawn 95% band, widened to 4 standard errors
        half = (d["exact_hi"][i] - d["exact_lo"][i]) / 2
        assert abs(d["exact"][i] - mean) < 4 / 1.96 * half
        p = 1 - relu_p_rank_at_least(widths, width)
        assert d["p_exact_theory"][i] == pytest.approx(p, rel=1e-12)
        assert d["p_exact_lo"][i] <= p <= d["p_exact_hi"][i] + 1e-12
        assert d["float64"][i] <= d["exact"][i]
    # relu's exact rank is lost, so its condition number is infinite: never a finite point
    assert np.isposinf(d["log10_cond_median"]).all()


def test_rank_depth_figure_panels() -> None:
    fig = plot.rank_depth_figure(width=6, depths=(1, 2), samples=60, activations=("relu", "tanh"))
    data = fig.jacgeom_data
    assert set(data) == {
        (v, a) for v in ("plain", "residual", "layer norm") for a in ("relu", "tanh")
    }
    assert np.all(data[("plain", "tanh")]["exact"] == 1.0)
    assert np.all(data[("residual", "tanh")]["exact"] == 1.0)
    assert np.all(data[("layer norm", "tanh")]["exact"] == pytest.approx(5 / 6))  # n - 1
    assert np.all(data[("plain", "relu")]["samples"] == 60)
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("exact rank" in t for t in titles) == 3
    assert sum("float64 rank" in t for t in titles) == 3
    assert sum("log10 condition number" in t for t in titles) == 3
    assert "60 samples per point" in fig._suptitle.get_text()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    # numpy's rule on 6 x 6 Jacobians: singular values at or below 6 eps sigma_max drop
    threshold = -math.log10(6 * np.finfo(np.float64).eps)
    assert "relu" in legend
    assert f"log10(1/(6 eps)) = {threshold:.1f}: numpy's float64-rank threshold" in legend
    dotted = [line for ax in fig.axes[6:] for line in ax.get_lines() if line.get_ls() == ":"]
    assert len(dotted) == 3
    assert all(np.allclose(line.get_ydata(), threshold) for line in dotted)
    assert_readable(fig)


def test_metric_distortion_exact_zeros() -> None:
    fig = plot.metric_distortion_figure(activations=("relu", "tanh"))
    md = fig.jacgeom_data
    for name, d in md.items():
        W, b = d["W"], d["b"]
        theta, ev, zero = d["theta"], d["eigenvalues"], d["exact_zero"]
        x = np.stack([np.cos(theta), np.sin(theta)], 1)
        dphi = jacgeom.activation(name).derivative(x @ W.T + b)
        # numpy's rank of the small, well-conditioned D W decides the same zeros
        ranks = np.array([np.linalg.matrix_rank(dphi[i][:, None] * W) for i in range(len(x))])
        np.testing.assert_array_equal(zero.sum(axis=1), 2 - ranks)
        assert np.all(ev[zero] == 0) and np.all(ev[~zero] > 0)
    assert md["relu"]["exact_zero"].any() and md["relu"]["smaller_exact_zero"].any()
    assert not md["tanh"]["exact_zero"].any() and not md["tanh"]["smaller_exact_zero"].any()
    assert_readable(fig)


def test_figures_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["figures", "--out", str(blocker / "sub"), "--samples", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jacgeom figures: error:")
    blocker.unlink()
    assert main(["figures", "--out", str(tmp_path), "--samples", "100", "--gif"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "activations.png",
        "dead_coordinates.png",
        "kernel_comparison.png",
        "metric_distortion.png",
        "rank_depth.png",
        "warp.gif",
        "warp.png",
    ]


def test_derivative_zeros_and_report() -> None:
    assert derivative_zeros("gelu_tanh") == pytest.approx([-0.7525], abs=1e-3)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 3))
    rep = homeomorphism_report(W, "tanh", X=rng.standard_normal((50, 3)))
    assert (
        rep.injective
        and rep.weight_rank == 3
        and rep.rank_lost.size == 0
        and rep.min_singular_value > 0
    )
    X = rng.standard_normal((200, 3))
    rep = homeomorphism_report(W, "relu", X=X)
    assert not rep.injective and rep.rank_lost.size > 0
    np.testing.assert_array_equal(rep.rank_lost, np.nonzero(jacgeom.active_rank(W, X) < 3)[0])
    low = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 3))
    assert not homeomorphism_report(low, "tanh").injective
    # gelu: samples placed exactly on the fold are found
    X = np.linalg.lstsq(W[:3], np.full(3, -0.7517915), rcond=None)[0][None, :]
    rep = homeomorphism_report(W, "gelu", X=np.vstack([X, 10 + np.zeros((1, 3))]))
    assert rep.near_derivative_zero.tolist() == [0]
    assert "criterion" in str(rep)
    with pytest.raises(ValueError, match="delta must be"):
        homeomorphism_report(W, "gelu", X=X, delta=-1.0)


def test_kernel_comparison_figure() -> None:
    fig = plot.kernel_comparison_figure(widths=(5, 5, 5), samples=60)
    data = fig.jacgeom_data
    assert set(data) == {"relu", "tanh", "kernel (rbf)"}
    assert np.all(data["kernel (rbf)"]["exact_rank"] == 5)  # smooth dense Jacobians keep rank
    assert np.all(data["tanh"]["exact_rank"] == 5)
    assert data["relu"]["exact_rank"].mean() < 5
    # relu networks with no finite condition number still appear, counted, in the legend
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    finite = int(np.isfinite(data["relu"]["log_cond"]).sum())
    assert f"relu: {finite} of 60 finite" in legend
    assert_readable(fig)


def test_monte_carlo_figure_sweep() -> None:
    """Several activations at 0 stay visible (offset along x); relu's P(exact rank < n)
    straddles its closed form, computed here from the binomial law."""
    results = []
    for act in ("relu", "tanh", "leaky_relu"):
        for w in (2, 4):
            spec = Spec(width=w, depth=1, activation=act, samples=400, seed=w)
            results.append(({"activation": act, "width": w, "depth": 1}, run(spec, progress=False)))
        for depth in (2, 6):
            spec = Spec(width=4, depth=depth, activation=act, samples=300, seed=depth)
            results.append(
                ({"activation": act, "width": 4, "depth": depth}, run(spec, progress=False))
            )
    fig = plot.monte_carlo_figure(results)
    data = fig.jacgeom_data
    assert set(data) == {"width", "depth"}
    relu = data["width"]["relu"]
    np.testing.assert_array_equal(relu["x"], [2, 4])
    theory = [1 - relu_p_rank_at_least((w, w), w) for w in (2, 4)]
    np.testing.assert_allclose(relu["p_exact_theory"], theory, rtol=1e-12)
    assert np.all(relu["p_exact_lo"] <= theory) and np.all(theory <= relu["p_exact_hi"])
    deep = data["depth"]["relu"]
    np.testing.assert_array_equal(deep["x"], [1, 2, 6])
    theory = [1 - relu_p_rank_at_least((4,) * (L + 1), 4) for L in (1, 2, 6)]
    assert np.all(deep["p_exact_lo"] <= theory) and np.all(theory <= deep["p_exact_hi"])
    for row in ("width", "depth"):
        for act in ("tanh", "leaky_relu"):
            assert np.all(data[row][act]["p_exact"] == 0)
            assert np.all(data[row][act]["p_exact_theory"] == 0)
            assert np.all(np.isfinite(data[row][act]["log10_cond_median"]))
    assert np.all(data["depth"]["relu"]["samples"] == [400, 300, 300])
    # curves at 0 are drawn side by side, not on top of each other
    ax = fig.axes[0]
    at_zero = [
        tuple(np.round(bars.lines[0].get_xdata(), 6))
        for bars in ax.containers  # the measured curves, not the closed forms
        if np.all(np.asarray(bars.lines[0].get_ydata()) == 0)
    ]
    assert len(set(at_zero)) == len(at_zero) >= 2
    assert_readable(fig)


def test_monte_carlo_figure_single_point_and_no_spectra() -> None:
    one = [
        (
            {"activation": "tanh", "width": 6, "depth": 6},
            run(Spec(width=6, depth=6, activation="tanh", samples=100), progress=False),
        )
    ]
    fig = plot.monte_carlo_figure(one)
    d = fig.jacgeom_data["depth"]["tanh"]
    assert d["p_exact"].tolist() == [0.0] and np.isfinite(d["log10_cond_median"]).all()
    assert_readable(fig)
    lean = [
        (
            {"widths": (5, 6, 5)},
            run(Spec(widths=(5, 6, 5), samples=100, spectra=False), progress=False),
        )
    ]
    fig = plot.monte_carlo_figure(lean)
    assert set(fig.jacgeom_data) == {"point"}
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("not recorded" in t for t in texts)
    assert_readable(fig)


def test_scaling_figure_explains_p_and_labels_every_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/scaling.py's figure: the data drawn are the medians given, each legend entry
    carries the fitted exponent, which the title explains; every panel has at least two
    labelled y ticks inside its data (a one-decade panel had one); series that coincide
    are told apart by marker and line style."""
    bench = Path(__file__).resolve().parent.parent / "bench"
    monkeypatch.syspath_prepend(str(bench))
    scaling = pytest.importorskip("scaling")
    sizes = [2, 4, 8, 16]
    series = [
        scaling.Series(
            "network_jacobian", "cpp", "depth", None, sizes, [2e-3, 4e-3, 8e-3, 1.6e-2], [], []
        ),
        scaling.Series(
            "network_rank", "cpp", "depth", None, sizes, [1.3e-2, 1.4e-2, 1.6e-2, 2.2e-2], [], []
        ),
        # the same medians as network_rank: must stay visible
        scaling.Series(
            "network_singular_values",
            "cpp",
            "depth",
            None,
            sizes,
            [1.3e-2, 1.4e-2, 1.6e-2, 2.2e-2],
            [],
            [],
        ),
        scaling.Series("masked_rank", "cpp", "B", None, [512, 1024], [5e-3, 1e-2], [], []),
    ]
    fig = scaling.figure(series, title="test")
    assert "p: the fitted exponent of median time ~ size^p" in fig._suptitle.get_text()
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert set(by_title) == {"cost along B", "cost along depth"}
    depth = by_title["cost along depth"]
    assert depth.get_xlabel() == "depth L, layers"
    assert by_title["cost along B"].get_xlabel() == "B, samples (or masks) per call"
    lines = depth.get_lines()
    for line, s in zip(lines, series[:3], strict=True):
        np.testing.assert_array_equal(line.get_xdata(), s.sizes)
        np.testing.assert_array_equal(line.get_ydata(), s.medians)
        assert line.get_label() == f"{s.kernel} (cpp): p = {s.exponent:.2f}"
    assert series[0].exponent == pytest.approx(1.0)
    styles = {(line.get_marker(), line.get_linestyle(), line.get_markersize()) for line in lines}
    assert len(styles) == len(lines)
    for ax in fig.axes:
        assert ax.get_ylabel() == "median time per call (s)"
        lo, hi = ax.get_ylim()
        fig.canvas.draw()
        shown = [
            t for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi
        ]
        assert len(shown) >= 2, ax.get_title()


def test_monte_carlo_figure_threshold_uses_numpys_size_max_n0_nL() -> None:
    """numpy.linalg.matrix_rank drops singular values at or below max(m, n) eps sigma_max:
    for widths 64-32-8 the Jacobian is 8 x 64 and the threshold log10(1 / (64 eps)) =
    13.847, not log10(1 / (8 eps)) = 14.750 (drawn before). Checked on numpy itself."""
    eps = np.finfo(np.float64).eps
    want = -math.log10(64 * eps)
    assert want == pytest.approx(13.847, abs=1e-3)
    # numpy's own rule at that threshold: an 8 x 64 matrix with condition number just
    # below and just above 10**want
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 8)))[0].T  # 8 x 64
    for cond, rank in ((10 ** (want - 0.01), 8), (10 ** (want + 0.01), 7)):
        A = np.diag(np.r_[np.ones(7), 1 / cond]) @ U
        assert np.linalg.matrix_rank(A) == rank
    res = run(Spec(widths=(64, 32, 8), activation="tanh", samples=100, seed=0), progress=False)
    fig = plot.monte_carlo_figure([({"widths": (64, 32, 8)}, res)])
    d = fig.jacgeom_data["point"]["tanh"]
    assert d["n"].tolist() == [8] and d["n_max"].tolist() == [64]
    dotted = [
        line
        for line in fig.axes[2].get_lines()
        if line.get_linestyle() == ":" and line.get_color() == "grey"
    ]
    assert len(dotted) == 1
    np.testing.assert_allclose(dotted[0].get_ydata(), want, rtol=1e-12)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "log10(1/(max(n_0, n_L) eps)): numpy's float64-rank threshold" in labels
    assert_readable(fig)
