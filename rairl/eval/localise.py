"""First-wrong-step localisation: items, the threshold calibrated on validation, metrics, and the
curves behind them (step-level ROC, threshold sweep)."""

from __future__ import annotations

from collections.abc import Sequence

from ..data import Example, LocaliseItem, first_wrong_step, split_steps
from ..metrics import (
    calibrate_threshold,
    first_below,
    localisation_metrics,
    step_roc,
    threshold_candidates,
    threshold_sweep,
)
from ..score import RewardScorer
from .rerank import SampledPool


def clean_items(examples: Sequence[Example]) -> list[LocaliseItem]:
    """Unperturbed expert traces as localisation items with label −1."""
    return [LocaliseItem(id=f"{ex.source}:clean", problem=ex.prompt, steps=split_steps(ex.completion), label=-1) for ex in examples]


def item_step_scores(scorer: RewardScorer, items: Sequence[LocaliseItem], progress: bool = False) -> list[list[float]]:
    """One score per given step of each item (steps may hold newlines), by the item's step index."""
    return scorer.score_steps([it.problem for it in items], [it.steps for it in items],
                              names=[f"item {it.id}" + (f" ({it.source})" if it.source else "") for it in items], progress=progress)


def calibrate_localiser(scorer: RewardScorer, items: Sequence[LocaliseItem]) -> float:
    """Set and return the scorer's threshold that maximises localisation F1 on (validation) items."""
    scorer.settings.threshold = best_threshold(scorer, items)
    return scorer.settings.threshold


def best_threshold(scorer: RewardScorer, items: Sequence[LocaliseItem]) -> float:
    """The threshold that maximises localisation F1 on `items` (the scorer is left as it is)."""
    return calibrate_threshold(item_step_scores(scorer, items), [it.label for it in items])


def evaluate_localise(scorer: RewardScorer, items: Sequence[LocaliseItem], threshold: float | None = None) -> dict[str, float]:
    """Localisation metrics of `items` at `threshold` (default: the scorer's calibrated one)."""
    scores = item_step_scores(scorer, items)
    threshold = scorer.settings.threshold if threshold is None else threshold
    predicted = [first_below(row, threshold) for row in scores]
    return localisation_metrics(predicted, [it.label for it in items])


def localise_curves(scorer: RewardScorer, items: Sequence[LocaliseItem], threshold: float | None = None) -> dict:
    """The scorer's step scores on `items` as curves: `step_roc` (first wrong steps against the steps before
    them and clean traces' steps) and, under `sweep`, `threshold_sweep` over the thresholds `calibrate_threshold`
    tries; `threshold` (default: the scorer's calibrated one) is the point marked on both."""
    scores, labels = item_step_scores(scorer, items), [it.label for it in items]
    threshold = scorer.settings.threshold if threshold is None else threshold
    return {"threshold": threshold, **step_roc(scores, labels, threshold),
            "sweep": threshold_sweep(scores, labels, threshold_candidates(scores))}


def own_sample_items(pools: Sequence[SampledPool], reference_solutions: Sequence[Sequence[str]]) -> list[LocaliseItem]:
    """The policy's own samples as localisation items (gold solutions read to label them): a wrong one
    labelled with its first line that differs from the unique correct solution, a correct one -1.

    Wrong samples whose lines are all a prefix of the solution (cut short) have no wrong line to
    find and are left out, as are empty samples.
    """
    items = []
    for p, ref in zip(pools, reference_solutions, strict=True):
        for text, ok in zip(p.texts, p.correct(), strict=True):
            lines = split_steps(text)
            if not lines:
                continue
            if ok:
                items.append(LocaliseItem(id="own:correct", problem=p.question, steps=lines, label=-1))
                continue
            first = first_wrong_step(lines, ref)
            if first is not None:
                items.append(LocaliseItem(id="natural", problem=p.question, steps=lines, label=first))
    return items


def natural_error_items(pools: Sequence[SampledPool], reference_solutions: Sequence[Sequence[str]]) -> list[LocaliseItem]:
    """The policy's own wrong samples (`own_sample_items` with a first wrong step)."""
    return [it for it in own_sample_items(pools, reference_solutions) if it.label >= 0]
