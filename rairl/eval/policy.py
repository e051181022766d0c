"""Held-out sampled accuracy of a policy: pass@1, pass@k, completion length, format validity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import answer_kind, answers_match, extract_answer
from ..models.batch import encode_prompts
from ..models.sampling import sample_completions


@dataclass(frozen=True)
class PolicyEvalConfig:
    """How a trained policy is evaluated on held-out problems."""

    problems: int = 200  # held-out test problems
    samples: int = 8  # samples per problem: pass@1 is their mean, pass@k with k = samples

    def __post_init__(self) -> None:
        if self.problems < 1 or self.samples < 1:
            raise ValueError(f"PolicyEvalConfig: problems={self.problems} and samples={self.samples} must be >= 1")


def evaluate_policy(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], answers: Sequence[str],
    n_samples: int, max_new_tokens: int, seed: int, progress: bool = True, temperature: float = 1.0,
) -> dict:
    """Sampled (at `temperature`, 1 by default) held-out accuracy: pass@1 = mean over samples, pass@k = any of k correct.

    Format-valid: the completion stopped (EOS) and has a `#### N` answer line.
    Also returns `per_problem_pass1`, one value per question, for intervals.
    """
    prompt_ids = encode_prompts(tokenizer, questions, max_prompt_tokens=1024)
    samples = sample_completions(policy, prompt_ids, n_samples=n_samples, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                                 pad_id=tokenizer.pad_token_id, temperature=temperature, seed=seed, progress=progress)
    per_problem, any_correct, lengths, valid = [], [], [], []
    for group, answer in zip(samples, answers, strict=True):
        texts = tokenizer.batch_decode(group, skip_special_tokens=True)
        extracted = [extract_answer(t, kind=answer_kind(answer)) for t in texts]  # a number, or an option letter
        correct = [answers_match(a, answer) for a in extracted]
        per_problem.append(sum(correct) / len(correct))
        any_correct.append(any(correct))
        lengths += [len(c) for c in group]
        valid += [bool(c) and c[-1] == tokenizer.eos_token_id and a is not None for c, a in zip(group, extracted, strict=True)]
    return {
        "pass1": sum(per_problem) / len(per_problem), "passk": sum(any_correct) / len(any_correct), "k": n_samples,
        "mean_len": sum(lengths) / len(lengths), "format_valid": sum(valid) / len(valid), "per_problem_pass1": per_problem,
    }
