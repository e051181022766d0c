"""LoRA adapter helpers that need no peft import: the module names LoRA targets, adapter switching.

A leaf module: `rairl.models.reward` (its adapter context), `rairl.models.adapters` (the shared
base) and `rairl.plan` (the memory plan) import it; it imports only torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

# The linear layers of a Llama/Qwen2 decoder block, the default LoRA targets.
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Storage of the shared base's weights: bitsandbytes 4-bit NF4 (bf16 compute), bf16 or fp32.
QUANTIZATIONS = ("nf4", "bf16", "fp32")


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every LoRA weight of `model` (peft names them `lora_A` / `lora_B`)."""
    return [p for n, p in model.named_parameters() if "lora_" in n]


@contextlib.contextmanager
def active_adapter(model: nn.Module, name: str) -> Iterator[None]:
    """Run the block with LoRA adapter `name` of peft model `model` active; restore the previous one after.

    peft's `set_adapter` also sets requires_grad False on every other adapter; here the
    requires_grad flags of all LoRA weights are left as they were.
    """
    previous = model.active_adapter
    if previous == name:
        yield
        return
    lora = lora_parameters(model)
    flags = [p.requires_grad for p in lora]

    def switch(to: str) -> None:
        model.set_adapter(to)
        for p, flag in zip(lora, flags, strict=True):
            p.requires_grad_(flag)

    switch(name)
    try:
        yield
    finally:
        switch(previous)
