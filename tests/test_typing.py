"""A downstream script type-checks against jacgeom's public API with ``mypy --strict``, and
the same script with a misspelt activation name does not (issue 22, typing for callers)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

import jacgeom

ROOT = Path(__file__).resolve().parents[1]

GOOD = textwrap.dedent(
    """
    import numpy as np
    from numpy.typing import NDArray

    import jacgeom
    import jacgeom.montecarlo
    from jacgeom.typing import FloatArray

    rng = np.random.default_rng(0)
    W: NDArray[np.float64] = rng.standard_normal((5, 3))
    X: NDArray[np.float64] = rng.standard_normal((4, 3))
    W32: NDArray[np.float32] = W.astype(np.float32)
    X32: NDArray[np.float32] = X.astype(np.float32)

    J: NDArray[np.float64] = jacgeom.layer_jacobian(W, X, activation="tanh", backend="numpy")
    J32: NDArray[np.float32] = jacgeom.layer_jacobian(W32, X32, activation="relu")
    G: NDArray[np.float64] = jacgeom.pullback_metric(W, X)
    s: NDArray[np.float64] = jacgeom.layer_singular_values(W, X, activation="gelu")
    v: NDArray[np.float64] = jacgeom.log_volume(W, X)
    Z: FloatArray = jacgeom.preactivations([[1.0, 0.0]], [1.0, 2.0])

    rank: NDArray[np.int64] = jacgeom.masked_rank(W, W > 0)
    ranks, values = jacgeom.masked_rank(W, [True] * 5, return_singular_values=True)
    r2: NDArray[np.int64] = ranks
    sv: FloatArray = values
    r3: NDArray[np.int64] = jacgeom.active_rank(W, X)
    r4: NDArray[np.int64] = jacgeom.jacobian_rank(W, X, activation="tanh", exact=True)

    act: jacgeom.ActivationName = "leaky_relu"
    be: jacgeom.BackendName = "auto"
    custom = jacgeom.activation(str("elu"), alpha=0.5)  # a runtime str goes through lookup
    net = jacgeom.Network.random([3, 8, 2], activation=[act, custom], seed=0)
    JN: FloatArray = net.jacobian(X, backend=be)
    rN: NDArray[np.int64] = net.rank(X)
    eN: NDArray[np.int64] = net.exact_rank(X)
    cN: NDArray[np.int64] = net.active_counts(X)
    lN: FloatArray = net.log_singular_values(X)
    report = jacgeom.homeomorphism_report(W.T, "sigmoid")
    injective: bool = report.injective


    def p_deficient(result: jacgeom.montecarlo.Result) -> tuple[float, float]:
        summary = result.summary()
        cond = summary.get("log_cond")
        return summary["p_rank_deficient"]["p"], cond["median"] if cond else float("nan")
    """
)

BAD = GOOD + textwrap.dedent(
    """
    bad = jacgeom.layer_jacobian(W, X, activation="reluu")
    bad_backend = net.jacobian(X, backend="cuda")
    """
)


def test_activation_name_lists_every_builtin() -> None:
    assert list(typing.get_args(jacgeom.ActivationName)) == jacgeom.activation_names()
    assert typing.get_args(jacgeom.BackendName) == ("auto", "cpp", "numba", "numpy")
    assert set(jacgeom.backends()) <= set(typing.get_args(jacgeom.BackendName))


@pytest.fixture(scope="module")
def mypy_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not _has_mypy():
        pytest.skip("mypy is not installed")
    tmp = tmp_path_factory.mktemp("downstream")
    # One process checks both scripts (one import of numpy's stubs): a file per module.
    (tmp / "good.py").write_text(GOOD, encoding="utf-8")
    (tmp / "bad.py").write_text(BAD, encoding="utf-8")
    result = _mypy_many(tmp, ["good.py", "bad.py"])
    return {"good": _lines_of(result, "good.py"), "bad": _lines_of(result, "bad.py")}


def _has_mypy() -> bool:
    try:
        import mypy  # noqa: F401
    except ImportError:
        return False
    return True


def _mypy_many(tmp_path: Path, names: list[str]) -> str:
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / ".mypy_cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(config), *names],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    return proc.stdout + proc.stderr


def _lines_of(output: str, name: str) -> str:
    return "\n".join(line for line in output.splitlines() if line.startswith(name))


def test_downstream_script_passes_mypy_strict(mypy_results: dict[str, str]) -> None:
    assert mypy_results["good"] == "", mypy_results["good"]


def test_misspelt_names_fail_mypy_strict(mypy_results: dict[str, str]) -> None:
    bad = mypy_results["bad"]
    errors = [line for line in bad.splitlines() if ": error:" in line]
    lines = BAD.splitlines()
    reluu = next(i for i, line in enumerate(lines, 1) if '"reluu"' in line)
    cuda = next(i for i, line in enumerate(lines, 1) if '"cuda"' in line)
    assert len(errors) == 2, bad
    # An overloaded function's error names the argument types, not the value: its line does.
    assert errors[0].startswith(f"bad.py:{reluu}: error: No overload variant"), bad
    assert errors[0].endswith("[call-overload]"), bad
    assert errors[1].startswith(f"bad.py:{cuda}: error:"), bad
    expected = "\"Literal['cuda']\"; expected \"Literal['auto', 'cpp', 'numba', 'numpy']\""
    assert expected in errors[1], bad
