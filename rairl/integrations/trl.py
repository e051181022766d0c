"""R-AIRL reward as a reward function for TRL's `GRPOTrainer` (or any trainer with that interface).

    from rairl.integrations.trl import RAIRLReward
    trainer = GRPOTrainer(model=..., reward_funcs=RAIRLReward("runs/demo/reward"), ...)

The trainer passes the policy's own `completion_ids`; they are scored as they
are (no re-decoding). The prompt text is tokenised with the reward model's
tokenizer exactly as given (the dataset's prompt is already the full prompt),
so the policy and the reward model must share a tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..score import SELECTORS, RewardScorer


class RAIRLReward:
    """Callable `(prompts, completions, completion_ids, **kw) -> list[float]`, one reward per completion."""

    def __init__(self, scorer: RewardScorer | str | Path, selector: str = "sum", device: str | None = None, dtype: str = "auto"):
        """`scorer`: a RewardScorer, or a reward directory loaded on `device` (default: the device of the
        process TRL runs in, `accelerate.PartialState().device`) in `dtype` (auto | fp32 | bf16 | fp16)."""
        if selector not in SELECTORS:
            raise ValueError(f"RAIRLReward: selector={selector!r}; choose one of {SELECTORS}")
        if not isinstance(scorer, RewardScorer):
            scorer = RewardScorer.from_pretrained(scorer, device or _process_device(), dtype)
        self.scorer = scorer
        self.selector = selector
        self.__name__ = f"rairl_{selector}"  # TRL logs rewards under the callable's name

    def __call__(
        self,
        prompts: Sequence[str | list[dict]],
        completions: Sequence[str | list[dict]],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs,
    ) -> list[float]:
        """One reward per completion. A prompt is plain text, or (conversational datasets) a list of
        `{role, content}` messages rendered with the reward tokenizer's chat template."""
        tok = self.scorer.tokenizer
        prompt_ids = [tok(self._prompt_text(p), add_special_tokens=False)["input_ids"] for p in prompts]
        if completion_ids is None:
            completions = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # the assistant turn
            completion_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in completions]
        completion_ids = [list(c) for c in completion_ids]
        return self.scorer.solution_scores_ids(prompt_ids, completion_ids, self.selector)

    def _prompt_text(self, prompt: str | list[dict]) -> str:
        if isinstance(prompt, str):
            return prompt
        if not (isinstance(prompt, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt)):
            raise TypeError(f"RAIRLReward: a prompt is text or a list of {{role, content}} messages, got {type(prompt).__name__}")
        if not getattr(self.scorer.tokenizer, "chat_template", None):
            raise ValueError("RAIRLReward: a conversational prompt needs a reward tokenizer with a chat template")
        return self.scorer.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def _process_device() -> str:
    """The device of this process under accelerate (TRL's launcher), else `auto`."""
    try:
        from accelerate import PartialState  # noqa: PLC0415  (an extra: rairl[trl])
    except ImportError:
        return "auto"
    return str(PartialState().device)
