"""A reward trained as a LoRA adapter on a frozen (4-bit) base: saved as the adapter alone, scored after reload."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("peft")

from rairl.models.adapters import AdapterConfig, SharedBaseModels, load_base, load_reward_model  # noqa: E402
from rairl.models.reward import RewardModel  # noqa: E402
from rairl.score import RewardScorer  # noqa: E402


def test_adapter_reward_round_trip_scores_the_same(tiny_dir, tmp_path):
    from rairl.models.tokenizer import load_tokenizer

    cfg = AdapterConfig(quantization="fp32", lora_rank=4)
    shared = SharedBaseModels(load_base(tiny_dir, cfg), cfg=cfg)
    with torch.no_grad():  # a trained-looking reward: adapter B and both heads away from zero
        for p in shared.reward_parameters():
            p.normal_(0, 0.05)
    scorer = RewardScorer(shared.reward, load_tokenizer(tiny_dir))
    want = scorer.score(["Tom has 3 pens."], ["3 + 2 = 5\n#### 5"])[0]
    scorer.save_pretrained(tmp_path / "r")
    assert not (tmp_path / "r" / "lm" / "model.safetensors").exists()  # the base is not copied
    assert (tmp_path / "r" / "adapter" / "reward").is_dir()
    got = RewardScorer.from_pretrained(tmp_path / "r", device="cpu", dtype="fp32").score(["Tom has 3 pens."], ["3 + 2 = 5\n#### 5"])[0]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    loaded = load_reward_model(tmp_path / "r")
    assert loaded.adapter == "reward" and loaded.base["path"] == str(tiny_dir)
    fresh = RewardScorer(RewardModel(shared.model.get_base_model()), load_tokenizer(tiny_dir))  # the base, zero heads
    assert fresh.score(["Tom has 3 pens."], ["3 + 2 = 5\n#### 5"])[0] != pytest.approx(want, rel=1e-3)  # the adapter and heads matter


@pytest.mark.parametrize("quantization", ["fp32", "nf4"])
def test_train_reward_with_a_lora_reward_on_the_policy(tiny_dir, tmp_path, quantization):
    if quantization == "nf4":
        pytest.importorskip("bitsandbytes")
    from rairl.data import TaskConfig, make_splits

    demos = tmp_path / "demos.jsonl"
    examples = [p.example() for p in make_splits(5, TaskConfig(n_train=40, n_val=1, n_test=1, max_steps=3)).train]
    demos.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n" for e in examples))
    args = ["train-reward", "--data", str(demos), "--policy", str(tiny_dir), "--lora", "true", "--adapters.quantization", quantization,
            "--adapters.lora_rank", "4", "--warm.sft.steps", "0", "--warm.reward_train.steps", "4", "--warm.reward_train.batch_size", "8",
            "--warm.reward_train.eval_every", "2", "--warm.negative_samples", "1", "--warm.max_new_tokens", "16", "--device", "cpu",
            "--out", str(tmp_path / "r"), "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "r" / "reward" / "reward_config.json").read_text())
    assert meta["base"]["path"] == str(tiny_dir) and meta["base"]["adapters"]["quantization"] == quantization
    log = [json.loads(line) for line in (tmp_path / "r" / "reward_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(0.0 <= row["val_auroc"] <= 1.0 for row in log)
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", "score", "--reward", str(tmp_path / "r" / "reward"), "--data", str(demos),
                           "--device", "cpu", "--out", str(tmp_path / "s"), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "s" / "metrics.json").read_text())["rows"]
    assert len(rows) == 40 and all(len(r["step_scores"]) == len(r["steps"]) for r in rows)
