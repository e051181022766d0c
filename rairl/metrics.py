"""Evaluation metrics: AUROC, reranking (best-of-N and its baselines), localisation F1."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (ties count one half); 0.5 when a class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pick_accuracy(scores: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]) -> float:
    """Mean correctness of the highest-scoring candidate per problem; a tie counts as the expected
    accuracy of a uniform pick among the tied candidates (never the one listed first)."""
    if not scores:
        raise ValueError("pick_accuracy: no problems")
    picks = []
    for s, c in zip(scores, correct, strict=True):
        s = np.asarray(s, dtype=np.float64)
        picks.append(float(np.mean(np.asarray(c, dtype=np.float64)[s == s.max()])))
    return float(np.mean(picks))


def majority_vote_accuracy(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]]) -> float:
    """Accuracy of the most frequent final answer per problem; answers tied for most frequent count
    as the expected accuracy of a uniform pick among them (whatever the candidates' order).

    A candidate with no answer (None) casts no vote; a problem with no vote at all scores 0.
    """
    picks = []
    for ans, cor in zip(answers, correct, strict=True):
        counts = Counter(a for a in ans if a is not None)
        if not counts:
            picks.append(0.0)
            continue
        top = max(counts.values())
        tied = [a for a in counts if counts[a] == top]
        picks.append(float(np.mean([np.mean([c for x, c in zip(ans, cor, strict=True) if x == a]) for a in tied])))
    return float(np.mean(picks))


def rerank_metrics(
    correct: Sequence[Sequence[bool]],
    reward_scores: Sequence[Sequence[float]],
    logprob_scores: Sequence[Sequence[float]],
    answers: Sequence[Sequence[str | None]],
) -> dict[str, float]:
    """Reward best-of-N against its baselines on the same N candidates per problem.

    `random_expected` is the expected accuracy of a uniformly random pick (the
    mean correctness over all candidates), `oracle` is pass@N.
    """
    return {
        "n": int(np.mean([len(c) for c in correct])),
        "problems": len(correct),
        "reward_best_of_n": pick_accuracy(reward_scores, correct),
        "random_expected": float(np.mean([np.mean(c) for c in correct])),
        "majority_vote": majority_vote_accuracy(answers, correct),
        "logprob_best_of_n": pick_accuracy(logprob_scores, correct),
        "oracle": float(np.mean([any(c) for c in correct])),
    }


def localisation_metrics(predicted: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """ProcessBench metric: exact first-error accuracy, no-error accuracy, their harmonic mean."""
    pred, lab = np.asarray(predicted), np.asarray(labels)
    err, ok = lab >= 0, lab < 0
    err_acc = float((pred[err] == lab[err]).mean()) if err.any() else float("nan")
    ok_acc = float((pred[ok] == -1).mean()) if ok.any() else float("nan")
    f1 = 2 * err_acc * ok_acc / (err_acc + ok_acc) if err_acc + ok_acc > 0 else 0.0
    return {"first_error_accuracy": err_acc, "no_error_accuracy": ok_acc, "f1": float(f1),
            "n_error": int(err.sum()), "n_correct": int(ok.sum())}


def first_below(step_scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scoring below `threshold`, or −1 when none does."""
    for i, s in enumerate(step_scores):
        if s < threshold:
            return i
    return -1


def calibrate_threshold(step_scores: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The threshold maximising localisation F1 of `first_below` on (validation) traces."""
    flat = np.sort(np.concatenate([np.asarray(s, dtype=np.float64) for s in step_scores if len(s)]))
    candidates = np.unique(np.concatenate([flat, flat + 1e-6]))
    if len(candidates) > 400:
        candidates = np.quantile(flat, np.linspace(0, 1, 400))
    best_t, best_f1 = float(candidates[0]), -1.0
    for t in candidates:
        f1 = localisation_metrics([first_below(s, t) for s in step_scores], labels)["f1"]
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(n_boot, len(v)), replace=True).mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def write_metrics(path: str | Path, metrics: dict) -> None:
    """Write `metrics` as strict JSON: a NaN / inf (e.g. accuracy over zero items) becomes null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean(metrics), indent=2, allow_nan=False))
