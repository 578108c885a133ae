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


# ---------------------------------------------------------------------------- review 3
# A TorchScript class was recognised by its bare name, forward hooks were ignored, and
# traced modules were read as their classes whatever their graphs held.


class ReLU(nn.Module):
    """A user class that happens to be called ReLU: its forward is tanh."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # annotated for TorchScript
        return torch.tanh(x)


class Sequential(nn.Sequential):
    """A user Sequential whose forward skips its last child."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[0](x)


def _double(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    return output * 2


def _triple_input(module: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
    return (inputs[0] * 3,)


def _jacobians_differ(module: Any, net: jacgeom.Network, n_in: int) -> bool:
    """Whether torch's Jacobian of ``module`` differs from ``net``'s: what the module would
    have been read as, had it not been refused."""
    X = torch.randn(4, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    return not np.allclose(net.jacobian(X), _reference(module, X), rtol=1e-6, atol=1e-9)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_scripted_user_class_named_like_torch_nn_is_refused() -> None:
    torch.manual_seed(8)
    user = torch.jit.script(nn.Sequential(nn.Linear(3, 3), ReLU()).double())
    relu = jacgeom.Network.from_torch(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    assert _jacobians_differ(user, relu, 3)  # read as relu, the old answer was wrong
    with pytest.raises(
        UnsupportedModuleError,
        match=r"TorchScript module 1 \(ReLU, class __torch__\.(\w+\.)*ReLU\).*only scripted "
        r"torch.nn modules",
    ) as caught:
        jacgeom.Network.from_torch(user)
    assert "torch.nn.modules.activation" not in str(caught.value).split(";")[0]
    with pytest.raises(UnsupportedModuleError, match=r"TorchScript module <root> \(Sequential"):
        spec_from_torch(torch.jit.script(Sequential(nn.Linear(3, 3), nn.Linear(3, 2))))
    # The genuine classes, scripted, saved and loaded, are still read, as torch computes them.
    genuine = torch.jit.script(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)))
    buf = io.BytesIO()
    torch.jit.save(genuine, buf)
    buf.seek(0)
    _check(torch.jit.load(buf), 3, torch.float64)


def _weight_norm_old(m: Any) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for the parametrization
        return torch.nn.utils.weight_norm(m)


HOOKED = {
    "pre-hook": (
        lambda m: m[0].register_forward_pre_hook(_triple_input),
        r"module 0 \(Linear\) has a forward pre-hook \(_triple_input\)",
    ),
    "hook": (
        lambda m: m[1].register_forward_hook(_double),
        r"module 1 \(Tanh\) has a forward hook \(_double\)",
    ),
    "hook with kwargs": (
        lambda m: m[1].register_forward_hook(lambda mod, a, kw, out: out * 2, with_kwargs=True),
        r"module 1 \(Tanh\) has a forward hook \(.*<lambda>\)",
    ),
    "hook on the root": (
        lambda m: m.register_forward_hook(_double),
        r"module <root> \(Sequential\) has a forward hook",
    ),
    "hook on a nested module": (
        lambda m: m[2][0].register_forward_pre_hook(_triple_input),
        r"module 2\.0 \(Linear\) has a forward pre-hook",
    ),
    "old-style weight_norm": (
        lambda m: _weight_norm_old(m[0]),
        r"module 0 \(Linear\) has a forward pre-hook \(WeightNorm\).*stale after an optimizer "
        r"step: use torch.nn.utils.parametrizations.weight_norm",
    ),
    "old-style spectral_norm": (
        lambda m: torch.nn.utils.spectral_norm(m[0]),
        r"module 0 \(Linear\) has a forward pre-hook \(SpectralNorm\).*"
        r"parametrizations.spectral_norm",
    ),
    "prune": (
        lambda m: torch.nn.utils.prune.l1_unstructured(m[0], "weight", 0.5),
        r"module 0 \(Linear\) has a forward pre-hook \(L1Unstructured\).*prune.remove",
    ),
}


@pytest.mark.parametrize("case", list(HOOKED))
def test_forward_hooks_are_refused(case: str) -> None:
    import torch.nn.utils.prune  # noqa: F401  (the "prune" case's module)

    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Sequential(nn.Linear(4, 2))).double()
    unhooked = jacgeom.Network.from_torch(model)
    register, message = HOOKED[case]
    register(model)
    # After an optimizer step without a forward since, the old-style weight_norm's stored
    # weight is stale: every case changes the map that the weights give.
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.randn(8, 3, dtype=torch.float64)).pow(2).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match=message) as caught:
        jacgeom.Network.from_torch(model)
    assert isinstance(caught.value, UnsupportedModuleError)  # what from_torch documents
    if case not in ("old-style weight_norm", "old-style spectral_norm", "prune"):
        assert _jacobians_differ(model, unhooked, 3)
    else:  # what the old code read: the stored weight, stale (or unmasked)
        stale = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        with torch.no_grad():
            stale[0].weight.copy_(model[0].weight)
            stale[0].bias.copy_(model[0].bias)
            stale[2].weight.copy_(model[2][0].weight)
            stale[2].bias.copy_(model[2][0].bias)
        assert _jacobians_differ(model, jacgeom.Network.from_torch(stale), 3)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_hooks_compiled_into_a_scripted_module_and_global_hooks_are_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double()
    model[1].register_forward_hook(_double)
    scripted = torch.jit.script(model)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    for m in (scripted, torch.jit.load(buf)):
        with pytest.raises(ValueError, match=r"module 1 \(Tanh\) has a forward hook \(_double"):
            spec_from_torch(m)
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    module_hooks = torch.nn.modules.module
    for register, kind in (
        (module_hooks.register_module_forward_hook, "forward hook"),
        (module_hooks.register_module_forward_pre_hook, "forward pre-hook"),
    ):
        handle = register(lambda *args: None)
        try:
            with pytest.raises(ValueError, match=rf"a global {kind} \(.*<lambda>, from torch"):
                spec_from_torch(plain)
        finally:
            handle.remove()
    assert len(spec_from_torch(plain).weights) == 1  # removed: read again


class WeightNormBlock(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc = torch.nn.utils.parametrizations.weight_norm(nn.Linear(n, n))

    def forward(self, x: Any) -> Any:
        return x + torch.tanh(self.fc(x))


class Scale(nn.Module):
    """A user parametrization: jacgeom cannot know what it computes."""

    def forward(self, W: Any) -> Any:
        return 2 * W


PARAMETRIZATIONS = {
    "weight_norm": lambda m: torch.nn.utils.parametrizations.weight_norm(m),
    "orthogonal": lambda m: torch.nn.utils.parametrizations.orthogonal(m),
    "spectral_norm": lambda m: torch.nn.utils.parametrizations.spectral_norm(m),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(PARAMETRIZATIONS))
def test_parametrized_layers_match_jacrev(name: str, dtype: Any) -> None:
    # weight is computed from the parametrization's tensors at each access, so it is right
    # after an optimizer step without a forward since (where the old-style hooks were not).
    torch.manual_seed(11)
    p = PARAMETRIZATIONS[name]
    model = nn.Sequential(
        p(nn.Linear(4, 6)), nn.Tanh(), WeightNormBlock(6), p(nn.Linear(6, 3)), nn.GELU()
    ).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    model(torch.randn(8, 4, dtype=dtype)).pow(2).sum().backward()
    opt.step()
    net = _check(model, 4, dtype)  # eval mode (_check): spectral_norm's map is fixed there
    assert net.residual == (False, True, False)
    assert [a.name for a in net.activations] == ["tanh", "tanh", "gelu"]


def test_spectral_norm_in_training_mode_and_user_parametrizations_are_refused() -> None:
    model = nn.Sequential(torch.nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4)))
    model.train()
    u = model[0].parametrizations.weight[0]._u.clone()
    with pytest.raises(
        ValueError, match=r"module 0 \(ParametrizedLinear\) has a spectral_norm .* training"
    ):
        jacgeom.Network.from_torch(model)
    # reading weight in training mode would have run a power-iteration step on u
    torch.testing.assert_close(model[0].parametrizations.weight[0]._u, u, rtol=0, atol=0)
    jacgeom.Network.from_torch(model.eval())
    user = nn.Linear(3, 4)
    torch.nn.utils.parametrize.register_parametrization(user, "weight", Scale())
    with pytest.raises(
        UnsupportedModuleError, match=r"module 0 \(ParametrizedLinear\).*parametrization Scale"
    ):
        spec_from_torch(nn.Sequential(user, nn.ReLU()))


def _traced(module: Any, n_in: int, save: bool) -> Any:
    X = torch.randn(2, n_in, dtype=torch.float64)
    traced = torch.jit.trace(module, X, check_trace=False)  # a Dropout in training differs
    if not save:
        return traced
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("save", [False, True], ids=["traced", "saved"])
def test_traced_modules_read_only_where_the_graph_is_the_class_forward(save: bool) -> None:
    torch.manual_seed(12)
    plain = nn.Sequential(
        nn.Linear(3, 5), nn.Dropout(), nn.Identity(), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(),
        nn.Sequential(nn.Linear(4, 2), nn.Sigmoid()),
    ).double().eval()  # fmt: skip
    _check(_traced(plain, 3, save), 3, torch.float64)
    # A traced GELU keeps no "approximate": it was read as the exact gelu.
    gelu = nn.Sequential(nn.Linear(3, 3), nn.GELU(approximate="tanh")).double()
    traced = _traced(gelu, 3, save)
    exact = jacgeom.Network.from_torch(nn.Sequential(gelu[0], nn.GELU()))
    assert _jacobians_differ(traced, exact, 3)
    with pytest.raises(UnsupportedModuleError, match=r"module 1 \(GELU\).*no attribute"):
        jacgeom.Network.from_torch(traced)
    # A hook at trace time is in the graph, not in the module's hooks.
    hooked = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    unhooked = jacgeom.Network.from_torch(hooked)
    handle = hooked[1].register_forward_hook(_double)
    traced = _traced(hooked, 3, save)
    handle.remove()
    assert _jacobians_differ(traced, unhooked, 3)
    with pytest.raises(UnsupportedModuleError, match=r"module <root> \(Sequential\).*aten::mul"):
        jacgeom.Network.from_torch(traced)
    tanh = nn.Tanh()
    handle = tanh.register_forward_hook(lambda m, i, out: torch.tanh(out))
    traced = _traced(tanh, 3, save)
    handle.remove()
    with pytest.raises(UnsupportedModuleError, match=r"module 1 \(Tanh\).*aten::tanh"):
        jacgeom.Network.from_torch(nn.Sequential(nn.Linear(3, 3), traced))
    # A Dropout traced in training mode drops units at every call: no eval-mode map.
    train = nn.Sequential(nn.Linear(3, 3), nn.Dropout(), nn.Tanh()).double().train()
    with pytest.raises(UnsupportedModuleError, match=r"module 1 \(Dropout\).*training mode"):
        jacgeom.Network.from_torch(_traced(train, 3, save))


def test_geometry_monitor_settings_checked_when_made() -> None:
    from jacgeom.torch import GeometryMonitor

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    probe = np.random.default_rng(0).standard_normal((5, 3))
    monitor = GeometryMonitor(model, probe, every=np.int64(2))
    assert type(monitor.every) is int and monitor.every == 2
    assert [monitor.step() is None for _ in range(4)] == [False, True, False, True]
    for every, error in ((True, TypeError), (2.5, TypeError), ("2", TypeError), (0, ValueError)):
        with pytest.raises(error, match=r"every must be an int"):
            GeometryMonitor(model, probe, every=every)  # type: ignore[arg-type]
    for tol in (-1.0, float("nan"), float("inf"), np.float64(-1e-3)):
        with pytest.raises(ValueError, match=r"saturation_tol must be a finite number >= 0"):
            GeometryMonitor(model, probe, saturation_tol=tol)
    for tol in ("0.1", None, True):
        with pytest.raises(TypeError, match=r"saturation_tol must be a real number"):
            GeometryMonitor(model, probe, saturation_tol=tol)  # type: ignore[arg-type]
    assert GeometryMonitor(model, probe, saturation_tol=np.float32(0.5)).saturation_tol == 0.5
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'"):
        GeometryMonitor(model, probe, backend="gpu")  # type: ignore[arg-type]
    # a step number is a count: 2.7 is refused, not recorded as step 2
    monitor = GeometryMonitor(model, probe, every=1)
    for step in (2.7, "3", True):
        with pytest.raises(TypeError, match=r"step must be an int"):
            monitor.step(step)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"step must be an int"):
            monitor.record(step)  # type: ignore[arg-type]
    assert monitor.reports == []
    monitor.record(np.int64(7))
    assert [s for s, _ in monitor.reports] == [7] and type(monitor.reports[0][0]) is int


def test_geometry_monitor_reads_parametrized_weights_and_refuses_hooks() -> None:
    from jacgeom.torch import GeometryMonitor

    torch.manual_seed(13)
    model = nn.Sequential(
        torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 3)), nn.Tanh(), nn.Linear(3, 2)
    ).double()
    probe = torch.randn(6, 3, dtype=torch.float64)
    monitor = GeometryMonitor(model, probe, every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(probe).pow(2).sum().backward()
    opt.step()  # no forward since: weight is the parametrization's, computed when read
    rep = monitor.step(0)
    assert rep is not None
    # layer 0's A = D W is square: its log-volume is log |det| of torch's own Jacobian
    J = _reference(model[:2], probe)
    want = np.median(np.linalg.slogdet(J)[1])
    assert rep.layers[0].log_volume.median == pytest.approx(want, rel=1e-10)
    # the monitor registered nothing on the model, so it reads it again
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert monitor.step(1) is not None
    model[1].register_forward_hook(_double)
    with pytest.raises(ValueError, match=r"module 1 \(Tanh\) has a forward hook \(_double\)"):
        monitor.step(2)
    assert len(monitor.reports) == 2


def test_non_modules_refused_by_type() -> None:
    # Anything but a module failed inside the hook and graph checks or torch.fx.
    for bad in (np.ones((3, 3)), lambda x: torch.relu(x), None):
        with pytest.raises(TypeError, match=r"module must be a torch.nn.Module or torch.jit"):
            spec_from_torch(bad)


def test_geometry_monitor_medians_count_rank_lost_samples() -> None:
    # relu units with bias -0.5 leave fewer than 4 of 8 live at most probe samples: exact
    # rank lost there, so the batch's median log condition number is inf and its median
    # log-volume -inf (the monitor showed the median of the few finite samples, 2.31, and
    # NaN once every sample had lost rank).
    import statistics

    from jacgeom.torch import GeometryMonitor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.Tanh()).double()
    probe = torch.randn(200, 4, dtype=torch.float64)
    monitor = GeometryMonitor(model, probe, every=1)
    for step, bias in enumerate((-0.5, 0.5, -5.0)):
        with torch.no_grad():
            model[0].bias.fill_(bias)
        monitor.record(step)
    W = model[0].weight.detach().numpy()
    lost_truth = []
    for step, bias in enumerate((-0.5, 0.5, -5.0)):
        Z = probe.numpy() @ W.T + bias
        cond = []
        for z in Z:  # natural-log condition number of D W from numpy, inf where rank is lost
            live = W[z > 0]
            s = np.linalg.svd(live, compute_uv=False) if live.shape[0] >= 4 else None
            cond.append(np.inf if s is None or s[-1] == 0 else float(np.log(s[0] / s[-1])))
        lost_truth.append(sum(np.isinf(cond)))
        (row,) = [r for r in monitor.table() if r["step"] == step and r["layer"] == 0]
        assert row["rank_lost_samples"] == lost_truth[-1]
        assert row["log_condition"] == pytest.approx(statistics.median(cond), rel=1e-9)
    assert lost_truth[0] > 100 and 0 < lost_truth[1] < 100 and lost_truth[2] == 200
    steps, cond_series = monitor.series("log_condition")
    _, volume_series = monitor.series("log_volume")
    assert steps.tolist() == [0, 1, 2]
    assert cond_series[0, 0] == np.inf and cond_series[2, 0] == np.inf
    assert volume_series[0, 0] == -np.inf and volume_series[2, 0] == -np.inf
    assert np.isfinite(cond_series[1, 0]) and np.isfinite(volume_series[1, 0])
