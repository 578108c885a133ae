"""Networks whose residual connections and layer normalisations are per layer (issue 22):
a residual MLP with plain input and output projections, a normalised MLP with a plain
output layer, checked against central differences of their forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jacgeom
from jacgeom.reference import network as ref

FLAGS = [False, True, True, False]


def _mixed(act: str = "tanh", dtype: type = np.float64, **kw: object) -> jacgeom.Network:
    return jacgeom.Network.random(
        [4, 6, 6, 6, 3], activation=act, residual=FLAGS, seed=3, sigma_b=0.3, dtype=dtype, **kw
    )


def _central_differences(net: jacgeom.Network, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    cols = [(net.forward(x + h * e) - net.forward(x - h * e)) / (2 * h) for e in np.eye(len(x))]
    return np.stack(cols, axis=1)


def _written_out(net: jacgeom.Network, x: np.ndarray) -> np.ndarray:
    # The forward pass written out layer by layer, independent of Network.forward.
    h = x
    for l, (W, b, act) in enumerate(zip(net.weights, net.biases, net.activations, strict=True)):
        a = act.phi(W @ h + b)
        h = h + a if FLAGS[l] else a
    return h


def test_flags_and_attributes() -> None:
    net = _mixed()
    assert net.residual_layers == tuple(FLAGS)
    assert net.residual == tuple(FLAGS)
    assert "residual=(False, True, True, False)" in repr(net)
    uniform = jacgeom.Network.random([3, 3, 3], residual=True, seed=0)
    assert uniform.residual is True and uniform.residual_layers == (True, True)
    assert jacgeom.Network.random([3, 3], seed=0).residual is False
    # a flag per layer that agrees everywhere is the plain bool
    assert jacgeom.Network.random([3, 3, 3], residual=[True, True], seed=0).residual is True


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_forward_and_jacobian_against_the_written_out_network(act: str, backend: str) -> None:
    net = _mixed(act)
    X = np.random.default_rng(5).standard_normal((6, 4))
    for x in X:
        np.testing.assert_allclose(net.forward(x), _written_out(net, x), rtol=1e-13, atol=1e-14)
    J = net.jacobian(X, backend=backend)
    for x, Jx in zip(X, J, strict=True):
        np.testing.assert_allclose(Jx, _central_differences(net, x), rtol=1e-5, atol=1e-7)
    s = np.linalg.svd(J, compute_uv=False)
    logs = net.log_singular_values(X, backend=backend)
    # exp: relu's exactly zero values are -inf in logs and rounding noise in s
    np.testing.assert_allclose(np.exp(logs), s, rtol=1e-9, atol=1e-13 * float(s.max()))


def test_a_plain_layer_between_residual_layers_deletes_rows_exactly(backend: str) -> None:
    # A relu layer of all-negative pre-activations between two residual layers: its
    # Jacobian is zero, so the end-to-end rank is 0 exactly however the residual layers
    # around it are; the residual layers alone keep full rank.
    n = 3
    W = np.eye(n)
    b = [np.zeros(n), -10.0 * np.ones(n), np.zeros(n)]
    net = jacgeom.Network([W, W, W], b, activation="relu", residual=[True, False, True])
    x = np.full(n, 0.5)
    assert net.exact_rank(x, backend=backend) == 0
    assert net.layer_ranks(x[None], backend=backend).tolist() == [[n, 0, 0]]
    np.testing.assert_array_equal(net.jacobian(x, backend=backend), np.zeros((n, n)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_mixed(dtype: type, backend: str) -> None:
    net = jacgeom.Network.random(
        [5, 5, 5, 2],
        activation="tanh",
        residual=[True, False, False],
        norm="layer",
        seed=2,
        dtype=dtype,
    )
    X = np.random.default_rng(1).standard_normal((4, 5)).astype(dtype)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(net.jacobian(X, backend=backend), ref.jacobian(net, X), atol=tol)
    if dtype == np.float64:
        for x, Jx in zip(X, net.jacobian(X, backend=backend), strict=True):
            np.testing.assert_allclose(Jx, _central_differences(net, x), rtol=1e-5, atol=1e-7)


def test_layer_report_per_layer_verdicts() -> None:
    net = _mixed("relu")
    X = np.random.default_rng(0).standard_normal((32, 4))
    rows = net.layer_report(X).layers
    assert [r.verdict == "undecided" for r in rows] == FLAGS


@pytest.mark.parametrize(
    ("residual", "error", "match"),
    [
        ([True, False], ValueError, r"residual has 2 entries for 4 layers"),
        ([True, False, True, 1], TypeError, r"residual\[3\] must be a bool"),
        ("yes", TypeError, r"residual must be a bool or a sequence of 4 of them"),
        (np.array([True] * 4), TypeError, r"residual must be a bool or a sequence"),
        (
            [True, True, True, False],
            ValueError,
            r"weights\[0\] has shape \(6, 4\) \(residual\[0\]\)",
        ),
        (True, ValueError, r"weights\[0\] has shape \(6, 4\)$"),
    ],
)
def test_bad_flags(residual: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        jacgeom.Network.random([4, 6, 6, 6, 3], residual=residual, seed=0)  # type: ignore[arg-type]


def test_from_jax_and_safetensors_flags(tmp_path: Path) -> None:
    net = _mixed()
    pairs = [(W, b) for W, b in zip(net.weights, net.biases, strict=True)]
    acts = [a.name for a in net.activations]
    back = jacgeom.Network.from_jax(pairs, activation=acts, residual=FLAGS)
    assert back.residual_layers == tuple(FLAGS)
    X = np.random.default_rng(2).standard_normal((3, 4))
    np.testing.assert_array_equal(back.jacobian(X), net.jacobian(X))
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    from jacgeom.analyze import load_safetensors_model

    save_file(
        {f"{l}.weight": W for l, (W, _) in enumerate(pairs)}
        | {f"{l}.bias": b for l, (_, b) in enumerate(pairs)},
        str(tmp_path / "m.safetensors"),
    )
    layers = [
        {"weight": f"{l}.weight", "bias": f"{l}.bias", "activation": acts[l], "residual": FLAGS[l]}
        for l in range(4)
    ]
    spec = load_safetensors_model(tmp_path / "m.safetensors", {"layers": layers})
    assert spec.residual == tuple(FLAGS)
    np.testing.assert_array_equal(
        jacgeom.Network(**spec.network_kwargs()).jacobian(X), net.jacobian(X)
    )
    # the top-level flag is every layer's default; a layer's own flag wins
    layers = [{k: v for k, v in layer.items() if k != "residual"} for layer in layers]
    layers[0]["residual"] = layers[3]["residual"] = False
    spec = load_safetensors_model(tmp_path / "m.safetensors", {"layers": layers, "residual": True})
    assert spec.residual == tuple(FLAGS)
    layers[1]["residual"] = "yes"
    with pytest.raises(ValueError, match=r'ARCH layer 1: "residual" must be true or false'):
        load_safetensors_model(
            tmp_path / "m.safetensors", json.loads(json.dumps({"layers": layers}))
        )


def test_norm_flags_attributes_and_affine_parameters(backend: str) -> None:
    rng = np.random.default_rng(4)
    Ws = [rng.standard_normal((6, 4)), rng.standard_normal((6, 6)), rng.standard_normal((3, 6))]
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    net = jacgeom.Network(
        Ws, activation="tanh", norm=["layer", "layer", None],
        norm_weights=[gamma, None, None], norm_biases=[beta, None, None],
    )  # fmt: skip
    assert net.norm == ("layer", "layer", None) and net.norm_layers == (True, True, False)
    assert net.norm_weights is not None and net.norm_biases is not None
    np.testing.assert_array_equal(net.norm_weights[1], np.ones(6))  # given for layer 0 only
    assert net.norm_weights[2] is None and net.norm_biases[2] is None
    x = rng.standard_normal(4)

    def written_out(x: np.ndarray) -> np.ndarray:
        def ln(z: np.ndarray) -> np.ndarray:
            return (z - z.mean()) / np.sqrt(z.var() + 1e-5)

        h = np.tanh(gamma * ln(Ws[0] @ x) + beta)
        h = np.tanh(ln(Ws[1] @ h))
        return np.tanh(Ws[2] @ h)

    np.testing.assert_allclose(net.forward(x), written_out(x), rtol=1e-12)
    fd = np.stack([(written_out(x + 1e-6 * e) - written_out(x - 1e-6 * e)) / 2e-6
                   for e in np.eye(4)], axis=1)  # fmt: skip
    np.testing.assert_allclose(net.jacobian(x, backend=backend), fd, rtol=1e-5, atol=1e-8)
    # two normalised layers: each removes the ones direction, the last is plain: rank 3
    assert net.exact_rank(x, backend=backend) == 3
    assert jacgeom.Network(Ws, norm=["layer"] * 3).norm == "layer"
    assert jacgeom.Network(Ws, norm=[None] * 3, norm_weights=[None] * 3).norm_weights is None


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"norm": ["layer"]}, ValueError, r"norm has 1 entries for 3 layers"),
        ({"norm": ["layer", "batch", None]}, ValueError, r"norm\[1\] must be None or 'layer'"),
        ({"norm": "batch"}, ValueError, r"unknown norm 'batch'"),
        ({"norm": 3}, TypeError, r"norm must be None or 'layer' or a sequence of 3"),
        (
            {"norm": ["layer", None, None], "norm_weights": [None, np.ones(6), None]},
            ValueError,
            r"norm_weights\[1\] is given but layer 1 has no normalisation",
        ),
    ],
)
def test_bad_norm_flags(kw: dict, error: type[Exception], match: str) -> None:
    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((6, 4)), rng.standard_normal((6, 6)), rng.standard_normal((3, 6))]
    with pytest.raises(error, match=match):
        jacgeom.Network(Ws, **kw)


def test_kernel_layer_takes_no_norm() -> None:
    rng = np.random.default_rng(0)
    kernel = jacgeom.KernelLayer(rng.standard_normal((5, 3)), rng.standard_normal((4, 5)))
    W = rng.standard_normal((3, 4))
    net = jacgeom.Network([W, kernel], norm=["layer", None])
    assert net.norm_layers == (True, False)
    with pytest.raises(ValueError, match=r"layer 1's pre-activations, which a kernel layer"):
        jacgeom.Network([W, kernel], norm="layer")


def test_from_jax_checks_the_residual_flags() -> None:
    # A list that agrees everywhere was collapsed to one bool before its length was checked.
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((4, 4)), np.zeros(4)) for _ in range(3)]
    for flags in ([True], (True,) * 5, [False, False]):
        with pytest.raises(ValueError, match=rf"residual has {len(flags)} entries for 3 layers"):
            jacgeom.Network.from_jax(pairs, residual=flags)
    with pytest.raises(TypeError, match="residual must be a bool or a sequence of 3 of them"):
        jacgeom.Network.from_jax(pairs, residual="yes")  # type: ignore[arg-type]
    assert jacgeom.Network.from_jax(pairs, residual=[True] * 3).residual is True


def test_random_checks_per_layer_settings_before_drawing() -> None:
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    with pytest.raises(ValueError, match="residual has 1 entries for 2 layers"):
        jacgeom.Network.random([3, 3, 3], residual=[True], seed=rng)
    with pytest.raises(ValueError, match=r"norm\[1\] must be None or 'layer'"):
        jacgeom.Network.random([3, 3, 3], norm=["layer", "batch"], seed=rng)
    assert rng.bit_generator.state == state  # nothing drawn from the caller's generator
