"""The AIRL discriminator on a token batch: actions per granularity, logits, loss.

    f_k = g_k + γ·h(s_{k+1}) − h(s_k)      ℓ_k = f_k − log π(a_k | s_k)      D_k = σ(ℓ_k)

The token-level math runs in `rairl.kernels.airl_*`; this module lays out the
actions of a right-padded `TokenBatch` (through the C++ segment packer) and
maps them to flat `(B*T)` token indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..kernels import AirlTerms, airl_loss, airl_terms
from ..models.batch import TokenBatch
from ..models.reward import RewardConfig, RewardModel
from ..models.tokenizer import newline_token_ids
from ..segments import StepRule, pack_segments


def step_rule(cfg: RewardConfig, tokenizer: PreTrainedTokenizerBase) -> StepRule:
    """The action rule of a granularity: step = a line (ends at a newline token)."""
    if cfg.granularity == "step":
        return StepRule("boundary", boundary_ids=newline_token_ids(tokenizer))
    if cfg.granularity == "interval":
        return StepRule("interval", interval=cfg.interval)
    return StepRule("whole" if cfg.granularity == "sparse" else "token")


@dataclass
class ActionLayout:
    """The A actions of a `(B, T)` batch, as flat indices into `B*T`."""

    start: torch.Tensor  # (A,) int64, first token
    end: torch.Tensor  # (A,) int64, last token (inclusive)
    terminal: torch.Tensor  # (A,) bool, last action of its sequence
    seq: torch.Tensor  # (A,) int64, owning sequence
    cu_actions: torch.Tensor  # (B+1,) int64, sequence b owns actions cu_actions[b]:cu_actions[b+1]
    end_mask: torch.Tensor  # (B, T) bool, True at each action's last token

    def per_sequence(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Split a per-action `(A,)` tensor into B per-sequence tensors."""
        cu = self.cu_actions.tolist()
        return [values[cu[b] : cu[b + 1]] for b in range(len(cu) - 1)]


def action_layout(batch: TokenBatch, rule: StepRule) -> ActionLayout:
    """Segment every completion of `batch` into actions with the C++ packer."""
    B, T = batch.input_ids.shape
    seq_lens = batch.seq_lens.tolist()
    seqs = [batch.input_ids[b, : seq_lens[b]].cpu() for b in range(B)]
    packed = pack_segments(seqs, batch.prompt_lens.cpu(), rule).to_torch()
    seq = packed.action_seq.long()
    shift = seq * T - packed.cu_seqlens.long()[seq]  # packed index -> padded flat index
    start, end = packed.action_start + shift, packed.action_end + shift
    cu = packed.cu_actions.long()
    terminal = torch.zeros(len(seq), dtype=torch.bool)
    has_actions = cu[1:] > cu[:-1]
    terminal[cu[1:][has_actions] - 1] = True
    end_mask = torch.zeros(B * T, dtype=torch.bool)
    end_mask[end] = True
    dev = batch.input_ids.device
    return ActionLayout(start.to(dev), end.to(dev), terminal.to(dev), seq.to(dev), cu.to(dev), end_mask.view(B, T).to(dev))


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
) -> torch.Tensor:
    """Class-balanced BCE on ℓ; `labels`, `valid` `(A,)` (1 expert / 0 policy or perturbed)."""
    terms = reward_model.token_terms(batch, layout.end_mask)
    return airl_loss(
        terms.g_tok.reshape(-1), terms.h_tok.reshape(-1), policy_logp.detach().reshape(-1).float(),
        layout.start, layout.end, layout.terminal, labels.float(), gamma=reward_model.cfg.gamma, valid=valid,
    )
