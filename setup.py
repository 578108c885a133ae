"""Builds the private C++ extension jacgeom._core (pybind11, C++17, -O3).

BLAS and LAPACK are not linked: the kernels call scipy's, through function pointers read
from scipy.linalg.cython_blas / cython_lapack capsules at import time.
"""

from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = [
    Pybind11Extension(
        "jacgeom._core",
        sorted(glob("csrc/**/*.cpp", recursive=True)),
        include_dirs=["csrc/include"],
        # Every source includes the headers: an edited header rebuilds the extension.
        depends=sorted(glob("csrc/**/*.hpp", recursive=True)),
        cxx_std=17,
        extra_compile_args=["-O3", "-fopenmp-simd", "-Wall", "-Wextra", "-fvisibility=hidden"],
    )
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
