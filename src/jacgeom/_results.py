"""Reused memory for the largest results (the end-to-end Jacobians of ``Network.jacobian``).

A fresh array of tens or hundreds of megabytes costs the operating system's zeroing of
every page on its first write, and on a virtual machine that backs memory lazily a
fresh array's pages can cost several times the kernel's own time (docs/benchmarks.md,
"benchmarks:result-cache"). So a result of at least ``MIN_BYTES`` is a view of a buffer
that jacgeom keeps: once the caller has dropped every array that refers to it, the next
result of a fitting size is written into the same, already mapped, memory. The buffers
held in all are bounded by :func:`set_result_cache` (default ``DEFAULT_LIMIT``).

A buffer is free when nothing but the cache refers to it: every numpy view, slice and
reshape of a result holds a reference to the buffer (numpy's ``base``), and so does any
object that borrows its memory through the buffer protocol, so the reference count says
whether some array still uses it.
"""

from __future__ import annotations

import math
import operator
import os
import sys
import threading
from typing import Any

import numpy as np

# Below this size a fresh array costs little next to the work that fills it, and malloc
# reuses such blocks itself.
MIN_BYTES = 1 << 24

DEFAULT_LIMIT = 1 << 30

_lock = threading.Lock()
_buffers: list[np.ndarray] = []
_limit = DEFAULT_LIMIT


def _new_lock() -> None:
    # A child forked while another thread held the lock would wait for it forever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def _free(i: int) -> bool:
    # The list's reference and getrefcount's argument: nobody else holds the buffer.
    return sys.getrefcount(_buffers[i]) == 2


def _drop_free(keep: int) -> None:
    """Forget free buffers, oldest first, until those held total at most ``keep`` bytes."""
    i = 0
    while i < len(_buffers) and sum(b.nbytes for b in _buffers) > keep:
        if _free(i):
            del _buffers[i]
        else:
            i += 1


def set_result_cache(max_bytes: int) -> int:
    """Bound the memory jacgeom keeps for reuse by its largest results.

    ``Network.jacobian`` returns results of 16 MiB and more as views of buffers that
    jacgeom keeps, and writes the next result of a fitting size into a buffer no array
    refers to any more, instead of a fresh array whose every page the operating system
    must first zero. The buffers held in all stay within ``max_bytes``; 0 keeps none
    (every result a fresh array) and releases what is held.

    Parameters
    ----------
    max_bytes : int
        At least 0 (any integer type). Default 1 GiB.

    Returns
    -------
    int
        The previous bound.

    Notes
    -----
    A result so made is an ordinary writeable, C-contiguous array whose ``base`` is the
    kept buffer (``flags.owndata`` is False, so ``ndarray.resize`` refuses it). A buffer
    is reused only once nothing refers to it: no view, slice or reshape of the result,
    nor any object that borrowed its memory through the buffer protocol. A buffer that
    some array still uses stays held while it does, even beyond the bound, and is released
    by the next result after that. A result may be a view of a buffer up to twice its
    size. Code that keeps only the raw address of a result's memory (an
    ``__array_interface__`` copied by hand, a pointer held in C) after dropping every
    array that refers to it reads a later result there, where it read freed memory
    before; with a bound of 0 every result is a fresh array.

    Examples
    --------
    >>> import jacgeom
    >>> before = jacgeom.set_result_cache(0)  # every result a fresh array
    >>> jacgeom.set_result_cache(before)
    0
    """
    global _limit
    if isinstance(max_bytes, bool):
        raise TypeError("max_bytes must be an int, got bool")
    try:
        max_bytes = operator.index(max_bytes)
    except TypeError:
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}") from None
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    with _lock:
        previous, _limit = _limit, max_bytes
        _drop_free(max_bytes)
    return previous


def empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array, from a kept buffer where it is large enough
    (module docstring); the caller writes every entry."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes < MIN_BYTES or nbytes > _limit:
        if _buffers:  # buffers still in use when the bound was lowered, free by now
            with _lock:
                _drop_free(_limit)
        return np.empty(shape, dt)
    with _lock:
        best = -1
        for i in range(len(_buffers)):
            size = _buffers[i].nbytes
            # at most twice the size asked: a small result never pins a large buffer
            if nbytes <= size <= 2 * nbytes and _free(i):
                if best < 0 or size < _buffers[best].nbytes:
                    best = i
        if best < 0:
            _drop_free(_limit - nbytes)
            if sum(b.nbytes for b in _buffers) + nbytes > _limit:
                return np.empty(shape, dt)
            _buffers.append(np.empty(nbytes, np.uint8))
            best = len(_buffers) - 1
        return _buffers[best][:nbytes].view(dt).reshape(shape)
