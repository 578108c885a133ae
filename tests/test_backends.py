"""Backend discovery, the missing-extension path, threads and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jacgeom
from jacgeom import cli


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


def test_kernels_release_the_gil() -> None:
    # Two Python threads run compiled kernels concurrently without deadlock and agree with
    # a sequential run. (Speed-up is measured in bench/, never asserted here.)
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
    assert "P(rank < n)" in capsys.readouterr().out


def test_binomial_helper() -> None:
    assert cli._binomial_below(10, 10) == pytest.approx(1 - 2.0**-10)
    assert cli._binomial_below(4, 1) == pytest.approx(1 / 16)


def test_bench_command_needs_a_checkout(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JACGEOM_BENCH_DIR", str(tmp_path))
    assert cli.main(["bench", "--workloads", "quick"]) == 2
    assert "no benchmark suite" in capsys.readouterr().err


_PIN_SCRIPT = """
import json, threading, time
import numpy as np
from threadpoolctl import threadpool_info
import jacgeom

def blas():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

def settle(want):
    deadline = time.monotonic() + 5.0
    while blas() != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return blas()

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
