"""Native code hygiene: the C++ extension rebuilt with AddressSanitizer and
UndefinedBehaviorSanitizer, and the kernel tests run against it in a child process.

The child imports a copy of the package whose jacgeom._core is the instrumented build (it
comes first on PYTHONPATH); libasan is preloaded because Python itself is not instrumented,
and leak detection is off (the interpreter's allocations at exit would drown the report; the
memory-growth tests of test_reliability cover leaks). Any finding aborts the child and fails
this test. tools/sanitize.sh runs the whole suite the same way (about ten times slower than
a normal run); this is the subset CI runs: every kernel against its reference, the bad-input
catalogue, awkward strides and the streaming-store path, about three minutes here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = [
    "tests/test_layer.py",
    "tests/test_rank.py",
    "tests/test_network.py",
    "tests/test_bad_inputs.py",
    "tests/test_kernel_layer.py",
    # the Monte Carlo's own kernels (spectral summary, chains of per-sample weights)
    "tests/test_montecarlo.py::test_spectral_summary_matches_numpy",
    "tests/test_montecarlo.py::test_dead_rows_give_exact_zero_singular_values",
    "tests/test_montecarlo.py::test_conditional_sampler_ranks",
    "tests/test_montecarlo.py::test_variants_run_and_are_consistent",
]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]


def _runtime_library(cxx: str, name: str) -> str:
    path = subprocess.run(
        [cxx, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"{cxx} has no {name}: the sanitizers cannot run here")
    return path


def test_kernel_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    if not (ROOT / "csrc").is_dir():
        pytest.skip("needs the source checkout (csrc/)")
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("needs g++")
    pybind11 = pytest.importorskip("pybind11")
    asan, ubsan = _runtime_library(cxx, "libasan.so"), _runtime_library(cxx, "libubsan.so")

    package = tmp_path / "jacgeom"
    shutil.copytree(
        ROOT / "src" / "jacgeom",
        package,
        ignore=shutil.ignore_patterns("_core*.so", "__pycache__"),
    )
    extension = package / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))
    sources = sorted(str(p) for p in (ROOT / "csrc").rglob("*.cpp"))
    build = subprocess.run(
        [
            cxx,
            "-O1",
            "-fopenmp-simd",
            "-g",
            *SANITIZE,
            "-fno-sanitize-recover=undefined",
            "-std=c++17",
            "-shared",
            "-fPIC",
            "-fvisibility=hidden",
            f"-I{pybind11.get_include()}",
            f"-I{sysconfig.get_paths()['include']}",
            f"-I{ROOT / 'csrc' / 'include'}",
            *sources,
            "-o",
            str(extension),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stderr[-4000:]

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "LD_PRELOAD": f"{asan} {ubsan}",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import jacgeom._core as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert where.returncode == 0, where.stderr[-4000:]
    assert Path(where.stdout.strip()) == extension, "the child did not load the instrumented build"

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUBSET],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1800,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-6000:]
    assert " passed" in tests.stdout
