"""R-AIRL reward as a reward function for TRL's `GRPOTrainer` (or any trainer with that interface).

    from rairl.integrations.trl import RAIRLReward
    trainer = GRPOTrainer(model=..., reward_funcs=RAIRLReward("runs/demo/reward"), ...)

From TRL's own command line, name the module-level `reward` and give the reward directory in the
environment (`RAIRL_REWARD`; optional `RAIRL_REWARD_SELECTOR`, default the one calibrated on validation,
and `RAIRL_REWARD_DTYPE`, default auto):

    RAIRL_REWARD=runs/demo/reward trl grpo --reward_funcs rairl.integrations.trl.reward ...

The trainer passes the policy's own `completion_ids`; they are scored as they
are (no re-decoding). The prompt text is tokenised with the reward model's
tokenizer exactly as given (the dataset's prompt is already the full prompt),
so the policy and the reward model must share a tokenizer.
"""

from __future__ import annotations

import os
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


class _FromEnvironment:
    """The reward named by `RAIRL_REWARD` (a reward directory), loaded at the first call: the callable TRL's
    `--reward_funcs rairl.integrations.trl.reward` imports."""

    __name__ = "rairl"  # TRL logs rewards under the callable's name

    def __init__(self) -> None:
        self._reward: RAIRLReward | None = None

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        if self._reward is None:
            path = os.environ.get("RAIRL_REWARD", "")
            if not path:
                raise ValueError("rairl.integrations.trl.reward: set RAIRL_REWARD to a reward directory "
                                 "(written by `rairl demo` or `rairl train-reward`, e.g. runs/demo/reward)")
            if not Path(path).is_dir():
                raise FileNotFoundError(f"RAIRL_REWARD={path}: no such reward directory")
            scorer = RewardScorer.from_pretrained(path, _process_device(), os.environ.get("RAIRL_REWARD_DTYPE", "auto"))
            self._reward = RAIRLReward(scorer, os.environ.get("RAIRL_REWARD_SELECTOR", scorer.settings.selector))
        return self._reward(prompts, completions, completion_ids, **kwargs)


reward = _FromEnvironment()


def _process_device() -> str:
    """The device of this process under accelerate (TRL's launcher), else `auto`."""
    try:
        from accelerate import PartialState  # noqa: PLC0415  (an extra: rairl[trl])
    except ImportError:
        return "auto"
    return str(PartialState().device)
