"""How a chunk draws its samples: the direct sampler reproduced draw by draw, the conditional
sampler (relu layers: only the rows of live units, the first layer in the frame x = |x| e_1)
checked row by row and in law, and every backend drawing the same samples."""

from __future__ import annotations

import numpy as np
import pytest

import jacgeom
from jacgeom import _backends
from jacgeom.montecarlo import Spec, chunk_statistics, run, sampling


@pytest.fixture
def direct_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weight drawn up front, relu included (the conditional sampler switched off)."""
    monkeypatch.setattr(sampling, "DEAD_HALF_LINE", frozenset())


@pytest.mark.usefixtures("direct_sampler")
def test_direct_sampler_layer_ranks_match_jacobian_rank() -> None:
    spec = Spec(widths=(5, 7, 4), activation="relu", samples=50, seed=4, sigma_b=0.2, chunk_size=50)
    d = chunk_statistics(spec, 0)
    # redraw the same chunk's inputs and weights and check layer 1 against jacobian_rank
    rng = sampling.chunk_rng(spec, 0)
    X = sampling.draw_inputs(spec, rng, 50)
    Ws, bs = sampling.draw_weights(spec, rng, 50)
    want = [jacgeom.jacobian_rank(Ws[0][i], X[i], bs[0][i], backend="numpy") for i in range(50)]
    np.testing.assert_array_equal(d["layer_numerical_ranks"][:, 0], want)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_conditional_sampler_ranks(backend: str) -> None:
    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    spec = Spec(widths=(5, 7, 4), activation="relu", samples=60, seed=4, sigma_b=0.2, chunk_size=60)
    d = chunk_statistics(spec, 0, backend=backend)
    # redraw the first layer exactly as the chunk does (in the frame where x = |x| e_1)
    # and check its rank and active counts
    rng = sampling.chunk_rng(spec, 0)
    norms, _ = sampling.input_norms(spec, rng, 60)
    b = sampling.draw_biases(spec, rng, 60, 7)
    std = sampling.weight_std(spec, 5, 7)
    relu = jacgeom.activation("relu")
    P, z, dphi = sampling.draw_first_layer(rng, norms, 5, std, b, relu, "numpy")
    live = dphi != 0
    np.testing.assert_array_equal(live, z > 0)
    np.testing.assert_array_equal(d["active_counts"][:, 0], live.sum(axis=1))
    owner = np.nonzero(live)[0]
    want = [np.linalg.matrix_rank(std * P[owner == i]) if live[i].any() else 0 for i in range(60)]
    np.testing.assert_array_equal(d["layer_numerical_ranks"][:, 0], want)
    # the rows reproduce their pre-activations: w . (|x| e_1) = z - b
    np.testing.assert_allclose(std * P[:, 0] * norms[owner], (z - b)[live], atol=1e-12)


def test_conditional_rows_have_the_gaussian_law() -> None:
    # With every row live (identity) the rows drawn given z must be iid N(0, std^2 I).
    rng = np.random.default_rng(0)
    h = np.tile([[3.0, -1.0, 0.5, 0.0]], (20000, 1))
    h[0] = 0.0  # h = 0: the row is unconstrained
    W, z, _ = sampling.draw_layer_given_input(
        rng, h, 3, 0.5, np.zeros((20000, 3)), jacgeom.activation("identity"), "numpy"
    )
    rows = W.reshape(-1, 4)
    # mean 0 and covariance 0.25 I within 5 standard errors of 60000 rows
    se = 0.5 / np.sqrt(rows.shape[0])
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=5 * se)
    np.testing.assert_allclose(np.cov(rows.T), 0.25 * np.eye(4), atol=5 * 0.25 * np.sqrt(2) * se)
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
    cond = run(spec, progress=False, records=True).data
    monkeypatch.setattr(sampling, "DEAD_HALF_LINE", frozenset())
    direct = run(spec, progress=False, records=True).data
    for key in ("frobenius2", "rank", "log_smax", "active_counts", "layer_numerical_ranks"):
        a, b = np.asarray(cond[key], float), np.asarray(direct[key], float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 5 * se + 1e-12, key


@pytest.mark.parametrize(
    ("widths", "activation"),
    [((6, 8, 5, 7), "relu"), ((5, 6, 6, 4), ("tanh", "relu", "relu")), ((4, 4), "relu")],
)
def test_leaving_layer_ranks_out_changes_nothing_else(
    widths: tuple[int, ...], activation: str | tuple[str, ...]
) -> None:
    # The weights only the layer ranks need come from a stream of their own.
    spec = Spec(widths=widths, activation=activation, samples=600, chunk_size=250, seed=2)
    full = run(spec, progress=False, records=True).data
    lean = run(spec.replace(layer_ranks=False), progress=False, records=True).data
    assert set(full) - set(lean) == {"layer_numerical_ranks", "layer_exact_ranks"}
    for key, value in lean.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)


@pytest.mark.parametrize(
    "widths", [(16, 16), (9, 6), (6, 9), (6, 8, 5)], ids=["16x16", "narrow", "wide", "deep"]
)
def test_backends_draw_the_same_samples(widths: tuple[int, ...]) -> None:
    # One relu layer on the cpp backend hands its live rows to the spectral summary packed;
    # the other backends place them into a (n, n_1, n_0) stack. Same draws, same statistics.
    spec = Spec(widths=widths, samples=400, chunk_size=400, seed=11, sigma_b=0.1)
    ref = chunk_statistics(spec, 0, backend="numpy")
    for backend in set(jacgeom.backends()) - {"numpy"}:
        got = chunk_statistics(spec, 0, backend=backend)
        assert set(got) == set(ref)
        for key in ("active_counts", "layer_numerical_ranks", "rank"):
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{backend} {key}")
        # sigma_min of a rank-deficient J with live rows is rounding: compared where defined
        full = ref["rank"] == min(widths[0], widths[-1])
        for key in ("log_smax", "log_smin", "log_cond", "frobenius2", "log_volume"):
            a, b = got[key], ref[key]
            if key in ("log_smin", "log_cond"):
                a, b = a[full], b[full]
            np.testing.assert_allclose(a, b, rtol=1e-9, err_msg=f"{backend} {key}")


def test_numpy_placement_twin_gives_the_same_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without numba the rows are placed by the numpy twin: the same samples to rounding.
    spec = Spec(widths=(6, 8, 5, 7), samples=300, chunk_size=300, seed=13, sigma_b=0.2)
    with_numba = chunk_statistics(spec, 0)
    monkeypatch.setattr(_backends, "numba_kernels", None)
    without = chunk_statistics(spec, 0, backend="cpp" if _backends.core else "numpy")
    for key in ("active_counts", "layer_numerical_ranks", "rank"):
        np.testing.assert_array_equal(without[key], with_numba[key], err_msg=key)
    np.testing.assert_allclose(without["log_smax"], with_numba["log_smax"], rtol=1e-12)
    np.testing.assert_allclose(without["frobenius2"], with_numba["frobenius2"], rtol=1e-12)
