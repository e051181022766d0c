"""Trainer pieces: one step changes every trainable parameter; the loops lower their loss."""

import copy
import random
from functools import partial

import torch

from rairl.airl.discriminator import DiscRecord
from rairl.airl.layout import step_rule
from rairl.data import TaskConfig, make_splits
from rairl.eval.discriminator import evaluate_discriminator, evaluate_steps
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.lm import per_token_logprobs
from rairl.models.reward import RewardConfig, RewardModel
from rairl.train.reward import RewardTrainConfig, train_reward
from rairl.train.sft import SFTConfig, completion_nll, train_sft


def _data(tokenizer, n=32):
    problems = make_splits(random.randrange(1000), TaskConfig(n_train=n, n_val=1, n_test=1)).train
    p = encode_prompts(tokenizer, [x.question() for x in problems], 512)
    c = encode_completions(tokenizer, ["\n".join(x.solution_steps()) for x in problems], 512)
    return p, c


def test_sft_step_changes_every_parameter_and_lowers_loss(tiny):
    tokenizer, lm = tiny
    p, c = _data(tokenizer)
    before = copy.deepcopy(lm.state_dict())
    with torch.no_grad():
        loss0 = completion_nll(lm, p, c, tokenizer.pad_token_id).item()
    train_sft(lm, p, c, tokenizer.pad_token_id, SFTConfig(steps=30, batch_size=16, lr=3e-3, warmup=1, log_every=10), progress=False)
    changed = {k for k, v in lm.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(before), f"unchanged: {set(before) - changed}"
    with torch.no_grad():
        assert completion_nll(lm, p, c, tokenizer.pad_token_id).item() < loss0


def test_reward_training_separates_experts_from_negatives(tiny):
    tokenizer, lm = tiny
    p, c = _data(tokenizer, 48)
    rng = random.Random()
    vocab = list(range(3, len(tokenizer)))
    negatives = [DiscRecord(pi, [rng.choice(vocab) for _ in range(len(ci))] + [tokenizer.eos_token_id], 0) for pi, ci in zip(p, c, strict=True)]
    experts = [DiscRecord(pi, ci, 1) for pi, ci in zip(p, c, strict=True)]
    rm = RewardModel(copy.deepcopy(lm), RewardConfig(granularity="step"))
    before = copy.deepcopy(rm.state_dict())
    rule = step_rule(rm.cfg, tokenizer)
    val = experts[-8:] + negatives[-8:]
    start = evaluate_discriminator(rm, partial(per_token_logprobs, lm), val, tokenizer.pad_token_id, rule)
    best = train_reward(rm, lm, experts[:-8] + negatives[:-8], val, tokenizer.pad_token_id, rule,
                        RewardTrainConfig(steps=20, batch_size=16, lr=1e-3, warmup=1, eval_every=10), progress=False)
    assert {k for k, v in rm.state_dict().items() if not torch.equal(v, before[k])} == set(before)
    assert best["auroc"] > max(start["auroc"], 0.8)


def test_evaluate_steps_counts_steps_up_to_the_first_wrong_one(tiny):
    """Samples built from gold solutions: exact (all steps correct), wrong at line 1, wrong at line 0.
    A reward LM equal to the policy with zero heads has g = f = log π: the same AUROC."""
    tokenizer, lm = tiny
    problems = make_splits(random.randrange(1000), TaskConfig(n_train=6, n_val=1, n_test=1)).train
    prompts = encode_prompts(tokenizer, [x.question() for x in problems], 512)
    records, expected_ok, expected_bad = [], 0, 0
    for pid, x in zip(prompts, problems, strict=True):
        gold = x.solution_steps()
        for wrong_at in (None, 1, 0):
            lines = list(gold)
            if wrong_at is not None:
                lines[wrong_at] = lines[wrong_at] + "1"  # a changed result
            [ids] = encode_completions(tokenizer, ["\n".join(lines)], 512)
            records.append(DiscRecord(pid, ids, 0))
            expected_ok += len(gold) if wrong_at is None else wrong_at
            expected_bad += wrong_at is not None
    records.append(DiscRecord(prompts[0][:-1], records[0].completion_ids, 0))  # a prompt with no reference: skipped
    records.append(DiscRecord(prompts[0], records[0].completion_ids, 1))  # an expert: not the policy's, not read
    references = {tuple(p): x.solution_steps() for p, x in zip(prompts, problems, strict=True)}
    rm = RewardModel(copy.deepcopy(lm), RewardConfig(granularity="step"))
    out = evaluate_steps(rm, partial(per_token_logprobs, lm), records, references, tokenizer, step_rule(rm.cfg, tokenizer), batch_size=5)
    assert (out["correct_steps"], out["first_wrong_steps"], out["skipped_samples"]) == (expected_ok, expected_bad, 1)
    aurocs = out["step_auroc"]
    assert abs(aurocs["g"] - aurocs["log_pi"]) < 1e-9 and abs(aurocs["f"] - aurocs["log_pi"]) < 1e-9
    assert 0.0 <= aurocs["ell"] <= 1.0  # ℓ = 0 up to rounding here: its order is arbitrary
    # from line 1 on: the first lines of every sample drop out (wrong-at-0 samples count nothing)
    late = evaluate_steps(rm, partial(per_token_logprobs, lm), records, references, tokenizer, step_rule(rm.cfg, tokenizer),
                          batch_size=5, min_step=1)
    late_ok = sum(len(x.solution_steps()) - 1 for x in problems)  # exact samples, lines 1.. (wrong-at-1 ones: none correct from 1)
    late_bad = len(problems)  # the wrong-at-1 samples' first wrong line
    assert (late["correct_steps"], late["first_wrong_steps"]) == (late_ok, late_bad)
