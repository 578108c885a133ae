"""Networks and arrays from PyTorch and JAX.

Two halves:

- **Arrays.** :func:`to_numpy` turns a torch tensor (``requires_grad`` or not, on any
  device), a JAX array or anything DLPack / array-protocol capable into a numpy array, a view
  where the producer allows; :func:`to_array_library` sends a numpy result back to the
  caller's library (torch or JAX) through DLPack.
- **Networks.** :func:`spec_from_torch` and :func:`spec_from_jax` read a trained model into a
  :class:`NetworkSpec`: the weights, biases and per-layer activations of a
  :class:`jacgeom.Network`. ``Network.from_torch`` and ``Network.from_jax`` build the network
  from it; this module never imports :mod:`jacgeom.network`, so the two stay free of import
  cycles.

torch and jax are optional: they are imported only by the functions that need them.

Supported torch layers (``torch.nn``): Linear, ReLU, LeakyReLU (negative_slope >= 0),
Tanh, Sigmoid, GELU (approximate "none" -> gelu, "tanh" -> gelu_tanh), SiLU, Softplus
(beta; see :func:`spec_from_torch` for threshold), ELU (alpha), Identity, Dropout (the
eval-mode map, the identity), LayerNorm between a Linear and its activation (see
:func:`spec_from_torch`), nested Sequential, and modules whose ``forward`` is a chain of
those, with residual blocks ``h + phi(W h + b)`` recognised through ``torch.fx``. Layers may
be parametrized (torch.nn.utils.parametrizations: weight_norm, orthogonal, spectral_norm in
eval mode). Modules with forward hooks are refused: jacgeom reads weights, not calls.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _validation
from .activations import Activation
from .activations import activation as _lookup
from .typing import ActivationName

__all__ = [
    "SUPPORTED_TORCH_MODULES",
    "NetworkSpec",
    "UnsupportedModuleError",
    "array_library",
    "spec_from_jax",
    "spec_from_torch",
    "to_array_library",
    "to_numpy",
]

FloatArray = NDArray[np.floating[Any]]

# A converted Softplus warns when phi' may differ from torch's by more than this, i.e. for
# e^-threshold > 1e-8 (threshold < 18.42; torch's default 20 stays silent).
_SOFTPLUS_TOLERANCE = 1e-8

SUPPORTED_TORCH_MODULES = (
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "GELU",
    "SiLU",
    "Softplus",
    "ELU",
    "Identity",
    "Dropout",
    "LayerNorm",
    "Sequential",
)
_ACTIVATION_MODULES = frozenset(
    {"ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU", "SiLU", "Softplus", "ELU"}
)
_SKIPPED_MODULES = frozenset({"Identity", "Dropout"})


class UnsupportedModuleError(TypeError):
    """A module (or an operation in a traced forward) jacgeom's Network cannot represent."""


class _ModuleStateError(UnsupportedModuleError, ValueError):
    """A module refused for its state, not its type: a forward hook or pre-hook, or a
    spectral_norm parametrization in training mode. An UnsupportedModuleError (what
    ``Network.from_torch`` documents) that is also a ValueError (the value is wrong, not the
    type)."""


# ---------------------------------------------------------------------------- arrays


def array_library(x: Any) -> str:
    """The array library ``x`` belongs to: "torch", "jax" or "numpy" (anything else).

    Examples
    --------
    >>> import numpy as np
    >>> array_library(np.ones(3))
    'numpy'
    """
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith(("jax", "jaxlib")):
        return "jax"
    return "numpy"


def to_numpy(x: Any) -> Any:
    """A numpy view (or copy) of an array from any library, without touching autograd.

    Parameters
    ----------
    x : array_like, torch.Tensor or jax.Array
        A torch tensor that requires grad is detached first (its values are read, the graph
        is left alone: jacgeom computes its own derivatives); a tensor on an accelerator is
        copied to the CPU; float16 / bfloat16 tensors become float32.

    Returns
    -------
    ndarray
        A view of the tensor's memory where DLPack allows (CPU, no conjugate / negative
        bit), otherwise a copy. Other inputs are returned as ``numpy.asarray`` gives them.

    Examples
    --------
    >>> to_numpy([1.0, 2.0]).tolist()
    [1.0, 2.0]
    """
    return _validation.to_numpy(x)


def to_array_library(result: Any, like: Any) -> Any:
    """Send a numpy result to the array library of ``like`` through DLPack.

    Parameters
    ----------
    result : ndarray (or a list / tuple of them)
    like : array
        The caller's input. A torch tensor gives torch tensors (on ``like``'s device), a JAX
        array gives JAX arrays; anything else returns ``result`` unchanged.

    Returns
    -------
    The same structure as ``result``, in the caller's library. Read-only numpy arrays
    (a Network's weights) are copied first, since DLPack cannot mark memory read-only;
    writeable results are shared with torch (zero copy on the CPU).

    Examples
    --------
    >>> import numpy as np
    >>> to_array_library(np.ones(2), like=np.zeros(3)).tolist()
    [1.0, 1.0]
    """
    lib = array_library(like)
    if lib == "numpy":
        return result
    if isinstance(result, (list, tuple)):
        return type(result)(to_array_library(r, like) for r in result)
    if not isinstance(result, np.ndarray):
        return result
    arr = np.ascontiguousarray(result)
    if not arr.flags.writeable:
        arr = arr.copy()
    if lib == "torch":
        import torch.utils.dlpack

        out = torch.utils.dlpack.from_dlpack(arr)
        return out if like.device.type == "cpu" else out.to(like.device)
    import jax.numpy as jnp

    return jnp.from_dlpack(arr)


# ---------------------------------------------------------------------------- networks


@dataclasses.dataclass
class NetworkSpec:
    """The pieces of a :class:`jacgeom.Network` read from another library.

    Attributes
    ----------
    weights : list of (n_l, n_{l-1}) ndarray
    biases : list of (n_l,) ndarray
    activations : list of Activation
    residual : bool or tuple of bool
        True or False for every layer, or one flag per layer where they differ.
    norm : {None, "layer"} or tuple of them
        For every layer, or one entry per layer where they differ.
    norm_eps : float
    names : list of str
        For each layer, the source modules it was made of, e.g. "0:Linear+1:Tanh".
    notes : list of str
        Approximations made while reading (e.g. Softplus's threshold), one line each.
    norm_weights, norm_biases : list of (n_l,) ndarray (None at layers without), or None
        The layer normalisations' gamma and beta (None: no affine parameters).
    """

    weights: list[FloatArray]
    biases: list[FloatArray]
    activations: list[Activation]
    residual: bool | tuple[bool, ...] = False
    norm: str | None | tuple[str | None, ...] = None
    norm_eps: float = 1e-5
    names: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    norm_weights: list[FloatArray | None] | None = None
    norm_biases: list[FloatArray | None] | None = None

    def network_kwargs(self, dtype: Any = None) -> dict[str, Any]:
        """Keyword arguments of ``Network(...)``; ``dtype`` casts weights and biases."""
        ws: list[Any] = self.weights
        bs: list[Any] = self.biases
        if dtype is not None:
            dt = np.dtype(dtype)
            if dt not in (np.float32, np.float64):
                raise TypeError(f"dtype must be float32 or float64, got {dt}")
            ws = [w.astype(dt, copy=False) for w in ws]
            bs = [b.astype(dt, copy=False) for b in bs]
        gs, betas = self.norm_weights, self.norm_biases
        if dtype is not None:
            gs = None if gs is None else [_cast(g, dtype) for g in gs]
            betas = None if betas is None else [_cast(b, dtype) for b in betas]
        return {
            "weights": ws,
            "biases": bs,
            "activation": list(self.activations),
            "residual": self.residual,
            "norm": self.norm,
            "norm_eps": self.norm_eps,
            "norm_weights": gs,
            "norm_biases": betas,
        }


@dataclasses.dataclass
class _Residual:
    body: list[Any]


@dataclasses.dataclass
class _Layer:
    W: FloatArray | None = None  # None: an activation with no Linear before it (W = I)
    b: FloatArray | None = None
    act: Activation | None = None
    norm_eps: float | None = None
    gamma: FloatArray | None = None  # LayerNorm's weight (None: elementwise_affine=False)
    beta: FloatArray | None = None
    residual: bool = False
    names: list[str] = dataclasses.field(default_factory=list)


def _kind(module: Any) -> str:
    """The torch.nn class a module is an instance of, by identity (a parametrized layer
    counts as its class), or the class a TorchScript module was compiled from; "" for
    anything else: a subclass or a user module, even one named like a torch.nn class
    (those are traced, not read)."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return _script_kind(module)
    cls = type(module)
    if _is_parametrized(module):
        # register_parametrization swaps the class for a generated subclass
        # Parametrized<Name> of the module's own class, whose forward is that class's.
        cls = cls.__bases__[0]
    name = cls.__name__
    return name if name in SUPPORTED_TORCH_MODULES and _torch_nn_class(name) is cls else ""


# TorchScript marks a second compiled type of one class (a Linear with other attributes, a
# Sequential of other children) with a path segment ___torch_mangle_<n>.
_MANGLE = re.compile(r"___torch_mangle_\d+")


def _script_kind(module: Any) -> str:
    """The supported torch.nn class a TorchScript module was compiled from, or "".

    ``original_name`` is only the class's bare name, the same for a user class called
    ``ReLU`` whose forward is anything; the qualified type name carries the class's Python
    module too (``__torch__.torch.nn.modules.activation.ReLU`` against ``__torch__.ReLU``).
    """
    name = str(getattr(module, "original_name", ""))
    cls = _torch_nn_class(name)
    if name not in SUPPORTED_TORCH_MODULES or cls is None:
        return ""
    parts = [p for p in _script_type_name(module).split(".") if not _MANGLE.fullmatch(p)]
    return name if parts == ["__torch__", *cls.__module__.split("."), name] else ""


def _script_type_name(module: Any) -> str:
    """A TorchScript module's qualified type name ("" where torch does not expose it)."""
    try:
        return str(module._c._type().qualified_name())
    except (AttributeError, RuntimeError):
        return ""


def _torch_nn_class(name: str) -> type | None:
    import torch

    cls = getattr(torch.nn, name, None)
    return cls if isinstance(cls, type) else None


def _is_parametrized(module: Any) -> bool:
    """Whether ``module`` is a layer under torch.nn.utils.parametrize (its class the
    generated Parametrized<Name> subclass, its ``weight`` computed at each access)."""
    from torch.nn.utils import parametrize

    cls = type(module)
    return (
        cls.__module__ == parametrize.__name__
        and len(cls.__bases__) == 1
        and parametrize.is_parametrized(module)
    )


def _type_name(module: Any) -> str:
    name = getattr(module, "original_name", None)
    return str(name) if isinstance(name, str) else type(module).__name__


def _hooks(module: Any) -> list[tuple[str, Any]]:
    """The forward pre-hooks and forward hooks registered on one module, as (kind, hook).

    A scripted module also lists the hooks compiled into it (torch.jit.script keeps the
    hooks registered before scripting, and runs them at every call)."""
    found: list[tuple[str, Any]] = []
    for kind, attr, compiled in (
        ("forward pre-hook", "_forward_pre_hooks", "_get_forward_pre_hooks"),
        ("forward hook", "_forward_hooks", "_get_forward_hooks"),
    ):
        hooks = list(dict(getattr(module, attr, None) or {}).values())
        c = getattr(module, "_c", None)
        if not hooks and c is not None and hasattr(c, compiled):
            hooks = list(getattr(c, compiled)())
        found.extend((kind, h) for h in hooks)
    return found


def _hook_name(hook: Any) -> str:
    import torch

    if isinstance(hook, torch.jit.ScriptFunction):  # a hook compiled by torch.jit.script
        return str(hook.name)
    name = getattr(hook, "__qualname__", None)
    return name if isinstance(name, str) else type(hook).__name__


def _refuse_hooks_and_parametrizations(root: Any) -> None:
    """Refuse, before anything is read, a module whose map is not its weights' map.

    jacgeom reads a module's weights, not its calls: a forward hook or pre-hook changes
    the module's input or output (or, like the old-style torch.nn.utils.weight_norm,
    spectral_norm and prune, recomputes ``weight`` at the next call, so the stored one is
    stale after an optimizer step). Parametrized layers (torch.nn.utils.parametrizations)
    compute ``weight`` at each access instead, which is read; those whose access changes
    the module (spectral_norm in training mode) or runs code jacgeom does not know are
    refused.
    """
    from torch.nn.modules import module as torch_module

    for attr, kind, register in (
        ("_global_forward_pre_hooks", "forward pre-hook", "register_module_forward_pre_hook"),
        ("_global_forward_hooks", "forward hook", "register_module_forward_hook"),
    ):
        hooks = getattr(torch_module, attr, None)
        if hooks:
            hook = next(iter(dict(hooks).values()))
            raise _ModuleStateError(
                f"a global {kind} ({_hook_name(hook)}, from torch.nn.modules.module."
                f"{register}) is registered: it runs at every module's call and can change "
                "its input or output, which a jacgeom Network, read from the weights, would "
                "not do; remove it (its handle's .remove()) before reading the module"
            )
    for name, sub in root.named_modules():
        label = name or "<root>"
        for kind, hook in _hooks(sub):
            hint = ""
            origin = type(hook).__module__
            if origin in ("torch.nn.utils.weight_norm", "torch.nn.utils.spectral_norm"):
                new = origin.rsplit(".", 1)[1]
                hint = (
                    f"; torch.nn.utils.{new} recomputes weight in this hook, so the stored "
                    f"weight is stale after an optimizer step: use "
                    f"torch.nn.utils.parametrizations.{new}, which jacgeom reads"
                )
            elif origin == "torch.nn.utils.prune":
                hint = (
                    "; torch.nn.utils.prune applies its mask in this hook: "
                    "torch.nn.utils.prune.remove(module, name) makes it permanent"
                )
            raise _ModuleStateError(
                f"module {label} ({_type_name(sub)}) has a {kind} ({_hook_name(hook)}): it "
                "runs at every call and can change the module's input or output, which a "
                "jacgeom Network, read from the weights, would not do; remove it (its "
                f"handle's .remove()) before reading the module{hint}"
            )
        if _is_parametrized(sub):
            _check_parametrizations(sub, label)


def _check_parametrizations(module: Any, label: str) -> None:
    from torch.nn.utils import parametrizations

    what = f"module {label} ({type(module).__name__})"
    if not _kind(module):
        raise _unsupported(what, "parametrized modules are read only as torch.nn layers")
    names = ("_WeightNorm", "_SpectralNorm", "_Orthogonal")
    known = {getattr(parametrizations, n, None): n for n in names}
    for tensor, chain in module.parametrizations.items():
        for p in chain:
            name = known.get(type(p))
            if name is None:
                raise _unsupported(
                    what,
                    f"its {tensor} has the parametrization {type(p).__name__}; jacgeom reads "
                    "the parametrizations weight_norm, spectral_norm (in eval mode) and "
                    "orthogonal of torch.nn.utils.parametrizations",
                )
            if name == "_SpectralNorm" and p.training:
                raise _ModuleStateError(
                    f"{what} has a spectral_norm parametrization of {tensor} in training "
                    f"mode, where every read of {tensor} runs a power-iteration step that "
                    "changes the module's buffers; call .eval() on the model before reading "
                    "it (the eval-mode map, with the current power-iteration vectors)"
                )


_SCRIPT_OPS: dict[str, frozenset[str]] = {
    # The one operation each supported class's forward computes, as torch.jit.script (a
    # call of torch.nn.functional) or torch.jit.trace (an aten op) records it.
    "Linear": frozenset({"linear"}),
    "ReLU": frozenset({"relu", "relu_"}),
    "LeakyReLU": frozenset({"leaky_relu", "leaky_relu_"}),
    "Tanh": frozenset({"tanh"}),
    "Sigmoid": frozenset({"sigmoid"}),
    "GELU": frozenset({"gelu"}),
    "SiLU": frozenset({"silu", "silu_"}),
    "Softplus": frozenset({"softplus"}),
    "ELU": frozenset({"elu", "elu_"}),
    "Identity": frozenset(),
    "Dropout": frozenset({"dropout", "dropout_"}),
    "LayerNorm": frozenset({"layer_norm"}),
}
# The settings read from each class: a traced module keeps its parameters but not these.
_SCRIPT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "GELU": ("approximate",),
    "LeakyReLU": ("negative_slope",),
    "ELU": ("alpha",),
    "Softplus": ("beta", "threshold"),
    "LayerNorm": ("normalized_shape", "eps"),
}


def _check_script_graph(module: Any, kind: str, label: str) -> None:
    """Refuse a TorchScript module whose forward graph is not its class's forward.

    A module from torch.jit.trace (or a file saved from one) holds the operations recorded
    when it was traced: the forward hooks of the time are in it, and its settings (GELU's
    approximate, Softplus's beta, ...) are constants of the graph, not attributes. A
    Sequential must call each child once, in order, on the previous output; a layer must
    compute its one operation on its input, from constants and its own weights only.
    """
    what = f"TorchScript module {label or '<root>'} ({kind})"
    advice = "save torch.jit.script(model) instead, or pass the torch module"
    for attr in _SCRIPT_ATTRIBUTES.get(kind, ()):
        if not hasattr(module, attr):
            raise _unsupported(
                what,
                f"it has no attribute {attr!r}, which a traced module (torch.jit.trace) "
                f"does not keep; {advice}",
            )
    try:
        graph = module.graph
        inputs = [v.unique() for v in graph.inputs()]
        nodes = list(graph.nodes())
        returned = [v.unique() for v in graph.return_node().inputs()]
    except (AttributeError, RuntimeError) as exc:
        raise _unsupported(what, f"its forward graph cannot be read ({exc})") from exc
    if kind == "Identity" and len(inputs) == 1:
        return  # a traced Identity: forward(self), called without the data (see below)
    if len(inputs) != 2 or len(returned) != 1:
        raise _unsupported(what, "its forward does not map one tensor to one tensor")
    self_id, current = inputs
    attributes: dict[int, str] = {}  # values read from the module: its children, weights
    constants: set[int] = set()
    called: list[str] = []
    computed = 0
    for node in nodes:
        op = node.kind()
        ins = [v.unique() for v in node.inputs()]
        outs = [v.unique() for v in node.outputs()]
        if op == "prim::GetAttr" and ins == [self_id]:
            attributes[outs[0]] = node.s("name")
            continue
        if op == "prim::Constant" or (
            op == "prim::ListConstruct" and all(i in constants for i in ins)
        ):
            constants.update(outs)
            continue
        if kind == "Sequential":
            if op == "prim::CallMethod" and node.s("name") == "forward" and ins[:1]:
                child = attributes.get(ins[0], "")
                if child and ins[1:] == [current]:
                    called.append(child)
                    current = outs[0]
                    continue
                # torch.jit.trace records an Identity as a call without the data whose
                # result is unused (nothing above accepts it as an input).
                if child and len(ins) == 1 and _kind(getattr(module, child)) == "Identity":
                    called.append(child)
                    continue
        else:
            name, data, params = _graph_call(node, ins)
            if (
                kind == "Dropout"
                and op.startswith("aten::dropout")
                and node.inputsAt(2).toIValue() is not False
            ):
                # The eval-mode map that jacgeom reads (the identity) exists only where the
                # graph reads the module's training flag; a trace in training mode fixed
                # it to True: that module drops units at every call.
                raise _unsupported(what, f"it was traced in training mode; {advice}")
            if (
                name in _SCRIPT_OPS[kind]
                and computed == 0
                and data == current
                and all(
                    p in constants or attributes.get(p) in ("weight", "bias", "training")
                    for p in params
                )
            ):
                computed += 1
                current = outs[0]
                continue
        shown = f"{op} ({node.s('name')})" if node.hasAttribute("name") else op
        raise _unsupported(
            what,
            f"its forward graph computes {shown} where torch.nn.{kind}'s forward does not "
            f"(a traced module records the forward hooks of its time); {advice}",
        )
    expected = [n for n, _ in module.named_children()] if kind == "Sequential" else []
    if called != expected:
        raise _unsupported(
            what, f"its forward graph calls the children {called}, not {expected} in order"
        )
    optional = kind in ("Sequential", "Identity", "Dropout")
    if returned != [current] or (computed == 0 and not optional):
        raise _unsupported(
            what, f"its forward graph does not return torch.nn.{kind}'s result; {advice}"
        )


def _graph_call(node: Any, ins: list[int]) -> tuple[str, int | None, list[int]]:
    """(operation, data input, other inputs) of a TorchScript graph node that computes:
    an aten op (traced graphs) or a call of a torch.nn.functional function (scripted
    ones); ("", None, []) for anything else."""
    op = node.kind()
    if op.startswith("aten::") and ins:
        return op.removeprefix("aten::"), ins[0], ins[1:]
    if op == "prim::CallFunction" and len(ins) >= 2:
        fn = node.inputsAt(0).node()
        qualified = str(fn.output().type())
        if fn.kind() == "prim::Constant" and qualified.startswith("__torch__.torch.nn.functional."):
            return qualified.rsplit(".", 1)[1], ins[1], ins[2:]
    return "", None, []


def _supported_message() -> str:
    return (
        "supported: torch.nn." + ", torch.nn.".join(SUPPORTED_TORCH_MODULES) + " (LayerNorm "
        "between a Linear and its activation, with or without affine parameters), and "
        "modules whose forward chains them, with residual blocks h + phi(W h + b)"
    )


def _unsupported(what: str, why: str = "") -> UnsupportedModuleError:
    return UnsupportedModuleError(
        f"{what} cannot be read into a jacgeom Network{': ' + why if why else ''}; "
        + _supported_message()
    )


def _tensor(t: Any) -> FloatArray:
    arr = np.asarray(to_numpy(t))
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def _activation_of(module: Any, kind: str, notes: list[str], label: str) -> Activation:
    if kind == "ReLU":
        return _lookup("relu")
    if kind == "Tanh":
        return _lookup("tanh")
    if kind == "Sigmoid":
        return _lookup("sigmoid")
    if kind == "SiLU":
        return _lookup("silu")
    if kind == "GELU":
        approx = str(getattr(module, "approximate", "none"))
        if approx == "none":
            return _lookup("gelu")
        if approx == "tanh":
            return _lookup("gelu_tanh")
        raise _unsupported(f"{label} (GELU, approximate={approx!r})")
    if kind == "LeakyReLU":
        slope = float(module.negative_slope)
        if slope == 0.0:  # torch's leaky_relu with slope 0 is relu, phi'(0) = 0 included
            return _lookup("relu")
        if slope < 0:
            raise _unsupported(
                f"{label} (LeakyReLU, negative_slope={slope})",
                "jacgeom's leaky_relu needs alpha > 0",
            )
        return _lookup("leaky_relu", alpha=slope)
    if kind == "ELU":
        alpha = float(module.alpha)
        if alpha <= 0:
            raise _unsupported(f"{label} (ELU, alpha={alpha})", "jacgeom's elu needs alpha > 0")
        return _lookup("elu", alpha=alpha)
    if kind == "Softplus":
        beta, threshold = float(module.beta), float(module.threshold)
        # torch switches to the identity where beta z > threshold; jacgeom's softplus has no
        # threshold. There phi differs by log1p(e^-threshold) / beta and phi' by
        # s(-beta z) < e^-threshold (2e-9 at torch's default 20): never a rank change.
        # sigmoid(-t) bounds the phi' gap, log1p(e^-t) / beta the phi gap (t = threshold).
        dphi = 1.0 / (1.0 + math.exp(min(threshold, 700.0)))
        gap = math.log1p(math.exp(-max(threshold, -700.0))) / beta
        note = (
            f"{label}: Softplus(beta={beta:g}, threshold={threshold:g}) read as softplus"
            f"(beta={beta:g}) without the threshold: where beta z > threshold, torch's phi is "
            f"z and phi' is 1; jacgeom's phi' is below by less than {dphi:.1e} and its phi "
            f"above by less than {gap:.1e} (later layers' Jacobians move with both)"
        )
        notes.append(note)
        if dphi > _SOFTPLUS_TOLERANCE:
            _warn_from_caller(
                f"approximate conversion of module {note}; phi' may differ by more than "
                f"{_SOFTPLUS_TOLERANCE:g} (silent for threshold >= 18.42)"
            )
        return _lookup("softplus", beta=beta)
    raise _unsupported(f"{label} ({kind})")


def _warn_from_caller(message: str) -> None:
    """A UserWarning attributed to the first frame outside the jacgeom package (the user's
    call of Network.from_torch, spec_from_torch or GeometryMonitor), whatever the depth."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame: Any = sys._getframe(0)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _function_module(node: Any) -> Any:
    """The torch.nn module equivalent to an activation called as a function in a traced
    forward (torch.relu, F.gelu(approximate=...), x.tanh(), ...), or None."""
    import torch
    import torch.nn.functional as F

    def arg(i: int, key: str, default: Any) -> Any:
        if key in node.kwargs:
            return node.kwargs[key]
        return node.args[i] if len(node.args) > i else default

    target = node.target
    simple: dict[Any, Callable[[], Any]] = {
        torch.relu: torch.nn.ReLU,
        F.relu: torch.nn.ReLU,
        torch.tanh: torch.nn.Tanh,
        F.tanh: torch.nn.Tanh,
        torch.sigmoid: torch.nn.Sigmoid,
        F.sigmoid: torch.nn.Sigmoid,
        F.silu: torch.nn.SiLU,
        "relu": torch.nn.ReLU,
        "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid,
    }
    if node.op == "call_method" and target in ("relu", "tanh", "sigmoid"):
        return simple[target]()
    if node.op != "call_function":
        return None
    if target in simple:
        return simple[target]()
    if target is F.gelu:
        return torch.nn.GELU(approximate=arg(1, "approximate", "none"))
    if target is F.leaky_relu:
        return torch.nn.LeakyReLU(arg(1, "negative_slope", 0.01))
    if target is F.elu:
        return torch.nn.ELU(arg(1, "alpha", 1.0))
    if target is F.softplus:
        return torch.nn.Softplus(arg(1, "beta", 1.0), arg(2, "threshold", 20.0))
    return None


def _items(module: Any, label: str) -> list[tuple[str, Any]]:
    """The flat chain of (label, leaf module or _Residual) that ``module``'s forward is."""
    import torch

    kind = _kind(module)
    if kind and isinstance(module, torch.jit.ScriptModule):
        _check_script_graph(module, kind, label)
    if kind == "Sequential":
        out: list[tuple[str, Any]] = []
        for name, child in module.named_children():
            out.extend(_items(child, f"{label}.{name}" if label else name))
        return out
    if kind:
        return [(label or kind, module)]
    return _traced_items(module, label)


def _traced_items(module: Any, label: str) -> list[tuple[str, Any]]:
    import torch

    what = f"module {label or '<root>'} ({type(module).__name__})"
    if isinstance(module, torch.jit.ScriptModule):
        qualified = ".".join(
            p for p in _script_type_name(module).split(".") if not _MANGLE.fullmatch(p)
        )
        raise _unsupported(
            f"TorchScript module {label or '<root>'} ({module.original_name}, class "
            f"{qualified or 'unknown'})",
            "only scripted torch.nn modules and Sequentials of them can be read (a class "
            "of another Python module is not read by its name)",
        )
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:
        raise _unsupported(what, f"its forward could not be traced by torch.fx ({exc})") from exc
    values: dict[Any, list[tuple[str, Any]]] = {}
    inputs = 0
    result: list[tuple[str, Any]] | None = None
    prefix = f"{label}." if label else ""
    for node in graph.nodes:
        if node.op == "placeholder":
            inputs += 1
            if inputs > 1:
                raise _unsupported(what, "its forward takes more than one input")
            values[node] = []
            continue
        if node.op == "output":
            out = node.args[0]
            if out not in values:
                raise _unsupported(what, "its forward does not return one tensor")
            result = values[out]
            continue
        node_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if node.op == "call_module":
            sub = module.get_submodule(node.target)
            if len(node_args) != 1 or len(node.args) != 1 or node.kwargs:
                raise _unsupported(what, f"submodule {node.target} is called with extra inputs")
            values[node] = values[node_args[0]] + _items(sub, prefix + str(node.target))
            continue
        if node.op == "call_function" and node.target in (operator.add, torch.add):
            if len(node_args) != 2 or len(node.args) != 2 or node.kwargs:
                raise _unsupported(what, f"{node.name} is not a sum of two tensors")
            a, b = values[node_args[0]], values[node_args[1]]
            long, short = (a, b) if len(a) >= len(b) else (b, a)
            if len(long) == len(short) or any(
                x is not y for x, y in zip(long[: len(short)], short, strict=False)
            ):
                raise _unsupported(
                    what, f"{node.name} adds two tensors that are not h and a branch from h"
                )
            values[node] = short + [(f"{prefix}{node.name}", _Residual(long[len(short) :]))]
            continue
        equivalent = _function_module(node)
        if equivalent is not None and len(node_args) == 1:
            values[node] = values[node_args[0]] + [(f"{prefix}{node.name}", equivalent)]
            continue
        raise _unsupported(what, f"its forward calls {node.op} {node.target!r}")
    assert result is not None
    return result


def _layers(items: list[tuple[str, Any]], notes: list[str], residual: bool) -> list[_Layer]:
    """Group the chain into layers phi(N(W h + b)): a Linear, an optional LayerNorm, an
    activation (identity when none follows)."""
    layers: list[_Layer] = []
    open_layer: _Layer | None = None

    def close() -> None:
        nonlocal open_layer
        if open_layer is not None:
            if open_layer.act is None:
                open_layer.act = _lookup("identity")
            layers.append(open_layer)
            open_layer = None

    for label, item in items:
        if isinstance(item, _Residual):
            close()
            body = _layers(item.body, notes, residual=True)
            if len(body) != 1:
                raise _unsupported(
                    f"residual block {label}",
                    f"its branch holds {len(body)} layers; jacgeom's residual layer is "
                    "h + phi(N(W h + b)), one Linear (then LayerNorm, activation) per block",
                )
            body[0].residual = True
            body[0].names = [f"{label}(" + "+".join(body[0].names) + ")"]
            layers.extend(body)
            continue
        kind = _kind(item)
        tag = f"{label}:{kind}" if kind and kind not in label else label
        if kind in _SKIPPED_MODULES:
            if open_layer is not None:
                open_layer.names.append(tag)
            continue
        if kind == "Linear":
            close()
            # Read once: a parametrized layer computes weight at each access.
            W = _tensor(item.weight)
            bias = item.bias
            b = _tensor(bias) if bias is not None else np.zeros(W.shape[0], dtype=W.dtype)
            open_layer = _Layer(W=W, b=b, names=[tag])
            continue
        if kind == "LayerNorm":
            if open_layer is None or open_layer.act is not None or open_layer.norm_eps is not None:
                raise _unsupported(
                    f"{label} (LayerNorm)",
                    "jacgeom normalises pre-activations only: LayerNorm must follow a Linear "
                    "and come before its activation",
                )
            shape = tuple(item.normalized_shape)
            assert open_layer.W is not None
            if shape != (open_layer.W.shape[0],):
                raise _unsupported(
                    f"{label} (LayerNorm, normalized_shape={shape})",
                    f"it must normalise the Linear's {open_layer.W.shape[0]} outputs",
                )
            gamma = getattr(item, "weight", None)
            beta = getattr(item, "bias", None)
            open_layer.gamma = None if gamma is None else _tensor(gamma)
            open_layer.beta = None if beta is None else _tensor(beta)
            open_layer.norm_eps = float(item.eps)
            open_layer.names.append(tag)
            continue
        if kind in _ACTIVATION_MODULES:
            act = _activation_of(item, kind, notes, label)
            if open_layer is None or open_layer.act is not None:
                close()
                # An activation with no Linear of its own: the layer phi(I h).
                open_layer = _Layer(act=act, names=[tag])
            else:
                open_layer.act = act
                open_layer.names.append(tag)
            continue
        raise _unsupported(f"module {label} ({type(item).__name__})")
    close()
    return layers


def spec_from_torch(module: Any) -> NetworkSpec:
    """Read a torch module into the pieces of a :class:`jacgeom.Network`.

    Parameters
    ----------
    module : torch.nn.Module or torch.jit.ScriptModule
        A Sequential (nested ones are flattened), a supported torch.nn layer, or a module
        whose forward is a chain of them (read with torch.fx), e.g. a residual block
        ``x + act(linear(x))``. A layer may be parametrized with
        torch.nn.utils.parametrizations' weight_norm, orthogonal or spectral_norm (the
        last in eval mode); its ``weight`` is read as the parametrization computes it.
        TorchScript modules must be torch.nn layers or Sequentials of them, recognised by
        their qualified class name (a user class named ``ReLU`` is not torch.nn.ReLU), with
        the graph of the class's own forward: a traced module (torch.jit.trace) is read
        only where its graph is that forward, without the hooks of its time, and where it
        kept the settings read (GELU's approximate, Softplus's beta, ...).

    Returns
    -------
    NetworkSpec
        Weights and biases are read once, detached, as numpy arrays in the module's dtype
        (float16 / bfloat16 become float32). Each layer is a Linear, an optional LayerNorm
        and the activation that follows (identity when another Linear or the end comes
        first); an activation with no Linear before it becomes phi(I h).

    Raises
    ------
    UnsupportedModuleError (a TypeError)
        For any module or operation that a Network cannot represent; the message names the
        module and lists what is supported. In particular: LayerNorm after the activation,
        LayerNorms with different eps. Residual blocks and plain layers mix (a residual
        MLP's input and output projections), and so do layers with and without LayerNorm
        (a normalised MLP's output layer): ``residual`` and ``norm`` are then one entry
        per layer. A LayerNorm's affine parameters become the Network's ``norm_weights`` /
        ``norm_biases`` (gamma = 1, beta = 0 where a LayerNorm has none, None at layers
        without one).
    UnsupportedModuleError that is also a ValueError
        For a module whose map is not the one its weights give: a forward hook or forward
        pre-hook on the module or any submodule, or a global one
        (torch.nn.modules.module.register_module_forward_hook / _pre_hook), since a hook
        can change a module's input or output (the old-style torch.nn.utils.weight_norm,
        spectral_norm and prune recompute ``weight`` in one, so the stored weight is stale
        after an optimizer step); and a spectral_norm parametrization in training mode,
        where every read of ``weight`` would change the module's power-iteration vectors.
        The message names the submodule and the hook's kind. Backward hooks do not change
        the map and are allowed.
    TypeError
        When ``module`` is not a torch.nn.Module.

    Notes
    -----
    Softplus(beta, threshold) becomes softplus(beta): jacgeom's softplus has no threshold,
    where torch's is the identity for beta z > threshold. There phi' differs from torch's by
    less than sigmoid(-threshold) < e^-threshold and phi by less than
    log1p(e^-threshold) / beta; a layer's D keeps its rank, but later layers see shifted
    pre-activations, so the network's Jacobian can differ by more (3e-2 was seen at
    threshold 1). Every Softplus adds a line to ``notes``; where sigmoid(-threshold) > 1e-8
    (threshold < 18.42; torch's default 20 is below the tolerance) a UserWarning
    ("approximate conversion of module ...") names the module and both bounds. Filter it with
    ``warnings.filterwarnings("ignore", "approximate conversion", UserWarning)``.
    LeakyReLU with negative_slope 0 is relu;
    a negative slope is not supported. Dropout is read as the identity (the eval-mode map).
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            "module must be a torch.nn.Module or torch.jit.ScriptModule, got "
            f"{type(module).__name__}"
        )
    _refuse_hooks_and_parametrizations(module)
    notes: list[str] = []
    layers = _layers(_items(module, ""), notes, residual=False)
    if not layers:
        raise _unsupported(f"module {type(module).__name__}", "it holds no layer")
    for l, layer in enumerate(layers):
        if layer.W is None:
            previous = layers[l - 1].W if l else None
            n = int(previous.shape[0]) if previous is not None else _input_width(layers, l)
            dtype = _first_dtype(layers)
            layer.W = np.eye(n, dtype=dtype)
            layer.b = np.zeros(n, dtype=dtype)
    residual = _validation.one_if_uniform([layer.residual for layer in layers])
    normed = [layer.norm_eps is not None for layer in layers]
    eps = {layer.norm_eps for layer in layers if layer.norm_eps is not None}
    if len(eps) > 1:
        raise _unsupported(
            f"layers {[l for l, n in enumerate(normed) if n]}",
            f"a jacgeom Network's layer normalisations share one eps; found {sorted(eps)}",
        )
    weights = [layer.W for layer in layers if layer.W is not None]
    biases = [layer.b for layer in layers if layer.b is not None]
    acts = [layer.act for layer in layers if layer.act is not None]
    affine = any(layer.gamma is not None or layer.beta is not None for layer in layers)
    gammas = betas = None
    if affine:  # gamma = 1, beta = 0 at a LayerNorm without them; None where there is none
        gammas = [
            (np.ones(len(b), b.dtype) if layer.gamma is None else layer.gamma) if n else None
            for layer, b, n in zip(layers, biases, normed, strict=True)
        ]
        betas = [
            (np.zeros(len(b), b.dtype) if layer.beta is None else layer.beta) if n else None
            for layer, b, n in zip(layers, biases, normed, strict=True)
        ]
    return NetworkSpec(
        weights=weights,
        biases=biases,
        activations=acts,
        residual=residual,
        norm=_validation.one_if_uniform(["layer" if n else None for n in normed]),
        norm_eps=eps.pop() if eps else 1e-5,
        names=["+".join(layer.names) for layer in layers],
        notes=notes,
        norm_weights=gammas,
        norm_biases=betas,
    )


def _cast(a: FloatArray | None, dtype: Any) -> FloatArray | None:
    return None if a is None else a.astype(dtype, copy=False)


def _first_dtype(layers: list[_Layer]) -> np.dtype[Any]:
    for layer in layers:
        if layer.W is not None:
            return layer.W.dtype
    return np.dtype(np.float32)


def _input_width(layers: list[_Layer], l: int) -> int:
    for layer in layers[l + 1 :]:
        if layer.W is not None:
            return int(layer.W.shape[1])
    raise _unsupported(
        "a module of activations only", "the input width cannot be read without a Linear"
    )


# ---------------------------------------------------------------------------- JAX


def spec_from_jax(
    params: Any,
    activation: ActivationName | Activation | Sequence[ActivationName | Activation] = "relu",
    output_activation: ActivationName | Activation = "identity",
    residual: bool | Sequence[bool] = False,
) -> NetworkSpec:
    """Read an MLP's parameters (a JAX / Flax pytree, or numpy arrays) into a NetworkSpec.

    Parameters
    ----------
    params : pytree
        One of these conventions (arrays may be JAX, numpy or torch):

        - a sequence of ``(W, b)`` pairs, W of shape (n_l, n_{l-1}) (the torch and
          jacgeom convention: y = W h + b);
        - a sequence of mappings with ``"W"`` / ``"weight"`` (n_l, n_{l-1}) and
          ``"b"`` / ``"bias"``, or with ``"kernel"`` (n_{l-1}, n_l) and ``"bias"``
          (Flax's ``nn.Dense``: y = h @ kernel + bias);
        - a mapping of layers, ordered by the number their names end in (Flax's
          ``{"params": {"Dense_0": {...}, "Dense_1": {...}}}``, with or without the
          ``"params"`` level), each layer a mapping as above.
    activation : str, Activation or sequence, default "relu"
        One name for every hidden layer (the last layer then takes ``output_activation``),
        or one per layer (``output_activation`` is then ignored).
    output_activation : str or Activation, default "identity"
    residual : bool or sequence of bool, default False
        Every layer h -> h + phi(W h + b), or one flag per layer (as :class:`Network`).

    Returns
    -------
    NetworkSpec

    Examples
    --------
    >>> import numpy as np
    >>> params = [{"kernel": np.ones((3, 4)), "bias": np.zeros(4)},
    ...           {"kernel": np.ones((4, 2)), "bias": np.zeros(2)}]
    >>> spec = spec_from_jax(params, activation="tanh")
    >>> [w.shape for w in spec.weights], [a.name for a in spec.activations]
    ([(4, 3), (2, 4)], ['tanh', 'identity'])
    """
    layers = _jax_layers(params)
    L = len(layers)
    if isinstance(activation, (str, Activation)):
        acts = [_lookup(activation)] * (L - 1) + [_lookup(output_activation)]
    else:
        if len(activation) != L:
            raise ValueError(
                f"activation has {len(activation)} entries for {L} layers; give one name "
                f"for the hidden layers or {L}"
            )
        acts = [_lookup(a) for a in activation]
    weights, biases = [], []
    for l, (W, b) in enumerate(layers):
        Wn, bn = _tensor(W), _tensor(b) if b is not None else None
        if Wn.ndim != 2:
            raise ValueError(f"layer {l}: weight has shape {Wn.shape}; expected a 2-D matrix")
        weights.append(Wn)
        biases.append(np.zeros(Wn.shape[0], dtype=Wn.dtype) if bn is None else bn)
    return NetworkSpec(
        weights=weights,
        biases=biases,
        activations=acts,
        residual=_validation.one_if_uniform(_validation.residual_flags(residual, L)),
        names=[f"layer {l}" for l in range(L)],
    )


def _jax_layers(params: Any) -> list[tuple[Any, Any]]:
    if isinstance(params, Mapping):
        inner = params.get("params", params)
        if not isinstance(inner, Mapping) or not inner:
            raise ValueError("params['params'] must be a non-empty mapping of layers")
        if _is_layer_mapping(inner):
            return [_one_jax_layer(inner, "params")]

        def order(name: str) -> tuple[int, str]:
            digits = "".join(c for c in reversed(name) if c.isdigit())[::-1]
            stem = name[: len(name) - len(digits)]
            if not digits or not name.endswith(digits):
                raise ValueError(
                    f"layer {name!r}: a mapping of layers needs names ending in their "
                    "number (Dense_0, Dense_1, ...)"
                )
            return int(digits), stem

        names = sorted(inner, key=lambda k: order(str(k)))
        return [_one_jax_layer(inner[k], str(k)) for k in names]
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)) and params:
        return [_one_jax_layer(p, f"params[{i}]") for i, p in enumerate(params)]
    raise TypeError(
        "params must be a non-empty sequence of (W, b) pairs or of mappings, or a Flax-style "
        "mapping of layers; see jacgeom.interop.spec_from_jax"
    )


def _is_layer_mapping(m: Mapping[Any, Any]) -> bool:
    return any(k in m for k in ("W", "weight", "kernel"))


def _one_jax_layer(p: Any, where: str) -> tuple[Any, Any]:
    if isinstance(p, Mapping):
        if "kernel" in p:
            K = to_numpy(p["kernel"])
            if np.ndim(K) != 2:
                raise ValueError(f"{where}: kernel has shape {np.shape(K)}; expected 2-D")
            return np.asarray(K).T, p.get("bias")
        for key in ("W", "weight"):
            if key in p:
                return p[key], p.get("b", p.get("bias"))
        raise ValueError(
            f"{where}: a layer mapping needs 'kernel' (n_in, n_out), 'W' or 'weight' "
            f"(n_out, n_in); got keys {sorted(map(str, p))}"
        )
    if isinstance(p, Sequence) and len(p) == 2:
        return p[0], p[1]
    raise TypeError(f"{where} must be a (W, b) pair or a mapping, got {type(p).__name__}")
