#!/usr/bin/env bash
# Build jacgeom._core with AddressSanitizer + UndefinedBehaviorSanitizer into a private
# virtual environment and run the test suite (or the pytest arguments given) against it.
#
#   tools/sanitize.sh                       # whole suite (about 10x slower than normal)
#   tools/sanitize.sh tests/test_rank.py    # a subset
#
# Python itself is not instrumented, so libasan is preloaded; leak detection is off because
# the interpreter's own allocations at exit would drown the report (the memory-growth test
# covers leaks instead). UBSan findings abort the run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SANITIZE_VENV:-/tmp/jacgeom-sanitize}
python -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip "setuptools>=77" wheel "pybind11>=2.12"
"$venv/bin/pip" install -q ".[test]"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
rm -rf build
CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
  "$venv/bin/pip" install -q --no-deps --force-reinstall --no-build-isolation --no-cache-dir .
so=$("$venv/bin/python" -c "import jacgeom._core as c; print(c.__file__)" 2>/dev/null || true)
if [ -z "$so" ] || ! nm -D "$so" | grep -q __asan; then
  # (importing an instrumented module without the preload fails, which is expected)
  so=$(ls "$venv"/lib/python3.*/site-packages/jacgeom/_core*.so)
  nm -D "$so" | grep -q __asan || { echo "the extension was not instrumented" >&2; exit 1; }
fi
asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}"
