"""Backend dispatch for every op in `rairl.kernels`: one resolver, one optional Triton import.

Backends:

* ``"triton"``    fused Triton kernels. CUDA; on a CPU only under ``TRITON_INTERPRET=1``
                  (the Triton interpreter, used by the tests), which must be set *before*
                  the kernel module is imported because ``triton.jit`` reads it at decoration.
* ``"torch"``     chunked / vectorised PyTorch with a custom backward; any device.
* ``"reference"`` naive PyTorch, plain autograd; the test oracle.

``requested=None`` means: ``$RAIRL_KERNEL_BACKEND`` if set, else ``"triton"`` on CUDA when
Triton imports and ``"torch"`` elsewhere. Triton is optional: without it the kernel modules
still import (the decorators below become no-ops) and only ``"triton"`` is refused.
"""
from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only install: kernels are defined but can never be launched.
    HAS_TRITON = False

    def _no_jit(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)

    triton = SimpleNamespace(jit=_no_jit, cdiv=lambda a, b: -(-a // b))
    tl = SimpleNamespace(constexpr=int)  # only read by the kernels' annotations

BACKENDS = ("triton", "torch", "reference")
ENV_VAR = "RAIRL_KERNEL_BACKEND"
_warned: set[str] = set()

__all__ = [
    "BACKENDS", "ENV_VAR", "HAS_TRITON", "check_launchable", "resolve_backend",
    "triton", "triton_interpret", "tl",
]


def triton_interpret() -> bool:
    """True when the Triton interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def resolve_backend(requested: str | None, device: torch.device | str) -> str:
    """Pick the backend for tensors on `device`: ``"triton"``, ``"torch"`` or ``"reference"``.

    `requested` (an argument) beats ``$RAIRL_KERNEL_BACKEND`` which beats the default.
    A forced backend that cannot run raises with the reason; the automatic choice on CUDA
    without Triton falls back to ``"torch"`` and says so once.
    """
    device = torch.device(device)
    source = "backend="
    if requested is None and os.environ.get(ENV_VAR, "").strip():
        requested, source = os.environ[ENV_VAR].strip().lower(), f"${ENV_VAR}="
    if requested is None:
        if device.type == "cuda":
            if HAS_TRITON:
                return "triton"
            _warn_once("rairl.kernels: triton is not installed; "
                       "using the chunked torch path on CUDA")
        return "torch"
    if requested not in BACKENDS:
        raise ValueError(f"{source}{requested!r}: expected one of {BACKENDS} (or None for auto)")
    if requested == "triton":
        if not HAS_TRITON:
            raise RuntimeError(f"{source}'triton' but triton is not installed (pip install triton)")
        if device.type == "cpu" and not triton_interpret():
            raise RuntimeError(
                f"{source}'triton' on a CPU tensor needs the Triton interpreter: set "
                "TRITON_INTERPRET=1 before importing rairl.kernels, or use backend='torch'"
            )
        if device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"{source}'triton' does not support device {device}")
    return requested


def check_launchable(kernel, device: torch.device) -> None:
    """Refuse to launch a compiled (non-interpreted) kernel on CPU tensors.

    ``triton.jit`` chose compiled vs interpreted when the module was imported; setting
    ``TRITON_INTERPRET=1`` afterwards is too late and would otherwise crash deep in Triton.
    """
    if device.type == "cpu" and type(kernel).__name__ != "InterpretedFunction":
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after rairl.kernels was imported; set it before the "
            "first import (the Triton decorator reads it once)"
        )
