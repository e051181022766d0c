#!/usr/bin/env bash
# `rairl compare` with its seeds side by side: one process and one thread per seed, all writing into
# OUT (each seed has its own OUT/seedS folder; its log is OUT.seedS.log, beside OUT, since OUT holds
# only what rairl writes; the seeds that find OUT claimed continue that run), then one more
# `rairl compare` over every seed, which reuses the finished runs and writes the table,
# metrics.json and curves.
#
#   benchmarks/compare_parallel.sh OUT SEEDS [rairl compare options...]
#   benchmarks/compare_parallel.sh runs/scarce 1,2,3 --protocol scarce --eval.samples 4
set -euo pipefail
out=$1; seeds=$2; shift 2
rairl=${RAIRL:-rairl}
IFS=, read -ra list <<< "$seeds"
pids=()
for s in "${list[@]}"; do
  OMP_NUM_THREADS=1 "$rairl" compare --seeds "$s" --out "$out" "$@" > "$out.seed$s.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
if [ "$status" -ne 0 ]; then echo "a seed failed (exit $status): see $out.seed*.log" >&2; exit "$status"; fi
"$rairl" compare --seeds "$seeds" --out "$out" --no-progress "$@"
