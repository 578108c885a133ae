"""The C-level API's reason to exist (issue 23): 10^6 calls of the 16 x 16 masked rank, one
mask per call, and 10^5 end-to-end Jacobians of a small network, one input per call, from
compiled loops against the Python loops a user would write.

    python bench/cython_api.py [--calls 1000000] [--python-calls 20000] [--repeats 3]
                               [--network-calls 100000] [--network-python-calls 5000]

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

The network table: a tanh network of widths 16, 32, 32, 32, 8 (float64, He-scaled Gaussian
weights, biases N(0, 0.1^2)), 4096 Gaussian inputs cycled, J (8 x 16) per input:

- Cython / numba, C-level API: ``dnetwork_jacobian`` per input in a nogil / @njit loop;
- Python API: ``net.jacobian(x)`` per input;
- naive numpy: the forward pass and the product D_L W_L ... D_1 W_1 written with numpy per
  input (the loop a user writes first);
- the batched Python API, ``net.jacobian(X)`` on all inputs at once, for reference.

Every loop's Jacobians are asserted equal to the batched Python API's to rounding
(|difference| <= 1e-12 max |J|) on the inputs the Python loops compute.
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
    from jacgeom.cython_kernels cimport dnetwork_jacobian, dnetwork_jacobian_workspace
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

    def network_loop(list weights, list biases, int code, const double[:, ::1] X,
                     Py_ssize_t calls, double[:, :, ::1] out):
        # J of X[i % len(X)] for i < calls; the first len(out) into out.
        cdef Py_ssize_t L = len(weights), l, i, u = 0, U = X.shape[0], keep = out.shape[0]
        cdef Py_ssize_t[::1] widths = np.empty(L + 1, np.intp)
        cdef Py_ssize_t[::1] strides = np.empty(2 * L, np.intp)
        cdef size_t[::1] wp = np.empty(L, np.uintp)
        cdef size_t[::1] bp = np.empty(L, np.uintp)
        cdef int[::1] codes = np.full(L, code, np.intc)
        cdef double[::1] params = np.zeros(L)
        cdef const double[:, ::1] W
        cdef const double[::1] b
        for l in range(L):
            W = weights[l]
            b = biases[l]
            widths[l], widths[l + 1] = W.shape[1], W.shape[0]
            strides[2 * l], strides[2 * l + 1] = W.shape[1], 1
            wp[l] = <size_t>&W[0, 0]
            bp[l] = <size_t>&b[0]
        cdef Py_ssize_t n0 = widths[0], nL = widths[L]
        cdef Py_ssize_t lwork = dnetwork_jacobian_workspace(L, &widths[0])
        cdef double[::1] work = np.empty(lwork)
        cdef double[:, ::1] J = np.empty((nL, n0))
        cdef int status = 0
        with nogil:
            for i in range(calls):
                status |= dnetwork_jacobian(
                    L, &widths[0], <const double* const*>&wp[0], &strides[0],
                    <const double* const*>&bp[0], NULL, &codes[0], &params[0], &X[u, 0], 1,
                    &out[i, 0, 0] if i < keep else &J[0, 0], n0, 1, &work[0], lwork)
                u += 1
                if u == U:
                    u = 0
        return status
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


def numba_network_loop(widths: list[int]) -> Callable[..., int]:
    jacobian = cython_kernels.ctypes_function("dnetwork_jacobian")
    lwork = cython_kernels.network_workspace_size("network_jacobian", widths)

    @numba.njit(nogil=True)
    def loop(
        widths: np.ndarray,
        pointers: np.ndarray,
        strides: np.ndarray,
        biases: np.ndarray,
        codes: np.ndarray,
        params: np.ndarray,
        X: np.ndarray,
        calls: int,
        out: np.ndarray,
    ) -> int:
        n0, nL = widths[0], widths[-1]
        work = np.empty(lwork)
        J = np.empty((nL, n0))
        U, keep = X.shape[0], out.shape[0]
        status = 0
        u = 0
        for i in range(calls):
            target = out[i] if i < keep else J
            status |= jacobian(
                widths.size - 1,
                widths.ctypes.data,
                pointers.ctypes.data,
                strides.ctypes.data,
                biases.ctypes.data,
                0,
                codes.ctypes.data,
                params.ctypes.data,
                X[u].ctypes.data,
                1,
                target.ctypes.data,
                n0,
                1,
                work.ctypes.data,
                work.size,
            )
            u += 1
            if u == U:
                u = 0
        return status

    return loop


def naive_jacobian(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray) -> Any:
    """The tanh network's J at x as a user writes it first: numpy per layer."""
    J = np.eye(x.size)
    h = x
    for W, b in zip(weights, biases, strict=True):
        z = W @ h + b
        h = np.tanh(z)
        J = (1 - h * h)[:, None] * (W @ J)
    return J


def network_rows(args: argparse.Namespace, cy: Any) -> list[tuple[str, float, int]]:
    """The network table's rows (label, seconds for --network-calls, calls timed)."""
    widths = [16, 32, 32, 32, 8]
    rng = np.random.default_rng(5)
    weights = [
        rng.standard_normal((m, n)) * np.sqrt(2.0 / n)
        for n, m in zip(widths[:-1], widths[1:], strict=True)
    ]
    biases = [rng.standard_normal(m) * 0.1 for m in widths[1:]]
    net = jacgeom.Network(weights, biases, activation="tanh")
    X = rng.standard_normal((4096, widths[0]))
    calls, pcalls = args.network_calls, min(args.network_python_calls, args.network_calls)
    few = X[np.arange(pcalls) % len(X)]
    expected = net.jacobian(few)
    tolerance = 1e-12 * np.abs(expected).max()
    code = jacgeom.activation("tanh").code

    out = np.empty((pcalls, widths[-1], widths[0]))
    assert cy.network_loop(weights, biases, code, X, pcalls, out) == 0
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance)
    nb = numba_network_loop(widths)
    nb_args = (
        np.array(widths, np.intp),
        np.array([W.ctypes.data for W in weights], np.uintp),
        np.array([s // 8 for W in weights for s in W.strides], np.intp),
        np.array([b.ctypes.data for b in biases], np.uintp),
        np.full(len(weights), code, np.intc),
        np.zeros(len(weights)),
        X,
    )
    out[:] = np.nan
    assert nb(*nb_args, pcalls, out) == 0
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance)
    np.testing.assert_allclose(
        np.array([net.jacobian(x) for x in few]), expected, rtol=0, atol=tolerance
    )
    np.testing.assert_allclose(
        np.array([naive_jacobian(weights, biases, x) for x in few]),
        expected,
        rtol=0,
        atol=tolerance,
    )

    scratch = np.empty((0, widths[-1], widths[0]))
    rows: list[tuple[str, float, int]] = []
    t = median_seconds(
        lambda: cy.network_loop(weights, biases, code, X, calls, scratch), args.repeats
    )
    rows.append(("Cython, C-level API dnetwork_jacobian", t, calls))
    t = median_seconds(lambda: nb(*nb_args, calls, scratch), args.repeats)
    rows.append(("numba, C-level API dnetwork_jacobian", t, calls))
    t = median_seconds(lambda: [net.jacobian(x) for x in few], args.repeats)
    rows.append(("Python API, net.jacobian(x) per input", t * calls / pcalls, pcalls))
    t = median_seconds(lambda: [naive_jacobian(weights, biases, x) for x in few], args.repeats)
    rows.append(("naive numpy per input", t * calls / pcalls, pcalls))
    all_inputs = X[np.arange(calls) % len(X)]
    t = median_seconds(lambda: net.jacobian(all_inputs), args.repeats)
    rows.append(("batched net.jacobian(X), all inputs at once", t, calls))
    return rows


def print_table(
    title: str, rows: list[tuple[str, float, int]], calls: int, python_row: int
) -> None:
    python_api = rows[python_row][1]
    print(title)
    print()
    print(f"| loop | calls timed | total for {calls:,} calls (s) | per call | Python API / this |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, timed in rows:
        print(
            f"| {label} | {timed:,} | {seconds:.3f} | {seconds / calls * 1e9:,.0f} ns | "
            f"{python_api / seconds:,.1f} |"
        )
    print()


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
    parser.add_argument("--network-calls", type=int, default=100_000)
    parser.add_argument("--network-python-calls", type=int, default=5_000)
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
            net_rows = network_rows(args, cy)
    finally:
        jacgeom.set_num_threads(before)

    print(f"One thread. {calls:,} calls of the 16 x 16 masked rank; {args.network_calls:,}")
    print("end-to-end Jacobians of a tanh network 16-32-32-32-8 (float64), one input per call.")
    for line in harness.machine_lines():
        print(f"  {line}")
    print()
    print_table("16 x 16 masked rank", rows, calls, 3)
    print(f"C-level API overhead per call (empty mask, Cython loop): {overhead * 1e9:.1f} ns")
    print()
    print_table("Network Jacobian, widths 16-32-32-32-8, tanh", net_rows, args.network_calls, 2)


if __name__ == "__main__":
    main()
