"""Every model folder rairl writes goes through here: only finite weights, and readable like the rest.

    check_finite_weights  refuse to save a model with a NaN / inf parameter or buffer (a diverged run
                          must never be passed off as a result), naming the folder
    save_pretrained       check, `model.save_pretrained(folder)`, then `follow_umask`
    follow_umask          safetensors (>= 0.6) writes each file through a private temporary file and
                          renames it, so weights land with mode 0600 beside 0644 configs; give them
                          the mode any other new file gets (0644 under umask 022)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


def nonfinite_tensor(named: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or inf, or None. A DTensor is checked on
    its local shard (every rank sees only its own: combine the answers across ranks)."""
    for name, t in named:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        local = t.to_local() if hasattr(t, "to_local") else t
        if local.numel() and not bool(torch.isfinite(local).all()):
            return name
    return None


def check_finite_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Raise ValueError naming `folder` and the parameter when any parameter or buffer of `model` is NaN / inf."""
    bad = nonfinite_tensor([*model.named_parameters(), *model.named_buffers()])
    if bad is not None:
        raise ValueError(f"{folder}: not saved: parameter {bad} holds NaN or inf values (the run diverged; "
                         "lower the learning rate and train again)")


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it (os.umask sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: str | Path) -> None:
    """Give every `*.safetensors` file under `folder` the mode a newly created file gets (0666 minus the umask)."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*.safetensors"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def save_pretrained(model: Any, folder: str | Path, **kwargs: Any) -> None:
    """`model.save_pretrained(folder, **kwargs)` (a transformers or peft model) once its weights are known
    finite, its weight files then readable like the folder's other files."""
    check_finite_weights(model, folder)
    model.save_pretrained(folder, **kwargs)
    follow_umask(folder)
