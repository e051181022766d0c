"""Rollouts: sample completions from the policy as token ids (the ids are what gets scored).

Each sample has its own random stream: token t of sample j of a prompt with seed s is
`argmax(logits / T + Gumbel)`, the Gumbel noise a counter-based hash (splitmix64) of
(s, j, t, token id). A sample therefore depends only on its prompt's seed and its index,
never on the batch it was drawn in, the batch size or how many processes share the work
(DESIGN.md §7), and the Gumbel-max draw is an exact sample of the full softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel

_MASK = (1 << 64) - 1
_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    x &= _MASK
    return x - (1 << 64) if x >> 63 else x


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (products wrap, as in uint64)."""
    z = (z ^ _srl(z, 30)) * _signed(_M1)
    z = (z ^ _srl(z, 27)) * _signed(_M2)
    return z ^ _srl(z, 31)


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from integers (e.g. run seed, iteration, prompt index); order matters."""
    z = torch.tensor(0, dtype=torch.int64)
    for part in parts:
        z = _mix(z + _signed((int(part) + 1) * _GOLDEN))
    return int(z) & ((1 << 63) - 1)


class GumbelNoise(LogitsProcessor):
    """Adds each row's counter-based Gumbel noise to `logits / temperature`; generate then takes the argmax."""

    def __init__(self, row_keys: torch.Tensor, prompt_width: int, temperature: float):
        self.keys, self.width, self.temperature = row_keys, prompt_width, temperature  # keys (R,) int64

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows, vocab = scores.shape
        step = input_ids.shape[1] - self.width
        counter = step * vocab + torch.arange(vocab, device=scores.device) + 1  # (V,)
        z = _mix(self.keys.to(scores.device)[:, None] + counter[None, :] * _signed(_GOLDEN))  # (R, V)
        u = (_srl(z, 11).double() + 0.5) * 2.0**-53  # uniform in (0, 1)
        return scores.float() / self.temperature - torch.log(-torch.log(u)).float()


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
    seeds: Sequence[int] | None = None,
    greedy: bool = False,
    progress: bool = True,
    return_logprobs: bool = False,
) -> list[list[list[int]]] | tuple[list[list[list[int]]], list[list[list[float]]]]:
    """`n_samples` completions per prompt, `out[i][j]` the ids of prompt i's j-th sample.

    A completion ends with EOS when the policy stopped, and has no EOS when it
    hit `max_new_tokens`; nothing after EOS is kept. `seeds`: one per prompt (default:
    derived from `seed` and the prompt's position); sample j of prompt i depends only on
    `seeds[i]`, j and the model. With `return_logprobs`, also the sampler's log-prob of
    each sampled token under its full softmax at `temperature` (nats, fp32), laid out like `out`.
    """
    if seeds is None:
        seeds = [mix_seed(seed, i) for i in range(len(prompt_ids))]
    if len(seeds) != len(prompt_ids):
        raise ValueError(f"sample_completions: {len(seeds)} seeds for {len(prompt_ids)} prompts")
    model.eval()
    device = next(model.parameters()).device
    jobs = [(i, j) for i in range(len(prompt_ids)) for j in range(n_samples)]
    out: list[list[list[int]]] = [[[] for _ in range(n_samples)] for _ in prompt_ids]
    logps: list[list[list[float]]] = [[[] for _ in range(n_samples)] for _ in prompt_ids]
    # Top-k and top-p off: a checkpoint's defaults, or generate's own top_k=50, would sample from a
    # truncated distribution while every log-prob (PPO ratios, ℓ = f − log π) is over the full softmax.
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_k=None, top_p=None,
                               eos_token_id=eos_id, pad_token_id=pad_id, return_dict_in_generate=True, output_logits=return_logprobs)
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
        keys = torch.tensor([mix_seed(seeds[i], j) for i, j in chunk], dtype=torch.int64)
        noise = LogitsProcessorList() if greedy else LogitsProcessorList([GumbelNoise(keys, T, temperature)])
        gen = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=gen_cfg,
            logits_processor=noise,
        )
        new = gen.sequences[:, T:]
        seqs = new.tolist()
        if return_logprobs:  # the raw logits of each step, before the noise: the sampler's own distribution
            logits = torch.stack(gen.logits, 1).float() / (1.0 if greedy else temperature)  # (R, steps, V)
            chosen = torch.log_softmax(logits, -1).gather(-1, new[:, : logits.shape[1], None]).squeeze(-1).tolist()
        for r, ((i, j), ids) in enumerate(zip(chunk, seqs, strict=True)):
            out[i][j] = ids[: ids.index(eos_id) + 1] if eos_id in ids else ids
            if return_logprobs:
                logps[i][j] = chosen[r][: len(out[i][j])]
        bar.update(len(chunk))
    bar.close()
    return (out, logps) if return_logprobs else out
