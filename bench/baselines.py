"""What every numpy baseline shares: phi' as a numpy user writes it, and the BLAS pin.

The baselines use the expression a numpy user writes, not jacgeom's activation registry:
the registry's gelu' is exact but evaluates math.erfc element by element (about 0.1 s per
million entries), which would handicap the baselines. Rounding differences against the
reference are far inside the check tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.special

import jacgeom

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _relu_derivative(z: np.ndarray) -> np.ndarray:
    return (z > 0).astype(z.dtype)


def _gelu_derivative(z: np.ndarray) -> np.ndarray:
    return scipy.special.ndtr(z) + z * np.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _tanh_derivative(z: np.ndarray) -> np.ndarray:
    return 1 - np.tanh(z) ** 2


NUMPY_DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu_derivative,
    "gelu": _gelu_derivative,
    "tanh": _tanh_derivative,
}


def numpy_derivative(activation: str) -> Callable[[np.ndarray], np.ndarray]:
    """phi' as plain numpy; other activations fall back to jacgeom's registry."""
    return NUMPY_DERIVATIVES.get(activation) or jacgeom.activation(activation).derivative


# LAPACK on stacks of small matrices (numpy's svd, matrix_rank over samples or masks) runs
# with numpy's BLAS on one thread: at these sizes gesdd's BLAS-2 calls gain nothing from a
# second thread and lose to the hand-over (4096 SVDs of 256 x 256: 19.3 s on one thread,
# 28.9 s on two; the network loop's rank 0.58 s on one, 0.59-1.3 s on two, 2.4 s beside one
# busy thread). One thread makes these baselines both steady and their fastest; batched
# matrix products keep numpy's threads.
def one_blas_thread(run: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    # jacgeom's own pin: one thread lowers and restores the count (OpenBLAS ignores a count
    # restored from a thread other than the one that lowered it, and the main thread's
    # threadpool_limits left later rows of a full run on one thread).
    from jacgeom import _backends

    def pinned() -> np.ndarray:
        with _backends.single_threaded_blas():
            return run()

    return pinned
