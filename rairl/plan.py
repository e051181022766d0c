"""GPU memory planner for one R-AIRL training iteration (issue 6): pure arithmetic.

Setting: ONE frozen base model shared by two LoRA adapters (policy, reward), the reference
policy being the base with adapters disabled. An iteration has two phases that never overlap:

* generation: B*G sequences decoded with a KV cache (no grad), which is freed afterwards;
* update: micro-batches of `minibatch_size` sequences, forward + backward through the
  policy adapter, then through the reward adapter (sequentially: one micro-batch's graph at
  a time). Reference and old-policy log-probs are no-grad forwards and keep no activations.

Live throughout: base weights, both adapters with their fp32 grads and Adam states, and the
CUDA context. Peak = shared parts + max(generation phase, update phase).

The rollout engine (`--rollout.engine`) adds its own copy of the merged weights (bf16):
`hf_merged` keeps it for the whole run; `vllm` holds it and its pre-allocated KV cache during
generation only (sleep mode frees both for the update) and takes a fixed share of the GPU.

Every quantity is an estimate in GiB (2**30 bytes); the approximations are cited where made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models.lora import LINEAR_NAMES, QUANTIZATIONS

ENGINES = ("hf", "hf_merged", "vllm")  # as rairl.models.rollout.ENGINES (kept import-free of torch here)

GIB = float(2**30)
# bitsandbytes NF4 with double quantization (QLoRA, Dettmers et al. 2023, sec. 3): 4 bits per
# weight, one 8-bit absmax per 64 weights, one fp32 constant per 256 absmax blocks:
# 8/64 + 32/(64*256) = 0.127 bits per parameter.
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
# fp32 LoRA param + fp32 grad + Adam exp_avg + exp_avg_sq.
ADAM_BYTES_PER_TRAINABLE = 4 * 4
# CUDA context (~300-500 MiB on recent drivers) plus caching-allocator fragmentation slack;
# a fixed allowance, not derived from the model.
CUDA_OVERHEAD_GIB = 0.8
# Fused log-prob op keeps the (chunk, V) fp32 logits and their gradient live together.
LOGPROB_FWD_BWD_COPIES = 2
REQUIRED_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)


@dataclass(frozen=True)
class ModelShape:
    """Shape of a decoder-only Llama/Qwen2-style transformer, read from config.json."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }


@dataclass(frozen=True)
class PlanConfig:
    """Inputs of the memory plan; sizes in tokens or sequences, memory in GB (GiB)."""

    model: str  # directory holding config.json, the config.json file itself, or a preset name (PRESETS)
    gpu_gb: float = 24  # GPU memory to fit in, GiB
    prompts_per_iter: int = 8  # B: prompts per iteration
    group_size: int = 8  # G: completions sampled per prompt
    prompt_tokens: int = 256  # tokens per prompt (padded length)
    max_new_tokens: int = 512  # max new tokens per completion
    quantization: str = "nf4"  # base weight format: "nf4" | "bf16" | "fp32"
    lora_rank: int = 16  # r of each LoRA adapter
    target_modules: tuple[str, ...] = LINEAR_NAMES  # linear layers carrying LoRA
    gradient_checkpointing: bool = True  # recompute each layer in backward
    logprob_chunk_tokens: int = 1024  # tokens per chunk of the fused log-prob op
    minibatch_size: int = 8  # sequences per forward/backward
    reward_adapter: bool = True  # second LoRA adapter + 2 scalar heads on the same base
    engine: str = "hf"  # rollout engine: hf | hf_merged (+ a bf16 merged copy) | vllm (+ copy and KV cache, generation only)
    gpu_memory_share: float = 0.3  # vllm: the share of gpu_gb it reserves for weights + KV cache

    def __post_init__(self) -> None:
        path = Path(self.model)
        if str(self.model).lower() not in PRESETS and not (path.is_file() or (path / "config.json").is_file()):
            raise ValueError(f"model: no config.json at {path}; pass a model dir, a config.json or a preset ({', '.join(PRESETS)})")
        if not self.gpu_gb > 0:
            raise ValueError(f"gpu_gb must be > 0 GiB, got {self.gpu_gb}")
        for name in (
            "prompts_per_iter",
            "group_size",
            "prompt_tokens",
            "max_new_tokens",
            "lora_rank",
            "logprob_chunk_tokens",
            "minibatch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if not 0.0 < self.gpu_memory_share < 1.0:
            raise ValueError(f"gpu_memory_share must be in (0, 1), got {self.gpu_memory_share}")
        unknown = set(self.target_modules) - set(LINEAR_NAMES)
        if not self.target_modules or unknown:
            raise ValueError(
                f"target_modules must be a non-empty subset of {LINEAR_NAMES}, got {self.target_modules!r}"
            )


def config_path(model: str | Path) -> Path:
    """The config.json file named by `model` (a directory or the file itself)."""
    path = Path(model)
    return path if path.is_file() else path / "config.json"


def read_shape(model: str | Path) -> ModelShape:
    """Read a ModelShape from config.json (or a preset's); raise naming the file and any missing field."""
    preset = PRESETS.get(str(model).lower())
    path = Path(str(model)) if preset else config_path(model)
    cfg: dict[str, Any] = preset() if preset else json.loads(path.read_text())
    missing = [f for f in REQUIRED_FIELDS if f not in cfg]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return ModelShape(
        hidden=hidden,
        intermediate=int(cfg["intermediate_size"]),
        layers=int(cfg["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        vocab=int(cfg["vocab_size"]),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        # Qwen2 hard-codes biases on q/k/v only; Llama's `attention_bias` covers q/k/v/o.
        qkv_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False)),
        o_bias=cfg.get("model_type") != "qwen2" and bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )


def param_counts(shape: ModelShape) -> dict[str, int]:
    """Parameters by storage class: `linear` (quantisable weights), `other` (embeddings,
    lm_head, norms, biases: kept in bf16 under NF4)."""
    linear = shape.layers * sum(i * o for i, o in shape.linear_dims().values())
    biases = 0
    if shape.qkv_bias:
        biases += shape.q_dim + 2 * shape.kv_dim
    if shape.o_bias:
        biases += shape.hidden
    if shape.mlp_bias:
        biases += 2 * shape.intermediate + shape.hidden
    norms = 2 * shape.hidden  # input and post-attention RMSNorm
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    other = embeddings + shape.layers * (biases + norms) + shape.hidden  # + final norm
    return {"linear": linear, "other": other, "total": linear + other}


def lora_param_count(shape: ModelShape, rank: int, targets: tuple[str, ...]) -> int:
    """Parameters of one LoRA adapter: r*(in+out) per targeted linear per layer."""
    dims = shape.linear_dims()
    return shape.layers * sum(rank * (dims[t][0] + dims[t][1]) for t in targets)


def _weights_bytes(shape: ModelShape, quantization: str) -> float:
    counts = param_counts(shape)
    if quantization == "nf4":
        return counts["linear"] * NF4_BYTES_PER_PARAM + counts["other"] * 2
    return counts["total"] * (4 if quantization == "fp32" else 2)


def _layer_activation_bytes(shape: ModelShape, tokens: int, act_bytes: int) -> float:
    """Activations one decoder layer saves for backward, bytes.

    Counted after Korthikanti et al. 2022 ("Reducing Activation Recomputation", sec. 4.1;
    their 34*s*b*h per layer for a GELU MLP) adapted to SwiGLU and sdpa/flash attention,
    which stores O(tokens*H) (output + logsumexp), not the (T, T) scores. Per token:
    attention: norm in + fp32 norm upcast + norm out + q, k, v + rotated q, k + attn out;
    MLP: norm in + fp32 upcast + norm out + gate, up, silu(gate), product.
    LoRA adds only (tokens, r) tensors per target (dropout 0 shares the input): ignored.
    """
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    attention = act_bytes * (h + h + shape.q_dim + 2 * kv + shape.q_dim + kv + h) + 4 * h
    mlp = act_bytes * (h + h + 4 * i) + 4 * h
    return float(tokens * (attention + mlp))


def _activations_bytes(cfg: PlanConfig, shape: ModelShape, act_bytes: int) -> float:
    tokens = cfg.minibatch_size * (cfg.prompt_tokens + cfg.max_new_tokens)
    layer = _layer_activation_bytes(shape, tokens, act_bytes)
    if not cfg.gradient_checkpointing:
        return shape.layers * layer
    # Checkpointing keeps each layer's input hidden state, then recomputes one layer at a time.
    return shape.layers * tokens * shape.hidden * act_bytes + layer


def _kv_cache_bytes(cfg: PlanConfig, shape: ModelShape, act_bytes: int) -> float:
    sequences = cfg.prompts_per_iter * cfg.group_size
    tokens = sequences * (cfg.prompt_tokens + cfg.max_new_tokens)
    return float(tokens * shape.layers * 2 * shape.kv_dim * act_bytes)


def _generation_transient_bytes(cfg: PlanConfig, shape: ModelShape, act_bytes: int) -> float:
    """Prefill's largest no-grad layer transient plus one step's fp32 (B*G, V) logits, bytes.

    HF generate computes logits for the last position only (`logits_to_keep=1`); the
    no-grad prefill holds at most about one layer's activations at a time.
    """
    sequences = cfg.prompts_per_iter * cfg.group_size
    prefill = _layer_activation_bytes(shape, sequences * cfg.prompt_tokens, act_bytes)
    return prefill + sequences * shape.vocab * 4


def estimate(cfg: PlanConfig) -> dict[str, float]:
    """GiB per component of one R-AIRL iteration, and `total` = the peak.

    Keys: weights, adapters_and_optimizer, activations, logprob_chunks, kv_cache,
    generation_transient, engine_weights, cuda_overhead, total. total = weights +
    adapters_and_optimizer + cuda_overhead (+ engine_weights with hf_merged) + max(kv_cache +
    generation_transient (+ engine_weights with vllm), activations + logprob_chunks): the KV cache
    is freed before the update phase starts. With vllm, kv_cache is what the engine reserves:
    its share of the GPU less its weights, at least what the rollout needs; `engine_share_needed`
    is the smallest share that holds its weights and the rollout's KV cache.
    """
    shape = read_shape(cfg.model)
    act_bytes = 4 if cfg.quantization == "fp32" else 2
    adapters = 1 + int(cfg.reward_adapter)
    trainable = adapters * lora_param_count(shape, cfg.lora_rank, cfg.target_modules)
    if cfg.reward_adapter:
        trainable += 2 * (shape.hidden + 1)  # two scalar heads (weight + bias)
    est = {
        "weights": _weights_bytes(shape, cfg.quantization) / GIB,
        "adapters_and_optimizer": trainable * ADAM_BYTES_PER_TRAINABLE / GIB,
        "activations": _activations_bytes(cfg, shape, act_bytes) / GIB,
        "logprob_chunks": cfg.logprob_chunk_tokens * shape.vocab * 4 * LOGPROB_FWD_BWD_COPIES / GIB,
        "kv_cache": _kv_cache_bytes(cfg, shape, act_bytes) / GIB,
        "generation_transient": _generation_transient_bytes(cfg, shape, act_bytes) / GIB,
        "engine_weights": 0.0 if cfg.engine == "hf" else param_counts(shape)["total"] * 2 / GIB,
        "cuda_overhead": CUDA_OVERHEAD_GIB,
    }
    if cfg.engine == "vllm":
        est["engine_share_needed"] = (est["engine_weights"] + est["kv_cache"]) / cfg.gpu_gb
        est["kv_cache"] = max(est["kv_cache"], cfg.gpu_memory_share * cfg.gpu_gb - est["engine_weights"])
    generation = est["kv_cache"] + est["generation_transient"] + (est["engine_weights"] if cfg.engine == "vllm" else 0.0)
    update = est["activations"] + est["logprob_chunks"]
    shared = est["weights"] + est["adapters_and_optimizer"] + est["cuda_overhead"]
    shared += est["engine_weights"] if cfg.engine == "hf_merged" else 0.0
    est["total"] = shared + max(generation, update)
    return est


def format_plan(cfg: PlanConfig, est: dict[str, float]) -> str:
    """A table of GiB by component, the phase each belongs to, and a fits/does-not-fit line."""
    phases = {
        "kv_cache": "generation",
        "generation_transient": "generation",
        "engine_weights": "generation" if cfg.engine == "vllm" else "always",
        "activations": "update",
        "logprob_chunks": "update",
    }
    lines = [f"{'component':<24}{'GiB':>9}  phase", "-" * 45]
    for name, gib in est.items():
        if name in ("total", "engine_share_needed"):
            continue
        lines.append(f"{name:<24}{gib:>9.3f}  {phases.get(name, 'always')}")
    lines += ["-" * 45, f"{'total (peak)':<24}{est['total']:>9.3f}"]
    if cfg.engine != "hf":
        line = f"rollout engine {cfg.engine}: merged bf16 weights {est['engine_weights']:.3f} GiB"
        if cfg.engine == "vllm":
            line += (f" + KV cache {est['kv_cache']:.3f} GiB = share {(est['engine_weights'] + est['kv_cache']) / cfg.gpu_gb:.2f} of "
                     f"{cfg.gpu_gb:g} GB (needs >= {est['engine_share_needed']:.2f}: --rollout.gpu_memory_share)")
        lines.append(line)
    verdict = "fits in" if est["total"] <= cfg.gpu_gb else "does not fit in"
    lines.append(f"{verdict} {cfg.gpu_gb:g} GB")
    return "\n".join(lines)


def _qwen25_config(hidden: int, intermediate: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "max_window_layers": layers,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def qwen25_0p5b_config() -> dict[str, Any]:
    """config.json of Qwen2.5-0.5B's shape (494M parameters, tied embeddings)."""
    return _qwen25_config(hidden=896, intermediate=4864, layers=24, heads=14)


def qwen25_1p5b_config() -> dict[str, Any]:
    """config.json of Qwen2.5-1.5B's shape (1.54B parameters, tied embeddings)."""
    return _qwen25_config(hidden=1536, intermediate=8960, layers=28, heads=12)


PRESETS = {"qwen2.5-0.5b": qwen25_0p5b_config, "qwen2.5-1.5b": qwen25_1p5b_config}


def write_config(config: dict[str, Any], directory: str | Path) -> Path:
    """Write `config` as `directory`/config.json (creating the directory); return the path."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    out = path / "config.json"
    out.write_text(json.dumps(config, indent=2) + "\n")
    return out
