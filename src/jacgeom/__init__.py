"""jacgeom: what pointwise activations do to the geometry of neural networks.

A layer F(x) = phi(W x + b) has Jacobian D_phi(z) W with D_phi = diag(phi'(z)). jacgeom
computes it and what follows from it (pullback metrics, spectra, volumes, ranks) exactly
and fast, for many samples at once, on three backends: C++ ("cpp"), Numba ("numba") and the
readable numpy reference ("numpy").
"""

from importlib import metadata as _metadata

from ._backends import backends, get_num_threads, set_num_threads
from .activations import Activation, activation, activation_names
from .homeomorphism import HomeomorphismReport, homeomorphism_report
from .kernel_layer import KernelLayer
from .layer import (
    layer_derivatives,
    layer_jacobian,
    layer_singular_values,
    log_volume,
    preactivations,
    pullback_metric,
)
from .network import Network
from .rank import active_rank, jacobian_rank, masked_rank

try:  # one version, pyproject.toml's [project] version, as installed
    __version__ = _metadata.version("jacgeom")
except _metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = [
    "Activation",
    "HomeomorphismReport",
    "KernelLayer",
    "Network",
    "activation",
    "active_rank",
    "activation_names",
    "backends",
    "get_num_threads",
    "homeomorphism_report",
    "jacobian_rank",
    "layer_derivatives",
    "layer_jacobian",
    "layer_singular_values",
    "log_volume",
    "masked_rank",
    "preactivations",
    "pullback_metric",
    "set_num_threads",
]
