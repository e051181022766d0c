"""`rairl compare` as a user runs it, and the comparison's arithmetic (means, paired deltas, verdicts)."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from rairl.commands.compare import results_markdown, summarise


def _run(n_problems: int, pass1: float, seed: int, **extra) -> dict:
    rng = np.random.default_rng(seed)
    per_problem = list(np.clip(rng.normal(pass1, 0.2, n_problems), 0, 1))
    return {"pass1": float(np.mean(per_problem)), "per_problem_pass1": per_problem, "passk": 0.9, "k": 8,
            "mean_len": 30.0, "format_valid": 1.0, "tokens_trained": 1000, "verifier_free": True, **extra}


def test_summary_means_over_seeds_and_pairs_deltas_by_problem():
    seeds = [random.randrange(1000) for _ in range(3)]
    per_seed = {
        "sft_init": [_run(50, 0.3, s) for s in seeds],
        "sft": [_run(50, 0.5, s + 1) for s in seeds],
        "airl_step": [_run(50, 0.6, s + 2, mean_len=36.0) for s in seeds],
    }
    out = summarise(per_seed)
    for name, runs in per_seed.items():
        assert out[name]["pass1_mean"] == pytest.approx(np.mean([r["pass1"] for r in runs]))
        lo, hi = out[name]["pass1_ci"]
        assert lo <= out[name]["pass1_mean"] <= hi
    paired = np.concatenate([r["per_problem_pass1"] for r in per_seed["airl_step"]]) - np.concatenate(
        [r["per_problem_pass1"] for r in per_seed["sft"]])
    assert out["airl_step"]["delta_vs_sft"] == pytest.approx(paired.mean())
    assert "delta_vs_sft" not in out["sft"]
    assert out["airl_step"]["len_ratio_vs_sft_init"] == pytest.approx(36.0 / 30.0)


def test_markdown_names_the_winner_of_step_vs_sequence():
    per_seed = {"sft": [_run(20, 0.4, 0)], "airl_step": [_run(20, 0.3, 1)], "airl_sequence": [_run(20, 0.7, 2)]}
    metrics = {"seeds": [0], "seconds": 60.0, "methods": summarise(per_seed)}
    table = results_markdown(metrics)
    assert "| airl_sequence |" in table and "**sequence** wins" in table


def test_compare_command_writes_metrics_table_and_curves(tmp_path):
    out, results = tmp_path / "cmp", tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", "compare", "--quick", "--seeds", "1", "--methods",
                           "sft,airl_step,outcome", "--out", str(out), "--results_md", str(results), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["methods"]) == {"sft_init", "sft", "airl_step", "outcome"}
    for name, entry in m["methods"].items():
        assert {"pass1_mean", "pass1_ci", "passk", "mean_len"} <= set(entry), name
    assert m["methods"]["outcome"]["verifier_free"] is False and m["methods"]["airl_step"]["verifier_free"] is True
    sft_tokens, airl_tokens = m["methods"]["sft"]["tokens_trained"], m["methods"]["airl_step"]["tokens_trained"]
    assert sft_tokens >= 3000 and airl_tokens >= 3000  # both reached the quick budget
    assert "val_auroc_curves" in m["methods"]["airl_step"]
    for name in ("sft_init", "airl_step"):  # the warm start's reward, and the one R-AIRL trained on
        assert set(m["methods"][name]["reward_step_auroc"]) == {"log_pi", "g", "f", "ell"}, name
    assert "reward_step_auroc" not in m["methods"]["sft"] and "reward_step_auroc" not in m["methods"]["outcome"]
    assert "| ℓ = f − log π |" in (out / "results.md").read_text()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| airl_step |" in results.read_text() and results.read_text().startswith("# results\n")
    log = [json.loads(line) for line in (out / "seed1" / "airl_step" / "train_log.jsonl").read_text().splitlines()]
    assert {"disc_loss", "disc_acc", "mean_reward", "clipfrac", "mean_len", "approx_kl"} <= set(log[0])
    # the policy-update probe reads the same warm start
    probe = out / "probe.json"
    proc = subprocess.run([sys.executable, "benchmarks/probes/probe_policy_update.py", "--warm", str(out / "seed1" / "warm"),
                           "--lrs", "1e-4,1e-5", "--prompts", "2", "--group-size", "4", "--json", str(probe)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = json.loads(probe.read_text())
    assert sum(p["completions"].values()) == 8 and set(p["per_lr"]) == {"0.0001", "1e-05"}
    for row in p["per_lr"].values():
        assert set(row) == {"gain_pos", "gain_neg", "gain_zero", "approx_kl"}
        assert all(v is None or v == v for v in row.values())  # absent class or a number, never NaN
    # so does the reward's step probe (gold solution lines of the embedded task)
    steps = out / "steps.json"
    proc = subprocess.run([sys.executable, "benchmarks/probes/probe_reward_steps.py", "--warm", str(out / "seed1" / "warm"),
                           "--reward", str(out / "seed1" / "airl_step" / "reward"), "--json", str(steps)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(steps.read_text())
    assert set(s["step_auroc"]) == {"log_pi", "g", "f", "ell"} and s["correct_steps"] + s["first_wrong_steps"] > 0
    assert s["skipped_samples"] == 0  # every sample maps onto its gold solution, one action per line
    assert all(v is None or 0.0 <= v <= 1.0 for v in s["step_auroc"].values()) and 0.5 <= s["val_auroc_step_checker"] <= 1.0
