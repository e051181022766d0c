"""Actions of a right-padded `TokenBatch`: which flat `(B*T)` tokens make up each action a_k.

The C++ segment packer (`rairl.kernels.segments`) splits every completion by a `StepRule`;
`action_layout` maps its packed indices back to the padded batch. A layout is built once per
batch and sliced by rows (`ActionLayout.rows`) for minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..kernels.segments import StepRule, pack_segments
from ..models.batch import TokenBatch
from ..models.reward import RewardConfig
from ..models.tokenizer import newline_token_ids


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

    def rows(self, first: int, stop: int) -> ActionLayout:
        """The layout of batch rows `first:stop` (the same T), as `action_layout` would build it for them."""
        T = self.end_mask.shape[1]
        a0, a1 = int(self.cu_actions[first]), int(self.cu_actions[stop])
        shift = first * T  # flat index of row `first`'s first token
        return ActionLayout(
            self.start[a0:a1] - shift, self.end[a0:a1] - shift, self.terminal[a0:a1], self.seq[a0:a1] - first,
            self.cu_actions[first : stop + 1] - a0, self.end_mask[first:stop],
        )


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
