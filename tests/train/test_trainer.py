"""The AIRL + PPO loop: what one iteration changes, budgets, checkpoints, kill-and-resume."""

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from rairl.airl.negatives import discriminator_records
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.modelset import ModelSet
from rairl.models.reward import RewardConfig, RewardModel
from rairl.rl.ppo import sampled_entropy
from rairl.train.checkpoint import latest_checkpoint, load_checkpoint, read_meta, save_checkpoint
from rairl.train.sft import SFTConfig, train_sft
from rairl.train.trainer import AIRLTrainer, TrainConfig

SMALL = TrainConfig(iterations=2, prompts_per_iter=3, group_size=4, max_new_tokens=20, minibatch_size=5,
                    n_disc=1, disc_batch_size=8, lr=1e-3, disc_lr=1e-3, checkpoint_every=0, eval_every=1)


def _setup(tiny, seed: int | None = None):
    tokenizer, lm = tiny
    problems = make_splits(random.randrange(10_000) if seed is None else seed, TaskConfig(n_train=24, n_val=1, n_test=1)).train
    examples = [p.example() for p in problems]
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], 512)
    completions = encode_completions(tokenizer, [e.completion for e in examples], 512)
    records, _ = discriminator_records(tokenizer, examples, prompts, completions, [], random.Random(0))
    return tokenizer, lm, prompts, records, [e.answer for e in examples]


def _trainer(tiny, cfg: TrainConfig, out_dir=None, seed=None, with_reference=False):
    tokenizer, lm, prompts, records, answers = _setup(tiny, seed)
    models = ModelSet(copy.deepcopy(lm), RewardModel(copy.deepcopy(lm), RewardConfig()), with_reference=with_reference)
    return AIRLTrainer(models, tokenizer, prompts, records, cfg, answers=answers, val_records=records[:6], out_dir=out_dir, progress=False)


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("advantages", ["step", "sequence"])
def test_airl_iteration_changes_every_policy_and_reward_parameter(tiny, advantages):
    # two discriminator steps: at the start every ℓ is 0 and the balanced loss gives the g bias zero gradient
    tr = _trainer(tiny, replace(SMALL, iterations=1, n_disc=2, advantages=advantages, kl_coef=0.1, entropy_coef=0.01), with_reference=True)
    pol, rew = copy.deepcopy(tr.models.policy.state_dict()), copy.deepcopy(tr.models.reward.state_dict())
    ref = copy.deepcopy(tr.models.reference.state_dict())
    row = tr.train()[-1]
    assert _changed(pol, tr.models.policy) == set(pol)
    assert _changed(rew, tr.models.reward) == set(rew)
    assert not _changed(ref, tr.models.reference)
    for key in ("disc_loss", "disc_acc", "mean_reward", "kl", "entropy", "clipfrac", "approx_kl", "mean_len", "val_auroc"):
        assert key in row and row[key] == row[key], key  # present and not NaN


@pytest.mark.parametrize("method", ["frozen", "outcome"])
def test_baselines_never_touch_the_reward_model(tiny, method):
    # the entropy bonus moves the policy even when every reward is equal (advantages all 0)
    tr = _trainer(tiny, replace(SMALL, iterations=1, method=method, entropy_coef=0.1))
    pol, rew = copy.deepcopy(tr.models.policy.state_dict()), copy.deepcopy(tr.models.reward.state_dict())
    row = tr.train()[-1]
    assert not _changed(rew, tr.models.reward)
    assert _changed(pol, tr.models.policy)
    assert "disc_loss" not in row


def test_outcome_reward_is_answer_correctness(tiny):
    tr = _trainer(tiny, replace(SMALL, method="outcome"))
    rollout = tr.rollout()
    tok = tr.tokenizer
    # overwrite two completions: the gold solution (correct) and a wrong final answer
    i = rollout.prompt_index[0]
    gold = f"#### {tr.answers[i]}"
    rollout.completions[0] = tok(gold, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rollout.completions[1] = tok(f"#### {int(tr.answers[i]) + 1}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rewards = tr.action_rewards(rollout)
    assert len(rewards) == len(rollout.completions)  # one action per completion
    assert rewards[0] == 1.0 and rewards[1] == 0.0
    assert set(rewards.tolist()) <= {0.0, 1.0}


def test_airl_rewards_are_the_discriminator_logits_per_action(tiny):
    """r_k = ℓ_k: with a reward model identical to the policy and zero heads, every ℓ_k is exactly 0."""
    tr = _trainer(tiny, SMALL)
    rewards = tr.action_rewards(tr.rollout())
    assert rewards.shape[0] > len(tr.rollout().completions) - 1  # step granularity: several actions per completion
    assert torch.allclose(rewards, torch.zeros_like(rewards), atol=1e-5)


def test_policy_reward_f_is_the_shaped_reward_without_the_log_pi_term(tiny):
    """policy_reward="f": r_k = f_k. With a reward LM identical to the policy and zero heads,
    f_k = β·log π_φ(a_k) = log π(a_k), the summed policy log-prob of each action."""
    tr = _trainer(tiny, replace(SMALL, policy_reward="f"))
    rollout = tr.rollout()
    rewards = tr.action_rewards(rollout)
    logp = rollout.old_logp.reshape(-1)
    expected = torch.stack([logp[s : e + 1].sum() for s, e in zip(rollout.layout.start.tolist(), rollout.layout.end.tolist(), strict=True)])
    assert (expected < 0).all()  # nonzero, so the test can tell f from ℓ (which is 0 here)
    assert torch.allclose(rewards, expected, atol=1e-4)


def test_policy_tokens_trained_on_are_counted_per_minibatch_and_epoch(tiny):
    tr = _trainer(tiny, replace(SMALL, ppo_epochs=3, iterations=1))
    rollout = tr.rollout()
    before = tr.tokens_trained
    tr.policy_update(rollout, torch.zeros_like(rollout.old_logp))
    assert tr.tokens_trained - before == 3 * int(rollout.batch.completion_mask().sum())


@pytest.mark.parametrize("advantages_sign", [1.0, -1.0])
def test_policy_update_raises_positive_advantage_completions_over_negative(tiny, advantages_sign):
    """One small PPO update moves each completion's log-prob the way its advantage says.

    Random ±1 advantages per completion (and the same with the sign flipped, so a
    policy that only drifts one way cannot pass both): the per-token log-prob gain of
    the + completions must exceed that of the − completions.
    """
    tr = _trainer(tiny, replace(SMALL, prompts_per_iter=4, minibatch_size=16, lr=1e-4))
    rollout = tr.rollout()
    mask = rollout.batch.completion_mask()
    n = len(rollout.completions)
    sign = torch.full((n,), advantages_sign)
    sign[torch.randperm(n)[: n // 2]] *= -1  # (n,) half +, half −
    tr.policy_update(rollout, sign[:, None] * mask)
    with torch.no_grad():
        after = tr.models.policy_logprobs(rollout.batch.input_ids, rollout.batch.attention_mask, score_mask=mask)
    gain = ((after - rollout.old_logp) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (n,) per-token log-prob change
    assert gain[sign > 0].mean() > gain[sign < 0].mean()


def test_policy_lr_warms_up_linearly_then_holds(tiny):
    tr = _trainer(tiny, replace(SMALL, lr=1e-3, lr_warmup_steps=8, minibatch_size=5))  # 12 completions: 3 steps per epoch
    rollout = tr.rollout()
    tr.policy_update(rollout, torch.zeros_like(rollout.old_logp))  # 2 epochs: steps 1..6
    assert tr.policy_steps == 6 and tr.policy_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 6 / 8)
    tr.policy_update(rollout, torch.zeros_like(rollout.old_logp))  # steps 7..12: the ramp ends at step 8
    assert tr.policy_steps == 12 and tr.policy_opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert _trainer(tiny, SMALL).policy_lr() == SMALL.lr  # no warm-up: the constant rate from the first step


def test_token_budget_stops_the_loop(tiny):
    tr = _trainer(tiny, replace(SMALL, iterations=50, token_budget=1))
    rows = tr.train()
    assert len(rows) == 1 and rows[0]["tokens"] >= 1


def test_sft_token_budget_counts_completion_tokens(tiny):
    tokenizer, lm, prompts, _, _ = _setup(tiny)
    completions = [[5, 6, 7]] * len(prompts)  # 3 tokens each, 4 per step of batch 4 -> 12 tokens a step
    rows = train_sft(copy.deepcopy(lm), prompts, completions, tokenizer.pad_token_id,
                     SFTConfig(steps=100, batch_size=4, log_every=1, max_tokens=30), progress=False)
    assert rows[-1] == {"step": 3, "tokens": 36, "budget_reached": True}


def test_sampled_entropy_value_and_gradient_match_the_exact_entropy():
    """Weighting every outcome by its probability (the expectation the sampler takes) gives H and ∇H exactly."""
    logits = torch.randn(7, dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(logits, 0)
    p = logp.exp().detach()
    estimate = (p * sampled_entropy(logp)).sum()
    exact = -(logp.exp() * logp).sum()
    assert torch.allclose(estimate, exact)
    (g_est,) = torch.autograd.grad(estimate, logits, retain_graph=True)
    (g_exact,) = torch.autograd.grad(exact, logits)
    assert torch.allclose(g_est, g_exact, atol=1e-12)


def test_resume_reproduces_the_uninterrupted_run(tiny, tmp_path):
    # 6 policy steps per iteration: the 20-step lr warm-up is still running at the checkpoint
    straight = _trainer(tiny, replace(SMALL, iterations=4, checkpoint_every=2, lr_warmup_steps=20), tmp_path / "a", seed=3)
    rows_a = straight.train()
    first = _trainer(tiny, replace(SMALL, iterations=2, checkpoint_every=2, lr_warmup_steps=20), tmp_path / "b", seed=3)
    first.train()
    second = _trainer(tiny, replace(SMALL, iterations=4, checkpoint_every=2, lr_warmup_steps=20), tmp_path / "b", seed=3)
    assert second.resume() == 2
    second.train()
    assert not _changed(straight.models.policy.state_dict(), second.models.policy)
    assert not _changed(straight.models.reward.state_dict(), second.models.reward)
    log_b = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log_b] == [1, 2, 3, 4]
    assert [r["mean_reward"] for r in log_b] == [r["mean_reward"] for r in rows_a]


def test_resume_refuses_another_config(tiny, tmp_path):
    _trainer(tiny, replace(SMALL, iterations=2, checkpoint_every=2), tmp_path, seed=3).train()
    other = _trainer(tiny, replace(SMALL, iterations=2, checkpoint_every=2, lr=5e-4), tmp_path, seed=3)
    with pytest.raises(ValueError, match=r"iter_000002: .*\['lr'\]"):
        other.resume()


def test_checkpoints_are_committed_and_pruned(tmp_path):
    for it in (1, 2, 3):
        save_checkpoint(tmp_path, it, {"x": torch.tensor([it])}, {"iteration": it}, {"state": it}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000002", "iter_000003"]
    (tmp_path / "iter_000004").mkdir()  # a save killed before its commit
    (tmp_path / "iter_000004" / "trainer.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "iter_000003"
    x = {"x": torch.tensor([0])}
    meta, rng = load_checkpoint(latest_checkpoint(tmp_path), x)
    assert (x["x"].item(), meta["iteration"], rng) == (3, 3, {"state": 3})
    save_checkpoint(tmp_path, 5, {"x": torch.tensor([5])}, {"iteration": 5}, {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000003", "iter_000005"]  # the uncommitted one removed
    (tmp_path / "iter_000005" / "trainer.json").write_text('{"format_version": 99}')
    with pytest.raises(ValueError, match=r"iter_000005/trainer.json: field 'format_version' is 99"):
        load_checkpoint(tmp_path / "iter_000005", x)


def _rairl(*args: str) -> list[str]:
    return [sys.executable, "-m", "rairl.cli", *args]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL `rairl train` after its first checkpoint, `--resume` it: same log and policy as a run never killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_rairl("train", "--quick", "--out", str(full), "--no-progress", "--train.iterations", "20",
                          "--train.token_budget", "0"), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_rairl("train", "--quick", "--out", str(killed), "--warm", str(full / "warm"), "--no-progress",
                                   "--train.iterations", "20", "--train.token_budget", "0"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(killed / "checkpoints") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = read_meta(latest_checkpoint(killed / "checkpoints"))["iteration"]
    assert stopped_at < 20, "the run finished before it could be killed; make it longer"
    subprocess.run(_rairl("train", "--resume", str(killed), "--warm", str(full / "warm"), "--no-progress"),
                   check=True, env=env, capture_output=True)
    rows = lambda d: [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    drop_time = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop_time(rows(killed)) == drop_time(rows(full))
    from safetensors.torch import load_file

    a, b = load_file(full / "policy" / "model.safetensors"), load_file(killed / "policy" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "metrics.json").read_text())["pass1"] == json.loads((full / "metrics.json").read_text())["pass1"]


def test_a_reward_model_on_another_device_is_refused(tiny):
    tokenizer, lm, prompts, records, answers = _setup(tiny)
    reward = RewardModel(copy.deepcopy(lm), RewardConfig()).to("meta")  # anywhere but the policy's device
    with pytest.raises(ValueError, match=r"the policy is on cpu, the reward model on \['meta'\]"):
        AIRLTrainer(ModelSet(lm, reward), tokenizer, prompts, records, SMALL, answers=answers)
