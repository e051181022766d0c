"""Launched by tests/dist/test_world_size.py with `torchrun --nproc_per_node 2`: discriminator and PPO
steps on one fixed ragged rollout, under DDP, FSDP2 and each of the two rules broken, then (rank 0)
the same at world size 1. Rank 0 saves every variant's parameters to argv[2].

    python -m torch.distributed.run --nproc_per_node 2 steps_worker.py TINY_DIR OUT.pt
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys

import torch
import torch.distributed as torch_dist

from rairl.airl.negatives import discriminator_records
from rairl.data import TaskConfig, make_splits
from rairl.dist import Dist, init_dist
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.engine import RoutedReward
from rairl.models.lm import load_causal_lm, per_token_logprobs
from rairl.models.modelset import ModelSet
from rairl.models.reward import RewardConfig, RewardModel
from rairl.models.tokenizer import load_tokenizer
from rairl.train.trainer import AIRLTrainer, TrainConfig

CFG = TrainConfig(prompts_per_iter=4, group_size=3, minibatch_size=6, ppo_epochs=2, disc_batch_size=8,
                  lr=1e-3, disc_lr=1e-3, kl_coef=0.0, entropy_coef=0.01, checkpoint_every=0, eval_every=0,
                  # Adam moves a weight whose true gradient is 0 by lr·sign(rounding noise) at eps=1e-8: measured,
                  # 1.4e-3 between 1 and 2 processes at 1e-8 against 5e-6 at 1e-6, where the broken rules give 5e-3 or more.
                  adam_eps=1e-6)


@contextlib.contextmanager
def broken(rule: str):
    """One of the two rules broken, as a newcomer might: the inner model called around the wrapper,
    or each rank dividing by its own counts."""
    saved = (ModelSet.policy_logprobs, RoutedReward.token_terms, Dist.all_sum)
    if rule == "wrapper":
        ModelSet.policy_logprobs = lambda self, ids, mask, score_mask=None: per_token_logprobs(self.policy, ids, mask, score_mask=score_mask)
        RoutedReward.token_terms = lambda self, batch, end: self.module.token_terms(batch, end)
    elif rule == "counts":
        Dist.all_sum = lambda self, x: x.detach().clone() if isinstance(x, torch.Tensor) else torch.tensor(float(x))
    try:
        yield
    finally:
        ModelSet.policy_logprobs, RoutedReward.token_terms, Dist.all_sum = saved


def run(tiny_dir: str, dist: Dist) -> dict[str, torch.Tensor]:
    """Two discriminator steps and one PPO update on the fixed rollout; the whole parameters after."""
    tokenizer, lm = load_tokenizer(tiny_dir), load_causal_lm(tiny_dir)
    problems = make_splits(3, TaskConfig(n_train=12, n_val=1, n_test=1)).train
    examples = [p.example() for p in problems]
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], 512)
    completions = encode_completions(tokenizer, [e.completion for e in examples], 512)
    records, _ = discriminator_records(tokenizer, examples, prompts, completions, [], random.Random(0))
    models = ModelSet(lm, RewardModel(copy.deepcopy(lm), RewardConfig()))
    trainer = AIRLTrainer(models, tokenizer, prompts, records, CFG, dist=dist, progress=False)
    rng = random.Random(1)  # ragged: the first rows long, the last ones cut short
    index = [i for i in range(CFG.prompts_per_iter) for _ in range(CFG.group_size)]
    cut = [len(completions[i]) if k < 5 else rng.randrange(2, 6) for k, i in enumerate(index)]
    rollout = trainer.make_rollout(index, [completions[i][:n] for i, n in zip(index, cut, strict=True)])
    for _ in range(2):
        trainer.discriminator_step(rollout)
    trainer.policy_update(rollout, trainer.token_advantages(rollout, trainer.action_rewards(rollout)))
    state = models.module.state_dict()
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in state.items()}


def main(tiny_dir: str, out: str) -> None:
    torch.manual_seed(0)
    world = init_dist("ddp")
    results = {}
    for name, engine, rule in (("ddp", "ddp", ""), ("fsdp2", "fsdp2", ""), ("ddp_wrapper_broken", "ddp", "wrapper"),
                               ("ddp_counts_broken", "ddp", "counts")):
        with broken(rule):
            results[name] = run(tiny_dir, Dist(world.rank, world.world_size, world.local_rank, engine))
    if world.main:
        results["single"] = run(tiny_dir, Dist())
        torch.save(results, out)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
