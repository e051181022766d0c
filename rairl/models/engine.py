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
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..dist import Dist
from .batch import TokenBatch
from .lm import per_token_logprobs
from .lora import active_adapter
from .merge import load_into
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
        # One unit for the whole module. Per-layer units would lower the peak, but each rank generates its own
        # prompts (different numbers of decoding steps), and a layer unit gathers in every forward: out of step.
        fully_shard(module)
        return module
    raise ValueError(f"Dist.engine={dist.engine!r}; use 'ddp' or 'fsdp2'")


def _fsdp_units(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "unshard") and hasattr(m, "reshard")]


def is_sharded(module: nn.Module) -> bool:
    return bool(_fsdp_units(module))


def plain_lm(like: PreTrainedModel, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A new, unwrapped causal LM of `like`'s config and dtype, on the device of `state`, holding the whole weights `state`."""
    with torch.device(next(iter(state.values())).device):
        lm = AutoModelForCausalLM.from_config(like.config, dtype=like.dtype, attn_implementation=like.config._attn_implementation)
    load_into(lm, state.items())
    return lm


def unshard(module: nn.Module) -> None:
    """Every FSDP2 unit of `module` holds whole weights (until `reshard`); a no-op without FSDP2."""
    for m in _fsdp_units(module):
        m.unshard()


def reshard(module: nn.Module) -> None:
    """Every FSDP2 unit back to its shard: the root keeps whole weights after a forward without backward."""
    for m in _fsdp_units(module):
        m.reshard()


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Whole weights inside the block (FSDP2 shards are gathered), e.g. to generate; a no-op otherwise."""
    unshard(module)
    try:
        yield
    finally:
        reshard(module)


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
