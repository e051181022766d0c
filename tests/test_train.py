"""Trainer pieces: one step changes every trainable parameter; the loops lower their loss."""

import copy
import random
from functools import partial

import torch

from rairl.airl import step_rule
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.lm import per_token_logprobs
from rairl.models.reward import RewardConfig, RewardModel
from rairl.train.reward import DiscRecord, RewardTrainConfig, evaluate_discriminator, train_reward
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
