"""Discriminator records from demonstrations: experts (label 1), policy samples and perturbed experts (label 0)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from transformers import PreTrainedTokenizerBase

from ..data import Example, LocaliseItem, split_steps
from ..data.perturb import perturb
from .discriminator import DiscRecord


def perturbed_negatives(
    tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[list[int]], examples: Sequence[Example], rng: random.Random
) -> tuple[list[DiscRecord], list[LocaliseItem]]:
    """One perturbed trace per expert example: a discriminator negative from its first wrong step on.

    Also returns the same traces as localisation items (label = first wrong step).
    """
    records, items = [], []
    for p_ids, ex in zip(prompt_ids, examples, strict=True):
        steps = split_steps(ex.completion)
        pert = perturb(steps, rng)
        prefix = "\n".join(pert.steps[: pert.first_wrong]) + "\n" if pert.first_wrong else ""
        negative_from = len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
        completion = tokenizer("\n".join(pert.steps), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        records.append(DiscRecord(list(p_ids), completion, label=0, negative_from=negative_from))
        items.append(LocaliseItem(id=f"{ex.source}:{pert.kind}", problem=ex.prompt, steps=pert.steps, label=pert.first_wrong))
    return records, items


def discriminator_records(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    prompt_ids: Sequence[list[int]],
    completion_ids: Sequence[list[int]],
    samples: Sequence[tuple[list[int], Sequence[list[int]]]],
    rng: random.Random,
) -> tuple[list[DiscRecord], list[LocaliseItem]]:
    """Experts (label 1), policy samples `(prompt ids, [completion ids])` and one perturbed copy per expert (label 0).

    Also returns the perturbed copies as localisation items.
    """
    experts = [DiscRecord(list(p), list(c), label=1) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    sampled = [DiscRecord(list(p), list(c), label=0) for p, cs in samples for c in cs if c]
    perturbed, items = perturbed_negatives(tokenizer, prompt_ids, examples, rng)
    return experts + sampled + perturbed, items


def expert_copies(records: Sequence[DiscRecord], experts: Iterable[tuple[Sequence[int], Sequence[int]]]) -> int:
    """How many negatives (label 0) are an expert's (prompt ids, completion ids), token for token: a policy samples its
    demonstrations back when it has learned them by heart (or a problem has one right text), and such negatives
    teach the discriminator nothing."""
    known = {(tuple(p), tuple(c)) for p, c in experts}
    return sum(r.label == 0 and (tuple(r.prompt_ids), tuple(r.completion_ids)) in known for r in records)
