"""One frozen (optionally 4-bit) base shared by the policy and the reward model through two LoRA adapters.

    policy    = base + LoRA adapter "policy"
    reward LM = base + LoRA adapter "reward"   (+ the RewardModel's own g/h heads, full precision)
    reference = base with every adapter disabled (peft's `disable_adapter()`: no extra copy)

LoRA B matrices start at zero, so at construction the policy, the reward LM and the
reference are all the base model. `SharedBaseModels` has the methods of
`rairl.models.modelset.ModelSet`; the trainer calls only those (the reward through `routed_reward()`),
so it never knows which one it has. A reward backbone separate from the policy's (e.g. a
smaller model with the same tokenizer) stays possible through `ModelSet`, whose reward
model may wrap any causal LM, this module's `load_base` output included.

Every trained pass goes through `engine` (`rairl.models.engine.TrainModule`, wrapped by DDP
under a launcher). The fused log-prob path (`rairl.kernels.token_logprobs`) reads
`model.get_output_embeddings().weight` directly, bypassing the module's forward: a LoRA
adapter there would silently never train, so `AdapterConfig` and `SharedBaseModels` refuse it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..configs import check_finite, config_from_dict, load_config_file, read_config
from ..dist import Dist
from .engine import RoutedReward, TrainModule, wrap
from .lm import check_attn_implementation, checked_path, load_causal_lm, per_token_logprobs
from .lora import LINEAR_NAMES, QUANTIZATIONS, active_adapter, lora_parameters
from .reward import FORMAT_VERSION, RewardConfig, RewardModel
from .sampling import sample_completions
from .saving import check_finite_weights, follow_umask

POLICY, REWARD = "policy", "reward"  # adapter names
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
DTYPES = {"nf4": torch.bfloat16, "bf16": torch.bfloat16, "fp32": torch.float32}  # non-quantised weights


@dataclass(frozen=True)
class AdapterConfig:
    """How the shared base is stored and what the two LoRA adapters look like."""

    quantization: str = "nf4"  # "nf4": bitsandbytes 4-bit NF4, double quant, bf16 compute; "bf16" | "fp32"
    lora_rank: int = 16  # r of each adapter
    lora_alpha: float = 32  # LoRA scale is lora_alpha / lora_rank
    lora_dropout: float = 0.0  # dropout on the adapter input
    target_modules: tuple[str, ...] = LINEAR_NAMES  # module names (suffixes) carrying LoRA
    gradient_checkpointing: bool = False  # recompute each decoder layer in backward
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2" (needs rairl[gpu])

    def __post_init__(self) -> None:
        check_finite(self)
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"AdapterConfig.quantization={self.quantization!r}; choose one of {QUANTIZATIONS}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"AdapterConfig.lora_rank={self.lora_rank!r}; must be an int >= 1")
        if not self.lora_alpha > 0:
            raise ValueError(f"AdapterConfig.lora_alpha={self.lora_alpha}; must be > 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"AdapterConfig.lora_dropout={self.lora_dropout}; must be in [0, 1)")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(f"AdapterConfig.target_modules={self.target_modules!r}; give a non-empty tuple of module names")
        if "lm_head" in self.target_modules:
            raise ValueError(
                "AdapterConfig.target_modules contains 'lm_head': the fused log-prob path reads "
                "get_output_embeddings().weight directly, so a LoRA adapter there would never train; remove it"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"AdapterConfig.attn_implementation={self.attn_implementation!r}; choose one of {ATTN_IMPLEMENTATIONS}")


def _require(module: str, needed_for: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{needed_for} needs {module}: pip install 'rairl[lora]'") from e


def load_base(path: str | Path, cfg: AdapterConfig = AdapterConfig(), device: str | torch.device = "cpu") -> PreTrainedModel:
    """Load the shared base model once, frozen and in eval mode, on `device`.

    nf4: linear layers become bitsandbytes `Linear4bit` (NF4, double quantisation, bf16
    compute); embeddings, norms and the LM head stay bf16. bf16 / fp32: plain weights.
    Missing bitsandbytes (nf4) raises ImportError naming `pip install 'rairl[lora]'`.
    """
    check_attn_implementation(cfg.attn_implementation)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.quantization == "nf4":
        _require("bitsandbytes", "AdapterConfig.quantization='nf4'")
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            checked_path(path), quantization_config=quant, dtype=DTYPES["nf4"], device_map={"": str(device)},
            attn_implementation=cfg.attn_implementation,
        )
    else:
        model = load_causal_lm(path, dtype=DTYPES[cfg.quantization], attn_implementation=cfg.attn_implementation).to(device)
    _keep_cpu_4bit_differentiable(model)
    return model.requires_grad_(False).eval()


def _keep_cpu_4bit_differentiable(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU inference repacking of `Linear4bit` weights.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit` weight in place on its
    first eval-mode no-grad forward and from then on multiplies through `gemv_4bit`, an op
    with no autograd kernel: every later backward silently drops the gradient through the
    base (LoRA weights below the last layer got wrong gradients; tests/test_adapters.py).
    The flag is an inference-speed path only; CUDA never takes it.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _checkpoint_context(model: nn.Module):
    """`context_fn` for non-reentrant activation checkpointing: the recompute in backward runs
    under the adapter that was active in forward, whichever one is active when backward runs."""

    def context_fn() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), active_adapter(model, model.active_adapter)

    return context_fn


def _refuse_output_embedding(base: PreTrainedModel, targets: Sequence[str]) -> None:
    out = base.get_output_embeddings()
    names = [n for n, m in base.named_modules() if m is out]
    if base.config.get_text_config().tie_word_embeddings:  # the same weight on the input side
        names += [n for n, m in base.named_modules() if m is base.get_input_embeddings()]
    for name in names:
        hit = [t for t in targets if name == t or name.endswith("." + t)]
        if hit:
            raise ValueError(
                f"AdapterConfig.target_modules {hit} selects {name!r}, the output embedding (or its tied input "
                "embedding): the fused log-prob path reads its weight directly, so LoRA there would never train"
            )


class SharedBaseModels:
    """Policy, reference and reward model over ONE frozen base with LoRA adapters "policy" and "reward".

    `model` is the peft model; `reward` a `RewardModel(model, reward_cfg, adapter="reward")`
    whose g/h heads are its own fp32 parameters. Trainable state: both adapters' LoRA
    weights and the two heads; the base never gets a gradient.
    """

    policy_adapter = POLICY  # what a merged copy of the policy merges (rairl.models.rollout)

    def __init__(self, base: PreTrainedModel, reward_cfg: RewardConfig | None = None, cfg: AdapterConfig = AdapterConfig(),
                 seed: int = 0):
        """`base` from `load_base(path, cfg)`; `reward_cfg` defaults to `RewardConfig()`. `seed` draws the LoRA A
        matrices (B starts at 0): the same seed, the same adapters, whatever ran before in the process."""
        peft = _require("peft", "SharedBaseModels")
        _refuse_output_embedding(base, cfg.target_modules)
        _keep_cpu_4bit_differentiable(base)
        base.requires_grad_(False)
        lora = peft.LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM",
        )
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = peft.get_peft_model(base, lora, adapter_name=POLICY)
            self.model.add_adapter(REWARD, lora)
        self.model.set_adapter(POLICY)
        if cfg.gradient_checkpointing:
            kwargs = {"use_reentrant": False, "context_fn": _checkpoint_context(self.model)}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5 name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        device = base.get_input_embeddings().weight.device
        self.reward = RewardModel(self.model, reward_cfg or RewardConfig(), adapter=REWARD)
        self.reward.g_head.to(device)
        self.reward.h_head.to(device)
        self.reward.base = {"path": base.name_or_path, "adapters": asdict(cfg)}  # what save_pretrained records
        # Collected once by name: peft's set_adapter toggles requires_grad, these lists do not change.
        named = dict(self.model.named_parameters())
        self._policy = {n: p for n, p in named.items() if "lora_" in n and f".{POLICY}." in n}
        self._reward = {n: p for n, p in named.items() if "lora_" in n and f".{REWARD}." in n}
        self._reward |= {f"{head}.{n}": p for head in ("g_head", "h_head") for n, p in getattr(self.reward, head).named_parameters()}
        if not self._policy:
            raise ValueError(f"AdapterConfig.target_modules {cfg.target_modules} matched no module of the base model")
        for p in (*self._policy.values(), *self._reward.values()):
            p.requires_grad_(True)
        self.module = TrainModule(self.model, self.reward, adapter=POLICY)
        self.engine: nn.Module = self.module

    def parallelize(self, dist: Dist) -> None:
        """Wrap the trained module for `dist`: DDP (a frozen, possibly 4-bit, base is not sharded)."""
        if dist.on and dist.engine != "ddp":
            raise ValueError(f"SharedBaseModels: parallel engine {dist.engine!r}; LoRA adapters on a shared base use ddp")
        self.engine = wrap(self.module, dist)

    def whole(self) -> None:
        """The weights are whole already (DDP replicates them)."""

    def reshard(self) -> None:
        """Nothing is sharded (DDP replicates the adapters)."""

    def routed_reward(self) -> RoutedReward:
        """The reward model whose `token_terms` run through the engine (what the trainer trains and reads)."""
        return RoutedReward(self.engine, self.reward)

    def policy_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        score_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T)` fp32 log-probs of each token under base + policy adapter (with grad when
        enabled); with `score_mask` only of the tokens it marks (0 elsewhere)."""
        return self.engine("policy", input_ids, attention_mask, score_mask)

    @torch.no_grad()
    def reference_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           score_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T)` fp32 log-probs under the base with adapters disabled (no grad)."""
        lora = lora_parameters(self.model)
        flags = [p.requires_grad for p in lora]
        try:
            with self.model.disable_adapter():
                return per_token_logprobs(self.model, input_ids, attention_mask, score_mask=score_mask)
        finally:  # leaving disable_adapter() re-runs set_adapter, which freezes the inactive adapter
            for p, flag in zip(lora, flags, strict=True):
                p.requires_grad_(flag)

    def sample(self, prompt_ids: Sequence[Sequence[int]], **kwargs) -> list[list[list[int]]]:
        """`rairl.models.sampling.sample_completions` with the policy adapter active; kwargs pass through."""
        with active_adapter(self.model, POLICY):
            return sample_completions(self.model, prompt_ids, **kwargs)

    def policy_parameters(self) -> list[nn.Parameter]:
        return list(self._policy.values())

    def reward_parameters(self) -> list[nn.Parameter]:
        return list(self._reward.values())

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        self.reward.train(mode)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trainable state only: {"policy": LoRA weights, "reward": LoRA weights + heads}."""
        return {
            "policy": {n: p.detach() for n, p in self._policy.items()},
            "reward": {n: p.detach() for n, p in self._reward.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for part, params in (("policy", self._policy), ("reward", self._reward)):
            given = state[part]
            missing, unexpected = params.keys() - given.keys(), given.keys() - params.keys()
            if missing or unexpected:
                raise ValueError(
                    f"SharedBaseModels.load_state_dict: state[{part!r}] has {len(missing)} missing key(s) "
                    f"(e.g. {sorted(missing)[:1]}) and {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:1]}); "
                    "was it saved with the same AdapterConfig?"
                )
            for n, p in params.items():
                p.copy_(given[n])

    def save_pretrained(self, out: str | Path) -> None:
        """`out/policy` and `out/reward` (peft adapter directories); `out/reward` also holds
        `heads.safetensors` and `reward_config.json`; `out/rairl_adapters.json` the AdapterConfig."""
        out = Path(out)
        check_finite_weights(self.reward, out)  # the shared base, both adapters and the heads
        self.model.save_pretrained(out)  # peft writes each adapter not named "default" to out/<name>
        heads = {n: p.detach().contiguous().cpu() for n, p in self._reward.items() if not n.startswith("base_model.")}
        save_file(heads, str(out / REWARD / "heads.safetensors"))
        meta = {"format_version": FORMAT_VERSION, "reward": asdict(self.reward.cfg)}
        (out / REWARD / "reward_config.json").write_text(json.dumps(meta, indent=2))
        (out / "rairl_adapters.json").write_text(json.dumps(asdict(self.cfg), indent=2))
        follow_umask(out)

    @classmethod
    def from_pretrained(cls, base_path: str | Path, path: str | Path, device: str | torch.device = "cpu") -> SharedBaseModels:
        """Rebuild from the base checkpoint and a directory written by `save_pretrained`."""
        path = Path(path)
        cfg_file = path / "rairl_adapters.json"
        if not cfg_file.exists():
            raise FileNotFoundError(f"{cfg_file}: not found; is {path} a directory written by SharedBaseModels.save_pretrained?")
        cfg = read_config(AdapterConfig, cfg_file)
        models = cls(load_base(base_path, cfg, device), read_config(RewardConfig, path / REWARD / "reward_config.json", "reward"), cfg)
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        for name in (POLICY, REWARD):
            set_peft_model_state_dict(models.model, load_peft_weights(str(path / name), device=str(device)), adapter_name=name)
        heads = load_file(str(path / REWARD / "heads.safetensors"))
        with torch.no_grad():
            for n, v in heads.items():
                models._reward[n].copy_(v)
        return models


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      attn_implementation: str = "sdpa") -> RewardModel:
    """A reward model saved by `RewardModel.save_pretrained`: a full one, or a LoRA reward adapter,
    loaded over its base checkpoint stored as it was trained (`AdapterConfig.quantization`) on `device`."""
    path = Path(path)
    meta_file = path / "reward_config.json"
    base = load_config_file(meta_file).get("base") if meta_file.exists() else None
    if base is None:
        return RewardModel.from_pretrained(path, dtype, device, attn_implementation)
    peft = _require("peft", "a LoRA reward model")
    cfg = config_from_dict(AdapterConfig, base.get("adapters"), f"{meta_file}: base.adapters")
    if not Path(base["path"]).exists():
        raise FileNotFoundError(f"{meta_file}: the reward's base checkpoint {base['path']} is not there")
    lm = peft.PeftModel.from_pretrained(load_base(base["path"], cfg, device), str(path / "adapter" / REWARD), adapter_name=REWARD)
    model = RewardModel(lm, read_config(RewardConfig, meta_file, "reward"), adapter=REWARD)
    model.base = base
    heads = load_file(str(path / "heads.safetensors"))
    model.g_head.load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith("g_head.")})
    model.h_head.load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith("h_head.")})
    model.g_head.to(device)
    model.h_head.to(device)
    return model.eval()
