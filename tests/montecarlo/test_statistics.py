"""What a chunk records: the closed forms of docs/theory.md ("Closed forms for relu rank
collapse") reproduced, every variant of Spec against jacgeom.Network on the same drawn
weights, kernel layers against KernelLayer networks, dead rows as exact zeros, rank-only
runs, and the backends against the numpy reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jacgeom
from jacgeom import theory
from jacgeom.montecarlo import (
    Spec,
    chunk_statistics,
    compare_with_activation_network,
    run,
    sampling,
)
from jacgeom.montecarlo.statistics import RECORDED, SPECTRA, chunk_blocks

from .helpers import LEVEL


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
    res = run(Spec(widths=widths, samples=20000, seed=3, sigma_b=0.5), progress=False, records=True)
    s = res.summary(level=LEVEL)
    assert s["p_exact_rank_deficient"]["lo"] <= expected <= s["p_exact_rank_deficient"]["hi"]
    assert s["theory"]["p_exact_rank_deficient"] == pytest.approx(expected)
    # relu's float64 rank agrees with its exact rank at this depth (no conditioning loss)
    assert s["p_rank_deficient"] == s["p_exact_rank_deficient"]
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


VARIANTS = [
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
]


@pytest.mark.parametrize("kw", VARIANTS)
def test_variants_run_and_are_consistent(kw: dict[str, Any]) -> None:
    spec = Spec(width=6, depth=3, samples=300, chunk_size=128, seed=1, **kw)
    d = run(spec, progress=False, records=True).data
    assert list(d) == list(RECORDED)
    assert d["active_counts"].shape == (300, 3) and d["layer_numerical_ranks"].shape == (300, 3)
    assert np.all(d["rank"] <= 6) and np.all(d["layer_numerical_ranks"] <= 6)
    full = d["rank"] == 6
    assert np.all(np.isfinite(d["log_volume"][full]))
    assert np.all(d["log_volume"][~full] == -np.inf)
    assert np.all(np.isinf(d["log_cond"][~full]))
    assert np.all(d["log_smax"] >= d["log_smin"])
    if not spec.residual and spec.norm is None:  # rank(D_L W_L ... D_1 W_1) <= each factor's
        assert np.all(d["rank"] <= d["layer_numerical_ranks"].min(axis=1))


def _product_of_layer_norms(net: jacgeom.Network, x: np.ndarray) -> float:
    from jacgeom.reference import network as ref

    h, out = x, 1.0
    for l in range(net.depth):
        h, _, A = ref._layer(net, l, h)
        out *= float(np.linalg.norm(A, 2))
    return out


@pytest.mark.parametrize("kw", VARIANTS)
def test_variants_match_network_on_the_same_weights(
    monkeypatch: pytest.MonkeyPatch, kw: dict[str, Any]
) -> None:
    # Every weight drawn up front (the conditional sampler off), so that the chunk's draws
    # can be replayed; each sample's network rebuilt as a jacgeom.Network, whose Jacobian
    # (another code path) gives the statistics independently: numpy's slogdet for the
    # log-volume, its 2-norm for sigma_max.
    monkeypatch.setattr(sampling, "DEAD_HALF_LINE", frozenset())
    spec = Spec(width=6, depth=3, samples=40, chunk_size=40, seed=1, **kw)
    d = chunk_statistics(spec, 0)
    rng = sampling.chunk_rng(spec, 0)
    X = sampling.draw_inputs(spec, rng, 40)
    Ws, bs = sampling.block_weights(spec, rng, 40)
    acts = [spec.activation] * 3 if isinstance(spec.activation, str) else list(spec.activation)
    nets = [
        jacgeom.Network([W[i] for W in Ws], [b[i] for b in bs], acts, spec.residual, spec.norm)
        for i in range(40)
    ]
    J = np.stack([net.jacobian(x) for net, x in zip(nets, X, strict=True)])
    active = [net.active_counts(x) for net, x in zip(nets, X, strict=True)]
    np.testing.assert_array_equal(d["active_counts"], active)
    # Norms, not their logs or squares, with an absolute floor: a layer normalisation is
    # scale-invariant, so some Jacobians are rounding-sized (1e-11) and differ with the
    # order of the products.
    np.testing.assert_allclose(
        np.sqrt(d["frobenius2"]), np.linalg.norm(J, axis=(1, 2)), rtol=1e-10, atol=1e-12
    )
    smax = np.linalg.norm(J, ord=2, axis=(1, 2))
    np.testing.assert_allclose(np.exp(d["log_smax"]), smax, rtol=1e-10, atol=1e-12)
    s = np.linalg.svd(J, compute_uv=False)
    well_conditioned = (d["rank"] == 6) & (s[:, -1] > 1e-6 * s[:, 0])
    _, logdet = np.linalg.slogdet(J[well_conditioned])
    np.testing.assert_allclose(d["log_volume"][well_conditioned], logdet, rtol=1e-8, atol=1e-8)
    # ranks where numpy's rule is unambiguous on the recomputed J (no singular value within
    # a factor 10 of the tolerance: the zeros of a product of rank-deficient factors are
    # rounding, near the tolerance, in both computations)
    # A formed product's singular values are known only to about eps * prod_l ||A_l||_2,
    # which a layer normalisation's 1 / sigma makes far larger than s_max(J): values below
    # that are rounding, not rank, and leave the sample out.
    tol = s[:, :1] * 6 * np.finfo(float).eps
    noise = (
        np.finfo(float).eps
        * np.array([_product_of_layer_norms(net, x) for net, x in zip(nets, X, strict=True)])[
            :, None
        ]
    )
    clear = np.all((s > 10 * (tol + noise)) | (s < tol / 10), axis=1)
    np.testing.assert_array_equal(d["rank"][clear], np.count_nonzero(s > tol, axis=1)[clear])
    assert clear.sum() >= 25


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
    d = chunk_statistics(spec, 0)
    draw = np.random.default_rng(np.random.SeedSequence(2, spawn_key=(2**31, 2)))
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        C = draw.standard_normal((1, fan_in, fan_in))[0]
        A = draw.standard_normal((1, fan_out, fan_in))[0] / np.sqrt(fan_in)
        gamma = spec.gamma if spec.gamma is not None else 1.0 / fan_in
        layers.append(jacgeom.KernelLayer(C, A, kernel=kernel, gamma=gamma, coef0=1.0))
    net = jacgeom.Network(layers, residual=residual)
    X = sampling.draw_inputs(spec, sampling.chunk_rng(spec, 0), 40)
    np.testing.assert_array_equal(d["rank"], net.rank(X))
    s = net.singular_values(X)
    np.testing.assert_allclose(d["log_smax"], np.log(s[:, 0]), rtol=1e-9)
    np.testing.assert_allclose(d["frobenius2"], np.sum(s**2, axis=1), rtol=1e-9)
    np.testing.assert_array_equal(d["active_counts"], np.tile(widths[1:], (40, 1)))
    for l, layer in enumerate(layers):
        h = jacgeom.Network(layers[:l], residual=residual).forward(X) if l else X
        J = layer.jacobian(h) + (np.eye(5) if residual else 0)
        np.testing.assert_array_equal(d["layer_numerical_ranks"][:, l], np.linalg.matrix_rank(J))


def test_kernel_and_activation_side_by_side() -> None:
    out = compare_with_activation_network([6, 6, 6], samples=600, seed=1)
    # relu loses rank almost surely at width 6; rbf kernel layers keep it.
    assert np.mean(out["activation"]["rank"] < 6) > 0.9
    assert np.mean(out["kernel"]["rank"] < 6) < 0.05
    # the same as the two runs of the Monte Carlo
    base = Spec(widths=(6, 6, 6), samples=600, seed=1)
    kernel = run(base.replace(layer="kernel"), progress=False, workers=2, records=True).data
    for key, value in kernel.items():
        np.testing.assert_array_equal(out["kernel"][key], value, err_msg=key)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_dead_rows_give_exact_zero_singular_values(backend: str) -> None:
    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    spec = Spec(widths=(12, 12), samples=300, chunk_size=300, seed=4)
    d = chunk_statistics(spec, 0, backend=backend)
    dead = d["active_counts"][:, 0] < 12
    assert dead.all()  # P(all 12 units live) = 2**-12
    assert np.all(np.isneginf(d["log_smin"][dead]))
    assert np.all(np.isinf(d["log_cond"][dead]))
    ref = chunk_statistics(spec, 0, backend="numpy")
    np.testing.assert_array_equal(d["rank"], ref["rank"])
    np.testing.assert_allclose(d["log_smax"], ref["log_smax"], rtol=1e-12)
    np.testing.assert_allclose(d["frobenius2"], ref["frobenius2"], rtol=1e-12)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
@pytest.mark.parametrize(
    ("widths", "activation"),
    [((16, 16), "relu"), ((6, 8, 5, 7), "relu"), ((5, 6, 6, 4), ("tanh", "relu", "gelu"))],
)
def test_ranks_only_gives_the_same_ranks(
    backend: str, widths: tuple[int, ...], activation: str | tuple[str, ...]
) -> None:
    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    spec = Spec(widths=widths, activation=activation, samples=500, chunk_size=500, seed=5)
    full = chunk_statistics(spec, 0, backend=backend)
    lean = chunk_statistics(spec.replace(spectra=False), 0, backend=backend)
    assert set(full) - set(lean) == set(SPECTRA)
    for key, value in lean.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)


def test_chunks_and_blocks() -> None:
    # A chunk is a pure function of (spec, index); the last one is shorter; chunks past
    # the end are refused.
    spec = Spec(widths=(4, 4), samples=250, chunk_size=100, seed=3)
    assert chunk_statistics(spec, 2)["rank"].shape == (50,)
    np.testing.assert_array_equal(
        chunk_statistics(spec, 1)["rank"],
        run(spec, progress=False, records=True).data["rank"][100:200],
    )
    with pytest.raises(
        ValueError, match=r"index must be in \[0, 3\), the chunks of this spec, got 3"
    ):
        chunk_statistics(spec, 3)


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        # -1 drew the samples of SeedSequence(seed, spawn_key=(-1,)), a chunk of no run
        (-1, ValueError, r"index must be in \[0, 3\), the chunks of this spec, got -1"),
        (1.0, TypeError, r"index must be an int, got float 1.0"),
        (True, TypeError, r"index must be an int, got bool"),
        ("1", TypeError, r"index must be an int, got str '1'"),
    ],
)
def test_chunk_index_is_checked(index: object, error: type, match: str) -> None:
    spec = Spec(widths=(4, 4), samples=250, chunk_size=100, seed=3)
    with pytest.raises(error, match=match):
        chunk_statistics(spec, index)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        chunk_blocks(spec, index)  # type: ignore[arg-type]  # at the call, not at next()
    with pytest.raises(TypeError, match="spec must be a jacgeom.montecarlo.Spec, got dict"):
        chunk_statistics(spec.to_dict(), 0)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        chunk_statistics(spec, np.int64(1))["rank"],  # type: ignore[arg-type]
        chunk_statistics(spec, 1)["rank"],
    )


def test_kernel_layers_with_fewer_centres_lose_exact_rank() -> None:
    # A grad k(h) has rank <= p, the number of centres: with p = 2 < width 5 the exact
    # rank of every sample is 2 (generic Gaussian centres), and its smallest singular
    # values are exact zeros, not a float64 artefact.
    spec = Spec(
        widths=(5, 5, 5),
        layer="kernel",
        kernel="rbf",
        centers=2,
        samples=30,
        chunk_size=30,
        seed=4,
        layer_ranks=True,
    )
    d = chunk_statistics(spec, 0)
    np.testing.assert_array_equal(d["exact_rank"], 2)
    np.testing.assert_array_equal(d["layer_exact_ranks"], 2)
    assert np.all(np.isinf(d["log_cond"]))
    np.testing.assert_array_equal(d["layer_numerical_ranks"], 2)  # each layer's own numerical rank


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
@pytest.mark.parametrize(
    "kw",
    [
        {"widths": (4, 4), "activation": "gelu", "sigma_w": 100.0},
        {"widths": (4, 4), "activation": "tanh", "sigma_w": 1000.0},
        {"widths": (4, 4), "activation": "silu", "sigma_w": 1000.0},
        {"widths": (4, 4, 4), "activation": "tanh", "sigma_w": 1000.0, "residual": True},
    ],
)
def test_units_whose_derivative_underflows_count_as_active(
    backend: str, kw: dict[str, Any]
) -> None:
    # gelu, tanh and silu have phi' != 0 everywhere; at these weights most units sit where
    # phi' underflows to 0.0 in float64 (|z| beyond ~38 for gelu, ~373 for tanh). They were
    # counted inactive (p_any_zeroed near 1) while the exact rank kept them (exact rank above
    # the fewest active units).
    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    spec = Spec(init="gaussian", samples=300, chunk_size=300, seed=0, **kw)
    d = chunk_statistics(spec, 0, backend=backend)
    widths = np.array(spec.resolved_widths()[1:])
    np.testing.assert_array_equal(d["active_counts"], np.tile(widths, (300, 1)))
    assert np.all(d["exact_rank"] <= d["active_counts"].min(axis=1))
    if backend == "numpy":
        s = run(spec, progress=False, workers=1).summary()
        assert s["p_any_zeroed"]["count"] == 0 and s["active_fraction"]["mean"] == 1.0


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_relu_after_a_saturated_gelu_layer_reads_its_live_units(backend: str) -> None:
    # Units of the gelu layer far on its left tail have gelu(z) and phi'(z) both 0.0 in
    # float64 but stay in the exact rank. The relu layer's conditional sampler drew only
    # the columns of units with phi' != 0 (the others left zero without layer ranks), so
    # the exact rank lost their directions; and inputs whose squared norm underflowed made
    # the numba kernel divide by zero. The exact rank of a full-rank gelu layer followed by
    # a relu layer with k live units of Gaussian rows is min(4, k).
    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    spec = Spec(
        widths=(4, 4, 4),
        activation=("gelu", "relu"),
        init="gaussian",
        sigma_w=100.0,
        samples=400,
        chunk_size=400,
        seed=0,
        layer_ranks=False,
    )
    d = chunk_statistics(spec, 0, backend=backend)
    np.testing.assert_array_equal(d["active_counts"][:, 0], 4)
    np.testing.assert_array_equal(d["exact_rank"], np.minimum(4, d["active_counts"][:, 1]))


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_layer_numerical_rank_uses_the_whole_layer_jacobians_tolerance(backend: str) -> None:
    # A (64, 4) relu layer Jacobian with 4 live rows whose smallest singular value is c eps
    # sigma_max: numpy's matrix_rank of the formed (64, 4) matrix cuts at 64 eps, the rule of
    # the live rows alone (max(4, 4) eps) at 4 eps, so c between them tells the two apart.
    from jacgeom.montecarlo.statistics import _masked_layer_rank

    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    rng = np.random.default_rng(5)
    eps = np.finfo(np.float64).eps
    factors = [2.0, 10.0, 30.0, 45.0, 90.0, 200.0]
    n, m, k = len(factors), 64, 4
    W = rng.standard_normal((n, m, k))
    d = np.zeros((n, m))
    for i, c in enumerate(factors):
        rows = rng.choice(m, size=k, replace=False)
        Q1 = np.linalg.qr(rng.standard_normal((k, k)))[0]
        Q2 = np.linalg.qr(rng.standard_normal((k, k)))[0]
        W[i, rows] = Q1 @ np.diag([1.0, 0.7, 0.4, c * eps]) @ Q2.T
        d[i, rows] = 1.0
    J = d[:, :, None] * W
    want = np.linalg.matrix_rank(J)
    np.testing.assert_array_equal(want, [3, 3, 3, 3, 4, 4])  # the cases are where meant
    np.testing.assert_array_equal(_masked_layer_rank(W, W, d, backend), want)
