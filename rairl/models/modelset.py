"""The three models of R-AIRL as the trainer sees them: policy, reference policy, reward model.

`ModelSet` holds separate modules: a full policy, an optional frozen copy of it
as the reference (made only when a KL term needs one) and a `RewardModel` with
its own backbone. `rairl.models.adapters.SharedBaseModels` offers the same
methods over one frozen base with two LoRA adapters. The trainer calls only
these methods, so it never knows which one it has. Every trained pass goes through
`engine`, the `TrainModule` of policy and reward as `parallelize` wrapped it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from ..dist import Dist
from .engine import RoutedReward, TrainModule, gathered, is_sharded, plain_lm, reshard, wrap
from .lm import per_token_logprobs
from .reward import RewardModel
from .sampling import sample_completions
from .saving import save_pretrained


class ModelSet:
    """Policy, reference and reward model as separate modules (the default on a CPU)."""

    policy_adapter = None  # a full-weight policy: its own merged copy (rairl.models.rollout)

    def __init__(self, policy: PreTrainedModel, reward: RewardModel | None, with_reference: bool = False):
        """`reward=None` for trainers whose reward comes from elsewhere (e.g. answer checking)."""
        self.policy, self.reward = policy, reward
        self.reference: PreTrainedModel | None = None
        if with_reference:  # a frozen snapshot of the policy as it is now
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        self.module = TrainModule(policy, reward)
        self.engine: nn.Module = self.module

    def parallelize(self, dist: Dist) -> None:
        """Wrap the trained module for `dist` (DDP or FSDP2); before any optimiser is built."""
        self.engine = wrap(self.module, dist)

    def whole(self) -> None:
        """After training under FSDP2 (every rank together): plain, whole copies of the policy and the reward
        replace the sharded ones, to evaluate or save; a no-op otherwise."""
        if not is_sharded(self.module):
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        full = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True))

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}

        self.policy = plain_lm(self.policy, part("policy."))
        if self.reward is not None:
            reward = RewardModel(plain_lm(self.reward.lm, part("reward.lm.")), self.reward.cfg)
            reward.load_state_dict(part("reward."))
            self.reward = reward.to(next(self.policy.parameters()).device)
        self.module = self.engine = TrainModule(self.policy, self.reward)

    def reshard(self) -> None:
        """FSDP2: back to shards after passes without backward (to free memory, or to checkpoint); a no-op otherwise."""
        reshard(self.module)

    def policy_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        score_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T)` fp32 log-probs of each token under the policy (with grad when enabled);
        with `score_mask` only of the tokens it marks (0 elsewhere)."""
        return self.engine("policy", input_ids, attention_mask, score_mask)

    def routed_reward(self) -> RoutedReward:
        """The reward model whose `token_terms` run through the engine (what the trainer trains and reads)."""
        return RoutedReward(self.engine, self.reward)

    @torch.no_grad()
    def reference_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           score_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T)` fp32 log-probs under the reference policy (no grad); `score_mask` as above."""
        if self.reference is None:
            raise ValueError("ModelSet was built with_reference=False; a KL term needs with_reference=True")
        return per_token_logprobs(self.reference, input_ids, attention_mask, score_mask=score_mask)

    def sample(self, prompt_ids: Sequence[Sequence[int]], **kwargs) -> list[list[list[int]]]:
        """`rairl.models.sampling.sample_completions` with the policy; kwargs pass through."""
        with gathered(self.module):
            return sample_completions(self.policy, prompt_ids, **kwargs)

    def policy_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def reward_parameters(self) -> list[nn.Parameter]:
        return [] if self.reward is None else [p for p in self.reward.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.policy.train(mode)
        if self.reward is not None:
            self.reward.train(mode)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Everything a checkpoint needs to restore the trainable state (the reference included)."""
        state = {"policy": self.policy.state_dict(), "reward": None if self.reward is None else self.reward.state_dict()}
        if self.reference is not None:
            state["reference"] = self.reference.state_dict()
        return state

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.reward is not None:
            self.reward.load_state_dict(state["reward"])
        if self.reference is not None:
            self.reference.load_state_dict(state["reference"])

    def save_pretrained(self, out: str | Path) -> None:
        """`out/policy` (save_pretrained) and `out/reward` (RewardModel.save_pretrained)."""
        out = Path(out)
        save_pretrained(self.policy, out / "policy")
        if self.reward is not None:
            self.reward.save_pretrained(out / "reward")
