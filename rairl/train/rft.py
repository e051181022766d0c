"""Reward-ranked fine-tuning (expert iteration): the policy improves on questions without solutions.

Each of R rounds:

    1. sample     N completions (temperature 1) for each of B questions drawn from the unlabelled pool
    2. score      every sample, by the caller's `score` (a learned reward, majority vote, the
                  policy's mean log-prob, or the gold answer); with the caller's `trim`, each sample is
                  first cut to the part worth training on (`by_step_bar`: its steps before the first one
                  a step judge scores below a bar) and the cut samples are scored (`by_length`: the
                  longest accepted prefix is kept)
    3. select     each question's best sample (ties broken at random); with `min_score`, only
                  when it scores at least that
    4. fine-tune  SFT on the kept samples mixed with `demo_mix` demonstrations per kept sample,
                  at the SFT learning rate, for `steps_per_round` steps
    5. validate   the caller's `validate()`; the best round's weights are kept (round 0: the start)
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..airl.discriminator import DiscRecord
from ..airl.layout import step_rule
from ..configs import check_finite
from ..data import answer_kind, answers_match, extract_answer
from ..models.reward import RewardConfig, RewardModel
from ..models.sampling import sample_completions
from ..score import SELECTORS, RewardScorer, ScorerSettings
from ..tracking import log_row
from .reward import RewardTrainConfig, train_reward
from .sft import SFTConfig, train_sft
from .warm_start import WarmStart

# score(question prompt ids, samples per question) -> one score per sample (None: no score, never kept)
ScoreFn = Callable[[list[list[int]], list[list[list[int]]]], list[list[float | None]]]
# trim(question prompt ids, samples per question) -> each sample cut to the part worth training on ([]: none of it)
TrimFn = Callable[[list[list[int]], list[list[list[int]]]], list[list[list[int]]]]


@dataclass(frozen=True)
class RFTConfig:
    """The rounds of reward-ranked fine-tuning; sizes in questions, samples, steps and tokens."""

    rounds: int = 4  # R: sample -> select -> fine-tune rounds
    prompts_per_round: int = 256  # B: unlabelled questions drawn per round
    samples: int = 8  # N: samples per question (temperature 1)
    max_new_tokens: int = 64  # sampling limit per completion
    min_score: float | None = None  # keep a question's best sample only when it scores at least this (None: always)
    demo_mix: float = 1.0  # demonstrations (from D) added to a round's fine-tuning set per kept sample
    steps_per_round: int = 40  # SFT steps per round
    batch_size: int = 64  # sequences per SFT step
    lr: float = 1e-3  # peak SFT learning rate of a round (warm-up, cosine decay)
    reward_selector: str = "token_mean"  # ranking by a learned reward: how step scores combine (mean | min | last | sum | token_mean)
    adversarial_steps: int = 20  # a re-trained (adversarial) reward: its optimiser steps per round, against that round's samples
    cut_steps: bool = False  # a learned reward: cut each sample before its first step scoring below the bar, keep the longest cut
    step_quantile: float = 0.5  # cut_steps: the bar is this quantile of the reward's step scores on the demonstrations

    def __post_init__(self) -> None:
        check_finite(self)
        if self.reward_selector not in SELECTORS:
            raise ValueError(f"RFTConfig.reward_selector={self.reward_selector!r}; choose one of {SELECTORS}")
        for name in ("rounds", "prompts_per_round", "samples", "max_new_tokens", "steps_per_round", "batch_size", "adversarial_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"RFTConfig.{name}={getattr(self, name)}; must be >= 1")
        if not 0.0 < self.step_quantile < 1.0:
            raise ValueError(f"RFTConfig.step_quantile={self.step_quantile}; must be in (0, 1)")
        if self.demo_mix < 0 or self.lr <= 0:
            raise ValueError(f"RFTConfig: demo_mix={self.demo_mix} must be >= 0 and lr={self.lr} > 0")


def pick_best(scores: Sequence[Sequence[float | None]], rng: random.Random, min_score: float | None = None) -> list[int | None]:
    """Per group, the index of its best-scoring sample (ties broken uniformly at random by `rng`);
    None when no sample has a score, or the best one is below `min_score`."""
    picks: list[int | None] = []
    for group in scores:
        scored = [(s, i) for i, s in enumerate(group) if s is not None]
        if not scored or (min_score is not None and max(scored)[0] < min_score):
            picks.append(None)
            continue
        top = max(s for s, _ in scored)
        picks.append(rng.choice([i for s, i in scored if s == top]))
    return picks


def majority_scores(answers: Sequence[Sequence[str | None]]) -> list[list[float]]:
    """Each sample's share of its group giving the same final answer (0 without an answer):
    the most common answer's samples score highest (self-consistency; reads no gold)."""
    out = []
    for group in answers:
        counts: dict[str, int] = {}
        for a in group:
            if a is not None:
                counts[a] = counts.get(a, 0) + 1
        out.append([counts[a] / len(group) if a is not None else 0.0 for a in group])
    return out


def vote_scores(answers: Sequence[Sequence[str | None]], weights: Sequence[Sequence[float | None]]) -> list[list[float]]:
    """Weighted self-consistency: each sample scores its answer's share of its group's total weight (0 without
    an answer or a weight), plus 1e-6 × its own weight's share of its answer's, so the winning answer's
    heaviest sample is kept. Equal weights rank as `majority_scores` does; weights must be finite and >= 0."""
    out = []
    for group, ws in zip(answers, weights, strict=True):
        if len(group) != len(ws):
            raise ValueError(f"vote_scores: a group of {len(group)} answers has {len(ws)} weights")
        if any(w is not None and not (0.0 <= w < float("inf")) for w in ws):
            raise ValueError(f"vote_scores: weights must be finite and >= 0, got {list(ws)}")
        votes: dict[str, float] = {}
        for a, w in zip(group, ws, strict=True):
            if a is not None and w is not None:
                votes[a] = votes.get(a, 0.0) + w
        total = sum(votes.values())
        out.append([votes[a] / total + 1e-6 * w / votes[a] if a is not None and w is not None and total > 0 and votes[a] > 0 else 0.0
                    for a, w in zip(group, ws, strict=True)])
    return out


def vote_weights(scores: Sequence[Sequence[float | None]], temperature: float) -> list[list[float | None]]:
    """exp((s − the group's best s) / (temperature · σ)) per sample, σ the spread (std) of every score given: a
    scale-free weight for `vote_scores` (temperature → ∞: majority vote; → 0: the best score's answer). None stays None."""
    if not temperature > 0:
        raise ValueError(f"vote_weights: temperature={temperature}; must be > 0")
    flat = np.array([s for g in scores for s in g if s is not None], dtype=np.float64)
    if not np.isfinite(flat).all():
        raise ValueError("vote_weights: a score is not finite")
    spread = float(flat.std()) if len(flat) > 1 else 0.0
    sigma = spread if spread > 0 else 1.0
    out = []
    for g in scores:
        top = max((s for s in g if s is not None), default=0.0)
        out.append([None if s is None else float(np.exp((s - top) / (temperature * sigma))) for s in g])
    return out


def final_answers(tokenizer: PreTrainedTokenizerBase, samples: list[list[list[int]]]) -> list[list[str | None]]:
    """Each sample's decoded final answer (None: none), grouped as given."""
    return [[extract_answer(t) for t in tokenizer.batch_decode(g, skip_special_tokens=True)] for g in samples]


def by_majority(tokenizer: PreTrainedTokenizerBase) -> ScoreFn:
    """Rank samples by majority vote over their group's final answers (reads no gold)."""
    return lambda prompts, samples: majority_scores(final_answers(tokenizer, samples))


def by_gold(tokenizer: PreTrainedTokenizerBase, answer_of: Callable[[list[int]], str]) -> ScoreFn:
    """1 for a sample whose final answer matches `answer_of(prompt ids)`, None (never kept) for the others:
    a question with no correct sample keeps nothing (reads gold)."""
    def score(prompts, samples):
        out = []
        for p, g in zip(prompts, samples, strict=True):
            gold = answer_of(p)
            out.append([1.0 if answers_match(extract_answer(t, kind=answer_kind(gold)), gold) else None
                        for t in tokenizer.batch_decode(g, skip_special_tokens=True)])
        return out
    return score


def by_logprob(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: str = "plain") -> ScoreFn:
    """Rank samples by the (current) policy's mean log-prob per completion token: the `rairl rerank`
    baseline, a reward model over the live policy whose zero heads make g = log π (prompts in `template`)."""
    device = next(policy.parameters()).device
    baseline = RewardScorer(RewardModel(policy, RewardConfig()).to(device), tokenizer, ScorerSettings(template=template))
    return lambda prompts, samples: _grouped(partial(baseline.solution_scores_ids, selector="token_mean"), prompts, samples)


def by_reward(scorer: RewardScorer, selector: str, retrain: Callable[[list[DiscRecord]], None] | None = None) -> ScoreFn:
    """Rank samples by the learned reward (step scores combined by `selector`). With `retrain`, the
    reward is first trained against the round's samples (`retrain(negatives)`: adversarial, AIRL proper)."""
    def score(prompts, samples):
        if retrain is not None:
            retrain([DiscRecord(list(p), list(c), label=0) for p, g in zip(prompts, samples, strict=True) for c in g if c])
            scorer.reward_model.eval()
        return _grouped(partial(scorer.solution_scores_ids, selector=selector), prompts, samples)
    return score


def by_vote(tokenizer: PreTrainedTokenizerBase, score: ScoreFn, temperature: float) -> ScoreFn:
    """Weighted majority vote over final answers, each sample's vote weighted by its `score` (`vote_weights`,
    `vote_scores`): self-consistency and a learned reward in one ranking (reads no gold)."""
    return lambda prompts, samples: vote_scores(final_answers(tokenizer, samples), vote_weights(score(prompts, samples), temperature))


def warm_step_trim(warm: WarmStart, demos: Sequence[tuple[list[int], list[int]]], cfg: RFTConfig) -> tuple[TrimFn, float]:
    """`by_step_bar` with the warm start's reward, its bar the `cfg.step_quantile` of the reward's step scores on
    `demos` (prompt ids, completion ids); returns the trim and the bar."""
    judge = RewardScorer(warm.reward_model, warm.tokenizer, ScorerSettings(template=warm.cfg.template))
    bar = step_bar(judge, demos, cfg.step_quantile)
    return by_step_bar(judge, bar), bar


def by_warm_reward(warm: WarmStart, policy: PreTrainedModel, cfg: RFTConfig, adversarial: bool, seed: int) -> ScoreFn:
    """`by_reward` with the warm start's reward (step scores combined by `cfg.reward_selector`). With
    `adversarial`, each round first trains it `cfg.adversarial_steps` discriminator steps on the warm
    start's experts and perturbed experts plus the round's samples, ℓ under the current `policy`."""
    scorer = RewardScorer(warm.reward_model, warm.tokenizer, ScorerSettings(selector=cfg.reward_selector, template=warm.cfg.template))
    if not adversarial:
        return by_reward(scorer, cfg.reward_selector)
    fixed = [r for r in warm.train_records if r.label == 1 or r.negative_from > 0]
    rule, rounds = step_rule(warm.reward_model.cfg, warm.tokenizer), [0]

    def retrain(negatives: list[DiscRecord]) -> None:
        rounds[0] += 1
        rt = RewardTrainConfig(steps=cfg.adversarial_steps, eval_every=cfg.adversarial_steps, warmup=1, seed=seed * 100 + rounds[0])
        train_reward(warm.reward_model, policy, fixed + negatives, warm.val_records, warm.tokenizer.pad_token_id, rule, rt, progress=False)
    return by_reward(scorer, cfg.reward_selector, retrain)


def by_length(prompts: list[list[int]], samples: list[list[list[int]]]) -> list[list[float | None]]:
    """Each sample's length in tokens (None when empty): after a `trim`, the longest accepted prefix wins."""
    return [[float(len(c)) if c else None for c in g] for g in samples]


def cut_before(ids: Sequence[int], step_scores: Sequence[float], bar: float, boundary_ids: Collection[int]) -> list[int]:
    """`ids` (one completion) up to the end of its last step before the first step scoring below `bar`:
    all of it when none does, [] when the first one does. Steps end at a boundary token (a newline) or
    at the last token, one score each."""
    ends = [i for i, t in enumerate(ids) if t in boundary_ids]
    if ids and (not ends or ends[-1] != len(ids) - 1):
        ends.append(len(ids) - 1)
    if len(ends) != len(step_scores):
        raise ValueError(f"a completion of {len(ends)} steps has {len(step_scores)} step scores: the judge splits steps differently")
    k = next((k for k, s in enumerate(step_scores) if s < bar), len(step_scores))
    return list(ids[: ends[k - 1] + 1]) if k else []


def step_bar(scorer: RewardScorer, demos: Sequence[tuple[list[int], list[int]]], quantile: float) -> float:
    """The `quantile` of `scorer`'s step scores over every step of the demonstrations (prompt ids, completion ids):
    a bar that cuts that share of the expert's own steps."""
    steps = scorer.score_ids([p for p, _ in demos], [c for _, c in demos])
    return float(np.quantile(np.concatenate([np.asarray(s, dtype=np.float64) for s in steps]), quantile))


def by_step_bar(scorer: RewardScorer, bar: float) -> TrimFn:
    """Cut each sample before its first step (line) that `scorer` scores below `bar` (`cut_before`)."""
    boundary = set(scorer.line_rule.boundary_ids)

    def trim(prompts, samples):
        pairs = [(p, c) for p, g in zip(prompts, samples, strict=True) for c in g if c]
        steps = iter(scorer.score_ids([p for p, _ in pairs], [c for _, c in pairs]) if pairs else [])
        return [[cut_before(c, next(steps), bar, boundary) if c else [] for c in g] for g in samples]
    return trim


def _grouped(score_flat: Callable[[list[list[int]], list[list[int]]], list[float]], prompts: list[list[int]],
             samples: list[list[list[int]]]) -> list[list[float | None]]:
    """`score_flat` over every (prompt, sample) pair at once, regrouped per prompt; empty samples score None."""
    pairs = [(p, c) for p, g in zip(prompts, samples, strict=True) for c in g if c]
    flat = iter(score_flat([p for p, _ in pairs], [c for _, c in pairs]) if pairs else [])
    return [[next(flat) if c else None for c in g] for g in samples]


def mix_with_demos(kept: Sequence[tuple[list[int], list[int]]], demos: Sequence[tuple[list[int], list[int]]], demo_mix: float,
                   rng: random.Random) -> list[tuple[list[int], list[int]]]:
    """The kept (prompt ids, completion ids) pairs and round(`demo_mix` · len(kept)) distinct
    demonstrations drawn by `rng` (all of them when there are fewer)."""
    n = min(len(demos), round(demo_mix * len(kept)))
    return list(kept) + rng.sample(list(demos), n)


def run_rft(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[list[int]],
    demos: Sequence[tuple[list[int], list[int]]],
    cfg: RFTConfig,
    score: ScoreFn,
    validate: Callable[[], float] | None,
    seed: int,
    start_score: float | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
    trim: TrimFn | None = None,
) -> dict:
    """R rounds on `questions` (prompt ids, no answers); `policy` is trained in place and ends with the
    weights of its best validated round (round 0: as given, scored `start_score` or `validate()`), or
    without `validate` (no labelled validation data) with the last round's. With `trim`, each round's
    samples are cut (`by_step_bar`) before `score` ranks them, and the kept ones are trained on as cut.

    Returns {"best_round", "best_val", "tokens_sampled", "tokens_trained", "rounds": [one row per round]}.
    """
    rng = random.Random(seed)
    if validate is None:  # no checkpoint choice: every round scores its number, so the last one is kept
        rounds_done = iter(range(1, cfg.rounds + 1))
        validate, start_score = (lambda: float(next(rounds_done))), 0.0
    best_val = validate() if start_score is None else start_score
    best_round, best_state = 0, copy.deepcopy(policy.state_dict())
    rows, tokens_sampled, tokens_trained = [], 0, 0
    for r in range(1, cfg.rounds + 1):
        t0 = time.time()
        chosen = rng.sample(range(len(questions)), min(cfg.prompts_per_round, len(questions)))
        prompts = [list(questions[i]) for i in chosen]
        samples = sample_completions(policy, prompts, n_samples=cfg.samples, max_new_tokens=cfg.max_new_tokens,
                                     eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, seed=seed * 1000 + r, progress=False)
        tokens_sampled += sum(len(c) for group in samples for c in group)
        if trim is not None:
            samples = trim(prompts, samples)
        picks = pick_best(score(prompts, samples), rng, cfg.min_score)
        kept = [(p, group[k]) for p, group, k in zip(prompts, samples, picks, strict=True) if k is not None and group[k]]
        row = {"round": r, "kept": len(kept), "questions": len(prompts)}
        if kept:
            train = mix_with_demos(kept, demos, cfg.demo_mix, rng)
            sft = SFTConfig(steps=cfg.steps_per_round, batch_size=cfg.batch_size, lr=cfg.lr, warmup=max(1, cfg.steps_per_round // 10),
                            log_every=cfg.steps_per_round, seed=seed * 1000 + r)
            logged = train_sft(policy, [p for p, _ in train], [c for _, c in train], tokenizer.pad_token_id, sft, progress=False)
            tokens_trained += logged[-1]["tokens"]
            row["sft_loss"] = logged[-1]["loss"]
        row |= {"val": validate(), "tokens_sampled": tokens_sampled, "tokens_trained": tokens_trained, "seconds": time.time() - t0}
        if row["val"] > best_val:
            best_val, best_round, best_state = row["val"], r, copy.deepcopy(policy.state_dict())
        rows.append(row)
        if log_path:
            log_row(log_path, row)
        if progress:
            print(f"  rft round {r}/{cfg.rounds}: kept {len(kept)}/{len(prompts)}, val {row['val']:.3f} "
                  f"(best {best_val:.3f} at round {best_round}), {row['seconds']:.0f}s", flush=True)
    policy.load_state_dict(best_state)
    return {"best_round": best_round, "best_val": best_val, "tokens_sampled": tokens_sampled, "tokens_trained": tokens_trained, "rounds": rows}
