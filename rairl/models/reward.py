"""The R-AIRL reward model: a causal LM with a `g` reward term and an `h` shaping potential.

    g_k = β · log π_φ(a_k | s_k) + w_g · z_k     (reward LM's own log-likelihood of action k
                                                  plus a zero-initialised head at its last token)
    h(s) = w_h · z_s                             (zero-initialised head at a state's last token)

Both heads start at zero, so a reward model initialised from the policy
starts with g = log π and a discriminator logit ℓ = f − log π ≈ 0. With
`g_param="head"`, g is the head alone (a plain scalar head, kept as an option:
on a copied backbone it stayed at chance in the calibration run).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from ..configs import check_at_least, check_finite, load_config_file, read_config
from ..kernels.segments import MAX_INTERVAL
from .batch import TokenBatch
from .lm import load_causal_lm, per_token_logprobs
from .lora import active_adapter
from .saving import check_finite_weights, follow_umask

FORMAT_VERSION = 1
REWARD_FILES = ("reward_config.json",)  # what a reward model's folder holds (`checked_path`)
GRANULARITIES = ("sparse", "step", "interval", "dense")


@dataclass(frozen=True)
class RewardConfig:
    """How the reward is parametrised and what an action is."""

    granularity: str = "step"  # sparse: whole completion; step: one line; interval: n tokens; dense: one token
    interval: int = 8  # tokens per action when granularity="interval" (at most 2**31 - 1, a packed batch's token limit)
    beta: float = 1.0  # weight of the reward LM's log-likelihood in g
    gamma: float = 1.0  # discount of the shaping term γ·h(s')
    g_param: str = "lm"  # "lm": β·log π_φ + head; "head": scalar head only

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"RewardConfig.granularity={self.granularity!r}; choose one of {GRANULARITIES}")
        check_finite(self)
        check_at_least(self, 0, "beta")
        # Bounded like StepRule.interval: a saved reward_config.json with a huge value must fail
        # here, by name, before anything packs a batch with it.
        if not isinstance(self.interval, int) or isinstance(self.interval, bool) or not 1 <= self.interval <= MAX_INTERVAL:
            raise ValueError(f"RewardConfig.interval={self.interval!r}; must be an int in [1, {MAX_INTERVAL}] (tokens per action)")
        if self.g_param not in ("lm", "head"):
            raise ValueError(f"RewardConfig.g_param={self.g_param!r}; choose 'lm' or 'head'")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"RewardConfig.gamma={self.gamma}; must be in [0, 1]")


@dataclass
class TokenTerms:
    """Per-token inputs of the AIRL logit, laid out like the batch `(B, T)`."""

    g_tok: torch.Tensor  # (B, T) fp32; sum over an action's tokens gives g_k
    h_tok: torch.Tensor  # (B, T) fp32; h of the state that ends at this token


class RewardModel(nn.Module):
    """`lm` is the reward LM; with `adapter`, `lm` is a peft model shared with the policy and
    every forward runs with that LoRA adapter active (`rairl.models.adapters.SharedBaseModels`)."""

    def __init__(self, lm: PreTrainedModel, cfg: RewardConfig = RewardConfig(), adapter: str | None = None):
        super().__init__()
        self.lm, self.cfg, self.adapter = lm, cfg, adapter
        hidden = lm.config.hidden_size
        self.g_head = nn.Linear(hidden, 1)
        self.h_head = nn.Linear(hidden, 1)
        for head in (self.g_head, self.h_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def token_terms(self, batch: TokenBatch, action_end_mask: torch.Tensor) -> TokenTerms:
        """g and h per token; `action_end_mask` `(B, T)` bool marks each action's last token."""
        with self._lm_context():
            lp, hidden = per_token_logprobs(self.lm, batch.input_ids, batch.attention_mask, return_hidden=True)
        hidden = hidden.float()
        g_head = self.g_head(hidden).squeeze(-1) * action_end_mask  # (B, T)
        g_tok = g_head if self.cfg.g_param == "head" else self.cfg.beta * lp * batch.completion_mask() + g_head
        return TokenTerms(g_tok=g_tok, h_tok=self.h_head(hidden).squeeze(-1))

    def _lm_context(self) -> contextlib.AbstractContextManager:
        if self.adapter is None:
            return contextlib.nullcontext()
        return active_adapter(self.lm, self.adapter)

    def save_pretrained(self, path: str | Path) -> None:
        """Directory with `lm/` (save_pretrained), `heads.safetensors` and `reward_config.json`.

        A reward that is a LoRA adapter on a shared base (`adapter` set) writes only that adapter
        (`adapter/<name>/`), and `reward_config.json` names the base checkpoint and its storage
        (`rairl.models.adapters.load_reward_model` reads it back). Refuses non-finite weights, naming `path`.
        """
        path = Path(path)
        check_finite_weights(self, path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "reward": asdict(self.cfg)}
        if self.adapter is None:
            self.lm.save_pretrained(path / "lm")
        else:
            if not getattr(self, "base", None):
                raise ValueError("RewardModel.save_pretrained: an adapter reward needs `base` (set by SharedBaseModels)")
            self.lm.save_pretrained(path / "adapter", selected_adapters=[self.adapter])
            meta["base"] = self.base
        heads = {f"g_head.{k}": v for k, v in self.g_head.state_dict().items()}
        heads |= {f"h_head.{k}": v for k, v in self.h_head.state_dict().items()}
        save_file({k: v.detach().contiguous().cpu() for k, v in heads.items()}, str(path / "heads.safetensors"))
        (path / "reward_config.json").write_text(json.dumps(meta, indent=2))
        follow_umask(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                        attn_implementation: str = "sdpa") -> RewardModel:
        """Load a directory written by `save_pretrained`: the LM in `dtype` on `device`, the heads in fp32 beside it."""
        path = Path(path)
        meta_file = path / "reward_config.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file}: not found; is {path} a directory written by RewardModel.save_pretrained?")
        meta = load_config_file(meta_file)
        if "base" in meta:
            raise ValueError(f"{meta_file}: a LoRA reward on a shared base; load it with rairl.models.adapters.load_reward_model")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: field 'format_version' is {version!r}, this rairl reads {FORMAT_VERSION}; "
                "retrain the reward model or install the rairl version that wrote it"
            )
        reward_cfg = read_config(RewardConfig, meta_file, "reward")  # before the weights: a bad field fails fast
        model = cls(load_causal_lm(path / "lm", dtype=dtype, attn_implementation=attn_implementation, device=device), reward_cfg)
        heads = load_file(str(path / "heads.safetensors"))
        model.g_head.load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith("g_head.")})
        model.h_head.load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith("h_head.")})
        return model.to(device)
