import itertools
import random

import numpy as np
import pytest

from rairl.metrics import (
    auroc,
    bootstrap_ci,
    calibrate_threshold,
    first_below,
    localisation_metrics,
    majority_vote_accuracy,
    pick_accuracy,
    rerank_metrics,
)


def test_auroc_matches_pairwise_count():
    rng = random.Random()
    for _ in range(20):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(n)]
        labels = [rng.random() < 0.5 for _ in range(n)]
        pos = [s for s, y in zip(scores, labels, strict=True) if y]
        neg = [s for s, y in zip(scores, labels, strict=True) if not y]
        if not pos or not neg:
            assert auroc(scores, labels) == 0.5
            continue
        pairs = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
        assert auroc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_rerank_metrics_by_hand():
    correct = [[False, True, False, False], [True, True, False, False]]
    reward = [[0.1, 0.9, 0.2, 0.3], [0.0, 0.1, 0.5, 0.2]]
    logprob = [[0.9, 0.1, 0.2, 0.3], [0.9, 0.1, 0.5, 0.2]]
    answers = [["3", "4", "3", None], ["7", "7", "8", "9"]]
    m = rerank_metrics(correct, reward, logprob, answers)
    assert m["reward_best_of_n"] == 0.5  # picks right, then wrong
    assert m["logprob_best_of_n"] == 0.5  # picks wrong, then right
    assert m["random_expected"] == pytest.approx((0.25 + 0.5) / 2)
    assert m["majority_vote"] == 0.5  # "3" (wrong), "7" (right)
    assert m["oracle"] == 1.0


def test_majority_vote_tie_is_the_expected_accuracy_over_the_tied_answers_in_any_order():
    rng = random.Random()
    answers, correct = ["5", "6", "5", "6", "7", None], [False, True, False, True, False, False]
    for _ in range(20):  # whatever the candidates' order: "5" and "6" tie at two votes, one of them right
        order = rng.sample(range(len(answers)), len(answers))
        assert majority_vote_accuracy([[answers[i] for i in order]], [[correct[i] for i in order]]) == 0.5
    assert majority_vote_accuracy([["5", "6", "8"]], [[False, True, True]]) == pytest.approx(2 / 3)  # three-way tie
    assert majority_vote_accuracy([["5", "6", "6"]], [[True, False, False]]) == 0.0  # a clear winner, wrong
    assert majority_vote_accuracy([[None, None]], [[False, False]]) == 0.0


def test_pick_accuracy_tie_is_the_expected_accuracy_over_the_tied_candidates():
    rng = random.Random()
    scores, correct = [1.0, 3.0, 3.0, 3.0, 2.0], [True, True, False, False, True]
    for _ in range(20):
        order = rng.sample(range(len(scores)), len(scores))
        got = pick_accuracy([[scores[i] for i in order]], [[correct[i] for i in order]])
        assert got == pytest.approx(1 / 3)  # the three tied at 3.0, one of them right


def test_localisation_metrics_and_threshold():
    m = localisation_metrics([1, -1, 2, 0], [1, -1, 1, -1])
    assert m["first_error_accuracy"] == 0.5 and m["no_error_accuracy"] == 0.5 and m["f1"] == pytest.approx(0.5)
    assert first_below([0.0, -0.1, -3.0], -1.0) == 2 and first_below([0.0], -1.0) == -1
    rng = np.random.default_rng()
    scores, labels = [], []
    for _ in range(60):  # separable: wrong steps score below -2, right ones above -1
        n = int(rng.integers(1, 6))
        row = list(rng.uniform(-1, 0, n))
        lab = int(rng.integers(-1, n))
        if lab >= 0:
            row[lab] = float(rng.uniform(-5, -2))
        scores.append(row)
        labels.append(lab)
    t = calibrate_threshold(scores, labels)
    assert localisation_metrics([first_below(s, t) for s in scores], labels)["f1"] == 1.0


def test_bootstrap_ci_brackets_the_mean():
    v = np.random.default_rng().normal(size=200)
    lo, hi = bootstrap_ci(v)
    assert lo < v.mean() < hi
