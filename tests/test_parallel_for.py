"""The C++ kernels' parallel_for on its own (csrc/include/jacgeom/parallel.hpp), compiled
into a small program without Python: static ranges under any thread count, persistent
workers, thread starts refused by the system, callers meeting on the pool, nested regions
and exceptions (tests/cpp/parallel_for_check.cpp says what it checks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jacgeom

SOURCE = Path(__file__).parent / "cpp" / "parallel_for_check.cpp"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="replaces glibc's pthread_create")
def test_parallel_for_under_refused_threads_and_concurrent_callers(tmp_path: Path) -> None:
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    program = tmp_path / "parallel_for_check"
    built = subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-pthread",
            f"-I{jacgeom.get_include()}",
            str(SOURCE),
            "-o",
            str(program),
            "-ldl",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    word, refused = ran.stdout.split()
    assert word == "ok"
    assert int(refused) > 0  # the path where the caller runs a refused thread's part ran
