"""`rairl compare` as a user runs it, and the comparison's arithmetic (means, paired deltas, verdicts)."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

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


class _SpyKey:
    """A GoldKey that counts every read of an unlabelled question's answer."""

    def __init__(self, key):
        self.key, self.reads = key, 0

    def answer(self, question: str) -> str:
        self.reads += 1
        return self.key.answer(question)


@pytest.mark.parametrize("protocol", ["scarce", "length"])
def test_protocol_arms_never_read_unlabelled_gold_unless_they_say_so(tmp_path, protocol):
    from rairl.commands.compare import quick_compare_config
    from rairl.data.protocols import protocol_data
    from rairl.train.protocol import ARMS, READS_GOLD, run_protocol_seed
    from rairl.train.warm_start import load_warm_start

    cfg = quick_compare_config(seeds=(1,), protocol=protocol)
    data, key = protocol_data(protocol, 1, cfg.scarce.split, cfg.task, cfg.eval.problems)
    spy = _SpyKey(key)
    run = lambda arms: run_protocol_seed(protocol, cfg.scarce, cfg.task, cfg.warm, cfg.eval.problems, cfg.eval.samples, 1, arms,  # noqa: E731
                                         tmp_path / "seed1", cfg.torch_device(), cfg.torch_dtype(), progress=False, gold=spy)
    summary, results = run([a for a in ARMS if a not in READS_GOLD])
    assert spy.reads == 0, "an arm that claims not to read gold read an unlabelled question's answer"
    assert all(not m["reads_gold"] for m in results.values())
    # the reward's positives are D's demonstrations only; U's questions come in as negatives' prompts
    warm = load_warm_start(tmp_path / "seed1" / "reward")
    demo_prompts = {e.prompt for e in data.demos}
    experts = [r for r in warm.train_records if r.label == 1]
    assert experts and all(warm.tokenizer.decode(r.prompt_ids).split("Question: ")[-1].split("\nAnswer")[0] in demo_prompts
                           for r in experts)
    _, gold_results = run(["rft_gold"])
    assert spy.reads > 0 and gold_results["rft_gold"]["reads_gold"] is True


def test_arms_choose_their_round_and_temperature_on_fresh_draws_of_v_not_on_sft_es_lucky_one(tmp_path, monkeypatch):
    """SFT-ES's V score is the best of many checks on one draw (biased up): an arm re-scores its start on
    its own draw, and the temperature is chosen on a third."""
    import rairl.train.protocol as protocol
    from rairl.commands.compare import quick_compare_config

    cfg = quick_compare_config(seeds=(1,), protocol="scarce")
    real, calls = protocol.evaluate_policy, []

    def spy(policy, tok, questions, answers, samples, max_new, seed, progress, temperature):
        out = real(policy, tok, questions, answers, samples, max_new, seed=seed, progress=progress, temperature=temperature)
        calls.append((seed, temperature))
        draw = (seed - 1 - 20_000) // 1_000 if seed >= 20_000 else None
        if draw == 0:
            out["pass1"] = 0.9  # SFT-ES looks great on its own draw
        elif draw == 1:
            out["pass1"] = 0.1 if sum(1 for s, _ in calls if s == seed) == 1 else 0.2  # the start, then every round, on the arm's draw
        elif draw == 2:
            out["pass1"] = {0.5: 0.3, 1.0: 0.2}[temperature]
        return out

    monkeypatch.setattr(protocol, "evaluate_policy", spy)
    _, results = protocol.run_protocol_seed("scarce", cfg.scarce, cfg.task, cfg.warm, cfg.eval.problems, cfg.eval.samples, 1,
                                            ["rft_majority"], tmp_path / "seed1", cfg.torch_device(), cfg.torch_dtype(), progress=False)
    m = results["rft_majority"]
    assert m["train"]["best_round"] == 1 and m["train"]["best_val"] == 0.2  # beats its start's 0.1, not SFT-ES's lucky 0.9
    assert m["tuned_T"] == 0.5 and m["val_pass1_by_T"] == {"0.5": 0.3, "1.0": 0.2}
    assert {s for s, _ in calls if s >= 20_000} == {20_001, 21_001, 22_001}


def test_arm_lr_is_rft_lr_capped_at_sft_es_rate_where_its_weights_were_made():
    from rairl.train.protocol import ProtocolConfig, arm_lr
    from rairl.train.rft import RFTConfig
    from rairl.train.sft import SFTConfig

    cfg = ProtocolConfig(sft=SFTConfig(steps=101, lr=2e-3, warmup=1, check_every=10), rft=RFTConfig(lr=1e-3))
    assert arm_lr(cfg, 0) == 1e-3  # untrained start: no cap
    assert arm_lr(cfg, 1) == 1e-3  # step 0 ran at the peak 2e-3
    assert arm_lr(cfg, 51) == 1e-3  # step 50 of 100, cosine half-way: 2e-3 * (0.1 + 0.45) = 1.1e-3, above the cap
    assert arm_lr(cfg, 76) == pytest.approx(2e-3 * (0.1 + 0.45 * (1 - 0.5**0.5)))  # step 75: cos(3 pi / 4) = -1/sqrt(2)
    assert arm_lr(cfg, 101) == pytest.approx(2e-4)  # the schedule's end: 10% of the peak


def test_every_arm_after_sft_es_fine_tunes_at_the_capped_rate(tmp_path, monkeypatch):
    import rairl.train.protocol as protocol
    from rairl.commands.compare import quick_compare_config

    cfg = quick_compare_config(seeds=(1,), protocol="scarce")
    real_rft, real_es, lrs = protocol.run_rft, protocol.train_sft_es, {}

    def rft_spy(policy, tok, questions, demos, rft_cfg, *args, **kw):
        lrs["rft"] = rft_cfg.lr
        return real_rft(policy, tok, questions, demos, rft_cfg, *args, **kw)

    def es_spy(model, p, c, pad, sft_cfg, *args, **kw):
        lrs.setdefault("es", []).append(sft_cfg.lr)
        return real_es(model, p, c, pad, sft_cfg, *args, **kw)

    es_scores = iter(range(1, 100))

    def val(policy, tok, data, pcfg, seed, temperature, draw):  # SFT-ES improves at every check: it ends on its last step
        return next(es_scores) / 100 if draw == protocol.ES_DRAW else real_val(policy, tok, data, pcfg, seed, temperature, draw)

    real_val = protocol.val_pass1
    monkeypatch.setattr(protocol, "val_pass1", val)
    monkeypatch.setattr(protocol, "run_rft", rft_spy)
    monkeypatch.setattr(protocol, "train_sft_es", es_spy)
    _, results = protocol.run_protocol_seed("scarce", cfg.scarce, cfg.task, cfg.warm, cfg.eval.problems, cfg.eval.samples, 1,
                                            ["rft_reward", "sft_more"], tmp_path / "seed1", cfg.torch_device(), cfg.torch_dtype(),
                                            progress=False)
    es_step = json.loads((tmp_path / "seed1" / "sft_es" / "es.json").read_text())["best_step"]
    want = protocol.arm_lr(cfg.scarce, es_step)
    assert es_step == cfg.scarce.sft.steps and want < cfg.scarce.rft.lr  # the cap bites: passing rft.lr on unchanged fails
    assert lrs["rft"] == want and lrs["es"] == [cfg.scarce.sft.lr, want]  # SFT-ES itself, then sft_more
    assert results["rft_reward"]["train"]["lr"] == want == results["sft_more"]["train"]["lr"]


def test_compare_protocol_scarce_writes_every_arm_with_its_accounting(tmp_path):
    out = tmp_path / "scarce"
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", "compare", "--quick", "--protocol", "scarce", "--seeds", "1",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"] == "scarce"
    assert set(m["methods"]) == {"sft_es", "sft_more", "rft_reward", "rft_reward_steps", "rft_majority", "rft_logprob", "rft_gold",
                                 "airl_adversarial"}
    for name, entry in m["methods"].items():
        assert {"pass1_mean", "pass1_ci", "pass1_tuned_T", "demos", "policy_tokens", "seconds", "reads_gold"} <= set(entry), name
        assert entry["demos"] == 40 and entry["reads_gold"] == (name == "rft_gold")
        assert ("delta_vs_sft_es_ci" in entry) == (name != "sft_es")
    assert m["methods"]["rft_reward"]["policy_tokens"]["sampled"] > 0 and m["methods"]["sft_more"]["policy_tokens"]["sampled"] == 0
    assert set(m["go_no_go"]["reward_step_auroc_from_line5"]) == {"log_pi", "g", "f", "ell"}
    made = m["shared"]["1"]["sft_es"]["environment"]  # where SFT-ES was trained: the same seed can climb on one machine only
    assert made["torch"] == torch.__version__ and made["transformers"] == transformers.__version__ and made["cpu"]
    assert "| rft_reward |" in proc.stdout and "| rft_reward |" in (out / "results.md").read_text()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the same folder refuses another protocol's run rather than mixing the two
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", "compare", "--quick", "--protocol", "length", "--seeds", "1",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "another config" in proc.stderr and "protocol" in proc.stderr


def test_compare_refuses_an_arm_of_another_protocol_and_sft_more_alone():
    from rairl.commands.compare import CompareConfig

    with pytest.raises(ValueError, match="unknown"):
        CompareConfig(protocol="scarce", methods=("airl_step",))
    with pytest.raises(ValueError, match="rft_reward"):
        CompareConfig(protocol="scarce", methods=("sft_es", "sft_more"))
    with pytest.raises(ValueError, match="protocol"):
        CompareConfig(protocol="plenty")
    from rairl.train.rft import RFTConfig

    with pytest.raises(ValueError, match="scarce.rft"):
        CompareConfig(protocol="scarce", rft=RFTConfig(rounds=9))
