"""Advantages for the policy update, and the one masked mean used everywhere.

Two kinds (DESIGN.md §1):

* `sequence_advantages` (GRPO): one scalar per completion, normalised within its
  group of G completions of the same prompt;
* `step_advantages` (default): discounted reward-to-go per action, baseline and
  scale pooled over every action of the group;

then `broadcast_to_tokens` copies each action's advantage to its tokens.

Departures / choices: the group std is the population std (`unbiased=False`), so
a group of one, or of equal rewards, gives advantage 0 instead of NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None, count: Tensor | None = None) -> Tensor:
    """Mean of `values` where `mask` is True; 0 where nothing is selected.

    `values` and `mask` (bool, or 0/1) broadcast to one shape. Unselected entries are
    replaced, not multiplied, so NaN/inf in padding never leaks in. `dim=None`
    reduces to a scalar, else over `dim` only. `count` (a scalar, `dim=None` only): the
    number to divide the masked sum by instead of the mask's own count; several processes
    pass the global count (`Dist.all_sum`), so their shares add up to the global mean.
    """
    mask = mask.bool()
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if count is not None:
        if dim is not None:
            raise ValueError("masked_mean: count is for dim=None (one scalar mean)")
        return total.sum() / count.to(total).clamp(min=1)
    count = mask.expand_as(total)
    if dim is None:
        return total.sum() / count.sum().clamp(min=1)
    return total.sum(dim) / count.sum(dim).clamp(min=1)


def _check_groups(num_sequences: int, group_size: int) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if num_sequences % group_size != 0:
        raise ValueError(
            f"{num_sequences} sequences do not split into groups of group_size={group_size}: "
            "pass the G samples of each prompt consecutively, B = num_prompts * G"
        )


def sequence_advantages(
    rewards_per_seq: Tensor, group_size: int, eps: float = 1e-6, scale: bool = True
) -> Tensor:
    """GRPO advantages: `(r - mean_group) / (std_group + eps)`, `(B,)` -> `(B,)`.

    `rewards_per_seq` `(B,)` float, one total reward per completion; consecutive
    blocks of `group_size` completions share a prompt. `scale=False` only
    subtracts the group mean. The std is the population std.
    """
    _check_groups(rewards_per_seq.shape[0], group_size)
    r = rewards_per_seq.reshape(-1, group_size)  # (B/G, G)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    return adv.reshape(-1)


def reward_to_go(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """`R_k = Σ_{j≥k} γ^(j−k) r_j` along the last dim of right-padded `(B, K)` rewards.

    A backward scan (K steps, vectorised over B): exact and stable for any γ,
    unlike dividing a forward cumsum by γ^k. Padding (`mask` False) counts as 0.
    """
    r = torch.where(mask, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))
    out = torch.zeros_like(r)
    running = r.new_zeros(r.shape[0])  # (B,)
    for k in range(r.shape[1] - 1, -1, -1):
        running = r[:, k] + gamma * running
        out[:, k] = running
    return out


def step_advantages(
    action_rewards: list[Tensor],
    group_size: int,
    gamma: float,
    eps: float = 1e-6,
    scale: bool = True,
) -> list[Tensor]:
    """Per-action advantages from discounted reward-to-go, normalised per group.

    `action_rewards[b]` `(K_b,)` float: the rewards `r_k` of sequence b's actions
    (K_b may be 0). Consecutive blocks of `group_size` sequences share a prompt.

    Baseline and scale: the mean and (population) std of *all* reward-to-go values
    `R_k` of *all* actions of the group, pooled over its sequences and positions.
    Returns `(R_k - mean_group) / (std_group + eps)` (or without the division when
    `scale=False`), one `(K_b,)` tensor per sequence.
    """
    _check_groups(len(action_rewards), group_size)
    if not action_rewards:
        return []
    lengths = torch.tensor([len(r) for r in action_rewards], device=action_rewards[0].device)
    padded = pad_sequence(list(action_rewards), batch_first=True)  # (B, Kmax)
    mask = torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]  # (B, Kmax)
    rtg = reward_to_go(padded, mask, gamma)  # (B, Kmax)

    num_groups, width = len(action_rewards) // group_size, group_size * rtg.shape[1]
    group_rtg = rtg.reshape(num_groups, width)  # (B/G, G*Kmax)
    group_mask = mask.reshape(group_rtg.shape)
    mean = masked_mean(group_rtg, group_mask, dim=1)[:, None]  # (B/G, 1)
    adv = group_rtg - mean
    if scale:
        std = masked_mean(adv.square(), group_mask, dim=1).sqrt()[:, None]
        adv = adv / (std + eps)
    adv = adv.reshape(rtg.shape)
    return [adv[b, :k] for b, k in enumerate(lengths.tolist())]


def broadcast_to_tokens(
    action_values: Tensor, action_start: Tensor, action_end: Tensor, num_tokens: int
) -> Tensor:
    """Copy each action's value to every one of its tokens: `(A,)` -> `(N,)`.

    `action_start`, `action_end` `(A,)` int64: flat token indices into `N` (e.g.
    `B*T` of a padded batch, as in `rairl.airl.ActionLayout`), ends inclusive,
    actions disjoint. Tokens outside every action get 0. Differentiable in
    `action_values`.
    """
    lengths = action_end - action_start + 1  # (A,)
    if bool((lengths < 1).any()):
        raise ValueError("every action needs action_end >= action_start (ends are inclusive)")
    total = int(lengths.sum())
    # offset of each action's first token within the concatenated run of all action tokens
    first = torch.cumsum(lengths, 0) - lengths  # (A,)
    first_per_token = first.repeat_interleave(lengths, output_size=total)  # (total,)
    within = torch.arange(total, device=lengths.device) - first_per_token  # (total,)
    token_idx = action_start.repeat_interleave(lengths, output_size=total) + within  # (total,)
    values = action_values.repeat_interleave(lengths, output_size=total)  # (total,)
    out = action_values.new_zeros(num_tokens)
    return out.index_put((token_idx,), values)
