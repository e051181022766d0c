"""Stages shared by `rairl demo`, `rairl train-reward`, `rairl rerank` and `rairl localise`.

Each stage takes plain records and returns plain records or metrics; the
commands differ only in where the data comes from.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .data import (
    Example,
    LocaliseItem,
    answers_match,
    extract_answer,
    first_wrong_step,
    split_steps,
)
from .data.perturb import perturb
from .eval.metrics import calibrate_threshold, first_below, localisation_metrics, rerank_metrics
from .score import SELECTORS, RewardScorer, select_all
from .train.reward import DiscRecord


@dataclass
class SampledPool:
    """N policy samples of one problem, as token ids and decoded text."""

    question: str
    answer: str | None
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    texts: list[str]

    def correct(self) -> list[bool]:
        return [answers_match(extract_answer(t), self.answer) for t in self.texts]

    def final_answers(self) -> list[str | None]:
        return [extract_answer(t) for t in self.texts]


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


def clean_items(examples: Sequence[Example]) -> list[LocaliseItem]:
    """Unperturbed expert traces as localisation items with label −1."""
    return [LocaliseItem(id=f"{ex.source}:clean", problem=ex.prompt, steps=split_steps(ex.completion), label=-1) for ex in examples]


def choose_selector(scorer: RewardScorer, pools: Sequence[SampledPool], selectors: Sequence[str] = SELECTORS) -> tuple[str, dict[str, float]]:
    """The selector with the best best-of-N accuracy on (validation) pools."""
    steps = [scorer.score_ids([p.prompt_ids] * len(p.completion_ids), p.completion_ids) for p in pools]
    correct = [p.correct() for p in pools]
    accs = {}
    for sel in selectors:
        picks = [select_best(s, p.completion_ids, sel) for s, p in zip(steps, pools, strict=True)]
        accs[sel] = sum(c[i] for c, i in zip(correct, picks, strict=True)) / max(len(pools), 1)
    best = max(accs, key=lambda k: accs[k])
    return best, accs


def select_best(step_scores: Sequence[Sequence[float]], completion_ids: Sequence[Sequence[int]], selector: str) -> int:
    scores = select_all(step_scores, completion_ids, selector)
    return max(range(len(scores)), key=lambda i: scores[i])


def solution_scores(scorer: RewardScorer, pools: Sequence[SampledPool], selector: str) -> list[list[float]]:
    """One score per sample of each pool under `selector`."""
    return [scorer.solution_scores_ids([p.prompt_ids] * len(p.completion_ids), p.completion_ids, selector) for p in pools]


def evaluate_rerank(reward: RewardScorer, logprob: RewardScorer, pools: Sequence[SampledPool]) -> dict[str, float]:
    """Reward best-of-N vs random, majority vote, policy mean log-prob and the oracle."""
    return rerank_metrics(
        correct=[p.correct() for p in pools],
        reward_scores=solution_scores(reward, pools, reward.settings.selector),
        logprob_scores=solution_scores(logprob, pools, "token_mean"),
        answers=[p.final_answers() for p in pools],
    )


def item_step_scores(scorer: RewardScorer, items: Sequence[LocaliseItem], progress: bool = False) -> list[list[float]]:
    scores = scorer.score([it.problem for it in items], ["\n".join(it.steps) for it in items], progress=progress)
    for it, s in zip(items, scores, strict=True):
        if len(s) != len(it.steps):
            raise ValueError(f"item {it.id}: {len(it.steps)} steps but {len(s)} scored lines: a step holds a newline, "
                             f"or the trace is over max_completion_tokens={scorer.max_completion_tokens}")
    return scores


def calibrate_localiser(scorer: RewardScorer, items: Sequence[LocaliseItem]) -> float:
    """Set and return the scorer's threshold that maximises localisation F1 on (validation) items."""
    scorer.settings.threshold = calibrate_threshold(item_step_scores(scorer, items), [it.label for it in items])
    return scorer.settings.threshold


def evaluate_localise(scorer: RewardScorer, items: Sequence[LocaliseItem]) -> dict[str, float]:
    scores = item_step_scores(scorer, items)
    predicted = [first_below(row, scorer.settings.threshold) for row in scores]
    return localisation_metrics(predicted, [it.label for it in items])


def natural_error_items(pools: Sequence[SampledPool], reference_solutions: Sequence[Sequence[str]]) -> list[LocaliseItem]:
    """The policy's own wrong samples, labelled with the first line that differs from the unique correct solution.

    Samples whose lines are all a prefix of the solution (cut short) have no
    wrong line to find and are left out.
    """
    items = []
    for p, ref in zip(pools, reference_solutions, strict=True):
        for text, ok in zip(p.texts, p.correct(), strict=True):
            lines = split_steps(text)
            if ok or not lines:
                continue
            first = first_wrong_step(lines, ref)
            if first is not None:
                items.append(LocaliseItem(id="natural", problem=p.question, steps=lines, label=first))
    return items
