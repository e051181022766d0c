"""Rollouts: sample completions from the policy as token ids (the ids are what gets scored)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    *,
    n_samples: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    batch_size: int = 256,
    seed: int = 0,
    greedy: bool = False,
    progress: bool = True,
) -> list[list[list[int]]]:
    """`n_samples` completions per prompt, `out[i][j]` the ids of prompt i's j-th sample.

    A completion ends with EOS when the policy stopped, and has no EOS when it
    hit `max_new_tokens`; nothing after EOS is kept.
    """
    model.eval()
    device = next(model.parameters()).device
    jobs = [(i, j) for i in range(len(prompt_ids)) for j in range(n_samples)]
    out: list[list[list[int]]] = [[[] for _ in range(n_samples)] for _ in prompt_ids]
    gen = torch.Generator().manual_seed(seed)
    # An explicit config with top-k and top-p off: a checkpoint's defaults, or generate's own
    # top_k=50, would sample from a truncated distribution while every log-prob (PPO ratios,
    # ℓ = f − log π) is taken over the full softmax.
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=not greedy, temperature=None if greedy else temperature,
        top_k=None if greedy else 0, top_p=None if greedy else 1.0, eos_token_id=eos_id, pad_token_id=pad_id,
    )
    bar = tqdm(total=len(jobs), desc="sampling", disable=not progress, leave=False)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        prompts = [list(prompt_ids[i]) for i, _ in chunk]
        T = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for r, p in enumerate(prompts):  # left padding: every row's prompt ends at column T-1
            input_ids[r, T - len(p) :] = torch.tensor(p)
            attention_mask[r, T - len(p) :] = 1
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        seqs = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=gen_cfg
        )[:, T:].tolist()
        for (i, j), ids in zip(chunk, seqs, strict=True):
            out[i][j] = ids[: ids.index(eos_id) + 1] if eos_id in ids else ids
        bar.update(len(chunk))
    bar.close()
    return out
