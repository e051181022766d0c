"""The `vllm` rollout engine, in vLLM's own environment (benchmarks/vllm_env/setup.sh builds it).

Slow, and skipped unless RAIRL_VLLM_PYTHON names that environment's python: vLLM pins a transformers
older than rairl's main environment, so it cannot be imported beside the rest of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vllm_env" / "check_engine.py"


@pytest.mark.slow
def test_vllm_engine_samples_what_the_trainer_trains(tmp_path):
    python = os.environ.get("RAIRL_VLLM_PYTHON")
    if not python:
        pytest.skip("RAIRL_VLLM_PYTHON is not set (bash benchmarks/vllm_env/setup.sh ENV, then RAIRL_VLLM_PYTHON=ENV/bin/python)")
    out = tmp_path / "check.json"
    proc = subprocess.run([python, str(SCRIPT), "--prompts", "8", "--repeats", "1", "--json", str(out)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())  # the script asserts the agreement itself; here, that it ran through
    assert res["gap_refreshed"] < 1e-4 < res["gap_stale"] and set(res["completion_tokens_per_s"]) == {"hf", "hf_merged", "vllm"}
