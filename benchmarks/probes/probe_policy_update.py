"""How large a policy step can be before it damages everything: one PPO update at several learning rates.

    python benchmarks/probes/probe_policy_update.py --warm runs/compare/seed0/warm --json runs/probe_update.json
    python benchmarks/probes/probe_policy_update.py --warm DIR --lrs 3e-4,1e-4,3e-5 --prompts 32 --group-size 8

From a `rairl train` / `rairl compare` warm start (DIR/warm.json): one rollout of --prompts
training questions × --group-size samples, outcome rewards (gold-answer correctness) and
GRPO advantages. Then, for each learning rate, a fresh copy of the policy takes one
`AIRLTrainer.policy_update` on that same rollout (ppo_epochs 1, minibatches of 64) and the
per-token log-prob change of every completion is measured, split by the sign of its
advantage:

    gain_pos   completions with advantage > 0 (the update should raise these)
    gain_neg   advantage < 0 (should fall)
    gain_zero  advantage = 0 (groups all right or all wrong: no signal, should stay put)

A useful step has gain_pos > 0 > gain_neg and gain_zero ≈ 0; when all three fall together
the step is mostly noise (Adam moves every parameter by about lr, signal or not).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

# _common.py sits one folder up, in benchmarks/; running `python benchmarks/probes/x.py` puts
# only benchmarks/probes/ on sys.path, so add its parent (for _common alone: rairl is installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json

from rairl.configs import config_from_dict
from rairl.data import TaskConfig, make_splits
from rairl.metrics import environment
from rairl.models.batch import encode_prompts
from rairl.models.modelset import ModelSet
from rairl.train.trainer import AIRLTrainer, TrainConfig
from rairl.train.warm_start import load_warm_start


def probe(warm_dir: Path, lrs: list[float], prompts_per_iter: int, group_size: int, seed: int) -> dict:
    """Per-token log-prob gains `{lr: {gain_pos, gain_neg, gain_zero}}` of one update per lr."""
    warm = load_warm_start(warm_dir)
    tokenizer, policy = warm.tokenizer, warm.policy
    task = config_from_dict(TaskConfig, warm.provenance["task"])  # JSON lists (ops) -> tuples
    train = make_splits(warm.provenance["seed"], task).train
    prompts = encode_prompts(tokenizer, [p.question() for p in train], max_prompt_tokens=warm.cfg.max_prompt_tokens)
    answers = [str(p.values()[-1]) for p in train]
    cfg = TrainConfig(method="outcome", advantages="sequence", ppo_epochs=1, prompts_per_iter=prompts_per_iter,
                      group_size=group_size, seed=seed)

    def trainer(lr: float) -> AIRLTrainer:
        return AIRLTrainer(ModelSet(copy.deepcopy(policy), None), tokenizer, prompts, [], replace(cfg, lr=lr),
                           answers=answers, progress=False)

    first = trainer(lrs[0])
    rollout = first.rollout()
    rewards = first.action_rewards(rollout)
    advantages = first.token_advantages(rollout, rewards)  # (B·G, T)
    mask = rollout.batch.completion_mask()
    n_tokens = mask.sum(1).clamp(min=1)
    with torch.no_grad():  # rollout.old_logp is None when one minibatch holds the whole rollout
        before = first.models.policy_logprobs(rollout.batch.input_ids, rollout.batch.attention_mask, score_mask=mask)
    seq_adv = (advantages * mask).sum(1) / n_tokens  # (B·G,) one value per completion
    groups = {"gain_pos": seq_adv > 0, "gain_neg": seq_adv < 0, "gain_zero": seq_adv == 0}
    rows = {}
    for lr in lrs:
        tr = trainer(lr)
        stats = tr.policy_update(rollout, advantages)
        with torch.no_grad():
            after = tr.models.policy_logprobs(rollout.batch.input_ids, rollout.batch.attention_mask, score_mask=mask)
        gain = ((after - before) * mask).sum(1) / n_tokens  # (B·G,) nats per token
        rows[f"{lr:g}"] = {k: float(gain[sel].mean()) if sel.any() else None for k, sel in groups.items()}
        rows[f"{lr:g}"]["approx_kl"] = stats["approx_kl"]
        print(f"lr {lr:g}: " + "  ".join(f"{k} {v:+.4f}" for k, v in rows[f'{lr:g}'].items() if v is not None), flush=True)
    return {"rollout_accuracy": float(rewards.mean()), "completions": {k: int(v.sum()) for k, v in groups.items()},
            "per_lr": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", type=Path, required=True, help="a warm-start directory (holds warm.json)")
    ap.add_argument("--lrs", default="3e-4,1e-4,3e-5,1e-5", help="comma-separated policy learning rates")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    t0 = time.time()
    result = probe(args.warm, [float(x) for x in args.lrs.split(",")], args.prompts, args.group_size, args.seed)
    result |= {"warm": str(args.warm), "prompts": args.prompts, "group_size": args.group_size, "seed": args.seed,
               "seconds": time.time() - t0}
    print(f"rollout accuracy {result['rollout_accuracy']:.3f}, completions {result['completions']}")
    write_json(args.json, result | {"provenance": environment("cpu")})


if __name__ == "__main__":
    main()
