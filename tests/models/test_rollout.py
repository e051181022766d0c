"""Rollout engines: `hf_merged` (base dequantized, policy adapter merged) samples what the trainer trains."""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("peft")

from rairl.models.adapters import AdapterConfig, SharedBaseModels, load_base  # noqa: E402
from rairl.models.batch import collate  # noqa: E402
from rairl.models.merge import merged_state
from rairl.models.rollout import HFSampler, MergedSampler, RolloutConfig  # noqa: E402

FP32 = AdapterConfig(quantization="fp32", lora_rank=4, lora_alpha=8)


def _models(tiny_dir, cfg: AdapterConfig = FP32) -> SharedBaseModels:
    models = SharedBaseModels(load_base(tiny_dir, cfg), cfg=cfg)
    _update(models)
    return models


@torch.no_grad()
def _update(models: SharedBaseModels) -> None:
    """A policy update: new values in every policy LoRA weight (B starts at 0, so the adapter then acts)."""
    for p in models.policy_parameters():
        p.normal_(std=0.3)


def _gap(models: SharedBaseModels, sampler, tokenizer_ids: list[list[int]]) -> float:
    """Mean |sampler log-prob − trainer log-prob| per sampled token (nats)."""
    samples, logps = sampler.sample(tokenizer_ids, n_samples=3, max_new_tokens=12, eos_id=2, pad_id=0, seed=random.randrange(1000),
                                    progress=False)
    prompts = [p for p in tokenizer_ids for _ in range(3)]
    comps, lps = [c for g in samples for c in g], [lp for g in logps for lp in g]
    batch = collate(prompts, comps, 0)
    with torch.no_grad():
        trainer = models.policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
    diffs = [abs(float(trainer[r, start + k]) - lp) for r, (start, row) in enumerate(zip(batch.prompt_lens.tolist(), lps, strict=True))
             for k, lp in enumerate(row)]
    return sum(diffs) / len(diffs)


PROMPTS = [[5, 9, 11, 7], [6, 3], [8, 8, 12, 13, 4, 10]]


def test_merged_copy_holds_the_policy_and_follows_its_updates(tiny_dir):
    models = _models(tiny_dir)
    merged = MergedSampler(models)
    ids = torch.randint(4, 100, (2, 9))
    with torch.no_grad():
        plain = merged.lm(input_ids=ids).logits
        with models.model.disable_adapter():
            base = models.model(input_ids=ids).logits
    trainer_lp = models.policy_logprobs(ids, torch.ones_like(ids)).detach()
    merged_lp = torch.log_softmax(plain.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(merged_lp, trainer_lp[:, 1:], atol=1e-5, rtol=0)
    assert (plain - base).abs().max() > 1e-2  # the adapter is merged in, not left out
    assert _gap(models, merged, PROMPTS) < 1e-4
    _update(models)  # a stale copy samples another policy ...
    assert _gap(models, merged, PROMPTS) > 1e-3
    merged.refresh()  # ... until it is refreshed
    assert _gap(models, merged, PROMPTS) < 1e-4


def test_hf_and_merged_samplers_report_the_trainers_log_probs(tiny_dir):
    models = _models(tiny_dir)
    assert _gap(models, HFSampler(models), PROMPTS) < 1e-4
    assert _gap(models, MergedSampler(models), PROMPTS) < 1e-4


def test_nf4_merge_dequantizes_the_base(tiny_dir):
    pytest.importorskip("bitsandbytes")
    cfg = AdapterConfig(quantization="nf4", lora_rank=4, lora_alpha=8)
    models = _models(tiny_dir, cfg)
    state = dict(merged_state(models.model, "policy", torch.float32))
    q = dict(models.model.get_base_model().named_modules())["model.layers.0.mlp.down_proj"]
    assert state["model.layers.0.mlp.down_proj.weight"].shape == (q.out_features, q.in_features)
    assert not any(".lora_" in k or "base_layer" in k for k in state)
    # bf16 compute in the 4-bit layers against fp32 merged weights: close, not equal
    assert _gap(models, MergedSampler(models), PROMPTS) < 5e-2


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="RolloutConfig.engine='sglang'"):
        RolloutConfig(engine="sglang")


def test_train_with_the_merged_engine_logs_what_hf_logs(tmp_path):
    """`rairl train --lora true --rollout.engine hf_merged` end to end: the same rows as `hf` (same samples,
    log-probs to rounding), and both report the sampler/trainer gap."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", "--quick", "--no-progress", "--lora", "true", "--adapters.quantization", "fp32", "--adapters.lora_rank", "4",
            "--train.iterations", "2", "--train.token_budget", "0", "--train.checkpoint_every", "0", "--train.disc_warmup_iters", "0"]
    subprocess.run([sys.executable, "-m", "rairl.cli", *args, "--out", str(tmp_path / "hf")], check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "rairl.cli", *args, "--rollout.engine", "hf_merged", "--out", str(tmp_path / "merged"),
                    "--warm", str(tmp_path / "hf" / "warm")], check=True, env=env, capture_output=True)
    hf, merged = ([json.loads(line) for line in (tmp_path / d / "train_log.jsonl").read_text().splitlines()] for d in ("hf", "merged"))
    assert len(hf) == len(merged) == 2
    for a, b in zip(hf, merged, strict=True):
        assert a["sampler_gap"] < 1e-4 and b["sampler_gap"] < 1e-4
        assert (a["tokens"], a["mean_len"]) == (b["tokens"], b["mean_len"])  # the same samples
        for k in ("disc_loss", "mean_reward", "pg_loss", "grad_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
