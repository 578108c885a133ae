"""Which backends exist in this process and how ``backend="auto"`` resolves.

- ``"cpp"``: the compiled extension jacgeom._core (C++ through pybind11), calling scipy's
  BLAS/LAPACK through the function pointers of scipy.linalg.cython_blas / cython_lapack.
- ``"numba"``: the Numba kernels in jacgeom._numba.
- ``"numpy"``: the readable reference in jacgeom.reference.

``"auto"`` picks the first available of cpp, numba, numpy. If the extension cannot be
imported, jacgeom still works on the other two and warns once, at import, with the reason.
"""

from __future__ import annotations

import _thread
import contextlib
import operator
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal, cast

BACKEND_NAMES = ("auto", "cpp", "numba", "numpy")
# set_num_threads' ceiling: the compiled kernels start one thread per block of samples, so
# a count far beyond any machine's cores (2^31 passed pybind11's int) only risks the process.
MAX_THREADS = 4096
# What resolve() returns: a backend that runs ("auto" resolved).
ResolvedBackend = Literal["cpp", "numba", "numpy"]

# Only this module and jacgeom._dispatch touch the compiled modules (docs/architecture.md);
# the public modules reach them through jacgeom._dispatch's table.
core: ModuleType | None
core_error: str | None = None
try:
    from scipy.linalg import cython_blas, cython_lapack

    from . import _core

    _core.register_lapack(cython_blas.__pyx_capi__, cython_lapack.__pyx_capi__)
    # Load glibc's vector math library now (vecmath.hpp), not at the first gelu or tanh in
    # whatever process or thread comes first: JACGEOM_VECTOR_MATH is read at import, and a
    # child forked later finds the library loaded (no dlopen after a fork).
    _core.vector_math()
    core = _core
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


def compiled_modules() -> dict[str, ModuleType]:
    """The compiled backends loaded in this process, fastest first: {"cpp": jacgeom._core,
    "numba": jacgeom._numba}, without those that failed to load. jacgeom._dispatch binds its
    table to these; adding a backend means loading it here and one entry per kernel there."""
    loaded = {"cpp": core, "numba": numba_kernels}
    return {name: module for name, module in loaded.items() if module is not None}


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
    return [*compiled_modules(), "numpy"]


def resolve(backend: Any) -> ResolvedBackend:
    """Validate a backend name and resolve "auto"."""
    if not isinstance(backend, str) or backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r}; valid choices: {', '.join(BACKEND_NAMES)}")
    available = backends()
    if backend == "auto":
        return cast(ResolvedBackend, available[0])
    if backend not in available:
        reason = core_error if backend == "cpp" else numba_error
        raise ValueError(
            f"backend {backend!r} is not available in this installation ({reason}); "
            f"available: {', '.join(available)}"
        )
    return cast(ResolvedBackend, backend)


# ---------------------------------------------------------------------------------------
# Threads

_num_threads = 1


def set_num_threads(n: int) -> None:
    """Set how many threads the compiled kernels use (C++ and Numba).

    Parameters
    ----------
    n : int
        From 1 to MAX_THREADS (4096). The Numba backend is capped at numba's
        NUMBA_NUM_THREADS.

    Notes
    -----
    The environment variable JACGEOM_NUM_THREADS sets the initial value (default: all
    cores). Results do not depend on the number of threads beyond rounding: work is split
    into contiguous blocks of samples, each computed the same way. The numpy backend's gelu
    forward pass (SciPy's erfc, which releases the GIL) is split over as many threads.

    The C++ kernels run on threads started the first time a kernel needs them and kept,
    asleep between calls, for the rest of the process (named ``jacgeom-worker``): a larger
    ``n`` starts more, a smaller one leaves some idle, and a forked child starts its own.
    Like any thread they take the CPU affinity of the thread that started them: the first
    caller's that needed them. A kernel called from
    another Python thread while one runs gets threads of its own for that call.
    """
    global _num_threads
    try:  # ints and numpy integers; not bool, not 2.0
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n must be between 1 and {MAX_THREADS}, got {n}")
    _num_threads = n
    if core is not None:
        core.set_num_threads(n)
    # numba.set_num_threads launches numba's thread pool (GNU OpenMP here), and a process
    # forked after that launch dies in its first parallel kernel. So the count reaches numba
    # only when its pool runs already; otherwise prepare_numba applies it before the first
    # numba kernel, and importing jacgeom starts no thread pool.
    global _numba_generation
    _numba_generation += 1
    if numba_kernels is not None and _numba_pool_started() and not _numba_parallel_serial():
        _apply_numba_threads()
        _numba_applied.generation = _numba_generation


def _numba_pool_started() -> bool:
    from numba.np.ufunc import parallel

    return bool(getattr(parallel, "_is_initialized", True))


def _apply_numba_threads() -> None:
    import numba

    numba.set_num_threads(min(_num_threads, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


# numba's thread count is per thread: each thread that runs a numba kernel applies the
# count of the last set_num_threads (its generation) before its next kernel.
_numba_generation = 0
_numba_applied = threading.local()


def prepare_numba() -> None:
    """Called before every numba kernel (jacgeom._dispatch): applies the thread count in
    this thread where set_num_threads changed it since (or it was never applied here)."""
    if getattr(_numba_applied, "generation", -1) != _numba_generation:
        if not _numba_parallel_serial():
            _apply_numba_threads()
        _numba_applied.generation = _numba_generation


def _numba_parallel_serial() -> bool:
    from ._numba import _parallel

    return _parallel.serial


def _numba_after_fork_in_child() -> None:
    # A child forked after numba's GNU OpenMP pool started would die in its first parallel
    # region ("fork() called from a process already using GNU OpenMP"): it runs the serial
    # twins of the parallel kernels instead (jacgeom._numba._parallel), same results.
    if numba_kernels is None or not _numba_pool_started():
        return
    try:
        from numba.np.ufunc import omppool  # type: ignore[attr-defined]

        gnu = numba_threading_layer() == "omp" and getattr(omppool, "openmp_vendor", "") == "GNU"
    except Exception:  # noqa: BLE001 - another layer (tbb, workqueue) or vendor: fork-safe
        gnu = False
    if gnu:
        from ._numba import _parallel

        _parallel.serial = True


def numba_threading_layer() -> str:
    """The threading layer numba launched ("omp", "tbb", "workqueue"), or "" before launch."""
    import numba

    try:
        return str(numba.threading_layer())  # type: ignore[attr-defined]
    except ValueError:  # not launched yet
        return ""


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
    if value > MAX_THREADS:
        warnings.warn(
            f"JACGEOM_NUM_THREADS={raw!r} is above {MAX_THREADS}; using {MAX_THREADS}",
            RuntimeWarning,
            stacklevel=2,
        )
    return min(value, MAX_THREADS)


set_num_threads(min(_initial_threads(), MAX_THREADS))


# Kernels that parallelise over samples call LAPACK on one small matrix per sample; OpenBLAS
# threading inside each call would oversubscribe the cores, so scipy's BLAS is pinned to one
# thread while kernels run (a threaded OpenBLAS also runs the calls of concurrent callers one
# at a time). Two facts of OpenBLAS shape how:
# - changing its thread count while another thread is inside BLAS slows concurrent callers
#   (bench/gil_release.py measures it; docs/benchmarks.md): so the pin is
#   reference-counted across threads and lifted only _RESTORE_DELAY seconds after the last
#   kernel returns, and back-to-back calls change nothing;
# - raising the count back from a thread other than the one that lowered it is ignored
#   (OpenBLAS 0.3.30): so one daemon thread makes every change, both ways, and exits once
#   the pin is lifted (while it lives, counts set from other threads are ignored too).
_RESTORE_DELAY = 0.05
_blas_controller: Any = None


def _controller() -> Any:
    # Scanning the loaded libraries is slow (milliseconds); do it once per process.
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller


class _PinHold:
    """One holder of the BLAS pin; the pin counts the holders alive."""

    __slots__ = ("__weakref__",)


class _BlasPin:
    """Reference-counted pin of scipy's BLAS to one thread, applied and lifted by one thread.

    A KeyboardInterrupt can land at any bytecode of a caller, so the callers' side uses C
    primitives only (a lock entered by ``with``, a waiter lock, a SimpleQueue): Python-level
    threading code (Condition's __enter__ and wait) interrupted half-way left its lock
    taken or released by the wrong thread, and the pin stayed on for the rest of the
    process, over the caller's own numpy work too. The holders are weakly referenced
    tokens, not a count: one whose release an interrupt skipped is dropped with the frame
    that held it, and the pin thread, which polls while pinned, lifts the pin. (An
    interactive session keeps the last traceback, and with it that frame, until its next
    error; until then the pin stays on.)
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Re-entrant: a signal handler or finaliser that calls a kernel while this thread
        # is inside the bookkeeping enters again (a plain Lock deadlocked there).
        self._lock = threading.RLock()
        # Weak references without callbacks (a WeakSet drops dead entries in a Python
        # callback, which an interrupt can break off); read and changed under the lock.
        self._holds: set[weakref.ref[_PinHold]] = set()
        self._waiters: list[Any] = []  # locks held for the callers waiting for the pin
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()  # wakes the pin thread
        self._last_release = 0.0
        self._limiter: Any = None
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None

    @property
    def _users(self) -> int:
        live = {ref for ref in self._holds if ref() is not None}
        if len(live) != len(self._holds):
            self._holds = live
        return len(live)

    def acquire(self) -> _PinHold:
        hold = _PinHold()
        ref = weakref.ref(hold)
        with self._lock:
            self._holds.add(ref)
            if self._limiter is not None:
                return hold  # pinned already: nothing to wake (a wake-up costs a GIL hand-off)
            waiter = _thread.allocate_lock()
            waiter.acquire()
            self._waiters.append(waiter)
            if self._thread is None:
                self._failure = None
                thread = threading.Thread(target=self._run, name="jacgeom-blas-pin", daemon=True)
                try:
                    thread.start()
                except BaseException:
                    # refused (RuntimeError at the system's thread limit): nothing is left
                    # counted, and the next call tries again
                    self._holds.discard(ref)
                    self._waiters.remove(waiter)
                    raise
                self._thread = thread
        if self._lock._is_owned():  # type: ignore[attr-defined]
            # Entered again from within this thread's own bookkeeping (a signal handler):
            # the pin thread cannot take the lock until the outer call goes on, so this call
            # runs without waiting for the pin (its kernels on a threaded BLAS, if any).
            return hold
        try:
            self._bell.put(None)
            waiter.acquire()  # released by the pin thread once the pin is on, or has failed
        except BaseException:
            with self._lock:
                self._holds.discard(ref)
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise
        with self._lock:
            if self._limiter is not None:
                return hold
            self._holds.discard(ref)
            failure = self._failure
        raise RuntimeError(f"jacgeom could not pin the BLAS to one thread: {failure}") from failure

    def release(self, hold: _PinHold) -> None:
        # No wake-up: the pin thread polls every _RESTORE_DELAY while pinned, so a release
        # wakes no thread (on small calls, the hand-off doubled the time of a call).
        with self._lock:
            self._holds.discard(weakref.ref(hold))
            self._last_release = time.monotonic()

    def _wake_waiters(self) -> None:
        for waiter in self._waiters:
            waiter.release()
        self._waiters.clear()

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._thread is not me:
                    # Started by a call whose Thread.start() was interrupted after the OS
                    # thread began: not the pin thread. Serving too, it could lift a pin that
                    # the other thread applied, which OpenBLAS ignores (see above).
                    return
                if self._users > 0 and self._limiter is None:
                    try:
                        self._limiter = _controller().limit(limits=1, user_api="blas")
                    except Exception as exc:  # noqa: BLE001 - handed to the waiting callers
                        self._failure = exc
                        self._thread = None
                        self._wake_waiters()
                        return
                    self._wake_waiters()
                    timeout: float | None = _RESTORE_DELAY
                elif self._users == 0 and self._limiter is not None:
                    timeout = self._last_release + _RESTORE_DELAY - time.monotonic()
                    if timeout <= 0:
                        self._limiter.restore_original_limits()
                        self._limiter = None
                        # Exit: while a thread that changed OpenBLAS's thread count is
                        # alive, OpenBLAS (0.3.30, 0.3.31) ignores counts set from other
                        # threads, so a caller's own threadpool_limits would silently do
                        # nothing after jacgeom has run. The next pin starts a new thread.
                        self._thread = None
                        return
                else:
                    timeout = _RESTORE_DELAY if self._limiter is not None else None
            try:
                self._bell.get(timeout=timeout)
            except queue.Empty:
                pass

    def after_fork_in_child(self) -> None:
        # The child has none of the parent's threads: no kernel running and no pin thread.
        # It lifts an inherited pin at once, from its only thread.
        limiter = self._limiter
        self._reset()
        if limiter is not None:
            limiter.restore_original_limits()


_blas_pin = _BlasPin()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Pin scipy's BLAS to one thread for the duration (lifted shortly after the last kernel
    of any thread returns)."""
    hold = _blas_pin.acquire()
    try:
        yield
    finally:
        _blas_pin.release(hold)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_blas_pin.after_fork_in_child)
    os.register_at_fork(after_in_child=_numba_after_fork_in_child)
