"""Which backends exist in this process and how ``backend="auto"`` resolves.

- ``"cpp"``: the compiled extension jacgeom._core (C++ through pybind11), calling scipy's
  BLAS/LAPACK through the function pointers of scipy.linalg.cython_blas / cython_lapack.
- ``"numba"``: the Numba kernels in jacgeom._numba.
- ``"numpy"``: the readable reference in jacgeom.reference.

``"auto"`` picks the first available of cpp, numba, numpy. If the extension cannot be
imported, jacgeom still works on the other two and warns once, at import, with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

BACKEND_NAMES = ("auto", "cpp", "numba", "numpy")

core: ModuleType | None
core_error: str | None = None
try:
    from scipy.linalg import cython_blas, cython_lapack

    core = importlib.import_module("jacgeom._core")
    core.register_lapack(cython_blas.__pyx_capi__, cython_lapack.__pyx_capi__)
except Exception as exc:  # noqa: BLE001 - any failure means "no C++ backend", with the reason
    core = None
    core_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"jacgeom's C++ backend is unavailable ({core_error}); "
        "the numba and numpy backends still work. Reinstall with `pip install .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )

numba_kernels: ModuleType | None
numba_error: str | None = None
try:
    from . import _numba as numba_kernels
except Exception as exc:  # noqa: BLE001
    numba_kernels = None
    numba_error = f"{type(exc).__name__}: {exc}"


def backends() -> list[str]:
    """The backends available in this process, fastest first.

    Returns
    -------
    list of str
        A subset of ``["cpp", "numba", "numpy"]``; "numpy" is always there.

    Examples
    --------
    >>> "numpy" in backends()
    True
    """
    out = []
    if core is not None:
        out.append("cpp")
    if numba_kernels is not None:
        out.append("numba")
    out.append("numpy")
    return out


def resolve(backend: Any) -> str:
    """Validate a backend name and resolve "auto"."""
    if not isinstance(backend, str) or backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r}; valid choices: {', '.join(BACKEND_NAMES)}")
    available = backends()
    if backend == "auto":
        return available[0]
    if backend not in available:
        reason = core_error if backend == "cpp" else numba_error
        raise ValueError(
            f"backend {backend!r} is not available in this installation ({reason}); "
            f"available: {', '.join(available)}"
        )
    return backend


# ---------------------------------------------------------------------------------------
# Threads

_num_threads = 1


def set_num_threads(n: int) -> None:
    """Set how many threads the compiled kernels use (C++ and Numba).

    Parameters
    ----------
    n : int
        At least 1. The Numba backend is capped at numba's NUMBA_NUM_THREADS.

    Notes
    -----
    The environment variable JACGEOM_NUM_THREADS sets the initial value (default: all
    cores). Results do not depend on the number of threads beyond rounding: work is split
    into contiguous blocks of samples, each computed the same way.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _num_threads = n
    if core is not None:
        core.set_num_threads(n)
    if numba_kernels is not None:
        import numba

        numba.set_num_threads(min(n, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


def get_num_threads() -> int:
    """The thread count set by :func:`set_num_threads` (or JACGEOM_NUM_THREADS)."""
    return _num_threads


def _initial_threads() -> int:
    raw = os.environ.get("JACGEOM_NUM_THREADS")
    if raw is None:
        return max(1, os.cpu_count() or 1)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        warnings.warn(
            f"JACGEOM_NUM_THREADS={raw!r} is not a positive integer; using all cores",
            RuntimeWarning,
            stacklevel=2,
        )
        return max(1, os.cpu_count() or 1)
    return value


set_num_threads(_initial_threads())


# Kernels that parallelise over samples call LAPACK on one small matrix per sample; OpenBLAS
# threading inside each call would oversubscribe the cores, so scipy's BLAS is pinned to one
# thread while kernels run (a threaded OpenBLAS also runs the calls of concurrent callers one
# at a time). The pin is reference-counted across Python threads and lifted only after
# _RESTORE_DELAY seconds without a kernel running: changing OpenBLAS's thread count while
# another thread is inside BLAS made two threads calling masked_rank 1.6x slower than one
# (bench/gil_release.py), and back-to-back calls then pay for no change at all.
_RESTORE_DELAY = 0.05
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
_blas_controller: Any = None
_blas_timer: threading.Timer | None = None


def _controller() -> Any:
    # Scanning the loaded libraries is slow (milliseconds); do it once per process.
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Pin scipy's BLAS to one thread for the duration (restored shortly after the last
    kernel of any thread returns)."""
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_limiter is None:
            _blas_limiter = _controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _schedule_restore()


def _schedule_restore() -> None:
    # Called with _blas_lock held.
    global _blas_timer
    if _blas_timer is None:
        _blas_timer = threading.Timer(_RESTORE_DELAY, _restore_if_idle)
        _blas_timer.daemon = True
        _blas_timer.start()


def _restore_if_idle() -> None:
    global _blas_limiter, _blas_timer
    with _blas_lock:
        _blas_timer = None
        if _blas_users == 0 and _blas_limiter is not None:
            _blas_limiter.restore_original_limits()
            _blas_limiter = None


def _reset_after_fork() -> None:
    # A forked child has none of the parent's threads (no kernel running, no timer): lift a
    # pin it inherited at once.
    global _blas_lock, _blas_users, _blas_timer, _blas_limiter
    _blas_lock = threading.Lock()
    _blas_users = 0
    _blas_timer = None
    if _blas_limiter is not None:
        _blas_limiter.restore_original_limits()
        _blas_limiter = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
