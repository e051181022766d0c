"""Sampling from the policy: the full softmax, no hidden truncation."""

from __future__ import annotations

import random

from rairl.models.sampling import sample_completions


def test_sampling_draws_from_the_full_softmax(tiny):
    """No hidden top-k / top-p: an untrained model's near-uniform first token covers far more than 50 ids."""
    tokenizer, lm = tiny
    prompt = tokenizer("Question: 1\nAnswer:\n", add_special_tokens=False)["input_ids"]
    out = sample_completions(lm, [prompt], n_samples=1500, max_new_tokens=1, eos_id=tokenizer.eos_token_id,
                             pad_id=tokenizer.pad_token_id, batch_size=1500, seed=random.randrange(1000), progress=False)
    first_tokens = {c[0] for c in out[0]}
    assert len(first_tokens) > 100  # top_k=50 would cap this at 50
