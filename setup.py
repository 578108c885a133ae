"""Builds the private C++ extension jacgeom._core (pybind11, C++17, -O3) and the C-level
API jacgeom.cython_kernels (Cython, compiled as C++ over the same headers).

BLAS and LAPACK are not linked: the kernels call scipy's, through function pointers read
from scipy.linalg.cython_blas / cython_lapack capsules at import time. The compiler flags
live in tools/build_flags.py, which the sanitizer builds read too. Both extensions get the
same flags, so that the C-level API's results equal the Python API's bit for bit.

The headers of csrc/include/jacgeom ship in the wheel as jacgeom/include/jacgeom (for
jacgeom.get_include()), beside cython_kernels.pxd.
"""

import runpy
import shutil
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

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

HEADERS = sorted(glob("csrc/include/jacgeom/*.hpp"))

# Pybind11Extension for its flags only (C++17, hidden visibility, -g0): floating-point
# results depend on them, and they must be _core's. Cython's generated code trips
# -Wextra's unused-parameter and -Wall's unused-function warnings by design.
cython_extension = Pybind11Extension(
    "jacgeom.cython_kernels",
    ["src/jacgeom/cython_kernels.pyx"],
    include_dirs=["csrc/include"],
    depends=[*HEADERS, FLAGS_FILE, "src/jacgeom/cython_kernels.pxd"],
    cxx_std=flags["CXX_STANDARD"],
    extra_compile_args=[
        *flags["RELEASE"],
        "-Wno-unused-parameter",
        "-Wno-unused-function",
        "-Wno-missing-field-initializers",
    ],
    language="c++",
)
ext_modules += cythonize(
    [cython_extension],
    build_dir="build/cython",  # the generated .cpp stays out of the source tree
    compiler_directives={"language_level": 3},
)


class build_py_with_headers(build_py):
    """build_py that also copies the C++ headers into the package (jacgeom/include)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "jacgeom" / "include" / "jacgeom"
        target.mkdir(parents=True, exist_ok=True)
        for header in HEADERS:
            shutil.copy2(header, target / Path(header).name)


setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext, "build_py": build_py_with_headers},
)
