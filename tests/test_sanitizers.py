"""Native code hygiene: the C++ extension rebuilt with AddressSanitizer and
UndefinedBehaviorSanitizer, and the kernel tests run against it in a child process.

Marked ``sanitizers``: the default ``pytest`` deselects it (the build alone takes minutes on
two cores); ``.ci/run`` runs it as its own step, ``pytest -m sanitizers``.

The child imports a copy of the package whose jacgeom._core is the instrumented build (it
comes first on PYTHONPATH). The flags, the preloaded runtimes and their options are those of
tools/build_flags.py, the file setup.py reads: Python itself is not instrumented, so the
runtimes are preloaded, leak detection is off (the memory-growth tests of test_reliability
cover leaks) and any finding aborts the child and fails this test. tools/sanitize.sh runs the
whole suite the same way (about ten times slower than a normal run); this is the subset CI
runs: every kernel against its reference, the bad-input catalogue, awkward strides and the
streaming-store path.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.sanitizers

ROOT = Path(__file__).resolve().parents[1]
SUBSET_FILES = [
    "tests/test_layer.py",
    "tests/test_rank.py",
    "tests/test_network.py",
    "tests/test_bad_inputs.py",
    "tests/test_kernel_layer.py",
    "tests/test_chain_products.py",
    "tests/test_vector_math.py",
]
# The Monte Carlo's own kernels (spectral summary, chains of per-sample weights), found by
# name wherever under tests/ they are defined.
SUBSET_TESTS = [
    "test_spectral_summary_matches_numpy",
    "test_dead_rows_give_exact_zero_singular_values",
    "test_conditional_sampler_ranks",
    "test_variants_run_and_are_consistent",
]


def _subset() -> list[str]:
    """Node ids of the subset; a name that no longer exists fails the test, so the subset
    cannot shrink unnoticed."""
    nodes = [f for f in SUBSET_FILES if (ROOT / f).is_file()]
    missing = sorted(set(SUBSET_FILES) - set(nodes))
    for name in SUBSET_TESTS:
        pattern = re.compile(rf"^def {name}\(", re.MULTILINE)
        where = [
            p
            for p in sorted((ROOT / "tests").rglob("test_*.py"))
            if pattern.search(p.read_text(encoding="utf-8"))
        ]
        if where:
            nodes += [f"{p.relative_to(ROOT).as_posix()}::{name}" for p in where]
        else:
            missing.append(name)
    assert not missing, f"the sanitizer subset names tests that no longer exist: {missing}"
    return nodes


def _runtime_library(cxx: str, name: str) -> str:
    path = subprocess.run(
        [cxx, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"{cxx} has no {name}: the sanitizers cannot run here")
    return path


def _build(cxx: str, flags: dict[str, Any], include: list[str], out: Path, objs: Path) -> None:
    """The extension from csrc/ into ``out``: one compiler per source in parallel (objects in
    ``objs``), then one link."""
    compile_flags = [*flags["SANITIZE"], f"-std=c++{flags['CXX_STANDARD']}", "-fPIC"]
    sources = sorted((ROOT / "csrc").rglob("*.cpp"))
    objs.mkdir()
    objects = [objs / f"{i}_{src.stem}.o" for i, src in enumerate(sources)]

    def compile_one(src: Path, obj: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cxx, *compile_flags, *include, "-c", str(src), "-o", str(obj)],
            capture_output=True,
            text=True,
            timeout=1200,
        )

    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        results = list(pool.map(compile_one, sources, objects))
    for src, result in zip(sources, results, strict=True):
        assert result.returncode == 0, f"{src}:\n{result.stderr[-4000:]}"
    link = subprocess.run(
        [cxx, "-shared", *flags["SANITIZE_LINK"], *map(str, objects), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert link.returncode == 0, link.stderr[-4000:]


def test_kernel_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    if not (ROOT / "csrc").is_dir():
        pytest.skip("needs the source checkout (csrc/)")
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("needs g++")
    pybind11 = pytest.importorskip("pybind11")
    flags = runpy.run_path(str(ROOT / "tools" / "build_flags.py"))
    preload = [_runtime_library(cxx, name) for name in flags["SANITIZE_RUNTIME"]]
    subset = _subset()

    package = tmp_path / "jacgeom"
    shutil.copytree(
        ROOT / "src" / "jacgeom",
        package,
        ignore=shutil.ignore_patterns("_core*.so", "__pycache__"),
    )
    extension = package / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = [
        f"-I{pybind11.get_include()}",
        f"-I{sysconfig.get_paths()['include']}",
        f"-I{ROOT / 'csrc' / 'include'}",
    ]
    _build(cxx, flags, include, extension, tmp_path / "objects")

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "LD_PRELOAD": " ".join(preload),
        **flags["SANITIZE_ENV"],
        # the backend fixtures' cpp cases only (tests/conftest.py): the others' do not
        # touch the extension
        "JACGEOM_TEST_BACKENDS": "cpp",
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
        # the ini's -m applies: the subset's slow tests stay deselected
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *subset],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1800,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-6000:]
    assert " passed" in tests.stdout
