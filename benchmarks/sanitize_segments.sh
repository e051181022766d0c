#!/usr/bin/env bash
# The step-segment packer (csrc/segments.cpp) under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds the extension with -fsanitize=address,undefined into a temporary folder (never over the
# installed rairl/_segments*.so), lays a `rairl` package there made of links to the checkout's
# sources plus that build, puts it first on PYTHONPATH (before the editable install), preloads
# libasan (the interpreter itself is not instrumented) and runs the packer's tests: every child
# process the tests start inherits the same build. Any ASan or UBSan finding aborts the process that
# made it (-fno-sanitize-recover, halt_on_error), so the run fails.
#
#   benchmarks/sanitize_segments.sh [pytest options...]
#   PYTHON=/path/to/python SRC=path/to/segments.cpp benchmarks/sanitize_segments.sh   (another interpreter / source)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/rairl_sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT  # rm does not follow the links into the checkout

# setup.py builds csrc/segments.cpp: a copy of the build files lets SRC point at another version of it
mkdir -p "$work/src/csrc"
cp "$root/setup.py" "$root/pyproject.toml" "$work/src/"
cp "${SRC:-$root/csrc/segments.cpp}" "$work/src/csrc/segments.cpp"
# CXXFLAGS reach the C++ compile (CFLAGS only stops pybind11 adding -g0); -fno-wrapv: CPython's compile
# flags hold -fwrapv, under which signed overflow is defined and UBSan never reports it
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -fno-wrapv -g"
if ! (cd "$work/src" && CFLAGS="$sanitize" CXXFLAGS="$sanitize" LDFLAGS="-fsanitize=address,undefined" \
      "$python" setup.py -q build_ext --build-lib "$work/build" --build-temp "$work/tmp") > "$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  exit 1
fi

mkdir -p "$work/pkg/rairl"
for entry in "$root"/rairl/*; do
  case $(basename "$entry") in _segments*.so | __pycache__) ;; *) ln -s "$entry" "$work/pkg/rairl/" ;; esac
done
ln -s "$root/kernels" "$work/pkg/rairl/kernels"
cp "$work"/build/rairl/_segments*.so "$work/pkg/rairl/"

export PYTHONPATH="$work/pkg${PYTHONPATH:+:$PYTHONPATH}"
# libstdc++ too: python does not link it, and ASan resolves its C++ `throw` interceptor at start-up
# (without it the first exception the extension raises aborts in __interceptor___cxa_throw)
export LD_PRELOAD
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# reports go to files as well: pytest holds the test's stderr, and an abort loses what it held
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$work/report"  # CPython and torch keep allocations until exit
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$work/report"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$work"  # not the checkout: the current folder comes first on sys.path, and it holds the installed build
"$python" - "$work" <<'EOF'
import sys
from rairl import _segments
assert _segments.__file__.startswith(sys.argv[1]), f"not the sanitized build: {_segments.__file__}"
print(f"sanitized build: {_segments.__file__}")
EOF
status=0
"$python" -m pytest -q -p no:cacheprovider --rootdir "$root" \
  "$root/tests/kernels/test_segments.py" "$root/tests/reliability/test_native.py" "$@" || status=$?
if compgen -G "$work/report*" > /dev/null; then
  echo "sanitizer reports:" >&2
  cat "$work"/report* >&2
  if [ "$status" -eq 0 ]; then status=1; fi
fi
exit "$status"
