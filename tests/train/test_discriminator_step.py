"""`AIRLTrainer.discriminator_step`: one reward forward, the loss and balanced accuracy of the ℓ it
read, and an update of the reward model alone."""

from __future__ import annotations

import copy
import random
from dataclasses import replace

import pytest
import torch

import rairl.train.trainer as trainer_module
from rairl.airl.discriminator import balanced_accuracy, discriminator_loss
from rairl.airl.negatives import discriminator_records
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.modelset import ModelSet
from rairl.models.reward import RewardConfig, RewardModel
from rairl.train.trainer import AIRLTrainer, TrainConfig

SMALL = TrainConfig(iterations=1, prompts_per_iter=3, group_size=4, max_new_tokens=20, minibatch_size=5,
                    n_disc=1, disc_batch_size=8, lr=1e-3, disc_lr=1e-3, checkpoint_every=0, eval_every=0)


def _trainer(tiny, cfg: TrainConfig, granularity: str = "step", random_heads: bool = True) -> AIRLTrainer:
    """As tests/train/test_trainer.py builds it: experts and perturbed experts of a random split, copies of the tiny LM."""
    tokenizer, lm = tiny
    problems = make_splits(random.randrange(10_000), TaskConfig(n_train=24, n_val=1, n_test=1)).train
    examples = [p.example() for p in problems]
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], 512)
    completions = encode_completions(tokenizer, [e.completion for e in examples], 512)
    records, _ = discriminator_records(tokenizer, examples, prompts, completions, [], random.Random())
    reward = RewardModel(copy.deepcopy(lm), RewardConfig(granularity=granularity))
    if random_heads:  # ℓ != 0 from the start, so every trainable parameter gets a gradient
        with torch.no_grad():
            for head in (reward.g_head, reward.h_head):
                head.weight.normal_(std=0.5)
                head.bias.normal_(std=0.5)
    models = ModelSet(copy.deepcopy(lm), reward)
    return AIRLTrainer(models, tokenizer, prompts, records, replace(cfg, seed=random.randrange(1000)),
                       answers=[e.answer for e in examples], out_dir=None, progress=False)


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("granularity", ["step", "dense"])
def test_one_step_is_one_reward_forward_and_updates_the_reward_only(tiny, monkeypatch, granularity):
    tr = _trainer(tiny, SMALL, granularity)
    rollout = tr.rollout()
    reward, policy = tr.models.reward, tr.models.policy

    calls = {"token_terms": 0, "reward_lm": 0}
    token_terms = RewardModel.token_terms

    def counting_token_terms(self, *args, **kwargs):
        calls["token_terms"] += 1
        return token_terms(self, *args, **kwargs)

    monkeypatch.setattr(RewardModel, "token_terms", counting_token_terms)
    # the reward LM's decoder (the log-prob path runs it without the LM's own forward)
    hook = reward.lm.get_decoder().register_forward_hook(lambda *_: calls.__setitem__("reward_lm", calls["reward_lm"] + 1))

    seen = {}

    def recording_loss(*args, **kwargs):  # the batch the step read, to recompute its loss independently
        seen["args"] = args
        seen["before"] = copy.deepcopy(args[0])  # the reward model before the optimiser step
        return discriminator_loss(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "discriminator_loss", recording_loss)
    trainable = {n for n, p in reward.named_parameters(remove_duplicate=False) if p.requires_grad}  # tied weights by both names
    rew_before, pol_before = copy.deepcopy(reward.state_dict()), copy.deepcopy(policy.state_dict())
    try:
        row = tr.discriminator_step(rollout)
    finally:
        hook.remove()

    assert calls == {"token_terms": 1, "reward_lm": 1}
    assert set(row) == {"disc_loss", "disc_acc", "disc_skipped_steps"} and row["disc_skipped_steps"] == 0
    assert isinstance(row["disc_loss"], float) and row["disc_loss"] == row["disc_loss"] and row["disc_loss"] > 0
    assert isinstance(row["disc_acc"], float) and 0.0 <= row["disc_acc"] <= 1.0

    # every trainable parameter of the reward model moved; the policy did not
    changed = _changed(rew_before, reward)
    assert trainable and changed == trainable, f"unchanged: {sorted(trainable - changed)}"
    assert not _changed(pol_before, policy)

    # the loss and accuracy are those of the ℓ the step read (before its update)
    _, batch, layout, policy_logp, labels, valid = seen["args"]
    assert set(labels[valid].tolist()) == {0.0, 1.0}  # experts and negatives in the batch
    with torch.no_grad():
        loss, ell = discriminator_loss(seen["before"], batch, layout, policy_logp, labels, valid)
    assert row["disc_loss"] == pytest.approx(loss.item(), rel=1e-4, abs=1e-6)
    assert row["disc_acc"] == pytest.approx(balanced_accuracy(ell[valid], labels[valid]))
    with torch.no_grad():  # and the update changed the loss on the batch it read
        after, _ = discriminator_loss(reward, batch, layout, policy_logp, labels, valid)
    assert after.item() != loss.item()


def test_a_fresh_reward_model_also_changes(tiny, monkeypatch):
    """Zero heads, ℓ = 0 everywhere: the step still moves the reward LM and the h head."""
    tr = _trainer(tiny, SMALL, random_heads=False)
    rollout = tr.rollout()
    calls = []
    token_terms = RewardModel.token_terms
    monkeypatch.setattr(RewardModel, "token_terms", lambda self, *a, **k: calls.append(1) or token_terms(self, *a, **k))
    before = copy.deepcopy(tr.models.reward.state_dict())
    row = tr.discriminator_step(rollout)
    assert len(calls) == 1
    assert row["disc_loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-4)  # BCE of ℓ = 0
    assert 0.0 <= row["disc_acc"] <= 1.0
    changed = _changed(before, tr.models.reward)
    lm_params = {k for k in before if k.startswith("lm.")}
    assert changed & lm_params and "h_head.weight" in changed
