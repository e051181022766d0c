"""Token batches: (prompt ids, completion ids) pairs laid out right-padded for the model.

The index spaces a batch passes through, and the type that owns each:

    text         prompt and completion strings                  `Example`, `LocaliseItem`, `CandidatePool` (rairl.data)
    token ids    one list of ids per prompt / completion        `encode_prompts`, `encode_completions`, `DiscRecord`
    padded       (B, T): row b = prompt + completion, right-    `TokenBatch` (this module); `TokenBatch.rows` slices rows
                 padded; `prompt_lens`, `seq_lens` per row
    flat         B*T: row-major index b*T + t into the padded   `ActionLayout` (rairl.airl.layout): per action a_k its
                 batch; the kernels' `N` axis                   first/last flat token; `ActionLayout.rows` slices rows
    packed       the real tokens of all rows back to back, no   `PackedBatch` (rairl.kernels.segments): `cu_seqlens`,
                 padding (padding-free forward passes)          `position_ids`; `rairl.models.packing` maps padded <-> packed
    actions      A actions, ordered by row then position;       `ActionLayout.cu_actions`: row b owns actions
                 per-action terms g, f, ℓ are (A,)              cu_actions[b]:cu_actions[b+1]
    steps        lines of a completion, as a user numbers them  `RewardScorer.score` (rairl.score): one score per line
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .tokenizer import format_prompt


@dataclass
class TokenBatch:
    """B sequences `prompt + completion`, right-padded to T tokens."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 on real tokens
    prompt_lens: torch.Tensor  # (B,) int64
    seq_lens: torch.Tensor  # (B,) int64, prompt + completion tokens

    def completion_mask(self) -> torch.Tensor:
        """`(B, T)` bool, True on completion tokens."""
        t = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (t[None] >= self.prompt_lens[:, None]) & (t[None] < self.seq_lens[:, None])

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(*(x.to(device) for x in (self.input_ids, self.attention_mask, self.prompt_lens, self.seq_lens)))

    def rows(self, first: int, stop: int) -> TokenBatch:
        """Rows `first:stop`, with the same T (so an `ActionLayout.rows` slice indexes them)."""
        return TokenBatch(self.input_ids[first:stop], self.attention_mask[first:stop], self.prompt_lens[first:stop], self.seq_lens[first:stop])


def collate(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Concatenate each prompt with its completion (zipped by index) and right-pad."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"collate: {len(prompt_ids)} prompts but {len(completion_ids)} completions")
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    T = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    prompt_lens = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    return TokenBatch(input_ids, attention_mask, prompt_lens, attention_mask.sum(1))


def record_labels(names: Sequence[str] | None, n: int, what: str) -> list[str]:
    """How errors name each of `n` records: its entry of `names` (e.g. its `source`, "file.jsonl:3") where
    given and non-empty, else `what` and its index ("prompt 3")."""
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} names for {n} {what}s")
    return [names[i] if names is not None and names[i] else f"{what} {i}" for i in range(n)]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], max_prompt_tokens: int,
                   names: Sequence[str] | None = None) -> list[list[int]]:
    """Token ids of the templated prompts; a prompt over the limit is refused (it cannot be cut safely),
    naming it by `names` (e.g. each record's `source`, "file.jsonl:3"; default: "prompt i")."""
    labels = record_labels(names, len(questions), "prompt")
    out = []
    for label, q in zip(labels, questions, strict=True):
        ids = tokenizer(format_prompt(q, tokenizer), add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_tokens:
            raise ValueError(f"{label}: prompt of {len(ids)} tokens > max_prompt_tokens={max_prompt_tokens}; raise the limit")
        out.append(ids)
    return out


def encode_completions(
    tokenizer: PreTrainedTokenizerBase, completions: Sequence[str], max_completion_tokens: int, add_eos: bool = True,
    names: Sequence[str] | None = None,
) -> list[list[int]]:
    """Token ids of completions, ended with EOS exactly as the policy ends its samples.

    An over-long completion is truncated to `max_completion_tokens` (EOS
    dropped, like a policy sample that hit the limit) with one warning naming
    how many were cut and the first by `names` (default: "completion i"). An
    empty completion is refused, named the same way.
    """
    labels = record_labels(names, len(completions), "completion")
    out, cut = [], []
    for label, text in zip(labels, completions, strict=True):
        if not text.strip():
            raise ValueError(f"{label}: empty completion")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
        if len(ids) > max_completion_tokens:
            cut.append(label)
            ids = ids[:max_completion_tokens]
        out.append(ids)
    if cut:
        warnings.warn(f"{len(cut)} completion(s) truncated to max_completion_tokens={max_completion_tokens} (first: {cut[0]})", stacklevel=2)
    return out
