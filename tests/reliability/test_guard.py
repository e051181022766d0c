"""Every training loop skips and counts a step whose loss is NaN, and stops after MAX_NONFINITE_STEPS in a row.

The loss functions the loops import are wrapped so chosen calls (1-based) return a NaN loss with
its NaN gradients, as an overflow or a diverged model would.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import rairl.train.reward as reward_module
import rairl.train.sft as sft_module
import rairl.train.trainer as trainer_module
from rairl.airl.discriminator import DiscRecord
from rairl.airl.layout import step_rule
from rairl.airl.negatives import discriminator_records
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.modelset import ModelSet
from rairl.models.reward import RewardConfig, RewardModel
from rairl.train.guard import MAX_NONFINITE_STEPS, DivergedError
from rairl.train.reward import RewardTrainConfig, train_reward
from rairl.train.sft import SFTConfig, train_sft
from rairl.train.trainer import AIRLTrainer, TrainConfig

NAN = float("nan")


def nan_on(real, calls: set[int]):
    """`real` (returning a loss, or (loss, extra)) with the loss times NaN on the chosen calls."""
    count = [0]

    def loss_fn(*args, **kwargs):
        count[0] += 1
        out = real(*args, **kwargs)
        if count[0] not in calls:
            return out
        if isinstance(out, torch.Tensor):
            return out * NAN
        loss, extra = out
        if isinstance(extra, dict) and "loss" in extra:  # policy_loss's stats hold the loss too
            extra = {**extra, "loss": extra["loss"] * NAN}
        return loss * NAN, extra
    return loss_fn


def _pairs(tokenizer, n: int = 24):
    problems = make_splits(random.randrange(1000), TaskConfig(n_train=n, n_val=1, n_test=1)).train
    p = encode_prompts(tokenizer, [x.question() for x in problems], 512)
    c = encode_completions(tokenizer, ["\n".join(x.solution_steps()) for x in problems], 512)
    return p, c


def _finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in module.state_dict().values() if v.is_floating_point())


# ---------------------------------------------------------------- SFT


def test_sft_skips_and_counts_nan_steps(tiny, monkeypatch, tmp_path: Path) -> None:
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer)
    monkeypatch.setattr(sft_module, "completion_nll", nan_on(sft_module.completion_nll, {2, 3, 5}))
    rows = train_sft(lm, p, c, tokenizer.pad_token_id, SFTConfig(steps=6, batch_size=8, lr=1e-3, warmup=1, log_every=3),
                     metrics_path=tmp_path / "sft.jsonl", progress=False)
    assert [r["skipped_steps"] for r in rows] == [2, 3]
    assert all(r["loss"] == r["loss"] for r in rows)  # the mean of the steps taken: never NaN
    assert [json.loads(line)["skipped_steps"] for line in (tmp_path / "sft.jsonl").read_text().splitlines()] == [2, 3]
    assert _finite(lm)


def test_sft_stops_after_nan_steps_in_a_row(tiny, monkeypatch) -> None:
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer)
    monkeypatch.setattr(sft_module, "completion_nll", nan_on(sft_module.completion_nll, set(range(2, 100))))
    with pytest.raises(DivergedError, match=rf"SFT step {1 + MAX_NONFINITE_STEPS}: loss is nan "
                                            rf"{MAX_NONFINITE_STEPS} steps in a row.*SFTConfig\.lr \(now 0\.001\)"):
        train_sft(lm, p, c, tokenizer.pad_token_id, SFTConfig(steps=10, batch_size=8, lr=1e-3, warmup=1), progress=False)
    assert _finite(lm)


# ---------------------------------------------------------------- reward training


def _reward_setup(tiny):
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer, 32)
    rng = random.Random()
    vocab = list(range(3, len(tokenizer)))
    experts = [DiscRecord(pi, ci, 1) for pi, ci in zip(p, c, strict=True)]
    negatives = [DiscRecord(pi, [rng.choice(vocab) for _ in ci] + [tokenizer.eos_token_id], 0) for pi, ci in zip(p, c, strict=True)]
    rm = RewardModel(copy.deepcopy(lm), RewardConfig(granularity="step"))
    # validation negatives first: a model scoring every action NaN would rank as a perfect separator by list order
    val = negatives[-6:] + experts[-6:]
    return rm, lm, experts[:-6] + negatives[:-6], val, tokenizer.pad_token_id, step_rule(rm.cfg, tokenizer)


def test_reward_training_skips_and_counts_nan_steps(tiny, monkeypatch, tmp_path: Path) -> None:
    rm, lm, train, val, pad, rule = _reward_setup(tiny)
    monkeypatch.setattr(reward_module, "discriminator_loss", nan_on(reward_module.discriminator_loss, {1, 2, 4}))
    best = train_reward(rm, lm, train, val, pad, rule, RewardTrainConfig(steps=6, batch_size=8, lr=1e-3, warmup=1, eval_every=2),
                        metrics_path=tmp_path / "reward.jsonl", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "reward.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [2, 3, 3]
    assert rows[-1]["loss"] == rows[-1]["loss"]  # step 6 trained
    assert best["auroc"] == best["auroc"] and _finite(rm)


def test_reward_training_stops_after_nan_steps_in_a_row(tiny, monkeypatch) -> None:
    rm, lm, train, val, pad, rule = _reward_setup(tiny)
    monkeypatch.setattr(reward_module, "discriminator_loss", nan_on(reward_module.discriminator_loss, {2, 3, 4}))
    with pytest.raises(DivergedError, match=r"reward training step 4: loss is nan 3 steps in a row.*RewardTrainConfig\.lr"):
        train_reward(rm, lm, train, val, pad, rule, RewardTrainConfig(steps=8, batch_size=8, lr=1e-3, warmup=1, eval_every=8),
                     progress=False)
    assert _finite(rm)


# ---------------------------------------------------------------- the AIRL loop


SMALL = TrainConfig(iterations=1, prompts_per_iter=3, group_size=4, max_new_tokens=16, minibatch_size=5,
                    n_disc=1, disc_batch_size=8, lr=1e-3, disc_lr=1e-3, checkpoint_every=0, eval_every=0)


def _trainer(tiny) -> AIRLTrainer:
    tokenizer, lm = tiny
    examples = [p.example() for p in make_splits(random.randrange(10_000), TaskConfig(n_train=16, n_val=1, n_test=1)).train]
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], 512)
    completions = encode_completions(tokenizer, [e.completion for e in examples], 512)
    records, _ = discriminator_records(tokenizer, examples, prompts, completions, [], random.Random())
    models = ModelSet(copy.deepcopy(lm), RewardModel(copy.deepcopy(lm), RewardConfig()))
    return AIRLTrainer(models, tokenizer, prompts, records, replace(SMALL, seed=random.randrange(1000)),
                       answers=[e.answer for e in examples], progress=False)


def test_discriminator_step_skips_nan_and_stops_after_three(tiny, monkeypatch) -> None:
    tr = _trainer(tiny)
    rollout = tr.rollout()
    monkeypatch.setattr(trainer_module, "discriminator_loss", nan_on(trainer_module.discriminator_loss, {1, 2, 3}))
    before = copy.deepcopy(tr.models.reward.state_dict())
    assert tr.discriminator_step(rollout)["disc_skipped_steps"] == 1
    assert tr.discriminator_step(rollout)["disc_skipped_steps"] == 2
    assert all(torch.equal(v, before[k]) for k, v in tr.models.reward.state_dict().items())  # no optimiser step
    with pytest.raises(DivergedError, match=r"iteration 1: discriminator step: loss is nan 3 steps in a row.*TrainConfig\.disc_lr"):
        tr.discriminator_step(rollout)


def test_policy_update_skips_nan_minibatches_and_stops_after_three(tiny, monkeypatch) -> None:
    tr = _trainer(tiny)
    rollout = tr.rollout()
    advantages = tr.token_advantages(rollout, tr.action_rewards(rollout))
    steps = SMALL.ppo_epochs * -(-SMALL.prompts_per_iter * SMALL.group_size // SMALL.minibatch_size)  # 2 epochs of 3 minibatches
    monkeypatch.setattr(trainer_module, "policy_loss", nan_on(trainer_module.policy_loss, {1, 2}))
    stats = tr.policy_update(rollout, advantages)
    assert stats["skipped_steps"] == 2 and tr.policy_steps == steps - 2
    assert all(v == v for v in stats.values()) and _finite(tr.models.policy)
    monkeypatch.setattr(trainer_module, "policy_loss", nan_on(trainer_module.policy_loss, set(range(1, 100))))
    before = copy.deepcopy(tr.models.policy.state_dict())
    with pytest.raises(DivergedError, match=r"policy step \d+: loss is nan 3 steps in a row.*TrainConfig\.lr"):
        tr.policy_update(rollout, advantages)
    assert all(torch.equal(v, before[k]) for k, v in tr.models.policy.state_dict().items())
