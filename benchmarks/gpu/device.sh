#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool): install carried wheels, install rairl
# (building the C++ packer), run run.sh within BUDGET_S, and pack its JSON + log into
# $OUT/gpu_results.tgz (the tool returns at most 8 files).
#
#   here:  pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#              bitsandbytes==0.50.2 liger-kernel==0.8.5        (.whl/ is git-ignored)
#   there: bash benchmarks/gpu/device.sh      (carry .whl)
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=/tmp/rairl_gpu && mkdir -p "$RESULTS"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
# The benchmarks import the installed rairl (rairl.kernels is mapped from kernels/ at install):
# editable install, else a plain one into /tmp/rairl_site (old setuptools without PEP 660).
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$RESULTS/install.log" 2>&1 \
  || { python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile \
         --target /tmp/rairl_site . >>"$RESULTS/install.log" 2>&1 \
       && export PYTHONPATH="/tmp/rairl_site${PYTHONPATH:+:$PYTHONPATH}"; } \
  || { echo "!! install failed"; tail -20 "$RESULTS/install.log"; }
OUT="$RESULTS" PYTHON=python3 BUDGET_S="${BUDGET_S:-420}" bash benchmarks/gpu/run.sh 2>&1 \
  | tee "$RESULTS/run.log"
tar -C "$RESULTS" -czf "${OUT:-/tmp}/gpu_results.tgz" .
