"""Numba kernels: the same kernels as csrc/include/jacgeom/, compiled with numba.njit.

Every kernel takes C-contiguous arrays of one float dtype (validated by the public API) and
parallelises over samples with prange; LAPACK calls go through numba's np.linalg, which uses
scipy's LAPACK.
"""

from .graded import graded_log_singular_values, graded_qr_step_batched
from .layer import (
    batched_singular_values,
    derivatives,
    derivatives_custom,
    jacobian,
    log_volume,
    pullback_metric,
    singular_values,
)
from .rank import masked_rank
from .sampling import place_live_rows

__all__ = [
    "batched_singular_values",
    "derivatives",
    "derivatives_custom",
    "graded_log_singular_values",
    "graded_qr_step_batched",
    "jacobian",
    "log_volume",
    "masked_rank",
    "place_live_rows",
    "pullback_metric",
    "singular_values",
]
