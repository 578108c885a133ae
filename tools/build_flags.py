"""The compiler flags of jacgeom._core, written once.

Three builds read this file: setup.py (the release build), tools/sanitize.sh and
tests/test_sanitizers.py (the AddressSanitizer + UndefinedBehaviorSanitizer builds). It
imports nothing outside the standard library, so that setup.py can load it in pip's isolated
build environment; setup.py lists it among the extension's ``depends``, so an edited flag
rebuilds the extension and the sdist carries the file.

    python tools/build_flags.py release           # the release flags, one line
    python tools/build_flags.py sanitize          # the sanitizer build's compile flags
    python tools/build_flags.py sanitize-link     # ... and its link flags
    python tools/build_flags.py sanitize-env      # the runtime options, as `export` lines
"""

from __future__ import annotations

import sys

#: The language standard; setup.py passes it to Pybind11Extension as cxx_std=17.
CXX_STANDARD = 17

#: Flags of every build of the extension: warnings on, OpenMP's simd pragmas without its
#: runtime, and only the module's init function exported (pybind11 recommends hidden).
COMMON = ["-fopenmp-simd", "-Wall", "-Wextra", "-fvisibility=hidden"]

#: The release build (setup.py).
RELEASE = ["-O3", *COMMON]

#: The sanitizer build: -O1 keeps it fast enough to run the kernel tests while the
#: reports still point at the right lines; any UBSan finding aborts instead of warning.
SANITIZERS = "address,undefined"
SANITIZE = [
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    f"-fsanitize={SANITIZERS}",
    "-fno-sanitize-recover=undefined",
    *COMMON,
]
SANITIZE_LINK = [f"-fsanitize={SANITIZERS}"]

#: The sanitizer runtime's options. Python itself is not instrumented, so the runtimes are
#: preloaded (libasan.so, libubsan.so); leak detection is off because the interpreter's own
#: allocations at exit would drown the report (tests/test_reliability.py's memory-growth
#: tests cover leaks); the first finding of either sanitizer aborts the process.
SANITIZE_RUNTIME = ["libasan.so", "libubsan.so"]
SANITIZE_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def main(argv: list[str]) -> int:
    lists = {
        "release": RELEASE,
        "sanitize": SANITIZE,
        "sanitize-link": SANITIZE_LINK,
        "sanitize-runtime": SANITIZE_RUNTIME,
    }
    what = argv[0] if len(argv) == 1 else ""
    if what in lists:
        print(" ".join(lists[what]))
    elif what == "sanitize-env":
        for name, value in SANITIZE_ENV.items():
            print(f"export {name}={value}")
    else:
        print(f"usage: build_flags.py {{{'|'.join([*lists, 'sanitize-env'])}}}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
