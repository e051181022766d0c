"""Sample rows of a rollout for people to read: prompt, completion, and each action's text, reward and advantage."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from ..airl.layout import ActionLayout
from ..models.batch import TokenBatch


def sample_rows(
    tokenizer: PreTrainedTokenizerBase,
    batch: TokenBatch,
    layout: ActionLayout,
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    group_size: int,
    n: int,
    iteration: int,
) -> list[dict]:
    """`n` rows of a rollout of groups of `group_size` consecutive samples, taken round-robin over the groups
    (the first sample of every prompt, then the second, ...).

    `rewards`: `(A,)` per action of `layout`; `advantages`: `(B, T)` per token (an action's advantage is
    that of its first token). Each row: `iteration`, `prompt`, `completion`, `step_texts`, `step_rewards`,
    `step_advantages` (one entry per action) and `reward` (their sum).
    """
    groups = batch.input_ids.shape[0] // group_size
    order = [g * group_size + k for k in range(group_size) for g in range(groups)][:n]
    cu, start, end = layout.cu_actions.tolist(), layout.start.tolist(), layout.end.tolist()
    flat_ids, flat_adv = batch.input_ids.reshape(-1).tolist(), advantages.reshape(-1).tolist()
    rows = []
    for b in order:
        p, s = int(batch.prompt_lens[b]), int(batch.seq_lens[b])
        actions = range(cu[b], cu[b + 1])
        step_rewards = [float(rewards[a]) for a in actions]
        rows.append({
            "iteration": iteration,
            "prompt": tokenizer.decode(batch.input_ids[b, :p], skip_special_tokens=True),
            "completion": tokenizer.decode(batch.input_ids[b, p:s], skip_special_tokens=True),
            "step_texts": [tokenizer.decode(flat_ids[start[a] : end[a] + 1], skip_special_tokens=True) for a in actions],
            "step_rewards": step_rewards,
            "step_advantages": [flat_adv[start[a]] for a in actions],
            "reward": sum(step_rewards),
        })
    return rows
