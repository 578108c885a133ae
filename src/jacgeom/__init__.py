"""jacgeom: what pointwise activations do to the geometry of neural networks.

A layer F(x) = phi(W x + b) has Jacobian D_phi(z) W with D_phi = diag(phi'(z)). jacgeom
computes it and what follows from it (pullback metrics, spectra, volumes, ranks) exactly
and fast, for many samples at once, on three backends: C++ ("cpp"), Numba ("numba") and the
readable numpy reference ("numpy").
"""

# First of all: Ctrl-C while the imports below run ends the command line with one line
# instead of a traceback (jacgeom._startup; a program importing jacgeom is not affected).
from . import _startup  # noqa: F401  # isort: skip

from importlib import metadata as _metadata
from pathlib import Path as _Path

from ._backends import backends, get_num_threads, set_num_threads
from ._results import set_result_cache
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
from .typing import ActivationName, BackendName

try:  # one version, pyproject.toml's [project] version, as installed
    __version__ = _metadata.version("jacgeom")
except _metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"


def get_include() -> str:
    """The folder of jacgeom's C++ headers, for compiling against the C-level API.

    Returns
    -------
    str
        A folder holding ``jacgeom/capi.hpp`` and the kernels' other headers (pure C++,
        no Python headers): pass it as an include directory. Cython code needs no include
        directory to ``cimport jacgeom.cython_kernels``; the ``.pxd`` is found on sys.path.

    Notes
    -----
    An installed wheel carries the headers in ``jacgeom/include``; an editable install of a
    source checkout reads them from ``csrc/include``.

    Examples
    --------
    >>> import os, jacgeom
    >>> os.path.isfile(os.path.join(jacgeom.get_include(), "jacgeom", "capi.hpp"))
    True
    """
    here = _Path(__file__).resolve().parent
    installed = here / "include"
    if (installed / "jacgeom" / "capi.hpp").is_file():
        return str(installed)
    return str(here.parent.parent / "csrc" / "include")


__all__ = [
    "Activation",
    "ActivationName",
    "BackendName",
    "HomeomorphismReport",
    "KernelLayer",
    "Network",
    "activation",
    "active_rank",
    "activation_names",
    "backends",
    "get_include",
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
    "set_result_cache",
]
