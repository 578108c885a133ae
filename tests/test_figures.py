"""Figures (their plotted data, not pixels), the homeomorphism report, the figures command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import jacgeom
from jacgeom.cli import main
from jacgeom.homeomorphism import derivative_zeros, homeomorphism_report
from jacgeom.montecarlo import Spec, run

plot = pytest.importorskip("jacgeom.plot")


def test_activations_figure_data() -> None:
    data = plot.activations_figure().jacgeom_data
    assert set(data) == set(jacgeom.activation_names())
    for name, (z, phi, dphi, _zeros) in data.items():
        act = jacgeom.activation(name)
        np.testing.assert_allclose(phi, act.phi(z))
        np.testing.assert_allclose(dphi, act.derivative(z))
    assert data["gelu"][3] == pytest.approx([-0.75179], abs=1e-5)
    assert data["silu"][3] == pytest.approx([-1.27846], abs=1e-5)
    assert data["tanh"][3].size == 0 and data["relu"][3].size == 0


def test_warp_data_relu_folds_and_circle() -> None:
    d = plot.warp_data(np.pi / 6, "relu")
    W = d["W"]
    np.testing.assert_allclose(W @ W.T, np.eye(2), atol=1e-12)
    circle, image = d["curves"][-1], d["mapped"][-1]
    np.testing.assert_allclose(image, np.maximum(circle @ W.T, 0))
    assert 0.7 < d["folded"].mean() < 0.8  # three of four quadrants of the rotated frame
    tanh = plot.warp_data(np.pi / 6, "tanh")
    assert not tanh["folded"].any()
    assert set(plot.warp_figure().jacgeom_data) == {"relu", "leaky_relu", "tanh", "gelu", "silu"}


def test_dead_coordinate_figure_matches_closed_form() -> None:
    d = plot.dead_coordinate_figure(widths=(1, 2, 4), samples=3000).jacgeom_data
    np.testing.assert_allclose(d["theory"], [0.5, 0.75, 0.9375])
    # 95% intervals at three points: generous check that measurements straddle theory
    assert np.all(np.abs(d["p"] - d["theory"]) < 4 * np.sqrt(0.25 / 3000))


def test_rank_depth_and_metric_figures() -> None:
    data = plot.rank_depth_figure(width=6, depths=(1, 4), samples=200).jacgeom_data
    assert data[("plain", "relu")][1][0] == pytest.approx(0.5, abs=0.1)
    assert data[("residual", "tanh")][1][-1] == pytest.approx(1.0)
    md = plot.metric_distortion_figure().jacgeom_data
    theta, ev = md["tanh"]
    assert ev.shape == (theta.size, 2) and np.all(ev > 0)
    assert np.any(md["relu"][1][:, 0] < 1e-10)  # relu deletes a direction somewhere


def test_figures_command(tmp_path: Path) -> None:
    assert main(["figures", "--out", str(tmp_path), "--samples", "200", "--gif"]) == 0
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
    data = plot.kernel_comparison_figure(widths=(5, 5, 5), samples=60).jacgeom_data
    assert set(data) == {"relu", "tanh", "kernel (rbf)"}
    assert np.all(data["kernel (rbf)"]["rank"] == 5)  # smooth dense Jacobians keep rank
    assert data["relu"]["rank"].mean() < 5


def test_monte_carlo_figure_data() -> None:
    results = [
        (
            {"activation": "relu", "width": w, "depth": 1},
            run(Spec(width=w, depth=1, samples=400, seed=w), progress=False),
        )
        for w in (2, 4)
    ]
    fig = plot.monte_carlo_figure(results)
    w, p = fig.jacgeom_data["width"]["relu"]
    np.testing.assert_array_equal(w, [2, 4])
    assert p[0] == pytest.approx(0.75, abs=0.1) and p[1] == pytest.approx(1 - 1 / 16, abs=0.05)
