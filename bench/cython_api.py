"""The C-level API's reason to exist (issue 23): 10^6 calls of the 16 x 16 masked rank, one
mask per call, from compiled loops against the Python loops a user would write.

    python bench/cython_api.py [--calls 1000000] [--python-calls 20000] [--repeats 3]

Rows, all on one core (jacgeom.set_num_threads(1)), one W (16 x 16, Gaussian), 4096
random masks (each unit kept with probability 1/2, as a relu layer keeps them) cycled:

- Cython, C-level API: a nogil loop of ``dmasked_rank`` calls in an extension compiled here
  from source (cimport jacgeom.cython_kernels), without and with the row Gram W W^T;
- numba, C-level API: an @njit loop calling the same function through __pyx_capi__;
- Python API: ``jacgeom.masked_rank(W, mask)`` per mask;
- numpy: ``numpy.linalg.matrix_rank(W[mask])`` per mask;
- the batched Python API on all masks at once, for reference (it deduplicates the masks,
  so it computes at most 4096 ranks: not a per-call figure).

The compiled loops run all --calls calls; the two Python loops run --python-calls calls and
are scaled to --calls (stated in the table). Per call = total / calls. The C-level API's
overhead is measured on an empty mask (rank 0 after the argument checks: a call through
the capsule's pointer and nothing else) and reported per call. Every loop's ranks are
asserted equal to the Python API's on the masks of the Python loop. Medians of --repeats.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numba
import numpy as np

import jacgeom
from jacgeom import cython_kernels

LOOP_PYX = textwrap.dedent(
    """
    # cython: language_level=3, boundscheck=False, wraparound=False
    from libc.math cimport NAN
    from jacgeom.cython_kernels cimport dmasked_rank, dmasked_rank_workspace
    import numpy as np

    def rank_loop(const double[:, ::1] W, const unsigned char[:, ::1] masks, Py_ssize_t calls,
                  Py_ssize_t[::1] out, const double[:, ::1] gram=None):
        cdef Py_ssize_t m = W.shape[0], n = W.shape[1], U = masks.shape[0], i, u = 0, r
        cdef Py_ssize_t lwork = dmasked_rank_workspace(m, n), total = 0
        cdef double[::1] work = np.empty(lwork)
        cdef const double* g = NULL if gram is None else &gram[0, 0]
        with nogil:
            for i in range(calls):
                r = dmasked_rank(&W[0, 0], m, n, n, 1, &masks[u, 0], 1, NAN, NAN, g,
                                 &work[0], lwork)
                if i < U:
                    out[i] = r
                total += r
                u += 1
                if u == U:
                    u = 0
        return total
    """
)

SETUP = (
    "from Cython.Build import cythonize\nfrom setuptools import setup\n"
    "setup(ext_modules=cythonize('jg_bench_loop.pyx', quiet=True))\n"
)


def build_cython_loop(folder: Path) -> Any:
    """The Cython loop, compiled from source as a downstream library would compile it."""
    (folder / "jg_bench_loop.pyx").write_text(LOOP_PYX)
    (folder / "setup.py").write_text(SETUP)
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    sys.path.insert(0, str(folder))
    return importlib.import_module("jg_bench_loop")


def numba_loop() -> Callable[..., int]:
    rank = cython_kernels.ctypes_function("dmasked_rank")
    lwork = cython_kernels.workspace_size("masked_rank", 16, 16)

    @numba.njit(nogil=True)
    def loop(W: np.ndarray, masks: np.ndarray, calls: int, out: np.ndarray, gram: int) -> int:
        m, n = W.shape
        U = masks.shape[0]
        work = np.empty(lwork)
        total = 0
        u = 0
        for i in range(calls):
            r = rank(
                W.ctypes.data,
                m,
                n,
                n,
                1,
                masks[u].ctypes.data,
                1,
                np.nan,
                np.nan,
                gram,
                work.ctypes.data,
                work.size,
            )
            if i < U:
                out[i] = r
            total += r
            u += 1
            if u == U:
                u = 0
        return total

    return loop


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--python-calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise SystemExit("needs a C compiler for the downstream Cython loop")

    rng = np.random.default_rng(23)
    W = rng.standard_normal((16, 16))
    masks = (rng.random((4096, 16)) < 0.5).astype(np.uint8)
    bool_masks = masks.astype(bool)
    gram = W @ W.T
    calls, pcalls = args.calls, min(args.python_calls, args.calls)
    few = bool_masks[np.arange(pcalls) % len(masks)]

    before = jacgeom.get_num_threads()
    jacgeom.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cy = build_cython_loop(Path(tmp))
            nb = numba_loop()
            empty = np.zeros((1, 16), np.uint8)
            out = np.empty(len(masks), np.intp)
            out_nb = np.empty(len(masks), np.int64)
            nb(W, masks, 10, out_nb, 0)  # compile outside the timing

            # The answers first: every loop against the Python API on the Python loop's masks.
            expected = np.array([jacgeom.masked_rank(W, m) for m in few])
            cy.rank_loop(W, masks, len(masks), out)
            unique = min(pcalls, len(masks))
            np.testing.assert_array_equal(out[:unique], expected[:unique])
            cy.rank_loop(W, masks, len(masks), out, gram)
            np.testing.assert_array_equal(out[:unique], expected[:unique])
            nb(W, masks, len(masks), out_nb, 0)
            np.testing.assert_array_equal(out_nb[:unique], expected[:unique])
            numpy_ranks = np.array([np.linalg.matrix_rank(W[m]) for m in few])
            np.testing.assert_array_equal(numpy_ranks, expected)

            rows: list[tuple[str, float, int]] = []  # (label, seconds for `calls`, timed)
            t = median_seconds(lambda: cy.rank_loop(W, masks, calls, out), args.repeats)
            rows.append(("Cython, C-level API (syrk certificate)", t, calls))
            t = median_seconds(lambda: cy.rank_loop(W, masks, calls, out, gram), args.repeats)
            rows.append(("Cython, C-level API (row Gram given)", t, calls))
            t = median_seconds(lambda: nb(W, masks, calls, out_nb, gram.ctypes.data), args.repeats)
            rows.append(("numba, C-level API (row Gram given)", t, calls))
            t = median_seconds(lambda: cy.rank_loop(W, empty, calls, out), args.repeats)
            overhead = t / calls
            t = median_seconds(lambda: [jacgeom.masked_rank(W, m) for m in few], args.repeats)
            rows.append(("Python API, jacgeom.masked_rank per mask", t * calls / pcalls, pcalls))
            t = median_seconds(lambda: [np.linalg.matrix_rank(W[m]) for m in few], args.repeats)
            rows.append(("numpy.linalg.matrix_rank(W[mask]) per mask", t * calls / pcalls, pcalls))
            all_masks = bool_masks[np.arange(calls) % len(masks)]
            t = median_seconds(lambda: jacgeom.masked_rank(W, all_masks), args.repeats)
            rows.append(("batched jacgeom.masked_rank, all masks at once (deduplicated)", t, calls))
    finally:
        jacgeom.set_num_threads(before)

    python_api = rows[3][1]
    print(f"16 x 16 masked rank, {calls:,} calls, one thread")
    for line in harness.machine_lines():
        print(f"  {line}")
    print()
    print("| loop | calls timed | total for 10^6 calls (s) | per call | Python API / this |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, timed in rows:
        per = seconds / calls
        print(
            f"| {label} | {timed:,} | {seconds * 1e6 / calls:.3f} | {per * 1e9:,.0f} ns | "
            f"{python_api / seconds:,.1f} |"
        )
    print()
    print(f"C-level API overhead per call (empty mask, Cython loop): {overhead * 1e9:.1f} ns")


if __name__ == "__main__":
    main()
