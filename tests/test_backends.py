"""Backend discovery, the missing-extension path, threads, the command line, and the dispatch
table: every implementation of every kernel against its numpy twin."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import jacgeom
from jacgeom import _backends, _dispatch, cli
from jacgeom._dispatch import KERNELS, Tolerance

from .conftest import assert_close


def test_backends_listed() -> None:
    names = jacgeom.backends()
    assert names[-1] == "numpy"
    assert set(names) <= {"cpp", "numba", "numpy"}


def test_compiled_backends_present_in_this_installation() -> None:
    # The CI installs with `pip install .`, which compiles the extension: it must be there.
    assert "cpp" in jacgeom.backends()
    assert "numba" in jacgeom.backends()


def test_without_extension_import_still_works_and_says_why() -> None:
    code = textwrap.dedent(
        """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "jacgeom._core":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import jacgeom
        msgs = [str(w.message) for w in caught if "C++ backend is unavailable" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert "blocked for the test" in msgs[0]
        assert jacgeom.backends() == ["numba", "numpy"], jacgeom.backends()
        import numpy as np
        print(jacgeom.layer_jacobian(np.eye(2), [1.0, -1.0]).tolist())
        try:
            jacgeom.layer_jacobian(np.eye(2), [1.0, -1.0], backend="cpp")
        except ValueError as e:
            assert "not available" in str(e)
        else:
            raise AssertionError("cpp should be refused")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[[1.0, 0.0], [0.0, 0.0]]"


def test_env_thread_count() -> None:
    code = "import jacgeom; print(jacgeom.get_num_threads())"
    env = dict(os.environ, JACGEOM_NUM_THREADS="3")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "3"


def test_kernels_called_from_two_threads_agree_with_a_sequential_run() -> None:
    # Concurrency correctness only: that each kernel releases the GIL is checked by
    # tests/test_reliability.py::test_kernels_release_the_gil with a progress probe.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    W, X = rng.standard_normal((40, 30)), rng.standard_normal((200, 30))
    seq = [jacgeom.layer_singular_values(W, X, activation="gelu") for _ in range(4)]
    with ThreadPoolExecutor(2) as pool:
        par = list(
            pool.map(lambda _: jacgeom.layer_singular_values(W, X, activation="gelu"), range(4))
        )
    for a, c in zip(seq, par, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-13)


def test_demo_reproduces_closed_form(capsys: pytest.CaptureFixture[str]) -> None:
    table = cli.demo(samples=300, seed=1)
    rows = [r for r in table.splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert len(rows) == 6
    assert cli.main(["demo", "--samples", "50"]) == 0
    assert "P(float64 rank < n)" in capsys.readouterr().out


def test_bench_command_needs_a_checkout(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JACGEOM_BENCH_DIR", str(tmp_path))
    assert cli.main(["bench", "--workloads", "quick"]) == 2
    assert "no benchmark suite" in capsys.readouterr().err


# The scripts' shared start: OpenBLAS's thread counts, and a wait for them to settle.
_BLAS_COUNTS = """
import gc, json, signal, threading, time
import numpy as np
from threadpoolctl import threadpool_info
import jacgeom
from jacgeom import _backends

def blas():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

def settle(want):
    deadline = time.monotonic() + 5.0
    while blas() != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return blas()
"""

_PIN_SCRIPT = (
    _BLAS_COUNTS
    + """
W = np.random.default_rng(0).standard_normal((8, 8))
call = lambda: jacgeom.masked_rank(W, np.ones((3, 8), bool))
before = blas()
call()
main = settle(before)
stop = threading.Event()
busy = threading.Thread(target=lambda: [call() for _ in iter(stop.is_set, True)])
busy.start()
time.sleep(0.1)
during = blas()
stop.set()
busy.join()
threads = [threading.Thread(target=lambda: [call() for _ in range(50)]) for _ in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
workers = settle(before)
print(json.dumps([before, during, main, workers]))
"""
)


def test_blas_pin_is_lifted_after_kernels_return() -> None:
    # In a fresh process: the pin applies while kernels run and is lifted afterwards,
    # whichever threads called them (OpenBLAS ignores a raise from another thread).
    import json
    import subprocess
    import sys

    # OPENBLAS_NUM_THREADS sets the starting count; nothing in the script sets one itself
    # (OpenBLAS keeps a count per thread that set one, which would hide the shared count).
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _PIN_SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before, during, main, workers = json.loads(out.stdout)
    assert before and all(n == 2 for n in before)
    assert during == [1] * len(before)
    assert main == workers == before


_INTERRUPT_SCRIPT = (
    _BLAS_COUNTS
    + """
before = blas()
# a holder that never reaches its release (an interrupt between a kernel's return and the
# release, or inside the bookkeeping) is dropped with its frame: the pin is lifted
hold = _backends._blas_pin.acquire()
pinned = blas()
del hold
dropped = settle(before)
# interrupts at arbitrary points of a tight loop of small calls
W = np.random.default_rng(0).standard_normal((8, 8))
masks = np.ones((3, 8), bool)
interrupts = 0
armed = False

def interrupt(signum, frame):
    # raises only inside the loop of calls, so that no interrupt escapes the test's own code
    global armed, interrupts
    if armed:
        armed = False
        interrupts += 1
        raise KeyboardInterrupt

signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.0013, 0.0013)
deadline = time.monotonic() + 3.0
while time.monotonic() < deadline:
    try:
        armed = True
        while True:
            jacgeom.masked_rank(W, masks, backend="cpp")
    except KeyboardInterrupt:
        pass
armed = False
signal.setitimer(signal.ITIMER_REAL, 0)
gc.collect()
print(json.dumps([before, pinned, dropped, settle(before), interrupts]))
"""
)


def test_blas_pin_is_lifted_after_interrupts() -> None:
    # An interrupt that lands inside the pin's bookkeeping used to leave a holder counted for
    # ever, and OpenBLAS on one thread for the rest of the process.
    import json
    import subprocess
    import sys

    if "cpp" not in jacgeom.backends():
        pytest.skip("cpp backend not built")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before, pinned, dropped, after, interrupts = json.loads(out.stdout)
    assert before and all(n == 2 for n in before)
    assert pinned == [1] * len(before)
    assert dropped == before
    assert interrupts > 100
    assert after == before


_LIMITS_SCRIPT = """
import json, threading, time
import numpy as np
import jacgeom
from threadpoolctl import threadpool_info, threadpool_limits

def blas():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

W = np.random.default_rng(0).standard_normal((64, 32))
masks = np.random.default_rng(1).random((8, 64)) < 0.5
jacgeom.masked_rank(W, masks, backend="cpp")
time.sleep(0.5)  # the pin is lifted _RESTORE_DELAY after the last kernel
with threadpool_limits(1, user_api="blas"):
    inside = blas()
names = [t.name for t in threading.enumerate()]
print(json.dumps([inside, blas(), names]))
"""


def test_callers_thread_limits_work_after_kernels() -> None:
    # OpenBLAS ignores counts set from other threads while the thread that changed it
    # lives: the pin thread exits once it has lifted the pin, so a caller's own
    # threadpool_limits still takes effect after jacgeom's kernels have run.
    import json
    import subprocess
    import sys

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _LIMITS_SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    inside, after, names = json.loads(out.stdout)
    assert inside and all(n == 1 for n in inside)
    assert all(n == 2 for n in after)
    assert "jacgeom-blas-pin" not in names


# ---------------------------------------------------------------------------------------
# The dispatch table (jacgeom._dispatch.KERNELS): every implementation of every kernel
# against its numpy twin, on small float32 and float64 cases built for that kernel. A
# kernel added to the table without a case here fails test_every_kernel_has_a_case.

Case = tuple[tuple[Any, ...], dict[str, Any]]


def _derivative_matrix(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> Any:
    """relu-like derivatives with exact zeros (dead units) and varied magnitudes."""
    d = rng.uniform(0.5, 2.0, shape) * (rng.random(shape) < 0.7)
    return d.astype(dtype)


def _integer_matrix(rng: np.random.Generator, dtype: type) -> Any:
    """(7, 5) with exact dependencies (row 4 = row 0 + row 1, row 5 = 2 row 2): ranks that
    no rounding can blur, in float32 too."""
    W = rng.integers(-4, 5, (7, 5)).astype(np.float64)
    W[4], W[5] = W[0] + W[1], 2 * W[2]
    return W.astype(dtype)


def _chain(rng: np.random.Generator, dtype: type, per_sample: bool) -> tuple[list[Any], list[Any]]:
    widths, B = (4, 5, 3, 4), 6
    Ws, Ds = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        shape = (B, n_out, n_in) if per_sample else (n_out, n_in)
        Ws.append(np.ascontiguousarray(rng.standard_normal(shape).astype(dtype)))
        Ds.append(_derivative_matrix(rng, (B, n_out), dtype))
    return Ws, Ds


def _stack_with_dead_rows(rng: np.random.Generator, dtype: type) -> Any:
    J = rng.standard_normal((6, 5, 3))
    J[:, 1] = 0.0  # a dead unit in every sample
    J[1, 2:] = 0.0  # sample 1: one live row, rank 1 < 3
    J[2] = 0.0  # sample 2: nothing live
    return J.astype(dtype)


def _cases(name: str, dtype: type) -> list[Case]:
    rng = np.random.default_rng(sum(map(ord, name)))
    acts = [jacgeom.activation(a) for a in ("relu", "tanh", "gelu", "silu")]
    acts.append(jacgeom.activation("leaky_relu", alpha=0.1))
    acts.append(jacgeom.activation("softplus", beta=2.0))
    W = rng.standard_normal((6, 4)).astype(dtype)
    wide = rng.standard_normal((3, 5)).astype(dtype)
    D = _derivative_matrix(rng, (5, 6), dtype)
    Z = (3 * rng.standard_normal((5, 6))).astype(dtype)
    if name in ("derivatives", "activation_values"):
        return [((Z, act), {}) for act in acts]
    if name == "custom_derivatives":
        custom = jacgeom.Activation.custom(math.tanh, lambda z: 1.0 - math.tanh(z) ** 2)
        return [((Z, custom), {})]
    if name == "jacobian":
        return [((W, D, None), {}), ((W, D), {"out": np.empty((5, 6, 4), dtype)})]
    if name == "jacobian_from_preactivations":
        return [((W, Z, act, None), {}) for act in acts[:3]]
    if name in ("pullback_metric", "singular_values"):
        return [((W, D), {}), ((wide, _derivative_matrix(rng, (5, 3), dtype)), {})]
    if name == "log_volume":
        D_full = rng.uniform(0.5, 2.0, (4, 6)).astype(dtype)
        D_full[1, 3:] = 0.0  # three live rows of four columns: rank 3, -inf
        return [((W, D), {}), ((W, D_full), {})]
    if name == "batched_singular_values":
        return [((rng.standard_normal((4, 5, 3)).astype(dtype),), {})]
    if name == "masked_rank":
        M = _integer_matrix(rng, dtype)
        scale = (rng.random((9, 7)) < 0.6).astype(dtype)
        scale[0] = 0.0  # an empty mask
        scale[1] = 1.0
        tolerances = [Tolerance(), Tolerance(tol=0.5), Tolerance(rtol=1e-3)]
        return [((M, scale, t, want), {}) for t in tolerances for want in (False, True)]
    if name == "chain_active":
        Ws, Ds = _chain(rng, dtype, per_sample=False)
        Wp, Dp = _chain(rng, dtype, per_sample=True)
        out = np.empty((Ds[0].shape[0], Ws[-1].shape[0], Ws[0].shape[1]), dtype)
        return [
            ((Ws, Ds, False), {}),
            ((Ws, Ds, True), {}),
            ((Wp, Dp, False), {}),
            ((Ws, Ds, True, out), {}),
        ]
    if name == "chain_singular_values":
        return [(_chain(rng, dtype, per_sample=False), {})]
    if name == "network_jacobian_one":
        widths = (4, 6, 5, 3)
        Ws = [
            rng.standard_normal((m, n)).astype(dtype)
            for n, m in zip(widths[:-1], widths[1:], strict=True)
        ]
        bs = [rng.standard_normal(m).astype(dtype) for m in widths[1:]]
        x = rng.standard_normal(4).astype(dtype)
        big = [W * dtype(1e30) for W in Ws]  # the forward pass leaves the float range
        return [((Ws, bs, acts[k : k + 3], x, np.empty((3, 4), dtype)), {}) for k in (0, 2, 3)] + [
            ((big, bs, acts[1:4], x, np.empty((3, 4), dtype)), {})
        ]
    if name == "chain_rank":
        Ws, Ds = _chain(rng, dtype, per_sample=False)
        return [((Ws, Ds, t), {}) for t in (Tolerance(), Tolerance(tol=1e-2), Tolerance(rtol=1e-3))]
    if name == "spectral_summary":
        J = _stack_with_dead_rows(rng, dtype)
        bound = np.full(J.shape[0], 3, dtype=np.int64)
        return [((J,), {}), ((J, bound, False), {}), ((np.swapaxes(J, 1, 2).copy(),), {})]
    if name == "spectral_summary_rows":
        counts = np.array([2, 0, 3, 1], dtype=np.int64)
        rows = rng.standard_normal((int(counts.sum()), 3)).astype(dtype)
        return [((rows, counts, 4), {}), ((rows, counts, 4, 0.5, None, False), {})]
    if name == "graded_log_singular_values":
        if dtype != np.float64:
            return []  # the graded frame is float64 only
        g = np.sort(rng.uniform(-30.0, 5.0, (4, 3)), axis=1)[:, ::-1].copy()
        V = rng.standard_normal((4, 3, 5))
        g[1, 2] = -np.inf  # an exact zero row: a -inf (a dependency among the rows of V
        # is not marked, and its value is rounding, on which twins need not agree)
        return [((g, V), {})]
    if name == "graded_qr_step":
        if dtype != np.float64:
            return []  # the graded frame is float64 only
        A = rng.standard_normal((4, 5, 3)) * np.exp(rng.uniform(-40.0, 0.0, (4, 5, 1)))
        A[1, :, 2] = 0.0  # a zero column: its direction dies (-inf)
        g = rng.uniform(-30.0, 5.0, (4, 3))
        g[2, 0] = -np.inf  # a direction already dead
        V = rng.standard_normal((4, 3, 6))
        wide = rng.standard_normal((3, 2, 4))
        return [
            ((A, g, V), {}),
            ((wide, rng.uniform(-5, 0, (3, 4)), rng.standard_normal((3, 4, 4))), {}),
        ]
    if name == "place_live_rows":
        if dtype != np.float64:
            return []  # the sampler draws in float64 only
        N, m, n = 7, 4, 6
        h = rng.standard_normal((N, n)) * (rng.random((N, n)) < 0.6)
        h[2] = 0.0
        cols = (rng.random((N, n)) < 0.5) | (h != 0)
        u = rng.standard_normal((N, m))
        live = u > -0.3
        rows_live, n_cols = live.sum(axis=1), cols.sum(axis=1)
        G = rng.standard_normal(int(rows_live @ (n_cols - (h != 0).any(axis=1))))
        B = rng.standard_normal(int(rows_live @ (n - n_cols)))
        return [
            ((h, cols, u, live, G, B, fill, 0.7, np.full((N, m, n), np.nan)), {})
            for fill in (True, False)
        ]
    raise KeyError(name)


def _assert_same_result(actual: Any, expected: Any, dtype: type) -> None:
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _assert_same_result(a, e, dtype)
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    if expected.dtype.kind in "iu":
        np.testing.assert_array_equal(actual, expected)
        assert actual.dtype == expected.dtype
        return
    assert actual.dtype == expected.dtype == np.dtype(dtype)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    assert_close(np.where(nan, 0, actual), np.where(nan, 0, expected), dtype)


def _run(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Any:
    args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    kwargs = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    out = fn(*args, **kwargs)
    if name == "place_live_rows":  # writes its last argument
        return args[-1]
    if name == "network_jacobian_one":  # a status; J written into its last argument
        return (np.array(out), args[-1]) if out == 0 else np.array(out)
    if name == "masked_rank" and not args[3]:  # the values are unspecified without want_values
        return out[0]
    return out


def test_every_kernel_has_a_numpy_twin_and_a_case() -> None:
    for name, entry in KERNELS.items():
        assert entry.name == name
        assert callable(entry.numpy), name
        module = entry.numpy.__module__
        assert module == "jacgeom._dispatch" or module.startswith("jacgeom.reference"), module
        assert _cases(name, np.float64), f"no float64 case for kernel {name!r}"
        assert set(entry.compiled) <= {"cpp", "numba"}, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_implementation_matches_the_numpy_twin(name: str, dtype: type) -> None:
    implementations = _dispatch.implementations(name)
    assert implementations["numpy"] is KERNELS[name].numpy
    for args, kwargs in _cases(name, dtype):
        expected = _run(implementations["numpy"], args, kwargs, name)
        for backend, fn in implementations.items():
            if backend == "numpy":
                continue
            got = _run(fn, args, kwargs, name)
            try:
                _assert_same_result(got, expected, dtype)
            except AssertionError as e:
                raise AssertionError(f"{name} on {backend}, {np.dtype(dtype)}: {e}") from e


def test_a_backend_without_an_implementation_runs_the_next() -> None:
    if "numba" in jacgeom.backends():
        assert _dispatch.kernel("place_live_rows", "cpp") is not KERNELS["place_live_rows"].numpy
    assert _dispatch.kernel("chain_active", "numba") is KERNELS["chain_active"].numpy
    assert _dispatch.kernel("chain_active", "numpy") is KERNELS["chain_active"].numpy
    with pytest.raises(KeyError, match="no kernel 'nope'"):
        _dispatch.kernel("nope", "numpy")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        _dispatch.kernel("jacobian", "gpu")


def test_the_table_follows_a_missing_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    from jacgeom import _backends

    monkeypatch.setattr(_backends, "numba_kernels", None)
    assert _dispatch.kernel("place_live_rows", "auto") is KERNELS["place_live_rows"].numpy
    monkeypatch.undo()
    if "numba" in jacgeom.backends():
        assert _dispatch.kernel("place_live_rows", "auto") is not KERNELS["place_live_rows"].numpy


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_matrix_rank_count_is_numpys(dtype: type) -> None:
    rng = np.random.default_rng(7)
    A = rng.standard_normal((40, 6, 4)) @ np.diag([1.0, 1e-3, 1e-6, 1e-9])
    A[::3, :, 3] = A[::3, :, 0]  # exact rank deficiencies
    A = A.astype(dtype)
    s = np.linalg.svd(A, compute_uv=False)
    for tol, rtol in [(None, None), (1e-4, None), (None, 1e-5), (None, 1e-8)]:
        want = np.linalg.matrix_rank(A, tol=tol, rtol=rtol)
        got = _dispatch.matrix_rank_count(s, A.shape[1:], Tolerance(tol, rtol))
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64
    # Per-matrix row counts: matrix_rank of the live rows only (the zero rows dropped).
    live = rng.integers(1, 7, 40)
    B = A * (np.arange(6)[None, :, None] < live[:, None, None])
    s = np.linalg.svd(B, compute_uv=False)
    want = [np.linalg.matrix_rank(b[:k]) for b, k in zip(B, live, strict=True)]
    np.testing.assert_array_equal(_dispatch.matrix_rank_count(s, (live, 4)), want)
    assert _dispatch.matrix_rank_count(np.zeros((3, 0)), (0, 5)).tolist() == [0, 0, 0]


def test_tolerance_encodings() -> None:
    assert Tolerance().masked_rank_mode() == (0, 0.0)
    assert Tolerance(tol=0.5).masked_rank_mode() == (1, 0.5)
    assert Tolerance(rtol=1e-3).masked_rank_mode() == (2, 1e-3)
    tol, rtol, given = Tolerance().chain_rank_arguments((3, 7), np.dtype(np.float32))
    assert math.isnan(tol) and rtol == 7 * float(np.finfo(np.float32).eps) and not given
    tol, rtol, given = Tolerance(tol=0.5).chain_rank_arguments((3, 7), np.dtype(np.float64))
    assert tol == 0.5 and math.isnan(rtol) and not given
    tol, rtol, given = Tolerance(rtol=1e-3).chain_rank_arguments((3, 7), np.dtype(np.float64))
    assert math.isnan(tol) and rtol == 1e-3 and given


def test_core_stubs_name_every_binding() -> None:
    import ast
    from pathlib import Path

    from jacgeom import _backends

    if _backends.core is None:
        pytest.skip("the C++ extension is not built here")
    stub = Path(jacgeom.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    stubbed = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    bound = {name for name in dir(_backends.core) if not name.startswith("_")}
    assert stubbed == bound


def test_thread_count_from_the_environment_is_capped_with_a_warning() -> None:
    env = {**os.environ, "JACGEOM_NUM_THREADS": "5000"}
    done = subprocess.run(
        [sys.executable, "-c", "import jacgeom; print(jacgeom.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "4096"
    assert "JACGEOM_NUM_THREADS='5000' is above 4096; using 4096" in done.stderr


def test_blas_pin_survives_a_refused_thread_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # A process at its thread limit refuses the pin's thread: that call raises, nothing is
    # counted, and once threads start again the pin works (it used to wait forever).
    import threading

    pin = _backends._BlasPin()
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        pin.acquire()
    assert pin._users == 0 and pin._thread is None
    monkeypatch.setattr(threading.Thread, "start", start)
    done = threading.Event()

    def use() -> None:
        pin.release(pin.acquire())
        done.set()

    threading.Thread(target=use, daemon=True).start()
    assert done.wait(10), "the pin waits for a thread that never started"
    assert pin._users == 0


def test_blas_pin_failure_in_its_thread_is_an_error_not_a_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    class Broken:
        def limit(self, **kwargs: object) -> None:
            raise OSError("no BLAS to limit")

    monkeypatch.setattr(_backends, "_controller", lambda: Broken())
    pin = _backends._BlasPin()
    raised: list[BaseException] = []

    def use() -> None:
        try:
            pin.acquire()
        except RuntimeError as exc:
            raised.append(exc)

    caller = threading.Thread(target=use, daemon=True)
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "acquire waits for a pin that failed"
    assert len(raised) == 1 and "could not pin" in str(raised[0])
    assert pin._users == 0 and pin._thread is None


def test_blas_pin_thread_of_an_interrupted_start_does_not_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A KeyboardInterrupt inside Thread.start() after the OS thread began left a second
    # pin thread; both then served, and the one that had not lowered OpenBLAS's count could
    # raise it back, which OpenBLAS ignores: the pin stayed on for the rest of the process.
    import threading
    import time

    events: list[tuple[str, int]] = []

    class Limiter:
        def restore_original_limits(self) -> None:
            events.append(("restore", threading.get_ident()))

    class Controller:
        def limit(self, **kwargs: object) -> Limiter:
            events.append(("limit", threading.get_ident()))
            return Limiter()

    monkeypatch.setattr(_backends, "_controller", lambda: Controller())
    pin = _backends._BlasPin()
    start = threading.Thread.start

    def interrupted(self: threading.Thread) -> None:
        start(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pin.acquire()
    monkeypatch.setattr(threading.Thread, "start", start)
    for _ in range(20):
        pin.release(pin.acquire())
    deadline = time.monotonic() + 10
    while pin._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    pinning = [t for t in threading.enumerate() if t.name == "jacgeom-blas-pin"]
    assert pin._thread is None and pin._users == 0
    assert not [t for t in pinning if t.is_alive()]
    # one limit and one restore per pin (a descheduled caller may see the pin lifted and
    # applied again), each restore by the thread that limited
    assert events and len(events) % 2 == 0
    for (kind, lowered_by), (kind2, raised_by) in zip(events[::2], events[1::2], strict=True):
        assert (kind, kind2) == ("limit", "restore") and lowered_by == raised_by


_REENTRY_SCRIPT = """
import signal, time
import numpy as np
import jacgeom

W, M = np.eye(8), np.ones((3, 8), bool)
calls = 0

def handler(signum, frame):
    global calls
    calls += 1
    jacgeom.masked_rank(W, M, backend="cpp")
    signal.setitimer(signal.ITIMER_REAL, 0.0007)

signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.0007)
start = time.monotonic()
while time.monotonic() - start < 2:
    jacgeom.masked_rank(W, M, backend="cpp")
signal.setitimer(signal.ITIMER_REAL, 0)
print(calls)
"""


def test_kernels_called_from_a_signal_handler_do_not_deadlock() -> None:
    # The handler runs between any two bytecodes of the main thread, also inside the BLAS
    # pin's bookkeeping: a plain (not re-entrant) lock there hung the process.
    import subprocess
    import sys

    if "cpp" not in jacgeom.backends():
        pytest.skip("cpp backend not built")
    out = subprocess.run(
        [sys.executable, "-c", _REENTRY_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout) > 100
