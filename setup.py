"""Builds the private C++ extension jacgeom._core (pybind11, C++17, -O3).

BLAS and LAPACK are not linked: the kernels call scipy's, through function pointers read
from scipy.linalg.cython_blas / cython_lapack capsules at import time. The compiler flags
live in tools/build_flags.py, which the sanitizer builds read too.
"""

import runpy
from glob import glob
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

FLAGS_FILE = "tools/build_flags.py"
flags = runpy.run_path(str(Path(__file__).resolve().parent / FLAGS_FILE))

ext_modules = [
    Pybind11Extension(
        "jacgeom._core",
        sorted(glob("csrc/**/*.cpp", recursive=True)),
        include_dirs=["csrc/include"],
        # Every source includes the headers, and every source is compiled with the flags:
        # an edited header or flag rebuilds the extension (and the sdist carries both).
        depends=[*sorted(glob("csrc/**/*.hpp", recursive=True)), FLAGS_FILE],
        cxx_std=flags["CXX_STANDARD"],
        extra_compile_args=flags["RELEASE"],
    )
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
