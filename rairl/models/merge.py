"""The plain weights of a policy as it is trained: 4-bit base weights dequantized, a LoRA adapter merged in.

What every rollout engine other than `hf` samples from (`rairl.models.rollout`, `rairl.models.vllm_engine`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

Samples = tuple[list[list[list[int]]], list[list[list[float]]]]  # ids and sampler log-probs, [prompt][sample][token]


def merged_state(model: nn.Module, adapter: str | None, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """The plain weights of a (peft) causal LM, one `(name, tensor)` at a time: 4-bit weights dequantized,
    the LoRA `adapter` merged in.

    `model`: a peft model (or a plain one: its own weights); names are the plain model's parameter names.
    One at a time, so that copying them into a plain model never holds a second whole copy.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    covered: set[str] = set()
    for name, module in base.named_modules():
        if name.endswith(".base_layer") or ".lora_" in name:
            continue  # inside a LoRA layer: merged with it
        inner = module.get_base_layer() if hasattr(module, "get_base_layer") and hasattr(module, "lora_A") else None
        weight = getattr(inner if inner is not None else module, "weight", None)
        if inner is None and not hasattr(weight, "quant_state"):
            continue  # neither LoRA nor 4-bit: its parameters are copied by name below
        from peft.utils.integrations import dequantize_module_weight
        w = dequantize_module_weight(inner if inner is not None else module).to(dtype)
        if inner is not None and adapter in module.lora_A:
            w = w + module.get_delta_weight(adapter).to(dtype)
        yield f"{name}.weight", w
        bias = (inner if inner is not None else module).bias
        if bias is not None:
            yield f"{name}.bias", bias.to(dtype)
        covered.add(name)
    for name, p in base.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if ".lora_" in name or ".base_layer." in name or owner in covered:
            continue
        yield name, p.detach().to(dtype)


def copy_merged(model: nn.Module, adapter: str | None, plain: nn.Module) -> None:
    """Write `model`'s merged weights into the plain causal LM `plain` (same architecture), in place."""
    load_into(plain, merged_state(model, adapter, next(plain.parameters()).dtype))


@torch.no_grad()
def load_into(plain: nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy `(name, tensor)` pairs into the parameters of the plain causal LM `plain`, in place; every
    parameter must be given (a tied output embedding comes with its input one), no unknown name."""
    params = dict(plain.named_parameters(remove_duplicate=False))
    seen = set()
    for name, w in weights:
        if name not in params:
            raise ValueError(f"weight {name!r} has no parameter in {type(plain).__name__}")
        params[name].copy_(w)
        seen.add(name)
    tied = plain.config.get_text_config().tie_word_embeddings
    missing = [k for k in params.keys() - seen if not (tied and k.endswith("lm_head.weight"))]
    if missing:
        raise ValueError(f"weights leave {sorted(missing)[:3]} of {type(plain).__name__} unset")
