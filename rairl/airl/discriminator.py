"""The AIRL discriminator on a token batch: records, batches, per-action terms and the loss.

    f_k = g_k + γ·h(s_{k+1}) − h(s_k)      ℓ_k = f_k − log π(a_k | s_k)      D_k = σ(ℓ_k)

The token-level math runs in `rairl.kernels.airl_loss`; this module feeds it the reward
model's per-token terms and the batch's `ActionLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..dist import Dist
from ..kernels import AirlTerms, airl_loss, airl_terms
from ..kernels.segments import StepRule
from ..models.batch import TokenBatch, collate
from ..models.reward import RewardModel
from .layout import ActionLayout, action_layout


@dataclass(frozen=True)
class DiscRecord:
    """One sequence for the discriminator."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: int  # 1 expert, 0 policy sample or perturbed expert
    negative_from: int = 0  # completion token where the negative part starts (perturbed: first wrong step)


def discriminator_batch(
    records: list[DiscRecord], pad_id: int, rule: StepRule, device: torch.device | str = "cpu"
) -> tuple[TokenBatch, ActionLayout, torch.Tensor, torch.Tensor]:
    """The records as a batch on `device`, their actions, per-action labels and validity (A,)."""
    batch = collate([r.prompt_ids for r in records], [r.completion_ids for r in records], pad_id).to(device)
    layout = action_layout(batch, rule)
    seq_label = torch.tensor([r.label for r in records], dtype=torch.float32, device=batch.input_ids.device)
    neg_from = batch.prompt_lens + torch.tensor([r.negative_from for r in records], device=batch.input_ids.device)  # (B,) position in the row
    T = batch.input_ids.shape[1]
    end_pos = layout.end - layout.seq * T  # (A,) position of each action's last token in its row
    labels = seq_label[layout.seq]
    valid = (labels > 0.5) | (end_pos >= neg_from[layout.seq])
    return batch, layout, labels, valid


def discriminator_terms(
    reward_model: RewardModel, batch: TokenBatch, layout: ActionLayout, policy_logp: torch.Tensor
) -> AirlTerms:
    """Per-action (g, f, ℓ) for the batch; `policy_logp` `(B, T)` is the detached policy log-prob per token."""
    terms = reward_model.token_terms(batch, layout.end_mask)
    return airl_terms(
        terms.g_tok.reshape(-1), terms.h_tok.reshape(-1), policy_logp.detach().reshape(-1).float(),
        layout.start, layout.end, layout.terminal, gamma=reward_model.cfg.gamma,
    )


def discriminator_loss(
    reward_model: RewardModel,
    batch: TokenBatch,
    layout: ActionLayout,
    policy_logp: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    class_counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced BCE on ℓ and the (detached) ℓ it read, from one reward forward.

    `labels`, `valid` `(A,)` (1 expert / 0 policy or perturbed; False: ignored). Returns
    `(loss () fp32, ell (A,) fp32)`. `class_counts` (2,): the global (expert, policy) action
    counts under several processes (`rairl.kernels.airl_loss`).
    """
    terms = reward_model.token_terms(batch, layout.end_mask)
    return airl_loss(
        terms.g_tok.reshape(-1), terms.h_tok.reshape(-1), policy_logp.detach().reshape(-1).float(),
        layout.start, layout.end, layout.terminal, labels.float(), gamma=reward_model.cfg.gamma, valid=valid,
        return_logits=True, class_counts=class_counts,
    )


def class_counts(labels: torch.Tensor, valid: torch.Tensor, dist: Dist = Dist()) -> torch.Tensor:
    """`(2,)` fp64: valid expert and policy actions of every rank's share of a batch together (the
    `class_counts` of `discriminator_loss` under several processes)."""
    pos = labels > 0.5
    return dist.all_sum(torch.stack([(valid & pos).sum(), (valid & ~pos).sum()]).double())


def balanced_accuracy(ell: torch.Tensor, labels: torch.Tensor) -> float:
    """Class-balanced accuracy of `ell > 0 ⇔ expert` over `(A,)` logits and labels (1 expert)."""
    pos = labels > 0.5
    return float(0.5 * ((ell[pos] > 0).float().mean() + (ell[~pos] <= 0).float().mean()))
