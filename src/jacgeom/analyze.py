"""``jacgeom analyze MODEL --data X.npy``: the per-layer geometry of a saved torch model.

MODEL is a TorchScript file (``torch.jit.save``) or a whole module saved with
``torch.save(module, path)``, of a kind :meth:`jacgeom.Network.from_torch` reads. X.npy holds
the probe inputs, (B, n_0). The report (:meth:`jacgeom.Network.layer_report`) is printed as
a table, or as JSON with ``--json``; ``--plot PATH`` saves a figure with a panel per
quantity and a bar per layer.

This module exposes ``add_parser(subparsers)`` and ``main(args) -> int`` for jacgeom's
command line; ``python -m jacgeom.analyze MODEL --data X.npy`` runs it alone.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .interop import UnsupportedModuleError, spec_from_torch
from .network import Network
from .report import DEFAULT_SATURATION_TOL, LayerReport, layer_report
from .typing import BackendName

__all__ = ["add_parser", "load_torch_model", "main"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "analyze",
        help="per-layer geometry of a saved torch model on probe inputs",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    _arguments(p)
    p.set_defaults(func=main)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="TorchScript file or torch.save(module) file")
    p.add_argument("--data", required=True, help="probe inputs X, a .npy file of shape (B, n_0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="PATH", help="save a figure of the report (matplotlib)")
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
    model = load(str(path), map_location="cpu", weights_only=False)
    if isinstance(model, dict):
        raise ValueError(
            f"{path} holds a dict (a state_dict?), which has no architecture; save the module "
            "itself (torch.save(module, path) or torch.jit.save(torch.jit.script(module), path))"
        )
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def analyze(
    model_path: str | Path,
    data_path: str | Path,
    dtype: str | None = None,
    saturation_tol: float = DEFAULT_SATURATION_TOL,
    backend: BackendName = "auto",
) -> LayerReport:
    """The :class:`jacgeom.report.LayerReport` of a saved model on the inputs in a .npy file."""
    spec = spec_from_torch(load_torch_model(model_path))
    net = Network(**spec.network_kwargs(dtype))
    X = np.load(data_path, allow_pickle=False)
    if dtype is None and X.dtype != net.dtype and X.dtype.kind == "f":
        X = X.astype(net.dtype)
    return layer_report(
        net, X, saturation_tol=saturation_tol, backend=backend, names=spec.names, notes=spec.notes
    )


def plot_report(report: LayerReport, path: str | Path) -> None:
    """A figure of the report: one panel per quantity, one bar per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report.layers
    x = np.arange(len(layers))
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    axes[0].bar(x - 0.2, [g.dead_fraction for g in layers], 0.4, label="dead units")
    axes[0].bar(x + 0.2, [g.saturated_fraction for g in layers], 0.4, label="saturated")
    axes[0].set_title("unit fractions")
    full = np.array([max(g.full_rank, 1) for g in layers], dtype=float)
    axes[1].bar(x - 0.2, [g.exact_rank.median for g in layers] / full, 0.4, label="exact")
    axes[1].bar(x + 0.2, [g.numerical_rank.median for g in layers] / full, 0.4, label="float64")
    axes[1].set_title("median rank / min(n_l, n_l-1)")
    axes[2].bar(x, [g.log_volume.median for g in layers])
    axes[2].set_title("median log-volume (natural, finite)")
    axes[3].errorbar(
        x,
        [g.log_condition.median for g in layers],
        yerr=[
            [g.log_condition.median - g.log_condition.q05 for g in layers],
            [g.log_condition.q95 - g.log_condition.median for g in layers],
        ],
        fmt="o",
    )
    axes[3].set_title("log condition (natural): median, 5-95%")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xlabel("layer")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    """Run ``jacgeom analyze`` with parsed arguments; returns the exit status."""
    try:
        report = analyze(args.model, args.data, args.dtype, args.saturation_tol, args.backend)
    except (UnsupportedModuleError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"jacgeom analyze: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json(indent=1))
    else:
        print(report.table())
    if args.plot:
        plot_report(report, args.plot)
    return 0


def _standalone(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jacgeom analyze", description=__doc__)
    _arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_standalone())
