"""Smoke test of benchmarks/bench_trainer.py: a tiny run, in a subprocess, writes a sane JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_trainer.py"


def test_bench_trainer_tiny_run(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--prompts", "2", "--num-generations", "2", "--max-new-tokens", "4", "--hidden-size", "32",
            "--layers", "1", "--heads", "2", "--intermediate-size", "64", "--repeats", "2", "--warmup", "1",
            "--threads", "1", "--rollout-engines", "hf,hf_merged", "--quantization", "fp32", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speedup_vs_trl" in proc.stdout
    res = json.loads(out.read_text())
    assert res["batch_sequences"] == 4
    for side in ("rairl", "trl"):
        r = res["results"][side]
        assert r["n"] == 2 and len(r["times_s"]) == 2
        assert 0 < r["p20_s"] <= r["median_s"] <= r["p80_s"]
        assert 1 <= r["mean_completion_len"] <= 4  # EOS counted, never past max_new_tokens
    assert len(res["round_ratios"]) == 2 and res["speedup_vs_trl"] > 0
    assert res["trl_version"] and res["torch"]
    for engine in ("hf", "hf_merged"):
        r = res["rollout_engines"][engine]
        assert r["completion_tokens_per_s"] > 0 and r["sampler_gap"] < 1e-4
