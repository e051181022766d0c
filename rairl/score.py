"""RewardScorer: per-step rewards for (prompt, completion) pairs, reranking and localisation.

Scores are computed on the token ids the reward model's tokenizer gives the
prompt template and the completion (with EOS, exactly as in training), or on
a policy's own sampled ids through `score_ids`. The scored term is the
disentangled reward `g` (default) or the shaped `f = g + γ·h(s') − h(s)`.

A step is a line of the completion. At granularity `step` a step is an
action; at other granularities an action's score goes to the step holding its
last token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .airl.layout import action_layout, step_rule
from .kernels import airl_terms
from .kernels.segments import StepRule
from .metrics import first_below
from .models.batch import collate, encode_completions, encode_prompts
from .models.reward import RewardModel
from .models.tokenizer import load_tokenizer, newline_token_ids

SELECTORS = ("mean", "min", "last", "sum", "token_mean")


@dataclass
class ScorerSettings:
    """Choices calibrated on validation data and saved beside the reward model."""

    term: str = "g"  # "g" or "f"
    selector: str = "min"  # how step scores rank whole solutions, one of SELECTORS
    threshold: float = -1.0  # localisation: first step scoring below this is the first error

    def __post_init__(self) -> None:
        if self.term not in ("g", "f"):
            raise ValueError(f"ScorerSettings.term={self.term!r}; choose 'g' or 'f'")
        if self.selector not in SELECTORS:
            raise ValueError(f"ScorerSettings.selector={self.selector!r}; choose one of {SELECTORS}")


def select(step_scores: Sequence[float], selector: str, n_tokens: int | None = None) -> float:
    """One number per solution from its step scores (higher is better)."""
    s = np.asarray(step_scores, dtype=np.float64)
    if len(s) == 0:
        return float("-inf")
    if selector == "mean":
        return float(s.mean())
    if selector == "min":
        return float(s.min())
    if selector == "last":
        return float(s[-1])
    if selector == "sum":
        return float(s.sum())
    if selector == "token_mean":
        return float(s.sum() / max(n_tokens or 1, 1))
    raise ValueError(f"selector {selector!r}; choose one of {SELECTORS}")


def select_all(step_scores: Sequence[Sequence[float]], completion_ids: Sequence[Sequence[int]], selector: str) -> list[float]:
    """`select` for each solution, zipped by index with its token ids (for `token_mean`)."""
    return [select(s, selector, len(c)) for s, c in zip(step_scores, completion_ids, strict=True)]


class RewardScorer:
    def __init__(
        self,
        reward_model: RewardModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: ScorerSettings | None = None,
        *,
        batch_size: int = 64,
        max_prompt_tokens: int = 1024,
        max_completion_tokens: int = 1024,
    ):
        self.reward_model, self.tokenizer = reward_model.eval(), tokenizer
        self.settings = settings or ScorerSettings()
        self.batch_size = batch_size
        self.max_prompt_tokens, self.max_completion_tokens = max_prompt_tokens, max_completion_tokens
        self.action_rule = step_rule(reward_model.cfg, tokenizer)
        self.line_rule = StepRule("boundary", boundary_ids=newline_token_ids(tokenizer))

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> RewardScorer:
        """Load a directory written by `save_pretrained` (reward model, tokenizer, settings)."""
        path = Path(path)
        settings_file = path / "scorer.json"
        settings = ScorerSettings(**json.loads(settings_file.read_text())) if settings_file.exists() else None
        return cls(RewardModel.from_pretrained(path), load_tokenizer(path / "lm"), settings, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.reward_model.save_pretrained(path)
        self.tokenizer.save_pretrained(path / "lm")
        (path / "scorer.json").write_text(json.dumps(asdict(self.settings), indent=2))

    @torch.no_grad()
    def score_ids(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], progress: bool = False
    ) -> list[list[float]]:
        """Per-step scores of each (prompt, completion) pair of token ids, zipped by index."""
        device = next(self.reward_model.parameters()).device
        out: list[list[float]] = []
        for i in tqdm(range(0, len(prompt_ids), self.batch_size), desc="scoring", disable=not progress, leave=False):
            batch = collate(prompt_ids[i : i + self.batch_size], completion_ids[i : i + self.batch_size], self.tokenizer.pad_token_id).to(device)
            layout = action_layout(batch, self.action_rule)
            terms = self.reward_model.token_terms(batch, layout.end_mask)
            zeros = torch.zeros_like(terms.g_tok).reshape(-1)
            airl = airl_terms(terms.g_tok.reshape(-1), terms.h_tok.reshape(-1), zeros, layout.start, layout.end,
                              layout.terminal, gamma=self.reward_model.cfg.gamma)
            action_scores = airl.g_sum if self.settings.term == "g" else airl.f
            out += self._to_steps(batch, layout, action_scores)
        return out

    def _to_steps(self, batch, layout, action_scores: torch.Tensor) -> list[list[float]]:
        if self.action_rule == self.line_rule:
            return [s.tolist() for s in layout.per_sequence(action_scores)]
        lines = action_layout(batch, self.line_rule)
        line_of_token = torch.full((batch.input_ids.numel(),), -1, dtype=torch.long, device=action_scores.device)
        for k in range(len(lines.start)):  # few lines per batch; tokens never loop in Python
            line_of_token[lines.start[k] : lines.end[k] + 1] = k
        line_ids = line_of_token[layout.end]
        sums = torch.zeros(len(lines.start), dtype=action_scores.dtype, device=action_scores.device)
        sums.index_add_(0, line_ids, action_scores)
        return [s.tolist() for s in lines.per_sequence(sums)]

    def solution_scores_ids(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], selector: str | None = None
    ) -> list[float]:
        """One score per (prompt, completion) pair of token ids under `selector` (default: the calibrated one)."""
        return select_all(self.score_ids(prompt_ids, completion_ids), completion_ids, selector or self.settings.selector)

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return (encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens),
                encode_completions(self.tokenizer, completions, self.max_completion_tokens))

    def score(self, prompts: Sequence[str], completions: Sequence[str], progress: bool = False) -> list[list[float]]:
        """Per-step scores (one list per completion, one float per line) of text pairs."""
        return self.score_ids(*self.encode(prompts, completions), progress=progress)

    def rerank(self, prompt: str, candidates: Sequence[str], selector: str | None = None) -> tuple[list[int], list[float]]:
        """Candidate indices best first, and each candidate's score under `selector`."""
        scores = self.solution_scores_ids(*self.encode([prompt] * len(candidates), candidates), selector)
        return sorted(range(len(scores)), key=lambda i: -scores[i]), scores

    def localise(self, problem: str, steps: Sequence[str], threshold: float | None = None) -> int:
        """0-based index of the first wrong step, or −1 when every step scores above the threshold."""
        if any(not s.strip() or "\n" in s.strip() for s in steps):
            raise ValueError("localise: every step must be a non-empty single line")
        scores = self.score([problem], ["\n".join(s.strip() for s in steps)])[0]
        if len(scores) != len(steps):
            raise ValueError(f"localise: {len(steps)} steps but the tokenizer split them into {len(scores)} lines")
        return first_below(scores, self.settings.threshold if threshold is None else threshold)
