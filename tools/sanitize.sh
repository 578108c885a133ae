#!/usr/bin/env bash
# Build jacgeom._core with AddressSanitizer + UndefinedBehaviorSanitizer into a private
# virtual environment and run the test suite (or the pytest arguments given) against it.
#
#   tools/sanitize.sh                       # whole suite (about 10x slower than normal)
#   tools/sanitize.sh tests/test_rank.py    # a subset
#
# The flags, the preloaded runtimes and their options come from tools/build_flags.py (the
# file setup.py and tests/test_sanitizers.py read): Python itself is not instrumented, so
# libasan is preloaded; leak detection is off; any finding aborts the run.
# tests/test_sanitizers.py (`pytest -m sanitizers`, a step of .ci/run) builds the same
# extension without a virtual environment and runs the kernel tests against it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SANITIZE_VENV:-/tmp/jacgeom-sanitize}
python -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip "setuptools>=77" wheel "pybind11>=2.12"
"$venv/bin/pip" install -q ".[test]"
flags=$(python tools/build_flags.py sanitize)
link=$(python tools/build_flags.py sanitize-link)
rm -rf build
# setup.py's release flags follow these on the command line (its -O3 wins over -O1)
CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="$link" \
  "$venv/bin/pip" install -q --no-deps --force-reinstall --no-build-isolation --no-cache-dir .
so=$("$venv/bin/python" -c "import jacgeom._core as c; print(c.__file__)" 2>/dev/null || true)
if [ -z "$so" ] || ! nm -D "$so" | grep -q __asan; then
  # (importing an instrumented module without the preload fails, which is expected)
  so=$(ls "$venv"/lib/python3.*/site-packages/jacgeom/_core*.so)
  nm -D "$so" | grep -q __asan || { echo "the extension was not instrumented" >&2; exit 1; }
fi
preload=""
for lib in $(python tools/build_flags.py sanitize-runtime); do
  preload="$preload $(g++ -print-file-name="$lib")"
done
export LD_PRELOAD="${preload# }"
eval "$(python tools/build_flags.py sanitize-env)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}"
