"""Layer normalisation with affine parameters: phi(gamma * N(z) + beta), on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jacgeom
from jacgeom.reference import network as ref

WIDTHS = [5, 7, 6, 4]


def _net(act: str, dtype: Any = np.float64, residual: bool = False, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    widths = [6, 6, 6, 6] if residual else WIDTHS
    Ws = [rng.standard_normal((widths[i + 1], widths[i])) for i in range(3)]
    bs = [rng.standard_normal(w) * 0.3 for w in widths[1:]]
    gammas = [rng.standard_normal(w) * 1.5 for w in widths[1:]]
    betas = [rng.standard_normal(w) for w in widths[1:]]
    net = jacgeom.Network(
        [W.astype(dtype) for W in Ws],
        [b.astype(dtype) for b in bs],
        activation=act,
        residual=residual,
        norm="layer",
        norm_eps=1e-3,
        norm_weights=[g.astype(dtype) for g in gammas],
        norm_biases=[b.astype(dtype) for b in betas],
    )
    return net, (Ws, bs, gammas, betas)


def _forward_one(params: Any, act: Any, x: np.ndarray, residual: bool) -> np.ndarray:
    """The network written out in float64 numpy: z, LN with the biased variance, affine, phi."""
    h = x.astype(np.float64)
    for W, b, g, beta in zip(*params, strict=True):
        z = W @ h + b
        u = (z - z.mean()) / np.sqrt(z.var() + 1e-3)
        a = act.phi(g * u + beta)
        h = h + a if residual else a
    return h


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act", ["tanh", "relu", "gelu", "leaky_relu"])
def test_jacobian_is_the_derivative_of_the_written_out_network(act: str, residual: bool) -> None:
    net, params = _net(act, residual=residual)
    X = np.random.default_rng(1).standard_normal((4, net.widths[0]))
    step = 1e-6
    for backend in jacgeom.backends():
        J = net.jacobian(X, backend=backend)
        for i, x in enumerate(X):
            np.testing.assert_allclose(
                net.forward(x), _forward_one(params, net.activations[0], x, residual), atol=1e-12
            )
            cols = [
                (
                    _forward_one(params, net.activations[0], x + step * e, residual)
                    - _forward_one(params, net.activations[0], x - step * e, residual)
                )
                / (2 * step)
                for e in np.eye(net.widths[0])
            ]
            # central differences: O(step^2) error, kinks of relu avoided by the seeds
            np.testing.assert_allclose(J[i], np.stack(cols, axis=1), atol=2e-7, err_msg=backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_every_backend_matches_the_reference(act: str, dtype: Any) -> None:
    net, _ = _net(act, dtype)
    X = np.random.default_rng(2).standard_normal((5, WIDTHS[0])).astype(dtype)
    Jr = ref.jacobian(net, X)
    logs_ref = ref.log_singular_values(net, X)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for backend in jacgeom.backends():
        np.testing.assert_allclose(net.jacobian(X, backend=backend), Jr, rtol=tol, atol=tol)
        logs = net.log_singular_values(X, backend=backend)
        np.testing.assert_array_equal(np.isfinite(logs), np.isfinite(logs_ref))
        # the spectrum's contract: small multiples of L n eps relative in sigma
        bound = 16 * net.depth * max(WIDTHS) * np.finfo(dtype).eps
        finite = np.isfinite(logs_ref)
        np.testing.assert_allclose(logs[finite], logs_ref[finite], rtol=0, atol=bound)
        np.testing.assert_array_equal(net.exact_rank(X, backend=backend), ref.exact_rank(net, X))


def test_zero_gammas_remove_rows_exactly() -> None:
    # The rows of J_N sum to zero (J_N 1 = 0, J_N symmetric): a layer normalisation of m
    # units has rank m - 1, and k zero gammas leave min(m - 1, m - k).
    net, (Ws, bs, gammas, betas) = _net("tanh")
    X = np.random.default_rng(3).standard_normal((6, WIDTHS[0]))
    for zeros, expected in (([], 3), ([1], 3), ([0, 2], 2), ([0, 1, 3], 1), ([0, 1, 2, 3], 0)):
        g = [gammas[0], gammas[1], gammas[2].copy()]
        g[2][zeros] = 0.0
        affine = jacgeom.Network(
            Ws,
            bs,
            activation="tanh",
            norm="layer",
            norm_eps=1e-3,
            norm_weights=g,
            norm_biases=betas,
        )
        for backend in jacgeom.backends():
            assert affine.exact_rank(X, backend=backend).tolist() == [expected] * 6, (
                zeros,
                backend,
            )
            logs = affine.log_singular_values(X, backend=backend)
            assert np.all(np.isfinite(logs).sum(axis=1) == expected)
        # the formed product agrees: its singular values past the exact rank are rounding
        s = np.linalg.svd(affine.jacobian(X), compute_uv=False)
        assert np.all(s[:, expected:] <= 1e-12 * s[:, :1])
        if expected:
            assert np.all(s[:, expected - 1] > 1e-8 * s[:, 0])


def test_unit_gamma_and_zero_beta_are_the_plain_normalisation() -> None:
    net, (Ws, bs, _, _) = _net("gelu")
    plain = jacgeom.Network(Ws, bs, activation="gelu", norm="layer", norm_eps=1e-3)
    ones = jacgeom.Network(
        Ws,
        bs,
        activation="gelu",
        norm="layer",
        norm_eps=1e-3,
        norm_weights=[np.ones(w) for w in WIDTHS[1:]],
    )
    X = np.random.default_rng(4).standard_normal((3, WIDTHS[0]))
    for backend in jacgeom.backends():
        np.testing.assert_array_equal(
            ones.jacobian(X, backend=backend), plain.jacobian(X, backend=backend)
        )
        np.testing.assert_array_equal(
            ones.log_singular_values(X, backend=backend),
            plain.log_singular_values(X, backend=backend),
        )


def test_per_layer_quantities_see_the_affine_parameters() -> None:
    net, _ = _net("tanh")
    X = np.random.default_rng(5).standard_normal((4, WIDTHS[0]))
    # layer_exact_ranks goes through the prefix networks, layer_report through one-layer ones
    prefix = [ref.exact_rank(net._prefix(l + 1), X) for l in range(net.depth)]
    np.testing.assert_array_equal(net.layer_exact_ranks(X), np.stack(prefix, axis=1))
    report = net.layer_report(X)
    Js = net.layer_jacobians(X)
    for g, J in zip(report.layers, Js, strict=True):
        ranks = [np.linalg.matrix_rank(j, tol=1e-10 * np.linalg.norm(j, 2)) for j in J]
        assert g.exact_rank.min == min(ranks) and g.exact_rank.max == max(ranks)
    # layer 0 written out: diag(tanh'(gamma u + beta) gamma) (I - 1 1^T/m - u u^T/m) / sigma W
    z = net.preactivations(X)[0]
    m = WIDTHS[1]
    sigma = np.sqrt(z.var(axis=1) + 1e-3)
    u = (z - z.mean(axis=1, keepdims=True)) / sigma[:, None]
    d = (1 - np.tanh(net.norm_weights[0] * u + net.norm_biases[0]) ** 2) * net.norm_weights[0]
    for i in range(len(X)):
        J_N = (np.eye(m) - np.ones((m, m)) / m - np.outer(u[i], u[i]) / m) / sigma[i]
        np.testing.assert_allclose(Js[0][i], (d[i][:, None] * J_N) @ net.weights[0], atol=1e-12)


def test_zero_gammas_are_dead_units_in_counts_and_report() -> None:
    Ws = [np.random.default_rng(6).standard_normal((4, 3))]
    net = jacgeom.Network(Ws, activation="tanh", norm="layer", norm_weights=[[0.0, 0.0, 1.0, -2.0]])
    X = np.random.default_rng(7).standard_normal((5, 3))
    for backend in jacgeom.backends():
        assert net.active_counts(X, backend=backend).tolist() == [[2]] * 5
    layer = net.layer_report(X).layers[0]
    assert layer.dead_fraction == 0.5 and layer.inactive_fraction == 0.5
    assert layer.exact_rank.max == 2 and "(affine)" in repr(net)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(norm_weights=[np.ones(7), np.ones(6), np.ones(4)]), "norm='layer'"),
        (dict(norm="layer", norm_weights=[np.ones(7), np.ones(6)]), "list of 3 vectors"),
        (dict(norm="layer", norm_biases=[np.ones(7), np.ones(5), np.ones(4)]), r"norm_biases\[1\]"),
        (dict(norm="layer", norm_weights=np.ones((3, 7))), "list of 3"),
        (dict(norm="layer", norm_weights=[np.ones(7), np.ones(6), [1, 2, np.nan, 4]]), "NaN"),
    ],
)
def test_bad_affine_parameters(kwargs: dict[str, Any], message: str) -> None:
    Ws = [np.ones((WIDTHS[i + 1], WIDTHS[i])) for i in range(3)]
    with pytest.raises(ValueError, match=message):
        jacgeom.Network(Ws, **kwargs)
