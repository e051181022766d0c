"""Rollout engines: where the policy's samples come from (`--rollout.engine`).

    hf         HF `generate` on the trained modules themselves (through the 4-bit base and unmerged
               LoRA layers with `--lora`): the reference
    hf_merged  HF `generate` on a plain copy of the policy: the base dequantized with the policy
               adapter merged in (bf16 on CUDA, fp32 on CPU), refreshed after every policy update;
               a full-weight policy is its own merged copy
    vllm       a colocated vLLM engine (`rairl[vllm]`, imported lazily) holding the same merged weights,
               pushed after every policy update (`rairl.models.vllm_engine`)

Every engine samples the full softmax at the trainer's temperature and returns the log-prob of
each sampled token under its own weights, so the trainer can report how far sampler and trainer
disagree (`sampler_gap`, nats/token) and correct for it (`is_cap`: truncated importance ratio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..configs import check_finite
from .merge import Samples, copy_merged
from .sampling import sample_completions

ENGINES = ("hf", "hf_merged", "vllm")


@dataclass(frozen=True)
class RolloutConfig:
    """Which engine samples the rollouts, and how its mismatch with the trainer is corrected."""

    engine: str = "hf"  # hf | hf_merged | vllm (needs rairl[vllm])
    # PPO weighs each sampled token by min(π_trainer / π_sampler, is_cap) at sampling time (truncated
    # importance sampling; 0: off). With hf the two are the same model and the weight is 1 to rounding.
    is_cap: float = 2.0
    gpu_memory_share: float = 0.3  # vllm: share of the GPU's memory its weights and KV cache may take

    def __post_init__(self) -> None:
        check_finite(self)
        if self.engine not in ENGINES:
            raise ValueError(f"RolloutConfig.engine={self.engine!r}; choose one of {ENGINES}")
        if self.is_cap < 0:
            raise ValueError(f"RolloutConfig.is_cap={self.is_cap}; must be >= 0 (0: off)")
        if not 0.0 < self.gpu_memory_share < 1.0:
            raise ValueError(f"RolloutConfig.gpu_memory_share={self.gpu_memory_share}; must be in (0, 1)")


class HFSampler:
    """`hf`: generate from the trained modules (`ModelSet.sample` / `SharedBaseModels.sample`)."""

    def __init__(self, models):
        self.models = models

    def sample(self, prompt_ids: Sequence[Sequence[int]], **kwargs) -> Samples:
        return self.models.sample(prompt_ids, return_logprobs=True, **kwargs)

    def refresh(self) -> None:
        """Nothing to push: it samples the trained weights."""


class MergedSampler:
    """`hf_merged`: a plain copy of the policy (base dequantized, policy adapter merged), refreshed on demand."""

    def __init__(self, models, dtype: torch.dtype | None = None):
        self.models, self.adapter = models, models.policy_adapter
        if self.adapter is None:  # a full-weight policy is its own merged copy
            self.lm = None
            return
        self.source: PreTrainedModel = models.model  # the peft model: base + adapters
        device = next(self.source.parameters()).device
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        config = self.source.get_base_model().config
        with torch.device(device):  # built where it runs: no whole copy on the host first
            self.lm = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=config._attn_implementation)
        self.lm.eval().requires_grad_(False)
        self.refresh()

    def refresh(self) -> None:
        """Copy the policy's current weights (adapter merged) into the plain model."""
        if self.lm is not None:
            copy_merged(self.source, self.adapter, self.lm)

    def sample(self, prompt_ids: Sequence[Sequence[int]], **kwargs) -> Samples:
        if self.lm is None:
            return self.models.sample(prompt_ids, return_logprobs=True, **kwargs)
        return sample_completions(self.lm, prompt_ids, return_logprobs=True, **kwargs)


def make_sampler(cfg: RolloutConfig, models):
    """The sampler of `cfg.engine` over `models` (`ModelSet` or `SharedBaseModels`)."""
    if cfg.engine == "hf":
        return HFSampler(models)
    if cfg.engine == "hf_merged":
        return MergedSampler(models)
    from .vllm_engine import VLLMSampler
    return VLLMSampler(models, cfg.gpu_memory_share)
