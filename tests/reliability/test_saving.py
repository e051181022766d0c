"""A model with NaN / inf weights is never saved, never kept as best; saved weights are readable like the rest."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import pytest
import torch

import rairl.train.reward as reward_module
from rairl.airl.discriminator import DiscRecord
from rairl.airl.layout import step_rule
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.modelset import ModelSet
from rairl.models.reward import RewardConfig, RewardModel
from rairl.models.saving import save_pretrained
from rairl.train.checkpoint import save_checkpoint
from rairl.train.guard import DivergedError
from rairl.train.reward import RewardTrainConfig, train_reward


def _poison(module: torch.nn.Linear, value: float = float("nan")) -> None:
    with torch.no_grad():
        module.weight[0, 0] = value


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_reward_with_non_finite_weights_is_not_saved(tiny, tmp_path: Path, value: float) -> None:
    _, lm = tiny
    reward = RewardModel(lm, RewardConfig())
    _poison(reward.h_head, value)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'reward'}: not saved: parameter h_head\.weight holds NaN or inf"):
        reward.save_pretrained(tmp_path / "reward")
    assert not (tmp_path / "reward").exists()


def test_policy_with_non_finite_weights_is_not_saved(tiny, tmp_path: Path) -> None:
    _, lm = tiny
    _poison(lm.lm_head)
    for save in (lambda: save_pretrained(lm, tmp_path / "policy"), lambda: ModelSet(lm, None).save_pretrained(tmp_path)):
        with pytest.raises(ValueError, match=rf"{tmp_path / 'policy'}: not saved: parameter .*holds NaN or inf"):
            save()
    assert not (tmp_path / "policy").exists()


def test_checkpoint_with_non_finite_tensors_is_not_saved(tmp_path: Path) -> None:
    tensors = {"models": {"policy": {"w": torch.ones(3), "v": torch.tensor([1.0, float("nan")])}}, "policy_opt": {}}
    with pytest.raises(ValueError, match=r"iter_000007: not saved: models\.policy\.v holds NaN or inf"):
        save_checkpoint(tmp_path / "checkpoints", 7, tensors, {}, {})
    assert not (tmp_path / "checkpoints").exists()


def _reward_setup(tiny):
    tokenizer, lm = tiny
    problems = make_splits(random.randrange(1000), TaskConfig(n_train=24, n_val=1, n_test=1)).train
    p = encode_prompts(tokenizer, [x.question() for x in problems], 512)
    c = encode_completions(tokenizer, ["\n".join(x.solution_steps()) for x in problems], 512)
    rng, vocab = random.Random(), list(range(3, len(tokenizer)))
    experts = [DiscRecord(pi, ci, 1) for pi, ci in zip(p, c, strict=True)]
    negatives = [DiscRecord(pi, [rng.choice(vocab) for _ in ci] + [tokenizer.eos_token_id], 0) for pi, ci in zip(p, c, strict=True)]
    rm = RewardModel(copy.deepcopy(lm), RewardConfig(granularity="step"))
    # Validation negatives: other problems' solutions, which a step or two of training cannot tell from the
    # experts (AUROC well below 1), listed first: by list order alone, a model scoring every action NaN would
    # rank them all below the experts, a perfect AUROC.
    val = [DiscRecord(p[i], c[i - 1], 0) for i in range(-6, 0)] + experts[-6:]
    return rm, lm, experts[:-6] + negatives[:-6], val, tokenizer.pad_token_id, step_rule(rm.cfg, tokenizer)


def _poisoned_on(rm: RewardModel, calls: set[int]):
    """evaluate_discriminator, with the reward's g head set to NaN before the chosen (1-based) calls."""
    real, count = reward_module.evaluate_discriminator, [0]

    def evaluate(*args, **kwargs):
        count[0] += 1
        if count[0] in calls:
            _poison(rm.g_head)
        return real(*args, **kwargs)
    return evaluate


def test_a_nan_reward_never_becomes_best(tiny, monkeypatch, tmp_path: Path) -> None:
    rm, lm, train, val, pad, rule = _reward_setup(tiny)
    monkeypatch.setattr(reward_module, "evaluate_discriminator", _poisoned_on(rm, {2}))
    best = train_reward(rm, lm, train, val, pad, rule, RewardTrainConfig(steps=2, batch_size=8, lr=1e-3, warmup=1, eval_every=1),
                        progress=False)
    assert best["step"] == 1 and best["auroc"] == best["auroc"]
    assert all(bool(torch.isfinite(p).all()) for p in rm.parameters())  # the step-1 weights are back
    rm.save_pretrained(tmp_path / "reward")


def test_reward_training_with_no_finite_pass_raises(tiny, monkeypatch) -> None:
    rm, lm, train, val, pad, rule = _reward_setup(tiny)
    monkeypatch.setattr(reward_module, "evaluate_discriminator", _poisoned_on(rm, {1, 2}))
    with pytest.raises(DivergedError, match=r"no validation pass had finite weights and a finite AUROC.*RewardTrainConfig\.lr"):
        train_reward(rm, lm, train, val, pad, rule, RewardTrainConfig(steps=2, batch_size=8, lr=1e-3, warmup=1, eval_every=1),
                     progress=False)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_weight_files_follow_the_umask(tiny, tmp_path: Path, umask: int, mode: int) -> None:
    tokenizer, lm = tiny
    before = os.umask(umask)
    try:
        RewardModel(lm, RewardConfig()).save_pretrained(tmp_path / "reward")
        tokenizer.save_pretrained(tmp_path / "reward" / "lm")
        save_pretrained(lm, tmp_path / "policy")
        ModelSet(lm, RewardModel(lm, RewardConfig())).save_pretrained(tmp_path / "set")
    finally:
        os.umask(before)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} == \
        {p.relative_to(tmp_path).as_posix(): oct(mode) for p in files}
