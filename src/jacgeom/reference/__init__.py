"""The readable numpy implementation of every public kernel: same names, same signatures.

This package imports numpy (and the numpy-only activation registry) and nothing of the fast
code. It is the truth the Numba and C++ backends are tested and benchmarked against, and it
is what ``backend="numpy"`` runs. It assumes its inputs were validated by the public API.
"""

from .layer import (
    layer_derivatives,
    layer_jacobian,
    layer_singular_values,
    log_volume,
    preactivations,
    pullback_metric,
)
from .rank import active_rank, jacobian_rank, masked_rank

__all__ = [
    "active_rank",
    "jacobian_rank",
    "masked_rank",
    "layer_derivatives",
    "layer_jacobian",
    "layer_singular_values",
    "log_volume",
    "preactivations",
    "pullback_metric",
]
