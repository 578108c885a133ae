"""Parallel numba kernels with a serial twin.

numba runs ``parallel=True`` kernels on GNU OpenMP here, which is not fork-safe: a child
forked after the parent's pool started dies in its first parallel region. Such a child
(jacgeom._backends sets ``serial`` at fork) runs every kernel's twin compiled without
``parallel``, where ``prange`` is ``range``: the same per-sample code in the same order,
so the same results, on one thread.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba

serial = False


class ParallelKernel:
    """A ``numba.njit(parallel=True, **options)`` kernel that runs its serial twin, compiled
    on first use, where :data:`serial` is set."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.parallel = numba.njit(parallel=True, **options)(fn)
        self._fn = fn
        self._options = options
        self._serial: Any = None

    def __call__(self, *args: Any) -> Any:
        if not serial:
            return self.parallel(*args)
        if self._serial is None:
            # A copy under its own name: numba's on-disk cache is keyed by the function's
            # qualified name and line, not by the parallel flag.
            fn = self._fn
            twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
            twin.__qualname__ = fn.__qualname__ + "_serial"
            twin.__module__ = fn.__module__
            self._serial = numba.njit(**self._options)(twin)
        return self._serial(*args)


def parallel_njit(**options: Any) -> Callable[[Callable[..., Any]], ParallelKernel]:
    """``numba.njit(parallel=True, **options)`` with a serial twin (:class:`ParallelKernel`)."""

    def wrap(fn: Callable[..., Any]) -> ParallelKernel:
        return ParallelKernel(fn, options)

    return wrap
