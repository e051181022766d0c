"""Reward-ranked fine-tuning: selection, mixing with demonstrations and the round loop, against hand-worked cases."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rairl.models.lm import TinyLMConfig, build_tiny_lm
from rairl.models.tokenizer import train_bpe_tokenizer
from rairl.train import rft
from rairl.train.rft import (
    RFTConfig,
    majority_scores,
    mix_with_demos,
    pick_best,
    run_rft,
    vote_scores,
    vote_weights,
)


def test_pick_best_takes_each_groups_top_score_and_skips_what_is_below_the_bar():
    scores = [[0.1, 0.9, 0.3], [None, -2.0, -1.0], [None, None], [0.2, 0.4]]
    assert pick_best(scores, random.Random(0)) == [1, 2, None, 1]
    assert pick_best(scores, random.Random(0), min_score=0.35) == [1, None, None, 1]  # -1.0 < 0.35


def test_pick_best_breaks_ties_at_random_not_by_position():
    picks = [pick_best([[1.0, 0.0, 1.0, 1.0]], random.Random(s))[0] for s in range(200)]
    assert set(picks) == {0, 2, 3}  # every tied sample is chosen sometimes; the lower-scoring one never
    assert max(picks.count(i) for i in (0, 2, 3)) < 100


def test_majority_scores_are_each_answers_share_of_its_group():
    assert majority_scores([["3", "5", "3", None], [None, None], ["7"]]) == [[0.5, 0.25, 0.5, 0.0], [0.0, 0.0], [1.0]]


def test_vote_scores_weigh_each_answer_by_its_samples_weights_and_keep_its_heaviest_sample():
    # "3" has 2 samples of weight 0.1 + 0.2 = 0.3, "5" one of 0.9: the reward outvotes the count
    scores = vote_scores([["3", "5", "3", None]], [[0.1, 0.9, 0.2, 5.0]])[0]
    assert scores[1] == pytest.approx(0.9 / 1.2 + 1e-6) and scores[3] == 0.0  # no answer: no vote, never kept
    assert scores[0] == pytest.approx(0.3 / 1.2 + 1e-6 * 0.1 / 0.3) and scores[2] == pytest.approx(0.3 / 1.2 + 1e-6 * 0.2 / 0.3)
    assert pick_best([scores], random.Random(0)) == [1]
    assert pick_best(vote_scores([["3", "5", "3"]], [[0.1, 0.5, 0.45]]), random.Random(0)) == [2]  # "3" wins, its heavier sample kept
    assert vote_scores([["3", "5"]], [[None, 0.0]]) == [[0.0, 0.0]]


def test_equal_vote_weights_rank_as_majority_vote_on_fresh_random_groups():
    rng = random.Random(1)
    for _ in range(200):
        group = [rng.choice(["1", "2", "3", None]) for _ in range(rng.randint(1, 8))]
        votes, majority = vote_scores([group], [[1.0] * len(group)])[0], majority_scores([group])[0]
        for i in range(len(group)):
            for j in range(len(group)):
                assert (votes[i] > votes[j] + 1e-9) == (majority[i] > majority[j])


def test_vote_weights_are_scale_free_and_reach_majority_and_best_score_at_their_limits():
    scores = [[1.0, 3.0, None], [2.0, 0.0]]
    w = vote_weights(scores, 1.0)
    assert w[0][2] is None and w[0][1] == 1.0 and w[1][0] == 1.0  # each group's best weighs 1
    scaled = vote_weights([[10 * s - 7 if s is not None else None for s in g] for g in scores], 1.0)
    assert [x for g in scaled for x in g if x is not None] == pytest.approx([x for g in w for x in g if x is not None])
    assert all(x == pytest.approx(1.0) for x in vote_weights(scores, 1e9)[0][:2])  # → majority vote
    assert vote_weights(scores, 1e-3)[0][0] == pytest.approx(0.0)  # → the best score's answer
    with pytest.raises(ValueError, match="not finite"):
        vote_weights([[float("nan")]], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        vote_weights(scores, 0.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        vote_scores([["1"]], [[-1.0]])


def test_mix_adds_demo_mix_distinct_demonstrations_per_kept_sample():
    kept = [([1], [10]), ([2], [20])]
    demos = [([100 + i], [200 + i]) for i in range(10)]
    mixed = mix_with_demos(kept, demos, 1.5, random.Random(0))
    assert mixed[:2] == kept
    assert len(mixed) == 2 + 3 and len({tuple(p) for p, _ in mixed[2:]}) == 3
    assert all(d in demos for d in mixed[2:])
    assert len(mix_with_demos(kept, demos[:1], 4.0, random.Random(0))) == 3  # all there are
    assert mix_with_demos(kept, demos, 0.0, random.Random(0)) == kept


@pytest.fixture(scope="module")
def tiny():
    tok = train_bpe_tokenizer(["Question: a b c\nAnswer:\n1 + 2 = 3\n#### 3"] * 4, 300)
    return tok, build_tiny_lm(tok, TinyLMConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), seed=0)


def test_run_rft_trains_on_the_selected_samples_mixed_with_demos_and_keeps_the_best_round(tiny, monkeypatch):
    tok, policy = tiny
    seen = []

    def fake_sft(model, prompt_ids, completion_ids, pad_id, cfg, **kw):
        seen.append(list(zip(prompt_ids, completion_ids, strict=True)))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # every round moves the weights, so the kept round can be told apart
        return [{"step": cfg.steps, "loss": 1.0, "tokens": sum(map(len, completion_ids))}]

    monkeypatch.setattr(rft, "train_sft", fake_sft)
    questions = [[5, 6], [7, 8], [9, 10]]
    demos = [([1], [2, 3]), ([4], [5, 6])]

    def score(prompts, samples):  # the longest sample of each question wins; question [9, 10] is never kept
        return [[None if p == [9, 10] else float(len(c)) for c in g] for p, g in zip(prompts, samples, strict=True)]

    vals = iter([0.5, 0.2])  # round 1 improves on the start (0.3), round 2 does not
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = RFTConfig(rounds=2, prompts_per_round=3, samples=3, max_new_tokens=6, steps_per_round=2, batch_size=4, demo_mix=0.5)
    res = run_rft(policy, tok, questions, demos, cfg, score, lambda: next(vals), seed=0, start_score=0.3, progress=False)
    assert res["best_round"] == 1 and res["best_val"] == 0.5
    assert [r["kept"] for r in res["rounds"]] == [2, 2]
    for trained in seen:
        kept, mixed = trained[:2], trained[2:]
        assert {tuple(p) for p, _ in kept} == {(5, 6), (7, 8)}
        assert len(mixed) == 1 and mixed[0] in demos  # round(0.5 * 2) demonstrations
    for k, v in policy.state_dict().items():  # the weights of round 1: one +1 step from the start
        assert torch.allclose(v, start[k] + 1.0)
    assert res["tokens_trained"] == sum(sum(len(c) for _, c in t) for t in seen)
    assert res["tokens_sampled"] > 0


def test_run_rft_keeps_the_start_when_no_round_beats_it(tiny, monkeypatch):
    tok, policy = tiny
    monkeypatch.setattr(rft, "train_sft", lambda model, *a, **k: [{"loss": 1.0, "tokens": 1}] if [p.data.mul_(0) for p in model.parameters()] else [])
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    res = run_rft(policy, tok, [[5, 6]], [], RFTConfig(rounds=1, samples=2, max_new_tokens=4), lambda p, s: [[1.0] * len(g) for g in s],
                  lambda: 0.1, seed=0, start_score=0.9, progress=False)
    assert res["best_round"] == 0
    assert all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())


def test_rft_config_refuses_nonsense():
    with pytest.raises(ValueError, match="rounds"):
        RFTConfig(rounds=0)
    with pytest.raises(ValueError, match="demo_mix"):
        RFTConfig(demo_mix=-1)


def test_by_majority_and_by_gold_score_decoded_answers(tiny):
    from rairl.train.rft import by_gold, by_majority

    tok, _ = tiny
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # noqa: E731
    samples = [[enc("1 + 2 = 3\n#### 3"), enc("#### 4"), enc("#### 3"), enc("no answer")]]
    assert by_majority(tok)([[1]], samples) == [[0.5, 0.25, 0.5, 0.0]]
    assert by_gold(tok, lambda p: "4")([[1]], samples) == [[None, 1.0, None, None]]
    assert pick_best(by_gold(tok, lambda p: "9")([[1]], samples), random.Random(0)) == [None]  # no correct sample: none kept


def test_by_vote_weighs_decoded_answers_by_the_given_scores(tiny):
    from rairl.train.rft import by_vote

    tok, _ = tiny
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # noqa: E731
    samples = [[enc("#### 3"), enc("#### 4"), enc("#### 3"), enc("no answer")]]
    scores = [[0.0, 3.0, 0.0, 9.0]]  # the one "4" outscores both "3"s; the answerless sample casts no vote
    assert pick_best(by_vote(tok, lambda p, s: scores, 0.1)([[1]], samples), random.Random(0)) == [1]
    assert pick_best(by_vote(tok, lambda p, s: scores, 1e6)([[1]], samples), random.Random(0)) in ([0], [2])  # → majority vote


def test_run_rft_without_validation_keeps_the_last_round(tiny, monkeypatch):
    tok, policy = tiny

    def fake_sft(model, *a, **k):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return [{"loss": 1.0, "tokens": 1}]

    monkeypatch.setattr(rft, "train_sft", fake_sft)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    res = run_rft(policy, tok, [[5, 6]], [], RFTConfig(rounds=3, samples=2, max_new_tokens=4), lambda p, s: [[1.0] * len(g) for g in s],
                  None, seed=0, progress=False)
    assert res["best_round"] == 3
    assert all(torch.allclose(v, start[k] + 3.0) for k, v in policy.state_dict().items())



def test_by_logprob_is_the_policys_mean_token_logprob(tiny):
    from rairl.models.batch import collate
    from rairl.models.lm import per_token_logprobs
    from rairl.train.rft import by_logprob

    tok, policy = tiny
    g = torch.Generator().manual_seed(random.randrange(1000))
    prompts = [torch.randint(3, len(tok), (n,), generator=g).tolist() for n in (4, 6)]
    samples = [[torch.randint(3, len(tok), (n,), generator=g).tolist() for n in (3, 5)], [torch.randint(3, len(tok), (2,), generator=g).tolist(), []]]
    got = by_logprob(policy, tok)(prompts, samples)
    assert got[1][1] is None  # an empty sample has no score
    for p, group, row in zip(prompts, samples, got, strict=True):
        for c, score in zip(group, row, strict=True):
            if c:
                b = collate([p], [c], tok.pad_token_id)
                m = b.completion_mask()
                ref = float((per_token_logprobs(policy, b.input_ids, b.attention_mask) * m).sum() / m.sum())
                assert abs(score - ref) < 1e-4


NL = 9  # a newline (step boundary) token in the hand-worked cuts below; EOS is 2


def test_cut_before_keeps_the_steps_before_the_first_one_below_the_bar():
    ids = [5, 6, NL, 7, NL, 8, 2]  # three steps: [5 6 \n] [7 \n] [8 EOS]
    assert rft.cut_before(ids, [1.0, 0.5, -3.0], 0.0, {NL}) == [5, 6, NL, 7, NL]  # the third step is below
    assert rft.cut_before(ids, [1.0, -1.0, 3.0], 0.0, {NL}) == [5, 6, NL]  # a later good step does not rescue the cut
    assert rft.cut_before(ids, [-1.0, 1.0, 1.0], 0.0, {NL}) == []  # the first step is below: nothing kept
    assert rft.cut_before(ids, [0.0, 0.0, 0.0], 0.0, {NL}) == ids  # at the bar is not below it: the whole sample, EOS too
    assert rft.cut_before([5, NL, 6, NL], [1.0, 1.0], 0.0, {NL}) == [5, NL, 6, NL]  # ends on a boundary: no empty last step
    assert rft.cut_before([5, 6, 7], [1.0], 0.0, {NL}) == [5, 6, 7]  # one unfinished step (hit the token limit)
    with pytest.raises(ValueError, match="3 steps has 2 step scores"):
        rft.cut_before(ids, [1.0, 1.0], 0.0, {NL})


class FakeJudge:
    """A step judge scoring each step by its first token minus 10 (steps end at NL or at the last token)."""

    class line_rule:  # noqa: N801 (RewardScorer.line_rule's one attribute read here)
        boundary_ids = (NL,)

    def score_ids(self, prompts, completions):
        out = []
        for c in completions:
            starts = [0] + [k + 1 for k, t in enumerate(c[:-1]) if t == NL]
            out.append([float(c[s] - 10) for s in starts])
        return out


def test_step_bar_is_the_quantile_of_every_demonstration_step():
    demos = [([1], [11, NL, 13, NL, 15, 2]), ([1], [12, 2])]  # step scores 1, 3, 5 and 2
    assert rft.step_bar(FakeJudge(), demos, 0.5) == pytest.approx(2.5)
    assert rft.step_bar(FakeJudge(), demos, 0.25) == pytest.approx(float(np.quantile([1, 3, 5, 2], 0.25)))


def test_by_step_bar_cuts_every_sample_and_by_length_keeps_the_longest_cut():
    samples = [[[11, NL, 3, NL, 12, 2], [12, NL, 13, 2], []], [[4, NL, 15, 2]]]
    cut = rft.by_step_bar(FakeJudge(), 0.0)([[1], [2]], samples)
    assert cut == [[[11, NL], [12, NL, 13, 2], []], [[]]]
    assert rft.by_length([[1], [2]], cut) == [[2.0, 4.0, None], [None]]
    assert pick_best(rft.by_length([[1], [2]], cut), random.Random(0)) == [1, None]


def test_run_rft_with_trim_trains_on_the_cut_samples(tiny, monkeypatch):
    tok, policy = tiny
    seen = []

    def fake_sft(model, prompt_ids, completion_ids, pad_id, cfg, **kw):
        seen.append(list(zip(prompt_ids, completion_ids, strict=True)))
        return [{"step": cfg.steps, "loss": 1.0, "tokens": sum(map(len, completion_ids))}]

    monkeypatch.setattr(rft, "train_sft", fake_sft)
    got = {}

    def trim(prompts, samples):  # question [5, 6]: its second sample cut to 2 tokens, the rest to nothing
        got["samples"] = dict(zip(map(tuple, prompts), samples, strict=True))
        return [[c[:2] if (p == [5, 6] and j == 1) else [] for j, c in enumerate(g)] for p, g in zip(prompts, samples, strict=True)]

    cfg = RFTConfig(rounds=1, prompts_per_round=2, samples=3, max_new_tokens=6, steps_per_round=2, batch_size=4, demo_mix=0.0)
    res = run_rft(policy, tok, [[5, 6], [7, 8]], [], cfg, rft.by_length, None, seed=0, progress=False, trim=trim)
    assert res["rounds"][0]["kept"] == 1
    (prompt, completion), = seen[0]
    assert prompt == [5, 6] and completion == got["samples"][(5, 6)][1][:2]
