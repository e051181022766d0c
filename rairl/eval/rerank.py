"""Best-of-N reranking: sampled pools, the selector chosen on validation, metrics against the baselines
(at N = the pool size, and as curves over N)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import answer_kind, answers_match, extract_answer
from ..dist import Dist
from ..metrics import best_of_n_curve, pick_accuracy, rerank_metrics
from ..models.batch import encode_prompts
from ..models.sampling import mix_seed, sample_completions
from ..score import SELECTORS, RewardScorer, select_all


@dataclass
class SampledPool:
    """N policy samples of one problem, as token ids and decoded text."""

    question: str
    answer: str | None
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    texts: list[str]

    def correct(self) -> list[bool]:
        return [answers_match(a, self.answer) for a in self.final_answers()]

    def final_answers(self) -> list[str | None]:
        """Each sample's final answer: a number, or an option letter when the gold answer is one."""
        return [extract_answer(t, kind=answer_kind(self.answer)) for t in self.texts]


def sample_pools(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], answers: Sequence[str | None],
    n: int, max_new_tokens: int, temperature: float, seed: int, max_prompt_tokens: int = 1024, progress: bool = True,
    dist: Dist = Dist(), sampler=None,
) -> list[SampledPool]:
    """`n` policy samples for each question, zipped by index with its gold answer (None: unknown).

    Under several processes each rank samples its share of the questions and every rank gets every
    pool; a question's samples depend on `seed` and its index only, not on the split. `sampler`: a
    rollout engine holding `policy` (`rairl.models.rollout.make_sampler`) to sample with instead of
    `policy`'s own `generate`.
    """
    prompt_ids = encode_prompts(tokenizer, questions, max_prompt_tokens=max_prompt_tokens)
    mine = dist.share(len(prompt_ids))
    kw = dict(n_samples=n, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
              temperature=temperature, seeds=[mix_seed(seed, k) for k in mine], progress=progress and dist.main)
    part = [prompt_ids[k] for k in mine]
    samples = dist.gather(sample_completions(policy, part, **kw) if sampler is None else sampler.sample(part, **kw)[0])
    return [SampledPool(q, a, ids, s, tokenizer.batch_decode(s, skip_special_tokens=True))
            for q, a, ids, s in zip(questions, answers, prompt_ids, samples, strict=True)]


def choose_selector(scorer: RewardScorer, pools: Sequence[SampledPool], selectors: Sequence[str] = SELECTORS) -> tuple[str, dict[str, float]]:
    """The selector with the best best-of-N accuracy on (validation) pools (ties within a pool: expected accuracy)."""
    steps = [scorer.score_ids([p.prompt_ids] * len(p.completion_ids), p.completion_ids) for p in pools]
    correct = [p.correct() for p in pools]
    accs = {sel: pick_accuracy([select_all(s, p.completion_ids, sel) for s, p in zip(steps, pools, strict=True)], correct)
            for sel in selectors}
    best = max(accs, key=lambda k: accs[k])
    return best, accs


def solution_scores(scorer: RewardScorer, pools: Sequence[SampledPool], selector: str) -> list[list[float]]:
    """One score per sample of each pool under `selector`."""
    return [scorer.solution_scores_ids([p.prompt_ids] * len(p.completion_ids), p.completion_ids, selector) for p in pools]


def evaluate_rerank(reward: RewardScorer, logprob: RewardScorer, pools: Sequence[SampledPool]) -> dict:
    """Reward best-of-N vs random, majority vote, policy mean log-prob and the oracle (`rerank_metrics`),
    and under `curve` the same against N = 1 … pool size (`best_of_n_curve`)."""
    inputs = {
        "correct": [p.correct() for p in pools],
        "reward_scores": solution_scores(reward, pools, reward.settings.selector),
        "logprob_scores": solution_scores(logprob, pools, "token_mean"),
        "answers": [p.final_answers() for p in pools],
    }
    return {**rerank_metrics(**inputs), "curve": best_of_n_curve(**inputs)}
