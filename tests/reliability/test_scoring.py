"""A NaN score is an error naming its item, never a ranking, a "no error" verdict or a null in metrics.json."""

from __future__ import annotations

import math

import pytest
import torch

from rairl import metrics
from rairl.models.reward import RewardConfig, RewardModel
from rairl.score import RewardScorer, ScorerSettings

NAN = float("nan")
PROBLEM = "Mia has 1 apple."
STEPS = ["1 + 1 = 2", "2 + 2 = 4", "#### 4"]


def _nan_scorer(tiny, granularity: str = "step") -> RewardScorer:
    tokenizer, lm = tiny
    reward = RewardModel(lm, RewardConfig(granularity=granularity, interval=3))
    with torch.no_grad():
        reward.g_head.bias.fill_(NAN)  # every action's g, as a diverged reward gives
    return RewardScorer(reward, tokenizer, ScorerSettings(selector="mean"))


@pytest.mark.parametrize("granularity", ["step", "interval", "sparse"])
def test_scorer_refuses_nan_scores_naming_the_item(tiny, granularity: str) -> None:
    scorer = _nan_scorer(tiny, granularity)
    with pytest.raises(ValueError, match=r"item-7: the reward model scored a step nan"):
        scorer.score_steps([PROBLEM], [STEPS], names=["item-7"])
    with pytest.raises(ValueError, match=r"completion 0: the reward model scored a step nan"):
        scorer.score([PROBLEM], ["\n".join(STEPS)])


def test_rerank_and_localise_refuse_a_nan_model(tiny) -> None:
    scorer = _nan_scorer(tiny)
    with pytest.raises(ValueError, match="nan"):
        scorer.rerank(PROBLEM, ["\n".join(STEPS), "#### 7"])  # would have picked the first listed
    with pytest.raises(ValueError, match="nan"):
        scorer.localise(PROBLEM, STEPS)  # would have said "no error" (-1)


def test_the_item_named_is_the_one_with_the_nan(tiny, monkeypatch) -> None:
    tokenizer, lm = tiny
    scorer = RewardScorer(RewardModel(lm, RewardConfig()), tokenizer)
    real = RewardModel.token_terms

    def second_row_nan(self, batch, end_mask):
        terms = real(self, batch, end_mask)
        terms.g_tok[1] = terms.g_tok[1] * NAN
        return terms

    monkeypatch.setattr(RewardModel, "token_terms", second_row_nan)
    with pytest.raises(ValueError, match=r"^b: "):
        scorer.score_steps([PROBLEM] * 3, [STEPS] * 3, names=["a", "b", "c"])


def test_metrics_refuse_nan_scores() -> None:
    correct = [[True, False, False]]
    with pytest.raises(ValueError, match="pick_accuracy: problem 0: score 1 is NaN"):
        metrics.pick_accuracy([[0.1, NAN, 0.3]], correct)
    with pytest.raises(ValueError, match="NaN"):
        metrics.rerank_metrics(correct, [[NAN, NAN, NAN]], [[0.0, 1.0, 2.0]], [["1", "2", "3"]])
    with pytest.raises(ValueError, match="NaN"):
        metrics.best_of_n_curve(correct, [[0.0, NAN, 1.0]], [[0.0, 1.0, 2.0]], [["1", "2", "3"]])
    with pytest.raises(ValueError, match="first_below"):
        metrics.first_below([0.5, NAN, 0.1], 0.0)  # would have said "no error"
    with pytest.raises(ValueError, match="first_below"):
        metrics.first_below([0.5, 0.4], NAN)
    with pytest.raises(ValueError, match="NaN"):
        metrics.calibrate_threshold([[0.5, NAN], [0.2]], [1, -1])
    with pytest.raises(ValueError, match="step_roc"):
        metrics.step_roc([[0.5, NAN], [0.2]], [1, -1], 0.0)
    assert math.isnan(metrics.auroc([0.1, NAN, 0.3], [True, False, False]))
    # infinities still rank
    assert metrics.pick_accuracy([[-math.inf, 0.0, math.inf]], [[False, False, True]]) == 1.0
    assert metrics.first_below([0.5, -math.inf], 0.0) == 1
