"""Sampling from the policy: the full softmax, no hidden truncation."""

from __future__ import annotations

import random

from rairl.models.sampling import mix_seed, sample_completions


def test_sampling_draws_from_the_full_softmax(tiny):
    """No hidden top-k / top-p: an untrained model's near-uniform first token covers far more than 50 ids."""
    tokenizer, lm = tiny
    prompt = tokenizer("Question: 1\nAnswer:\n", add_special_tokens=False)["input_ids"]
    out = sample_completions(lm, [prompt], n_samples=1500, max_new_tokens=1, eos_id=tokenizer.eos_token_id,
                             pad_id=tokenizer.pad_token_id, batch_size=1500, seed=random.randrange(1000), progress=False)
    first_tokens = {c[0] for c in out[0]}
    assert len(first_tokens) > 100  # top_k=50 would cap this at 50


def test_gumbel_noise_draws_exactly_from_the_softmax():
    """argmax(logits / T + noise) over many rows: each token's frequency is its softmax probability (5 sigma)."""
    import torch

    from rairl.models.sampling import GumbelNoise

    rows, temperature = 40_000, 0.7
    logits = torch.randn(5)
    keys = torch.tensor([mix_seed(random.randrange(10**6), r) for r in range(rows)])
    noisy = GumbelNoise(keys, prompt_width=3, temperature=temperature)(torch.zeros(rows, 3 + 2, dtype=torch.long), logits.expand(rows, 5))
    freq = torch.bincount(noisy.argmax(1), minlength=5).double() / rows
    p = torch.softmax(logits.double() / temperature, 0)
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / rows).sqrt() + 1e-4).all()), (freq, p)


def test_a_sample_depends_on_its_prompt_seed_and_index_only(tiny):
    """The same (prompt, seed, j) gives the same completion whatever the batch, batch size or other prompts."""
    tokenizer, lm = tiny
    prompts = [tokenizer(f"Question: {q}\nAnswer:\n", add_special_tokens=False)["input_ids"] for q in (1, 22, 333)]
    kw = dict(n_samples=3, max_new_tokens=6, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, progress=False)
    seeds = [random.randrange(10**6) for _ in prompts]
    together = sample_completions(lm, prompts, seeds=seeds, batch_size=64, **kw)
    alone = [sample_completions(lm, [p], seeds=[s], batch_size=2, **kw)[0] for p, s in zip(prompts, seeds, strict=True)]
    assert together == alone
    other = sample_completions(lm, prompts[:1], seeds=[seeds[0] + 1], **kw)[0]
    assert other != together[0]  # another seed, other samples
