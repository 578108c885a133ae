"""The kept buffers of the largest results (jacgeom._results, jacgeom.set_result_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import jacgeom
from jacgeom import _results

MIB = 1 << 20


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Every test starts with no buffer held and the default bound, and leaves it so.
    before = jacgeom.set_result_cache(0)
    jacgeom.set_result_cache(_results.DEFAULT_LIMIT)
    yield
    jacgeom.set_result_cache(0)
    jacgeom.set_result_cache(before)


def test_network_jacobian_reuses_a_dropped_result() -> None:
    # 600 samples of 64 x 64 float64 Jacobians: 19.7 MB, above MIN_BYTES.
    net = jacgeom.Network.random([64, 64, 64], activation="tanh", seed=0)
    X = np.random.default_rng(0).standard_normal((600, 64))
    want = net.jacobian(X, backend="numpy")
    J = net.jacobian(X, backend="cpp")
    assert J.nbytes >= _results.MIN_BYTES and not J.flags.owndata
    assert J.flags.c_contiguous and J.flags.writeable and J.dtype == np.float64
    np.testing.assert_allclose(J, want, rtol=0, atol=1e-12)
    first = _address(J)
    row = J[3]  # a view keeps the buffer in use: the next result goes elsewhere
    del J
    K = net.jacobian(X + 1.0, backend="cpp")
    second = _address(K)
    assert second != first
    np.testing.assert_allclose(row, want[3], rtol=0, atol=1e-12)  # untouched
    del row, K
    # both dropped: the next result is written into one of the two buffers
    L = net.jacobian(X, backend="cpp")
    assert _address(L) in {first, second} and len(_results._buffers) == 2
    np.testing.assert_allclose(L, want, rtol=0, atol=1e-12)


def test_dropped_buffer_is_reused_at_a_fitting_size_only() -> None:
    a = _results.empty((32 * MIB // 8,), np.float64)
    where = _address(a)
    del a
    b = _results.empty((4, 4 * MIB), np.float32)  # 64 MiB: more than the buffer
    assert _address(b) != where
    del b
    c = _results.empty((20 * MIB,), np.uint8)  # fits within twice its size
    assert _address(c) == where and c.shape == (20 * MIB,)
    del c
    d = _results.empty((MIB,), np.uint8)  # below MIN_BYTES: an ordinary array
    assert d.flags.owndata


def test_bound_and_release() -> None:
    jacgeom.set_result_cache(40 * MIB)
    a = _results.empty((24 * MIB,), np.uint8)
    b = _results.empty((24 * MIB,), np.uint8)  # a is held: b beyond the bound is fresh
    assert not a.flags.owndata and b.flags.owndata
    too_big = _results.empty((48 * MIB,), np.uint8)
    assert too_big.flags.owndata
    del a
    assert jacgeom.set_result_cache(0) == 40 * MIB
    assert _results._buffers == []
    assert _results.empty((24 * MIB,), np.uint8).flags.owndata


def test_held_buffer_stays_held_when_the_bound_shrinks_then_goes() -> None:
    # Held when the bound drops to 0: kept while used, released by the next result.
    net = jacgeom.Network.random([64, 32, 64], activation="tanh", seed=0)
    X = np.random.default_rng(0).standard_normal((600, 64))
    J = net.jacobian(X)
    J[:] = 7
    jacgeom.set_result_cache(0)
    assert len(_results._buffers) == 1 and (J == 7).all()
    del J
    K = net.jacobian(X)
    assert K.flags.owndata and _results._buffers == []


_FORK_SCRIPT = """
import os, signal, time
import numpy as np
import jacgeom
from jacgeom import _results
with _results._lock:  # as another thread of the parent would hold it
    pid = os.fork()
    if pid == 0:  # the child takes the lock
        try:
            jacgeom.set_result_cache(_results.DEFAULT_LIMIT)
            _results.empty((20 << 20,), np.uint8)
        except BaseException:
            os._exit(1)
        os._exit(0)
for _ in range(200):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print(os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
    print("waited")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_forked_child_does_not_wait_for_a_lock_held_in_the_parent() -> None:
    # In a fresh process: a test process may hold libraries (JAX) that refuse a fork.
    out = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "0", (out.stdout, out.stderr)


def test_threads_never_share_a_buffer() -> None:
    got: list[np.ndarray] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(20):
            x = _results.empty((17 * MIB,), np.uint8)
            with lock:
                got.append(x)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [_address(x) for x in got if not x.flags.owndata]
    assert len(held) == len(set(held))


@pytest.mark.parametrize("bad", [1.5, "1", True, None])
def test_bound_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        jacgeom.set_result_cache(bad)  # type: ignore[arg-type]


def test_bound_takes_any_integer_type() -> None:
    assert jacgeom.set_result_cache(np.int64(5 * MIB)) == _results.DEFAULT_LIMIT
    assert jacgeom.set_result_cache(_results.DEFAULT_LIMIT) == 5 * MIB


def test_bound_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        jacgeom.set_result_cache(-1)
