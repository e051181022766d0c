"""The one module every trained pass goes through, and the engines that wrap it (DDP, FSDP2).

DDP and FSDP2 act through a module's `forward`: DDP's gradient hooks are armed by it,
FSDP2 gathers the sharded weights in it. A pass that calls the inner decoder or reads the
LM-head weight around the wrapper trains wrong without an error (measured: 5–6e-2 parameter
drift in 3 steps). So the policy's log-probs and the reward's per-token terms are two
`part`s of `TrainModule.forward`, and `ModelSet` / `SharedBaseModels` call only that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..dist import Dist
from .batch import TokenBatch
from .lm import per_token_logprobs
from .lora import active_adapter
from .reward import RewardConfig, RewardModel, TokenTerms


class TrainModule(nn.Module):
    """Policy and reward model under one module; with `adapter`, the policy is a peft model whose
    policy pass runs with that adapter active (the reward's `lm` may be the same peft model)."""

    def __init__(self, policy: nn.Module, reward: RewardModel | None, adapter: str | None = None):
        super().__init__()
        self.policy, self.reward, self.adapter = policy, reward, adapter

    def forward(self, part: str, *args: torch.Tensor | TokenBatch) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`("policy", input_ids, attention_mask, score_mask)` -> `(B, T)` fp32 log-probs;
        `("reward", batch, action_end_mask)` -> `(g_tok, h_tok)`, each `(B, T)` fp32."""
        if part == "policy":
            input_ids, attention_mask, score_mask = args
            with active_adapter(self.policy, self.adapter) if self.adapter else contextlib.nullcontext():
                return per_token_logprobs(self.policy, input_ids, attention_mask, score_mask=score_mask)
        if part == "reward":
            terms = self.reward.token_terms(*args)
            return terms.g_tok, terms.h_tok
        raise ValueError(f"TrainModule.forward: part {part!r}; use 'policy' or 'reward'")


def wrap(module: TrainModule, dist: Dist) -> nn.Module:
    """`module` ready for `dist`: itself with one process, else DDP around it or FSDP2-sharded in place.

    Build optimisers after this: FSDP2 replaces the parameters by sharded ones.
    """
    if not dist.on:
        return module
    if dist.engine == "ddp":
        on_gpu = next(module.parameters()).device.type == "cuda"
        # A policy pass leaves the reward unused and the other way round: find_unused_parameters.
        return nn.parallel.DistributedDataParallel(module, device_ids=[dist.local_rank] if on_gpu else None,
                                                   find_unused_parameters=True, broadcast_buffers=False)
    if dist.engine == "fsdp2":
        from torch.distributed.fsdp import fully_shard
        fully_shard(module)
        return module
    raise ValueError(f"Dist.engine={dist.engine!r}; use 'ddp' or 'fsdp2'")


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Whole weights inside the block (FSDP2 shards are gathered), e.g. to generate or save; a no-op otherwise."""
    unshard = getattr(module, "unshard", None)
    if unshard is None:
        yield
        return
    unshard()
    try:
        yield
    finally:
        module.reshard()


class RoutedReward:
    """The reward model as a trainer calls it: `token_terms` through the engine's forward."""

    def __init__(self, engine: nn.Module, reward: RewardModel):
        self.engine, self.module = engine, reward

    @property
    def cfg(self) -> RewardConfig:
        return self.module.cfg

    def token_terms(self, batch: TokenBatch, action_end_mask: torch.Tensor) -> TokenTerms:
        return TokenTerms(*self.engine("reward", batch, action_end_mask))

    def train(self, mode: bool = True) -> RoutedReward:
        self.module.train(mode)
        return self

    def eval(self) -> RoutedReward:
        return self.train(False)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()
