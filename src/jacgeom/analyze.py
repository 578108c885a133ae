"""``jacgeom analyze MODEL --data X.npy``: the per-layer geometry of a saved model.

MODEL is a TorchScript file (``torch.jit.save``) or a whole module saved with
``torch.save(module, path)``, of a kind :meth:`jacgeom.Network.from_torch` reads; or a
``.safetensors`` file of weights with ``--arch ARCH.json``, a small architecture spec that
names each layer's weight, bias and activation (:func:`load_safetensors_model`; no torch
needed). X.npy holds the probe inputs, (B, n_0) (or an .npz file of one array, or of
several with one named ``X``). The report
(:meth:`jacgeom.Network.layer_report`) is printed as a table, or as JSON with ``--json``;
``--plot PATH`` saves a figure with a panel per quantity and a bar per layer.

This module exposes ``add_parser(subparsers)`` and ``main(args) -> int`` for jacgeom's
command line; ``python -m jacgeom.analyze MODEL --data X.npy`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .activations import activation as _activation
from .interop import NetworkSpec, UnsupportedModuleError, spec_from_jax, spec_from_torch
from .network import Network
from .report import DEFAULT_SATURATION_TOL, LayerReport, layer_report
from .typing import BackendName

# Public: the loaders and analyze(); add_parser and main are the command line's plumbing.
__all__ = ["analyze", "load_safetensors_model", "load_torch_model"]


_DESCRIPTION = (
    "MODEL is a TorchScript file (torch.jit.save) or a whole module saved with "
    "torch.save(module, path), or a .safetensors file of weights with --arch ARCH.json (each "
    "layer's weight, bias and activation; torch not needed). X.npy holds the probe inputs, "
    "shape (B, n_0) (or X.npz: one array, or one named X). Prints per layer: dead and "
    "saturated units, exact and float64 rank, log-volume and log condition number (natural "
    "logs; medians over all samples, -inf and inf where exact rank is lost), and whether "
    "the layer is a homeomorphism onto its image."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "analyze",
        help="per-layer geometry of a saved model (torch, or safetensors weights) on probe inputs",
        description=_DESCRIPTION,
    )
    _arguments(p)
    p.set_defaults(func=main)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="TorchScript file, torch.save(module) file, or .safetensors weights"
    )
    p.add_argument(
        "--data",
        required=True,
        help="probe inputs X of shape (B, n_0): a .npy file, or an .npz file of one array "
        "(or of several, one named X)",
    )
    p.add_argument(
        "--arch",
        metavar="ARCH.json",
        help="the architecture of a .safetensors MODEL: each layer's weight and bias names and "
        "activation (JSON; see jacgeom.analyze.load_safetensors_model)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="save a figure of the report to PATH (.png, .pdf or .svg; needs matplotlib)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="compute in this dtype (default: the model's)",
    )
    p.add_argument(
        "--saturation-tol",
        type=float,
        default=DEFAULT_SATURATION_TOL,
        help="a unit is saturated where 0 < |phi'(z)| < this (default %(default)g)",
    )
    p.add_argument("--backend", default="auto", choices=("auto", "cpp", "numba", "numpy"))


def load_torch_model(path: str | Path) -> Any:
    """Load a TorchScript archive, or else a module pickled by ``torch.save``.

    A ``torch.save`` file is unpickled with ``weights_only=False``: it can run code, so
    only load files you trust. A state_dict is refused (it holds no architecture).
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("jacgeom analyze needs PyTorch: pip install 'jacgeom[torch]'") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MODEL {str(path)!r} is not a file")
    jit_load: Any = torch.jit.load  # untyped in torch's stubs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's notice
        try:
            return jit_load(str(path), map_location="cpu")
        except (RuntimeError, ValueError):
            pass
    load: Any = torch.load  # untyped in torch's stubs
    try:
        model = load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as exc:
        raise ValueError(
            f"{path} holds a module pickled by torch.save whose class cannot be imported here "
            f"({exc}): torch.save stores where the class is defined, not its code. Run from "
            "where that module can be imported, or save the model as TorchScript "
            "(torch.jit.save(torch.jit.script(module), path))"
        ) from exc
    except Exception as exc:  # unpickling a foreign file fails in many ways
        raise ValueError(
            f"{path} is neither a TorchScript archive nor a file written by torch.save "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(model, dict):
        raise ValueError(
            f"{path} holds a dict (a state_dict?), which has no architecture; save the module "
            "itself (torch.save(module, path) or torch.jit.save(torch.jit.script(module), path))"
        )
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


_ARCH_KEYS = {"layers", "residual"}
_LAYER_KEYS = {"weight", "bias", "activation", "residual"}


def load_safetensors_model(path: str | Path, arch: str | Path | dict[str, Any]) -> NetworkSpec:
    """A network's weights from a safetensors file, its architecture from a small spec.

    Parameters
    ----------
    path : str or Path
        A ``.safetensors`` file (read with ``safetensors.numpy``; torch is not needed).
    arch : str, Path or dict
        A JSON file, or its content: ``{"layers": [...], "residual": false}`` with one entry
        per dense layer, input side first, each ``{"weight": NAME, "bias": NAME,
        "activation": ACT}``: NAME a tensor of the file (the weight (n_l, n_(l-1)), as torch's
        ``Linear`` stores it: y = W h + b; ``bias`` optional), ACT an activation name or
        ``{"name": "leaky_relu", "alpha": 0.1}`` with its parameter. ``residual`` (default
        false) makes every layer h -> h + phi(W h + b); a layer's own ``"residual"`` (true
        or false) overrides it for that layer (a residual MLP with plain input and output
        layers).

    Returns
    -------
    NetworkSpec
        ``Network(**spec.network_kwargs())`` is the network.

    Examples
    --------
    >>> import json, tempfile, numpy as np
    >>> from pathlib import Path
    >>> from safetensors.numpy import save_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> save_file({"0.weight": rng.standard_normal((5, 3)), "0.bias": np.zeros(5),
    ...            "2.weight": rng.standard_normal((2, 5))}, str(folder / "mlp.safetensors"))
    >>> arch = {"layers": [{"weight": "0.weight", "bias": "0.bias", "activation": "tanh"},
    ...                    {"weight": "2.weight", "activation": "identity"}]}
    >>> spec = load_safetensors_model(folder / "mlp.safetensors", arch)
    >>> [w.shape for w in spec.weights], [a.name for a in spec.activations]
    ([(5, 3), (2, 5)], ['tanh', 'identity'])
    """
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "a .safetensors MODEL needs the safetensors package: pip install 'jacgeom[torch]' "
            "or pip install safetensors"
        ) from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MODEL {str(path)!r} is not a file")
    if not isinstance(arch, dict):
        arch_path = Path(arch)
        if not arch_path.is_file():
            raise FileNotFoundError(f"ARCH {str(arch_path)!r} is not a file")
        try:
            arch = json.loads(arch_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"ARCH {str(arch_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list) or not arch["layers"]:
        raise ValueError('ARCH must be a JSON object with a non-empty list "layers"')
    unknown = set(arch) - _ARCH_KEYS
    if unknown:
        raise ValueError(f"ARCH has unknown keys {sorted(unknown)}; expected {sorted(_ARCH_KEYS)}")
    residual = arch.get("residual", False)
    if not isinstance(residual, bool):
        raise ValueError(f'ARCH "residual" must be true or false, not {residual!r}')
    tensors = _read_tensors(path, load_file)
    pairs, acts, flags = [], [], []
    for l, layer in enumerate(arch["layers"]):
        if not isinstance(layer, dict) or "weight" not in layer or "activation" not in layer:
            raise ValueError(
                f'ARCH layer {l} must be an object with "weight" and "activation" (and '
                f'optionally "bias"), not {layer!r}'
            )
        extra = set(layer) - _LAYER_KEYS
        if extra:
            raise ValueError(f"ARCH layer {l} has unknown keys {sorted(extra)}")
        names = [layer["weight"]] + ([layer["bias"]] if layer.get("bias") is not None else [])
        for name in names:
            if not isinstance(name, str):
                raise ValueError(f"ARCH layer {l}: tensor names must be strings, not {name!r}")
            if name not in tensors:
                raise ValueError(
                    f"ARCH layer {l} names tensor {name!r}, which {path.name} does not hold "
                    f"(it holds {sorted(tensors)})"
                )
        for name in names:
            if tensors[name].dtype.kind not in "fiu":
                raise ValueError(
                    f"tensor {name!r} of {path.name} has dtype {tensors[name].dtype}; weights and "
                    "biases must be real numbers"
                )
        pairs.append((tensors[names[0]], tensors[names[1]] if len(names) > 1 else None))
        acts.append(_arch_activation(layer["activation"], l))
        flag = layer.get("residual", residual)
        if not isinstance(flag, bool):
            raise ValueError(f'ARCH layer {l}: "residual" must be true or false, not {flag!r}')
        flags.append(flag)
    spec = spec_from_jax(pairs, activation=acts, residual=flags)
    spec.names[:] = [f"layer {l} ({layer['weight']})" for l, layer in enumerate(arch["layers"])]
    return spec


_FLOATS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}  # safetensors dtype -> numpy


def _read_tensors(path: Path, load_file: Any) -> dict[str, Any]:
    """The tensors of a safetensors file as numpy arrays; bfloat16 ones (which numpy has no
    type for) widened exactly to float32, as Network.from_torch reads them."""
    try:
        tensors = dict(load_file(str(path)))
        # with ml_dtypes loaded (JAX imports it) numpy has a bfloat16 type: widen it too
        return {
            k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v for k, v in tensors.items()
        }
    except Exception as exc:  # noqa: BLE001 - the library's own error types vary
        if "bfloat16" not in str(exc).lower():
            raise ValueError(f"MODEL {str(path)!r} is not a safetensors file: {exc}") from exc
    try:  # the format: an 8-byte little-endian header length, a JSON header, the data
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        data = raw[8 + n :]
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, stop = info["data_offsets"]
            if info["dtype"] == "BF16":  # float32's top 16 bits: widened exactly
                bits = np.frombuffer(data[start:stop], dtype="<u2").astype(np.uint32) << 16
                values = bits.view(np.float32)
            elif info["dtype"] in _FLOATS:
                values = np.frombuffer(data[start:stop], dtype=_FLOATS[info["dtype"]])
            else:
                continue  # a tensor of another dtype: the spec cannot name it as a weight
            out[name] = values.reshape(info["shape"]).copy()
        return out
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"MODEL {str(path)!r} is not a safetensors file: {exc}") from exc


def _arch_activation(act: Any, l: int) -> Any:
    if isinstance(act, str):
        return _activation(act)
    if isinstance(act, dict) and isinstance(act.get("name"), str):
        params = {k: v for k, v in act.items() if k != "name"}
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in params.values()
        ):
            raise ValueError(f"ARCH layer {l}: activation parameters must be numbers: {act!r}")
        return _activation(act["name"], **params)
    raise ValueError(
        f'ARCH layer {l}: "activation" must be a name or {{"name": ..., <parameter>: value}}, '
        f"not {act!r}"
    )


def analyze(
    model_path: str | Path,
    data_path: str | Path,
    dtype: str | None = None,
    saturation_tol: float = DEFAULT_SATURATION_TOL,
    backend: BackendName = "auto",
    arch: str | Path | None = None,
) -> LayerReport:
    """The :class:`jacgeom.report.LayerReport` of a saved model on probe inputs.

    Parameters
    ----------
    model_path : str or Path
        A TorchScript file, a module saved by ``torch.save``, or a ``.safetensors`` file of
        weights (then ``arch`` is required).
    data_path : str or Path
        The probe inputs (B, n_0): a ``.npy`` file, or a ``.npz`` file holding one array
        (or several, one of them named ``X``, which is read). They are read before the
        model, and in the model's dtype (``dtype``, "float32" or "float64", or the
        weights' own).
    dtype : {"float32", "float64"}, optional
    saturation_tol : float, default 1e-2
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
    arch : str or Path, optional
        The architecture spec of a ``.safetensors`` model, see
        :func:`load_safetensors_model`.

    Returns
    -------
    LayerReport

    Raises
    ------
    FileNotFoundError
        Where the data file or the model is not a file.
    TypeError
        Where the data are not real numbers of at most 64 bits (longdouble, complex, text).
    ValueError
        Where the data file is not one numpy can read, an .npz file holds no array or
        several without one named ``X``; where the data hold NaN or Inf, finite values
        beyond the model's dtype's range (1e39 for float32), or no rows; or where the
        model or ARCH cannot be read.
    FloatingPointError
        Where finite data overflow the model's dtype in the forward pass.
    """
    X = _read_data(data_path)
    if Path(model_path).suffix == ".safetensors":
        if arch is None:
            raise ValueError(
                "a .safetensors MODEL holds weights only: give its architecture with --arch "
                "ARCH.json (each layer's weight, bias and activation)"
            )
        spec = load_safetensors_model(model_path, arch)
    elif arch is not None:
        raise ValueError("--arch applies to a .safetensors MODEL only")
    else:
        spec = spec_from_torch(load_torch_model(model_path))
    net = Network(**spec.network_kwargs(dtype))
    if X.dtype.kind == "f" and X.dtype != net.dtype:
        # Checked in the model's dtype, whether it came from the model or from --dtype: a
        # finite float64 value beyond float32's range is inf in a float32 model.
        with np.errstate(over="ignore"):  # the overflow is reported below, by row
            cast = X.astype(net.dtype)
        overflowed = ~np.isfinite(cast) & np.isfinite(X)
        if overflowed.any():
            row = int(np.argwhere(overflowed)[0][0])
            raise ValueError(
                f"{data_path} holds finite values beyond the range of the model's dtype "
                f"{net.dtype} (first in row {row}; {net.dtype} holds magnitudes up to "
                f"{float(np.finfo(net.dtype).max):.6g})"
            )
        X = cast
    if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
        row = int(np.argwhere(~np.isfinite(X))[0][0])
        raise ValueError(
            f"{data_path} holds NaN or infinite values in the model's dtype {X.dtype} "
            f"(first in row {row})"
        )
    return layer_report(
        net, X, saturation_tol=saturation_tol, backend=backend, names=spec.names, notes=spec.notes
    )


# The array an .npz file of several arrays is read from.
NPZ_KEY = "X"


def _read_data(data_path: str | Path) -> np.ndarray[Any, Any]:
    """The probe inputs of a .npy file, or of an .npz file's one array (or its array
    ``NPZ_KEY``), checked to be real numbers of at most 64 bits."""
    path = Path(data_path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {str(data_path)!r} is not a file")
    with path.open("rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and magic[:2] != b"PK":  # .npy, or a zip archive (.npz)
        # np.load would try pickle here and say the file holds pickled data, whatever it is
        raise ValueError(
            f"--data {str(data_path)!r} is neither a .npy nor an .npz file (numpy.save or "
            "numpy.savez writes them)"
        )
    keys: list[str] = []
    X: np.ndarray[Any, Any] | None = None
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                key = keys[0] if len(keys) == 1 else NPZ_KEY if NPZ_KEY in keys else None
                if key is not None:
                    X = loaded[key]
        else:
            X = np.asarray(loaded)
    except (ValueError, EOFError, OSError) as exc:  # numpy's errors for a foreign file
        raise ValueError(
            f"--data {str(data_path)!r}: numpy cannot read it without pickle ({exc})"
        ) from exc
    if X is None:
        listed = f" ({', '.join(map(repr, keys))})" if keys else ""
        raise ValueError(
            f"--data {str(data_path)!r} holds {len(keys)} arrays{listed}; expected one "
            f"array, or one named {NPZ_KEY!r}"
        )
    if X.dtype.kind not in "biuf" or (X.dtype.kind == "f" and X.dtype.itemsize > 8):
        # The library's dtype policy (jacgeom._validation): longdouble would be rounded to
        # float64 or float32 without a word, complex and text have no real meaning here.
        raise TypeError(
            f"{data_path} holds {X.dtype} values; expected a real float16, float32, float64, "
            "integer or bool array (jacgeom computes in float32 or float64)"
        )
    return X


def plot_report(report: LayerReport, path: str | Path) -> None:
    """Save a figure of the report (:func:`_report_figure`) to ``path`` (.png, .pdf, .svg)."""
    from .plot import _pyplot

    plt = _pyplot()
    fig = _report_figure(report)
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)


# Where a median or quantile that is infinite sits, in axes coordinates (0 bottom, 1 top).
_EDGE = {1.0: 0.97, -1.0: 0.03}


def _report_figure(report: LayerReport) -> Any:
    """The report as a figure: unit fractions, median ranks, and the log-volume and log
    condition number (natural logs) as medians with 5-95% bars over all samples.

    A sample whose exact rank is lost has log-volume -inf and log condition number +inf
    and counts in the quantiles; an infinite median is a marker on the panel's bottom or top
    edge, labelled, and an infinite end of a bar a dotted line to that edge. Nothing
    infinite is drawn as a value. ``fig.jacgeom_data[quantity]`` holds the arrays drawn
    ("median", "q05", "q95", "lost", per layer) of "log_volume" and "log_condition".
    """
    from .plot import _pyplot

    plt = _pyplot()
    layers = report.layers
    x = np.arange(len(layers), dtype=float)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.9), layout="constrained")
    axes[0].bar(x - 0.2, [g.dead_fraction for g in layers], 0.4, label="dead units")
    axes[0].bar(x + 0.2, [g.saturated_fraction for g in layers], 0.4, label="saturated")
    top = max([g.dead_fraction for g in layers] + [g.saturated_fraction for g in layers] + [0.0])
    axes[0].set(
        title="unit fractions",
        ylabel="fraction of units / of (sample, unit) pairs",
        ylim=(0.0, max(0.05, 1.3 * top)),  # room for the legend above the bars
    )
    full = np.array([max(g.full_rank, 1) for g in layers], dtype=float)
    axes[1].bar(x - 0.2, np.array([g.exact_rank.median for g in layers]) / full, 0.4, label="exact")
    axes[1].bar(
        x + 0.2, np.array([g.numerical_rank.median for g in layers]) / full, 0.4, label="float64"
    )
    axes[1].set(title="median rank / min(n_l, n_l-1)", ylabel="rank / full rank", ylim=(0, 1.3))
    data: dict[str, dict[str, Any]] = {}
    lost = np.array([g.rank_lost_samples for g in layers])
    for ax, quantity, title in (
        (axes[2], "log_volume", "log-volume"),
        (axes[3], "log_condition", "log condition number"),
    ):
        dists = [getattr(g, quantity) for g in layers]
        d = {k: np.array([getattr(t, k) for t in dists]) for k in ("median", "q05", "q95")}
        d["lost"] = lost
        data[quantity] = d
        _draw_quantiles(ax, x, d["median"], d["q05"], d["q95"], lost, report.samples)
        ax.set(title=f"{title}: median, 5-95%", ylabel=f"{title} (natural log)")
    ticks = [
        f"{g.layer}\n{g.rank_lost_samples} lost" if g.rank_lost_samples else str(g.layer)
        for g in layers
    ]
    for ax in axes:
        ax.set_xticks(x, ticks)
        ax.set_xlabel("layer (samples with exact rank lost)")
        ax.margins(x=0.15)
    axes[0].legend(fontsize=8, loc="upper center", ncols=2)
    axes[1].legend(fontsize=8, loc="upper center", ncols=2)
    fig.suptitle(
        f"Per-layer geometry over {report.samples} probe samples: medians and 5-95% "
        "quantiles of all samples. A sample with exact rank lost has log-volume -inf and log "
        "condition number inf:\nan infinite median is a labelled triangle on the panel's "
        "edge, an infinite 5% or 95% quantile a dotted bar to that edge",
        fontsize=9,
    )
    fig.jacgeom_data = data
    return fig


def _draw_quantiles(
    ax: Any, x: Any, median: Any, lo: Any, hi: Any, lost: Any, samples: int
) -> None:
    """Medians with their 5-95% bars: finite values in data coordinates; an infinite median
    a labelled marker on the edge of its sign, an infinite bar end a dotted line to it."""
    from matplotlib.transforms import blended_transform_factory

    edge = blended_transform_factory(ax.transData, ax.transAxes)
    finite = np.isfinite(median)
    if finite.any():
        # a bar end that is infinite is drawn below as a dotted line, not as a value
        m = median[finite]
        low = np.where(np.isfinite(lo[finite]), lo[finite], m)
        high = np.where(np.isfinite(hi[finite]), hi[finite], m)
        ax.errorbar(
            x[finite],
            m,
            yerr=[m - low, high - m],
            fmt="o",
            color="C0",
            capsize=3,
        )
    for xi, mi, li, hi_i, k in zip(x, median, lo, hi, lost, strict=True):
        for end in (li, hi_i):
            if math.isinf(end) and math.isfinite(mi):
                ax.annotate(
                    "",
                    xy=(xi, _EDGE[math.copysign(1.0, end)]),
                    xycoords=edge,
                    xytext=(xi, mi),
                    textcoords="data",
                    arrowprops={"arrowstyle": "-", "ls": ":", "color": "C0"},
                )
        if math.isinf(mi):
            sign = math.copysign(1.0, mi)
            finite_end = li if sign > 0 else hi_i
            if math.isfinite(finite_end):
                # the bar from its finite end to the edge where the median is
                ax.plot([xi], [finite_end], marker="_", ms=10, color="C0")
                ax.annotate(
                    "",
                    xy=(xi, _EDGE[sign]),
                    xycoords=edge,
                    xytext=(xi, finite_end),
                    textcoords="data",
                    arrowprops={"arrowstyle": "-", "ls": ":", "color": "C0"},
                )
            ax.plot(
                [xi],
                [_EDGE[sign]],
                transform=edge,
                marker="^" if sign > 0 else "v",
                ms=9,
                color="C3",
                clip_on=False,
                ls="none",
            )
            last = xi == x[-1] and len(x) > 1  # its label to the left, inside the panel
            ax.annotate(
                f"{'inf' if sign > 0 else '-inf'}: exact rank lost\n({k} of {samples} samples)",
                (xi, _EDGE[sign]),
                xycoords=edge,
                xytext=(-7 if last else 7, -4 if sign > 0 else 4),
                textcoords="offset points",
                ha="right" if last else "left",
                va="top" if sign > 0 else "bottom",
                fontsize=7,
                color="C3",
            )
    values = np.concatenate([median, lo, hi])
    shown = values[np.isfinite(values)]
    if not shown.size:
        ax.set(ylim=(0.0, 1.0), yticks=[])  # nothing finite: no scale to show
        return
    # Room between the finite values and an edge that holds an infinite one, so that its
    # marker and dotted bar are not drawn over (or inside) the finite range.
    low, high = float(shown.min()), float(shown.max())
    span = high - low if high > low else max(1.0, abs(high))
    below = 0.25 if np.isneginf(values).any() else 0.08
    above = 0.25 if np.isposinf(values).any() else 0.08
    ax.set_ylim(low - below * span, high + above * span)


def _check_plot(path: str | None) -> None:
    """ValueError where ``--plot`` cannot be written (see jacgeom.plot._check_figure_path)."""
    if path:
        from .plot import _check_figure_path

        _check_figure_path("--plot", path)


def main(args: argparse.Namespace) -> int:
    """Run ``jacgeom analyze`` with parsed arguments; returns the exit status."""
    try:
        _check_plot(args.plot)  # before the work, not after the table is printed
        report = analyze(
            args.model, args.data, args.dtype, args.saturation_tol, args.backend, args.arch
        )
    except (
        UnsupportedModuleError,
        ValueError,
        TypeError,  # data of a dtype the library refuses
        FileNotFoundError,
        RuntimeError,
        FloatingPointError,  # finite data whose forward pass overflows the model's dtype
    ) as exc:
        print(f"jacgeom analyze: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json(indent=1))
    else:
        print(report.table())
    if args.plot:
        try:
            plot_report(report, args.plot)
        except OSError as exc:  # checked above; the directory can still change meanwhile
            print(f"jacgeom analyze: error: --plot {args.plot}: {exc}", file=sys.stderr)
            return 2
    return 0


def _standalone(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jacgeom analyze", description=_DESCRIPTION)
    _arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_standalone())
