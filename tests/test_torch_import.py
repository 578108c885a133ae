"""Network.from_torch against torch.func.jacrev of the original module (issue 22)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

import jacgeom
from jacgeom.interop import UnsupportedModuleError, spec_from_torch

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _reference(module: Any, X: Any) -> np.ndarray:
    J = torch.func.vmap(torch.func.jacrev(module))(X)
    return J.detach().numpy()


def _check(module: Any, n_in: int, dtype: Any, B: int = 7, seed: int = 0) -> jacgeom.Network:
    module = module.to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, n_in, generator=g, dtype=dtype) * 1.5
    net = jacgeom.Network.from_torch(module)
    assert net.dtype == np.dtype(str(dtype).removeprefix("torch."))
    with torch.no_grad():
        np.testing.assert_allclose(net.forward(X), module(X).numpy(), **TOL[dtype])
    got = net.jacobian(X)
    assert got.shape == (B, net.widths[-1], n_in)
    np.testing.assert_allclose(got, _reference(module, X), **TOL[dtype])
    return net


ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": lambda: nn.SiLU(),
    "softplus": lambda: nn.Softplus(beta=2.0, threshold=20.0),
    "elu": lambda: nn.ELU(alpha=0.7),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_matches_jacrev(name: str, dtype: Any) -> None:
    torch.manual_seed(1)
    act = ACTIVATIONS[name]
    mlp = nn.Sequential(nn.Linear(5, 9), act(), nn.Linear(9, 6), act(), nn.Linear(6, 3))
    net = _check(mlp, 5, dtype)
    assert [a.name for a in net.activations] == [name, name, "identity"]
    param = {"leaky_relu": 0.2, "softplus": 2.0, "elu": 0.7}.get(name, 0.0)
    assert net.activations[0].parameter == pytest.approx(param)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nested_sequential_identity_dropout_and_requires_grad(dtype: Any) -> None:
    torch.manual_seed(2)
    mlp = nn.Sequential(
        nn.Sequential(nn.Linear(4, 6), nn.Tanh()),
        nn.Identity(),
        nn.Dropout(0.5),
        nn.Linear(6, 6, bias=False),
        nn.ReLU(),
        nn.Sigmoid(),  # two activations in a row: the layer sigmoid(I h)
    )
    assert all(p.requires_grad for p in mlp.parameters())
    net = _check(mlp, 4, dtype)
    assert [a.name for a in net.activations] == ["tanh", "relu", "sigmoid"]
    np.testing.assert_array_equal(net.weights[2], np.eye(6))
    # Weights copied once: changing the module afterwards leaves the network alone.
    before = net.weights[0].copy()
    with torch.no_grad():
        mlp[0][0].weight.add_(1.0)
    np.testing.assert_array_equal(net.weights[0], before)


def test_leaky_relu_slope_zero_is_relu_and_negative_slope_refused() -> None:
    net = jacgeom.Network.from_torch(nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU(0.0)))
    assert net.activations[0].name == "relu"
    with pytest.raises(UnsupportedModuleError, match=r"LeakyReLU, negative_slope=-0.5"):
        jacgeom.Network.from_torch(nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU(-0.5)))


def test_softplus_threshold_is_noted() -> None:
    # torch's default threshold (phi' within 2e-9): a note, no warning (filterwarnings=error).
    spec = spec_from_torch(nn.Sequential(nn.Linear(3, 3), nn.Softplus(beta=1.0)))
    assert len(spec.notes) == 1 and "threshold=20" in spec.notes[0]
    # A small threshold: the note and a UserWarning naming the module and the gap
    # (review 2, item 5: from_torch dropped the note silently).
    small = nn.Sequential(nn.Linear(3, 3), nn.Softplus(beta=1.0, threshold=5.0))
    with pytest.warns(
        UserWarning,
        match=r"approximate conversion of module 1: Softplus\(beta=1, "
        r"threshold=5\).*phi' is below by less than 6\.7e-03",
    ) as caught:
        spec = spec_from_torch(small)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert len(spec.notes) == 1 and "threshold=5" in spec.notes[0]
    with pytest.warns(UserWarning, match=r"approximate conversion of module 1") as caught:
        jacgeom.Network.from_torch(small)
    assert caught[0].filename == __file__


def test_geometry_monitor_warns_of_an_approximate_softplus_once() -> None:
    from jacgeom.torch import GeometryMonitor

    model = nn.Sequential(nn.Linear(3, 3), nn.Softplus(threshold=1.0), nn.Linear(3, 2))
    X = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.warns(UserWarning, match="approximate conversion") as caught:
        monitor = GeometryMonitor(model, X, every=1)
        for _ in range(3):
            monitor.step()
    assert len([w for w in caught if "approximate conversion" in str(w.message)]) == 1
    assert len(monitor.reports) == 3
    assert "Softplus(beta=1, threshold=1)" in monitor.reports[-1][1].notes[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_without_affine(dtype: Any) -> None:
    torch.manual_seed(3)
    mlp = nn.Sequential(
        nn.Linear(4, 6),
        nn.LayerNorm(6, elementwise_affine=False, eps=1e-3),
        nn.Tanh(),
        nn.Linear(6, 5),
        nn.LayerNorm(5, eps=1e-3),  # gamma = 1, beta = 0 as initialised
        nn.GELU(),
    )
    net = _check(mlp, 4, dtype)
    assert net.norm == "layer" and net.norm_eps == pytest.approx(1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_with_trained_affine_parameters(dtype: Any) -> None:
    # gamma and beta as training leaves them: random, some gammas negative, two exactly 0
    torch.manual_seed(4)
    ln1, ln2 = nn.LayerNorm(6, eps=1e-4), nn.LayerNorm(5, eps=1e-4)
    with torch.no_grad():
        for ln in (ln1, ln2):
            ln.weight.copy_(torch.randn(ln.weight.shape) * 1.5)
            ln.bias.copy_(torch.randn(ln.bias.shape))
        ln2.weight[1] = ln2.weight[3] = 0.0
    mlp = nn.Sequential(nn.Linear(4, 6), ln1, nn.Tanh(), nn.Linear(6, 5), ln2, nn.GELU())
    net = _check(mlp, 4, dtype)
    assert net.norm_weights is not None and net.norm_biases is not None
    np.testing.assert_array_equal(net.norm_weights[1], ln2.weight.detach().to(dtype).numpy())
    # the rows of J_N sum to zero, so one zero gamma leaves rank 5 - 1; two delete a row
    # beyond that: 3 live rows
    X = np.random.default_rng(0).standard_normal((6, 4))
    assert net.exact_rank(X).tolist() == [3] * 6
    # a residual block with its LayerNorm between the Linear and the activation
    block = ResidualNormBlock(5)
    with torch.no_grad():
        block.norm.weight.copy_(torch.randn(5))
        block.norm.bias.copy_(torch.randn(5))
    net = _check(nn.Sequential(block, ResidualNormBlock(5)), 5, dtype)
    assert net.residual and net.norm_weights is not None


class ResidualNormBlock(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.norm = nn.LayerNorm(n)
        self.act = nn.Tanh()

    def forward(self, x: Any) -> Any:
        return x + self.act(self.norm(self.fc(x)))


def test_layer_norm_refusals() -> None:
    with pytest.raises(UnsupportedModuleError, match=r"must follow a Linear"):
        spec_from_torch(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.LayerNorm(6)))
    with pytest.raises(UnsupportedModuleError, match=r"layers \[0, 1\].*share one eps"):
        spec_from_torch(
            nn.Sequential(
                nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2), nn.LayerNorm(2, 1e-3)
            )
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_on_hidden_layers_only(dtype: Any) -> None:
    # The usual normalised MLP: LayerNorm in the hidden layers, a plain output head, and a
    # residual block among them; trained gammas, one exactly 0.
    torch.manual_seed(7)
    ln1, ln2 = nn.LayerNorm(6), nn.LayerNorm(6, elementwise_affine=False)
    with torch.no_grad():
        ln1.weight.copy_(torch.randn(6) * 1.5)
        ln1.bias.copy_(torch.randn(6))
        ln1.weight[2] = 0.0
    model = nn.Sequential(
        nn.Linear(4, 6), ln1, nn.GELU(), ResidualNormBlock(6), nn.Linear(6, 6), ln2, nn.Tanh(),
        nn.Linear(6, 3),
    )  # fmt: skip
    with torch.no_grad():
        model[3].norm.weight.copy_(torch.randn(6))
    net = _check(model, 4, dtype)
    assert net.norm == ("layer", "layer", "layer", None)
    assert net.residual == (False, True, False, False)
    assert net.norm_weights is not None and net.norm_weights[3] is None
    np.testing.assert_array_equal(net.norm_weights[0], ln1.weight.detach().to(dtype).numpy())
    np.testing.assert_array_equal(net.norm_weights[2], np.ones(6, dtype=net.dtype))


class Block(nn.Module):
    def __init__(self, n: int, act: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.act = act

    def forward(self, x: Any) -> Any:
        return x + self.act(self.fc(x))


class FunctionalBlock(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n, n)

    def forward(self, x: Any) -> Any:
        return F.gelu(self.fc(x), approximate="tanh") + x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_residual_blocks_recognised(dtype: Any) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(Block(5, nn.Tanh()), FunctionalBlock(5), Block(5, nn.ReLU()))
    net = _check(model, 5, dtype)
    assert net.residual
    assert [a.name for a in net.activations] == ["tanh", "gelu_tanh", "relu"]


class Chain(nn.Module):
    """A module whose forward is a sequence, written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 7)
        self.b = nn.Linear(7, 2)

    def forward(self, x: Any) -> Any:
        return torch.sigmoid(self.b(torch.relu(self.a(x))))


def test_module_with_sequential_forward() -> None:
    net = _check(Chain(), 3, torch.float64)
    assert [a.name for a in net.activations] == ["relu", "sigmoid"]


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(x) * 2


def test_unsupported_modules_named() -> None:
    with pytest.raises(UnsupportedModuleError, match=r"module 1 \(Conv1d\).*supported: torch"):
        spec_from_torch(nn.Sequential(nn.Linear(3, 3), nn.Conv1d(1, 1, 1)))
    with pytest.raises(UnsupportedModuleError, match=r"Hardtanh"):
        spec_from_torch(nn.Sequential(nn.Linear(3, 3), nn.Hardtanh()))
    with pytest.raises(UnsupportedModuleError, match=r"call_function <built-in function mul>"):
        spec_from_torch(Unsupported())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_residual_blocks_between_plain_projections(dtype: Any) -> None:
    # A residual MLP: a plain input projection, residual blocks, a plain output layer.
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), Block(6, nn.Tanh()), FunctionalBlock(6), nn.Linear(6, 3)
    )
    net = _check(model, 4, dtype)
    assert net.residual == (False, True, True, False)
    assert net.residual_layers == (False, True, True, False)
    assert [a.name for a in net.activations] == ["relu", "tanh", "gelu_tanh", "identity"]


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_round_trip() -> None:
    torch.manual_seed(5)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ELU(0.5), nn.Linear(6, 3), nn.Softplus(3.0))
    ref = jacgeom.Network.from_torch(mlp)
    scripted = torch.jit.script(mlp)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    net = jacgeom.Network.from_torch(torch.jit.load(buf))
    X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(net.jacobian(X), ref.jacobian(X))
    assert [a.name for a in net.activations] == ["elu", "softplus"]
    assert net.activations[1].parameter == 3.0


def test_dtype_override() -> None:
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    assert jacgeom.Network.from_torch(mlp, dtype=np.float64).dtype == np.float64
