"""Evaluation metrics: AUROC, reranking (best-of-N and its baselines, and their curves over N),
localisation F1 (and its step-level ROC and threshold sweep); and what result files carry (`write_metrics`:
strict JSON; `environment`: machine, versions, command, date)."""

from __future__ import annotations

import datetime
import json
import math
import platform
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def finite_scores(scores: Sequence[float], what: str) -> np.ndarray:
    """`scores` as a float64 array; a NaN raises ValueError naming `what` and its index: it has no rank, so
    a pick, a threshold or a "no error" verdict from it would be an accident of ordering. ±inf ranks."""
    s = np.asarray(scores, dtype=np.float64)
    nan = np.flatnonzero(np.isnan(s))
    if nan.size:
        raise ValueError(f"{what}: score {nan[0]} is NaN (a diverged model?); refusing to rank it")
    return s


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (ties count one half); 0.5 when a class is empty; NaN when a score is NaN
    (it has no rank: a diverged model must not be ranked by where its NaNs happen to sort)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if np.isnan(s).any():
        return float("nan")
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
    for i, (s, c) in enumerate(zip(scores, correct, strict=True)):
        s = finite_scores(s, f"pick_accuracy: problem {i}")
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


def best_of_n_curve(
    correct: Sequence[Sequence[bool]],
    reward_scores: Sequence[Sequence[float]],
    logprob_scores: Sequence[Sequence[float]],
    answers: Sequence[Sequence[str | None]],
) -> dict[str, list[float]]:
    """`rerank_metrics`' selectors at every N = 1 … n (n: the smallest pool): the exact expectation, over
    every size-N subset of each problem's pool taken uniformly, of the pick's accuracy, then the mean over
    problems (nothing sampled, so deterministic).

    At N = n it equals `rerank_metrics`; at N = 1 every selector is the mean correctness; `random`
    (a uniform pick) is that at every N and `oracle` is the unbiased pass@N. Returns lists keyed
    `n`, `reward`, `logprob`, `majority_vote`, `random`, `oracle`.
    """
    if not correct:
        raise ValueError("best_of_n_curve: no problems")
    n = min(len(c) for c in correct)
    rows = {"reward": [], "logprob": [], "majority_vote": [], "random": [], "oracle": []}
    for c, r, lp, a in zip(correct, reward_scores, logprob_scores, answers, strict=True):
        rows["reward"].append(subset_pick_accuracy(r, c)[:n])
        rows["logprob"].append(subset_pick_accuracy(lp, c)[:n])
        rows["majority_vote"].append(subset_majority_accuracy(a, c)[:n])
        rows["random"].append(subset_pick_accuracy([0.0] * len(c), c)[:n])  # every candidate tied: a uniform pick
        rows["oracle"].append(subset_pick_accuracy([float(x) for x in c], c)[:n])  # a correct one whenever there is one
    return {"n": list(range(1, n + 1)), **{k: np.mean(v, axis=0).tolist() for k, v in rows.items()}}


def subset_pick_accuracy(scores: Sequence[float], correct: Sequence[bool]) -> np.ndarray:
    """(n,): entry N − 1 is the expected `pick_accuracy` of one pool's candidates restricted to a uniformly
    random subset of N of them (ties: a uniform pick among the tied), for N = 1 … n.

    The subset's best score is level v when it holds none of the `above` candidates scoring more and
    some of the `m` scoring v: C(n − above, N) − C(n − above − m, N) of the C(n, N) subsets; the pick is
    then uniform over the level's candidates, by symmetry.
    """
    s, c = finite_scores(scores, "subset_pick_accuracy"), np.asarray(correct, dtype=np.float64)
    n = len(s)
    sizes = range(1, n + 1)
    out, above = np.zeros(n), 0
    for v in np.unique(s)[::-1]:
        level = s == v
        m = int(level.sum())
        share = np.array([(math.comb(n - above, k) - math.comb(n - above - m, k)) / math.comb(n, k) for k in sizes])
        out += share * c[level].mean()
        above += m
    return out


def subset_majority_accuracy(answers: Sequence[str | None], correct: Sequence[bool]) -> np.ndarray:
    """(n,): entry N − 1 is the expected `majority_vote_accuracy` of one pool restricted to a uniformly random
    subset of N of its candidates, for N = 1 … n (exact, by counting subsets).

    For each answer g and count t: the subsets holding t of g's candidates, at most t of every other
    answer's and exactly j other answers with t, weigh g's correctness by 1 / (j + 1) (the tie's uniform
    pick). `ways[m, j]` counts the other candidates' choices of m with j answers at t, one answer at a time.
    """
    n = len(answers)
    groups: dict[str, list[bool]] = defaultdict(list)
    for a, ok in zip(answers, correct, strict=True):
        if a is not None:
            groups[a].append(bool(ok))
    sizes = [len(v) for v in groups.values()]
    right = [float(np.mean(v)) for v in groups.values()]
    silent = n - sum(sizes)  # candidates with no answer: in the subset, never a vote
    weighted = np.zeros(n + 1)  # by subset size
    for g, (size, y) in enumerate(zip(sizes, right, strict=True)):
        if y == 0:
            continue
        for t in range(1, size + 1):
            ways = np.zeros((n + 1, len(sizes)))
            ways[: silent + 1, 0] = [math.comb(silent, m) for m in range(silent + 1)]
            for h, other in enumerate(sizes):
                if h == g:
                    continue
                nxt = np.zeros_like(ways)
                for x in range(min(other, t - 1) + 1):
                    nxt[x:] += math.comb(other, x) * ways[: n + 1 - x]
                if other >= t:
                    nxt[t:, 1:] += math.comb(other, t) * ways[: n + 1 - t, :-1]
                ways = nxt
            ties = (ways / np.arange(1, len(sizes) + 1)).sum(axis=1)  # (n + 1,): sum over j of ways / (j + 1)
            weighted[t:] += y * math.comb(size, t) * ties[: n + 1 - t]
    return weighted[1:] / np.array([math.comb(n, k) for k in range(1, n + 1)], dtype=np.float64)


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
    """Index of the first step scoring below `threshold`, or −1 when none does (a NaN score or threshold
    raises ValueError: it is below nothing, so it would read as "no error")."""
    finite_scores([*step_scores, threshold], "first_below (step scores, then the threshold)")
    for i, s in enumerate(step_scores):
        if s < threshold:
            return i
    return -1


def threshold_candidates(step_scores: Sequence[Sequence[float]]) -> np.ndarray:
    """The thresholds worth trying on these traces: every step score and just above it (400 quantiles when more)."""
    flat = np.sort(np.concatenate([finite_scores(s, f"threshold_candidates: trace {i}") for i, s in enumerate(step_scores) if len(s)]))
    candidates = np.unique(np.concatenate([flat, flat + 1e-6]))
    return np.quantile(flat, np.linspace(0, 1, 400)) if len(candidates) > 400 else candidates


def threshold_sweep(step_scores: Sequence[Sequence[float]], labels: Sequence[int], thresholds: Sequence[float]) -> dict[str, list[float]]:
    """`localisation_metrics` of `first_below` at each threshold: lists keyed `threshold`,
    `first_error_accuracy`, `no_error_accuracy`, `f1`."""
    rows = [localisation_metrics([first_below(s, t) for s in step_scores], labels) for t in thresholds]
    return {"threshold": [float(t) for t in thresholds],
            **{k: [r[k] for r in rows] for k in ("first_error_accuracy", "no_error_accuracy", "f1")}}


def calibrate_threshold(step_scores: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The threshold maximising localisation F1 of `first_below` on (validation) traces (the lowest of equals)."""
    sweep = threshold_sweep(step_scores, labels, threshold_candidates(step_scores))
    return sweep["threshold"][int(np.argmax(sweep["f1"]))]


def step_roc(step_scores: Sequence[Sequence[float]], labels: Sequence[int], threshold: float) -> dict:
    """ROC of flagging a step as wrong when it scores below a threshold, over every threshold.

    Positives: each error trace's first wrong step (label k >= 0); negatives: its steps before k and
    every step of a clean trace (label −1). Steps after k are left out: `first_below` stops at the first
    flag. Returns `fpr`, `tpr` (one point per distinct score, from (0, 0) to (1, 1)), `auroc` (of
    −score, by `auroc`), `n_pos`, `n_neg`, and `fpr_at` / `tpr_at` at `threshold`.
    """
    pos, neg = [], []
    for row, k in zip(step_scores, labels, strict=True):
        if k >= 0:
            neg += list(row[:k])
            pos += list(row[k : k + 1])
        else:
            neg += list(row)
    pos_s, neg_s = finite_scores(pos, "step_roc: first wrong steps"), finite_scores(neg, "step_roc: correct steps")
    cuts = np.append(np.unique(np.concatenate([pos_s, neg_s])), np.inf)  # flag s < cut: nothing at the lowest, all at inf
    rate = lambda s, t: float((s < t).mean()) if len(s) else float("nan")  # noqa: E731
    return {"fpr": [rate(neg_s, t) for t in cuts], "tpr": [rate(pos_s, t) for t in cuts],
            "auroc": auroc(-np.concatenate([pos_s, neg_s]), [True] * len(pos_s) + [False] * len(neg_s)),
            "n_pos": len(pos_s), "n_neg": len(neg_s), "fpr_at": rate(neg_s, threshold), "tpr_at": rate(pos_s, threshold)}


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


def environment(device: str) -> dict:
    """Machine, versions, command and date (`device`: "cpu" | "cuda"): result files carry them, as the same seed
    trains differently on another machine or library release."""
    import torch
    import transformers

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info
