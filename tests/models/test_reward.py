import json
import random

import pytest
import torch

from rairl.models.reward import RewardConfig, RewardModel
from rairl.score import RewardScorer, ScorerSettings, select


def _randomise_heads(rm: RewardModel) -> None:
    with torch.no_grad():
        for head in (rm.g_head, rm.h_head):
            head.weight.normal_()
            head.bias.normal_()


def test_save_load_round_trip_gives_identical_scores(tiny, tmp_path):
    tokenizer, lm = tiny
    rm = RewardModel(lm, RewardConfig(granularity="step", gamma=0.9, beta=1.5))
    _randomise_heads(rm)
    scorer = RewardScorer(rm, tokenizer, ScorerSettings(selector="mean", threshold=-2.5))
    scorer.save_pretrained(tmp_path / "r")
    loaded = RewardScorer.from_pretrained(tmp_path / "r")
    assert loaded.reward_model.cfg == rm.cfg and loaded.settings == scorer.settings
    prompts, completions = ["Ana has 3 pens."] * 2, ["3 + 4 = 7\n#### 7", "3 + 5 = 9\n9 - 1 = 8\n#### 8"]
    for a, b in zip(loaded.score(prompts, completions), scorer.score(prompts, completions), strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_checkpoint_from_another_version_is_refused(tiny, tmp_path):
    tokenizer, lm = tiny
    RewardModel(lm).save_pretrained(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "reward_config.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "r" / "reward_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"reward_config.json: field 'format_version' is 99"):
        RewardModel.from_pretrained(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="reward_config.json"):
        RewardModel.from_pretrained(tmp_path / "missing")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="granularity"):
        RewardConfig(granularity="tokens")
    with pytest.raises(ValueError, match="gamma"):
        RewardConfig(gamma=1.5)


@pytest.mark.parametrize("granularity", ["step", "interval", "dense", "sparse"])
def test_one_score_per_line_at_every_granularity(tiny, granularity):
    """Step scores sum the action scores: the per-line total is the same at every granularity."""
    tokenizer, lm = tiny
    rm = RewardModel(lm, RewardConfig(granularity=granularity, interval=3))
    rng = random.Random()
    lines = [f"{rng.randint(1, 50)} + {rng.randint(1, 9)} = {rng.randint(1, 60)}" for _ in range(rng.randint(1, 5))]
    completion = "\n".join(lines + ["#### 5"])
    scores = RewardScorer(rm, tokenizer).score(["Tom has 4 cards."], [completion])[0]
    assert len(scores) == len(lines) + 1
    step_scores = RewardScorer(RewardModel(lm, RewardConfig(granularity="step")), tokenizer).score(["Tom has 4 cards."], [completion])[0]
    # zero heads: g is the LM log-likelihood, so every granularity sums to the same total
    assert sum(scores) == pytest.approx(sum(step_scores), rel=1e-4)
    if granularity in ("step", "dense"):
        assert scores == pytest.approx(step_scores, rel=1e-4, abs=1e-5)


def test_rerank_and_localise(tiny):
    tokenizer, lm = tiny
    scorer = RewardScorer(RewardModel(lm), tokenizer, ScorerSettings(selector="sum"))
    cands = ["1 + 1 = 2\n#### 2", "1 + 1 = 3\n3 + 1 = 4\n#### 4", "#### 7"]
    order, scores = scorer.rerank("Mia has 1 apple.", cands)
    assert sorted(order) == [0, 1, 2] and scores[order[0]] == max(scores)
    step_scores = scorer.score(["Mia has 1 apple."], [cands[1]])[0]
    assert scores[1] == pytest.approx(select(step_scores, "sum"), rel=1e-5)
    steps = cands[1].split("\n")
    assert scorer.localise("Mia has 1 apple.", steps, threshold=float("inf")) == 0
    assert scorer.localise("Mia has 1 apple.", steps, threshold=float("-inf")) == -1
    t = (step_scores[0] + step_scores[1]) / 2 if step_scores[1] < step_scores[0] else None
    if t is not None:
        assert scorer.localise("Mia has 1 apple.", steps, threshold=t) == 1
    with pytest.raises(ValueError, match="empty completion"):
        scorer.score(["x"], ["  "])


@pytest.mark.parametrize("granularity", ["step", "dense", "interval"])
def test_paragraph_steps_are_scored_by_the_given_index(tiny, granularity):
    """Steps holding newlines: one score per given step, each the sum of its lines' scores."""
    tokenizer, lm = tiny
    rm = RewardModel(lm, RewardConfig(granularity=granularity, interval=3))
    with torch.no_grad():
        rm.h_head.weight.normal_()  # shaping on: scores are not the LM log-likelihood alone
        rm.g_head.weight.normal_()
    scorer = RewardScorer(rm, tokenizer, ScorerSettings(term="f"))
    rng = random.Random()
    lines = [f"{rng.randint(1, 50)} + {rng.randint(1, 9)} = {rng.randint(1, 60)}" for _ in range(rng.randint(3, 8))]
    cuts = sorted(rng.sample(range(1, len(lines)), rng.randint(1, len(lines) - 1)))
    steps = ["\n".join(lines[a:b]) for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]  # paragraph steps
    got = scorer.score_steps(["Tom has 4 cards."], [steps])[0]
    per_line = scorer.score(["Tom has 4 cards."], ["\n".join(lines)])[0]
    assert len(got) == len(steps) and len(per_line) == len(lines)
    want = [sum(per_line[a:b]) for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    # the same text split by blank lines, or by a regex at each step's start, gives the same steps
    numbered = [f"Step {k + 1}: {st}" for k, st in enumerate(steps)]
    by_regex = scorer.score(["Tom has 4 cards."], ["\n".join(numbered)], delimiter=r"^Step \d+:")[0]
    assert by_regex == pytest.approx(scorer.score_steps(["Tom has 4 cards."], [numbered])[0], rel=1e-5, abs=1e-5)
    assert len(scorer.score(["Tom has 4 cards."], ["\n\n".join(steps)], delimiter="blank-line")[0]) == len(steps)
    assert scorer.localise("Tom has 4 cards.", steps, threshold=float("-inf")) == -1


def test_a_step_that_cannot_be_scored_is_an_error_naming_item_and_step(tiny):
    tokenizer, lm = tiny
    scorer = RewardScorer(RewardModel(lm), tokenizer)
    with pytest.raises(ValueError, match=r"item a: step 1 is empty"):
        scorer.score_steps(["x"], [["1 + 1 = 2", "", "#### 2"]], names=["item a"])
    with pytest.raises(ValueError, match="step delimiter"):
        scorer.score(["x"], ["1 + 1 = 2"], delimiter="(")


def test_overlong_completion_is_an_error(tiny):
    tokenizer, lm = tiny
    scorer = RewardScorer(RewardModel(lm), tokenizer, max_completion_tokens=8)
    with pytest.raises(ValueError, match="max_completion_tokens=8"):
        scorer.score(["Tom has 4 cards."], ["\n".join(["12 + 3 = 15"] * 5)])
    scorer = RewardScorer(RewardModel(lm), tokenizer, max_prompt_tokens=4)
    with pytest.raises(ValueError, match="max_prompt_tokens=4"):
        scorer.score(["Tom has 4 cards and a long question."], ["1 + 1 = 2"])
