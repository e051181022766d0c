#!/usr/bin/env bash
# GPU check of rairl on one CUDA device (one device call, BUDGET_S = 540 s):
#   1. the kernel tests, compiled Triton (no interpreter)
#   2. bench_memory: one AIRL iteration on an NF4 base + two LoRA adapters, Qwen2.5-1.5B shape (random
#      weights), B=8 x G=8, 256 + 512 tokens, rollouts by hf_merged: seconds, peak memory vs `rairl plan`,
#      sampler/trainer gap
#   3. bench_token_logprobs at V=151936, (N, H) = (4096, 896) and (16384, 3584), bf16: naive,
#      torch.compile, liger (if present) and rairl side by side
#   4. the same iteration with vllm (when it imports) and with hf, the AIRL loss benchmark, the user
#      chain (train-reward -> score -> rerank -> localise -> train --policy on CUDA), the other shapes,
#      the 0.5B memory run and the Triton tile sweep, as far as the budget goes
# Steps run most-wanted first and are skipped once BUDGET_S is spent. bitsandbytes (the memory steps)
# and liger-kernel are optional; benchmarks/gpu/device.sh installs carried wheels of them.
# JSON goes to ${OUT:-benchmarks/out}; the summary table is printed last.
#
#   bash benchmarks/gpu/run.sh            # from anywhere; PYTHON=... to pick the interpreter
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/out}"
PY="${PYTHON:-python}"
BUDGET_S="${BUDGET_S:-540}"          # stop starting new steps after this many seconds (one device call: < 600 s)
mkdir -p "$OUT"
unset TRITON_INTERPRET RAIRL_KERNEL_BACKEND
export PYTHONUNBUFFERED=1
status=0

left() { echo $(( BUDGET_S - SECONDS )); }
step() {  # step NAME TIMEOUT_S CMD...: run if the budget allows, never abort the script
    local name=$1 limit=$2; shift 2
    if (( $(left) < 20 )); then echo "== skip $name (budget spent)"; return; fi
    (( limit > $(left) )) && limit=$(left)
    echo "== $name (limit ${limit}s, ${SECONDS}s elapsed)"
    timeout "$limit" "$@" || { echo "!! $name failed or timed out (rc=$?)"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
                                      torch.cuda.get_device_name())"

step "kernel tests (CUDA)" 120 "$PY" -m pytest tests/kernels -q -p no:cacheprovider

V=151936
token_logprobs() {  # token_logprobs N H VARIANTS...
  local N=$1 H=$2; shift 2
  step "token_logprobs N=$N H=$H" 150 "$PY" benchmarks/bench_token_logprobs.py --device cuda \
    --n "$N" --h "$H" --v $V --dtype bf16 --variants "$@" --json "$OUT/token_logprobs_n${N}_h${H}.json"
}
# most wanted first: one 1.5B-shape iteration per rollout engine (one step each, so a timeout keeps the others;
# hf measured 81.9 s/iteration before, so it runs last), the two headline log-prob shapes, the AIRL loss
memory_engine() {  # memory_engine ENGINE LIMIT_S
  step "memory nf4+lora 1.5b [$1]" "$2" "$PY" benchmarks/bench_memory.py --device cuda --models 1.5b --engines "$1" \
    --warmup 0 --repeats 1 --json "$OUT/memory_nf4_lora_1p5b_$1.json"
}
memory_engine hf_merged 120
token_logprobs 4096 896 naive rairl rairl_torch liger compile
token_logprobs 16384 3584 naive rairl rairl_torch liger compile
"$PY" -c "import vllm" 2>/dev/null && memory_engine vllm 150
memory_engine hf 150
step "airl_loss steps" 60 "$PY" benchmarks/bench_airl_loss.py --device cuda --n 1048576 \
  --action-len 32 --dtype fp32 --variants torch triton --json "$OUT/airl_loss_n1048576_steps.json"

# the user chain on the GPU: train-reward -> score -> rerank -> localise -> train --policy on a random
# Qwen2.5-0.5B-shape checkpoint (no download); fails unless every stage reports its models on CUDA
step "user chain" 240 "$PY" benchmarks/gpu/user_chain.py --device cuda --json "$OUT/user_chain.json"

step "airl_loss dense" 60 "$PY" benchmarks/bench_airl_loss.py --device cuda --n 1048576 \
  --action-len 1 --dtype fp32 --variants torch triton --json "$OUT/airl_loss_n1048576_dense.json"
step "memory nf4+lora 0.5b" 120 "$PY" benchmarks/bench_memory.py --device cuda --models 0.5b \
  --json "$OUT/memory_nf4_lora.json"
for NH in 4096:1536 4096:3584 16384:896 16384:1536; do
  token_logprobs "${NH%:*}" "${NH#*:}" naive rairl rairl_torch liger
done

step "token_logprobs tile sweep" 120 "$PY" benchmarks/bench_token_logprobs.py --device cuda \
  --n 16384 --h 1536 --v $V --dtype bf16 --variants rairl --sweep \
  --json "$OUT/token_logprobs_sweep_n16384_h1536.json"

echo "== summary (${SECONDS}s elapsed)"
"$PY" benchmarks/gpu/summarize.py "$OUT"
exit $status
