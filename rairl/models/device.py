"""Where models run and in what precision: `--device auto|cpu|cuda|cuda:N`, `--dtype auto|fp32|bf16|fp16`.

    auto device   CUDA when present, else the CPU
    auto dtype    bf16 on a CUDA device that supports it, else fp32
    attention     flash_attention_2 on CUDA when flash-attn (the `[gpu]` extra) imports, else sdpa

A device that does not exist is an error when the command starts, never a silent CPU run.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """The torch device of `auto`, `cpu`, `cuda` or `cuda:N`; an unknown or absent device is refused."""
    if spec == "auto":
        return torch.device("cuda", _local_gpu()) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise ValueError(f"device {spec!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: no CUDA device here (torch {torch.__version__}, cuda available: False); use --device cpu")
    index = int(match.group(1)) if match.group(1) is not None else _local_gpu()
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def _local_gpu() -> int:
    """The GPU of this process: its launcher's `LOCAL_RANK` (torchrun, accelerate), else the current one."""
    return int(os.environ["LOCAL_RANK"]) if "LOCAL_RANK" in os.environ else torch.cuda.current_device()


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """The torch dtype of `auto`, `fp32`, `bf16` or `fp16` for models on `device`."""
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if spec not in DTYPES:
        raise ValueError(f"dtype {spec!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[spec]


def attn_implementation(device: torch.device) -> str:
    """flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


@dataclass(frozen=True, kw_only=True)
class OnDevice:
    """The device and precision fields of a command that loads models (inherited by its config)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: CUDA when present)
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA where supported, fp32 on CPU)

    def __post_init__(self) -> None:
        resolve_dtype(self.dtype, resolve_device(self.device))  # refused before anything is read or written

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.torch_device())
