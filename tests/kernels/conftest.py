"""Kernel tests: Triton runs in its interpreter on CPU, and `rairl.kernels` imports from a checkout.

`triton.jit` reads TRITON_INTERPRET when it decorates, so it is set before the kernel modules
are imported (and modules another test imported earlier without it are reloaded).
`kernels/` only becomes `rairl.kernels` once installed (setup.py's package_dir), so an
uninstalled checkout gets the same mapping here.
"""
import importlib
import os
import sys
import types
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_ROOT = Path(__file__).resolve().parents[2]
try:
    import rairl.kernels  # noqa: F401  (installed, or editable install)
except ImportError:
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    try:
        import rairl  # noqa: F401
    except ImportError:
        rairl = types.ModuleType("rairl")
        rairl.__path__ = [str(_ROOT / "rairl")]
        sys.modules["rairl"] = rairl
    _pkg = types.ModuleType("rairl.kernels")
    _pkg.__path__ = [str(_ROOT / "kernels")]
    sys.modules["rairl.kernels"] = _pkg
    sys.modules["rairl"].kernels = _pkg

if os.environ.get("TRITON_INTERPRET") == "1":
    for _name in ("rairl.kernels.token_logprobs", "rairl.kernels.airl"):
        _mod = sys.modules.get(_name)
        _kernel = getattr(_mod, "_" + _name.rsplit(".", 1)[1] + "_fwd_kernel", None)
        if _kernel is not None and type(_kernel).__name__ != "InterpretedFunction":
            importlib.reload(_mod)
