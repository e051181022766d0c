"""RewardScorer: per-step rewards for (prompt, completion) pairs, reranking and localisation.

Scores are computed on the token ids the reward model's tokenizer gives the
prompt template and the completion (with EOS, exactly as in training), or on
a policy's own sampled ids through `score_ids`. The scored term is the
disentangled reward `g` (default) or the shaped `f = g + γ·h(s') − h(s)`.

Steps are as the data gives them: a list of step texts (which may hold newlines:
paragraph steps) is scored by the given step index (`score_steps`); a raw completion
is split by a step delimiter (`line`, `blank-line` or a regex, `score`). An action's
score goes to the step holding its last token (at the coarser `interval` and `sparse`
granularities a step holding none scores 0); an empty step, a step with no token of its
own, or at `step` granularity a step holding no action's end, is an error naming the item
and the step. `score_ids`, on token ids alone, scores each line.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .airl.layout import action_layout, step_rule
from .configs import check_finite, read_config
from .data.steps import step_separator, step_spans
from .kernels import airl_terms
from .kernels.segments import StepRule
from .metrics import first_below
from .models.adapters import load_reward_model
from .models.batch import collate, encode_completions, encode_prompts, record_labels
from .models.device import attn_implementation, resolve_device, resolve_dtype
from .models.lm import check_vocab, checked_path
from .models.reward import REWARD_FILES, RewardModel
from .models.tokenizer import load_tokenizer, newline_token_ids, set_template

SELECTORS = ("mean", "min", "last", "sum", "token_mean")


@dataclass
class ScorerSettings:
    """Choices calibrated on validation data and saved beside the reward model."""

    term: str = "g"  # "g" or "f"
    selector: str = "min"  # how step scores rank whole solutions, one of SELECTORS
    threshold: float = -1.0  # localisation: first step scoring below this is the first error
    # prompt format the reward was trained with: plain | chat (the tokenizer's chat template); it is set on
    # the tokenizer (`set_template`), so scorers that share one tokenizer object share the template
    template: str = "plain"

    def __post_init__(self) -> None:
        check_finite(self)
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


def _check_finite(action_scores: torch.Tensor, action_seq: torch.Tensor, names: Sequence[str]) -> None:
    """Refuse `(A,)` action scores holding NaN / inf, naming the completion (`action_seq`: `(A,)` its row in `names`):
    a NaN would rank first or last by accident, hide an error step, or be written as null."""
    bad = (~torch.isfinite(action_scores)).nonzero()
    if len(bad):
        k = int(bad[0])
        raise ValueError(f"{names[int(action_seq[k])]}: the reward model scored a step {float(action_scores[k])}; its weights or "
                         "activations are not finite (a diverged reward, or fp16 overflow: try --dtype fp32)")


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
        check_vocab(tokenizer, reward_model.lm)
        self.reward_model, self.tokenizer = reward_model.eval(), tokenizer
        self.settings = settings or ScorerSettings()
        self.batch_size = batch_size
        self.max_prompt_tokens, self.max_completion_tokens = max_prompt_tokens, max_completion_tokens
        set_template(tokenizer, self.settings.template)
        self.action_rule = step_rule(reward_model.cfg, tokenizer)
        self.line_rule = StepRule("boundary", boundary_ids=newline_token_ids(tokenizer))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", dtype: str = "auto", **kwargs) -> RewardScorer:
        """Load a directory written by `save_pretrained` (reward model, tokenizer, settings) on `device`
        (auto | cpu | cuda | cuda:N) in `dtype` (auto | fp32 | bf16 | fp16); see `rairl.models.device`."""
        path = Path(checked_path(path, holds=REWARD_FILES, what="reward model", hub=False))
        settings_file = path / "scorer.json"
        settings = read_config(ScorerSettings, settings_file) if settings_file.exists() else None
        dev = resolve_device(device)
        reward = load_reward_model(path, resolve_dtype(dtype, dev), dev, attn_implementation(dev))
        return cls(reward, load_tokenizer(path / "lm"), settings, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """The reward model, its tokenizer and the scorer's settings under `path`."""
        self.reward_model.save_pretrained(path)
        self.save_settings(path)

    def save_settings(self, path: str | Path) -> None:
        """The tokenizer (`lm/`) and `scorer.json` beside a reward model already saved under `path`
        (e.g. by `WarmStart.save`), without writing its weights again."""
        path = Path(path)
        self.tokenizer.save_pretrained(path / "lm")
        (path / "scorer.json").write_text(json.dumps(asdict(self.settings), indent=2))

    @torch.no_grad()
    def score_ids(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], progress: bool = False,
        token_steps: Sequence[Sequence[int]] | None = None, names: Sequence[str] | None = None,
    ) -> list[list[float]]:
        """Per-step scores of each (prompt, completion) pair of token ids, zipped by index.

        Steps are the completion's lines, or with `token_steps` (per completion, the 0-based step of
        each completion token, every step owning at least one) the steps it names; `names` label
        the completions in errors. A NaN or infinite score is an error naming its completion (never ranked,
        never written as null).
        """
        device = next(self.reward_model.parameters()).device
        out: list[list[float]] = []
        for i in tqdm(range(0, len(prompt_ids), self.batch_size), desc="scoring", disable=not progress, leave=False):
            j = min(i + self.batch_size, len(prompt_ids))
            batch = collate(prompt_ids[i:j], completion_ids[i:j], self.tokenizer.pad_token_id).to(device)
            layout = action_layout(batch, self.action_rule)
            terms = self.reward_model.token_terms(batch, layout.end_mask)
            zeros = torch.zeros_like(terms.g_tok).reshape(-1)
            airl = airl_terms(terms.g_tok.reshape(-1), terms.h_tok.reshape(-1), zeros, layout.start, layout.end,
                              layout.terminal, gamma=self.reward_model.cfg.gamma)
            action_scores = airl.g_sum if self.settings.term == "g" else airl.f
            labels = names[i:j] if names is not None else [f"completion {k}" for k in range(i, j)]
            _check_finite(action_scores, layout.seq, labels)
            if token_steps is None:
                out += self._to_steps(batch, layout, action_scores)
            else:
                out += self._to_given_steps(batch, layout, action_scores, token_steps[i:j], labels)
        return out

    def _to_given_steps(self, batch, layout, action_scores: torch.Tensor, token_steps: Sequence[Sequence[int]],
                        names: Sequence[str]) -> list[list[float]]:
        """Sum each action's score into the given step that holds its last token."""
        B, T = batch.input_ids.shape
        step_of = torch.full((B * T,), -1, dtype=torch.long)  # (B*T,) global step id of each completion token
        counts, first = [max(s) + 1 for s in token_steps], 0
        for b, steps in enumerate(token_steps):
            p = int(batch.prompt_lens[b])
            step_of[b * T + p : b * T + p + len(steps)] = torch.tensor(steps, dtype=torch.long) + first
            first += counts[b]
        ids = step_of.to(action_scores.device)[layout.end]  # (A,)
        sums = torch.zeros(first, dtype=action_scores.dtype, device=action_scores.device).index_add_(0, ids, action_scores)
        hits = torch.zeros(first, dtype=torch.long, device=ids.device).index_add_(0, ids, torch.ones_like(ids))
        out, first = [], 0
        for b, n in enumerate(counts):
            empty = (hits[first : first + n] == 0).nonzero()
            if len(empty) and self.reward_model.cfg.granularity == "step":  # coarser actions may span steps: those score 0
                raise ValueError(f"{names[b]}: step {int(empty[0])} holds no action's last token (a line of the reward's "
                                 "step granularity spans it and the next step)")
            out.append(sums[first : first + n].tolist())
            first += n
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
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], selector: str | None = None,
        names: Sequence[str] | None = None,
    ) -> list[float]:
        """One score per (prompt, completion) pair of token ids under `selector` (default: the calibrated one);
        `names` label the pairs in errors."""
        scores = self.score_ids(prompt_ids, completion_ids, names=names)
        return select_all(scores, completion_ids, selector or self.settings.selector)

    def encode(self, prompts: Sequence[str], completions: Sequence[str],
               names: Sequence[str] | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of the pairs; `names` (e.g. each record's `source`) label them in errors."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return (encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens, names),
                encode_completions(self.tokenizer, completions, self.max_completion_tokens, names=names))

    def score(self, prompts: Sequence[str], completions: Sequence[str], delimiter: str = "line",
              progress: bool = False, names: Sequence[str] | None = None) -> list[list[float]]:
        """Per-step scores of text pairs: each completion split into steps by `delimiter` (`line`,
        `blank-line` or a regex matching each step's start; see `split_steps` for the step texts).
        `names` (e.g. each record's `source`, "file.jsonl:3") label the pairs in errors."""
        sep = step_separator(delimiter)
        return self._score_spans(prompts, completions, [step_spans(c, sep) for c in completions], names, progress)

    def score_steps(self, prompts: Sequence[str], steps: Sequence[Sequence[str]], names: Sequence[str] | None = None,
                    progress: bool = False) -> list[list[float]]:
        """Per-step scores by the given step index: completion i is its steps joined by newlines,
        and a step may hold newlines of its own (paragraph steps). `names` label items in errors."""
        texts, spans = [], []
        for i, st in enumerate(steps):
            blank = [k for k, step in enumerate(st) if not step.strip()]
            if blank:
                raise ValueError(f"{names[i] if names is not None else f'completion {i}'}: step {blank[0]} is empty")
            starts = [0]
            for step in st[:-1]:
                starts.append(starts[-1] + len(step) + 1)
            texts.append("\n".join(st))
            spans.append([(a, a + len(step)) for a, step in zip(starts, st, strict=True)])
        return self._score_spans(prompts, texts, spans, names, progress)

    def _score_spans(self, prompts: Sequence[str], texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     names: Sequence[str] | None, progress: bool) -> list[list[float]]:
        """Score `texts`, step k of text i being the characters `spans[i][k]`. A token belongs to the step
        holding its last character (a separator's characters to the step before); EOS to the last step."""
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} completions")
        names = record_labels(names, len(texts), "completion")
        completion_ids, token_steps = [], []
        for name, text, sp in zip(names, texts, spans, strict=True):
            if not sp:
                raise ValueError(f"{name}: no step to score (empty completion)")
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = enc["input_ids"] + [self.tokenizer.eos_token_id]
            if len(ids) > self.max_completion_tokens:
                raise ValueError(f"{name}: {len(ids)} tokens > max_completion_tokens={self.max_completion_tokens}; "
                                 "its last steps would be cut: raise --max_completion_tokens")
            starts = [a for a, _ in sp]
            steps = [max(0, bisect.bisect_right(starts, max(a, b - 1)) - 1) for a, b in enc["offset_mapping"]] + [len(sp) - 1]
            missing = sorted(set(range(len(sp))) - set(steps))
            if missing:
                raise ValueError(f"{name}: step {missing[0]} has no token of its own (empty, or merged into a neighbour's token)")
            completion_ids.append(ids)
            token_steps.append(steps)
        prompt_ids = encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens, names)
        return self.score_ids(prompt_ids, completion_ids, progress=progress, token_steps=token_steps, names=names)

    def rerank(self, prompt: str, candidates: Sequence[str], selector: str | None = None) -> tuple[list[int], list[float]]:
        """Candidate indices best first, and each candidate's score under `selector`."""
        scores = self.solution_scores_ids(*self.encode([prompt] * len(candidates), candidates), selector)
        return sorted(range(len(scores)), key=lambda i: -scores[i]), scores

    def localise(self, problem: str, steps: Sequence[str], threshold: float | None = None) -> int:
        """0-based index (in `steps`, which may hold newlines) of the first wrong step, or −1 when
        every step scores above the threshold."""
        scores = self.score_steps([problem], [list(steps)])[0]
        return first_below(scores, self.settings.threshold if threshold is None else threshold)
