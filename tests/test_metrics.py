import itertools
import random

import numpy as np
import pytest

from rairl.metrics import (
    auroc,
    best_of_n_curve,
    bootstrap_ci,
    calibrate_threshold,
    first_below,
    localisation_metrics,
    majority_vote_accuracy,
    pick_accuracy,
    rerank_metrics,
    step_roc,
    subset_majority_accuracy,
    subset_pick_accuracy,
    threshold_candidates,
    threshold_sweep,
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


def test_best_of_n_curve_by_hand():
    # gold 5; candidates answer 7, 5, 7 and nothing; the reward ranks them 3, 2, 2, 1, the log-prob favours the right one
    curve = best_of_n_curve(correct=[[False, True, False, False]], reward_scores=[[3.0, 2.0, 2.0, 1.0]],
                            logprob_scores=[[0.0, 1.0, 0.0, 0.0]], answers=[["7", "5", "7", None]])
    assert curve["n"] == [1, 2, 3, 4]
    expected = {
        "reward": [1 / 4, 1.5 / 6, 0.5 / 4, 0.0],  # N = 2: {1, 2} ties (1/2), {1, 3} picks 1; N = 3: only {1, 2, 3}, a tie
        "logprob": [1 / 4, 2 / 4, 3 / 4, 1.0],  # right whenever candidate 1 is drawn
        "majority_vote": [1 / 4, 2 / 6, 1 / 4, 0.0],  # N = 2: 5-7 ties twice (1/2 each), 5 alone once; N = 3: two 5-7 ties
        "random": [1 / 4] * 4,
        "oracle": [1 / 4, 1 / 2, 3 / 4, 1.0],  # 1 - C(3, N) / C(4, N)
    }
    for key, values in expected.items():
        assert curve[key] == pytest.approx(values), key


def _random_pool(rng: random.Random, n: int) -> tuple[list[float], list[float], list[str | None], list[bool]]:
    """Scores with ties, answers with ties and silences; a candidate is right when it answers "0"."""
    answers = [rng.choice(["0", "1", "2", None]) for _ in range(n)]
    return ([float(rng.randint(0, 3)) for _ in range(n)], [rng.random() for _ in range(n)], answers, [a == "0" for a in answers])


def test_subset_accuracies_match_enumerating_every_subset():
    rng = random.Random()
    for _ in range(30):
        n = rng.randint(1, 7)
        scores, _, answers, correct = _random_pool(rng, n)
        picks, votes = subset_pick_accuracy(scores, correct), subset_majority_accuracy(answers, correct)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            assert picks[k - 1] == pytest.approx(pick_accuracy([[scores[i] for i in s] for s in subsets],
                                                               [[correct[i] for i in s] for s in subsets]))
            assert votes[k - 1] == pytest.approx(majority_vote_accuracy([[answers[i] for i in s] for s in subsets],
                                                                        [[correct[i] for i in s] for s in subsets]))


def test_best_of_n_curve_ends_at_rerank_metrics_and_starts_at_mean_correctness():
    rng = random.Random()
    n = rng.randint(2, 9)
    pools = [_random_pool(rng, n) for _ in range(12)]
    inputs = {"correct": [p[3] for p in pools], "reward_scores": [p[0] for p in pools], "logprob_scores": [p[1] for p in pools],
              "answers": [p[2] for p in pools]}
    curve, full = best_of_n_curve(**inputs), rerank_metrics(**inputs)
    mean_correct = full["random_expected"]
    for key, at_n in (("reward", "reward_best_of_n"), ("logprob", "logprob_best_of_n"), ("majority_vote", "majority_vote"),
                      ("random", "random_expected"), ("oracle", "oracle")):
        assert curve[key][0] == pytest.approx(mean_correct), key
        assert curve[key][-1] == pytest.approx(full[at_n]), key
    assert curve["random"] == pytest.approx([mean_correct] * n)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(curve["oracle"]))  # pass@N never falls


def test_step_roc_by_hand():
    # first wrong steps score 0.2 and 0.3; correct ones 0.9 (before an error), 0.6 and 0.25 (a clean trace);
    # 0.5 and 0.8 come after a first error and are left out
    roc = step_roc([[0.9, 0.2, 0.5], [0.3, 0.8], [0.6, 0.25]], [1, 0, -1], threshold=0.5)
    assert (roc["n_pos"], roc["n_neg"]) == (2, 3)
    # cuts at 0.2, 0.25, 0.3, 0.6, 0.9, inf; a step is flagged when it scores below the cut
    assert roc["tpr"] == pytest.approx([0, 1 / 2, 1 / 2, 1, 1, 1])
    assert roc["fpr"] == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert roc["auroc"] == pytest.approx(5 / 6)  # 0.3 scores above 0.25: one of six pairs misordered
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc["auroc"])
    assert (roc["tpr_at"], roc["fpr_at"]) == pytest.approx((1.0, 1 / 3))


def test_calibrate_threshold_is_the_sweep_argmax():
    scores, labels = [[0.9, 0.2, 0.5], [0.3, 0.8], [0.6, 0.25], [0.7, 0.65]], [1, 0, -1, -1]
    sweep = threshold_sweep(scores, labels, threshold_candidates(scores))
    best = calibrate_threshold(scores, labels)
    # no threshold gets every trace: (0.2, 0.25] misses the error at 0.3, (0.3, 0.65] flags the clean 0.25; F1 2/3 both
    assert max(sweep["f1"]) == localisation_metrics([first_below(s, best) for s in scores], labels)["f1"] == pytest.approx(2 / 3)
    assert best == pytest.approx(0.2 + 1e-6)  # the lowest of the best
