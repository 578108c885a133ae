"""Names for type checkers: the activation and backend names, and the array types returned.

``ActivationName`` and ``BackendName`` are re-exported from :mod:`jacgeom`; the array aliases
are here for downstream annotations (``from jacgeom.typing import Float64Array``).

Examples
--------
>>> import typing, jacgeom
>>> list(typing.get_args(jacgeom.ActivationName)) == jacgeom.activation_names()
True
>>> typing.get_args(jacgeom.BackendName)
('auto', 'cpp', 'numba', 'numpy')
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ActivationName",
    "BackendName",
    "FloatArray",
    "Float32Array",
    "Float64Array",
    "IntArray",
]

#: A built-in activation's name: every entry of :func:`jacgeom.activation_names`, in its order
#: (tests/test_typing.py keeps the two equal).
ActivationName: TypeAlias = Literal[
    "identity",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "gelu",
    "gelu_tanh",
    "softplus",
    "elu",
    "silu",
]

#: What every ``backend=`` argument accepts.
BackendName: TypeAlias = Literal["auto", "cpp", "numba", "numpy"]

#: A float array whose dtype (float32 or float64) is known only at run time.
FloatArray: TypeAlias = NDArray[np.floating[Any]]
Float32Array: TypeAlias = NDArray[np.float32]
Float64Array: TypeAlias = NDArray[np.float64]
#: Ranks and counts.
IntArray: TypeAlias = NDArray[np.int64]
