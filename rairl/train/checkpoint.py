"""Atomic training checkpoints: write to a temporary file, fsync, then rename.

A run killed at any moment leaves either the previous complete checkpoint or
the new one, never a half-written file under a checkpoint's name; leftover
temporary files are ignored (and removed at the next save).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT_VERSION = 2  # 2: the trainer state holds policy_steps (lr warm-up)
_PREFIX, _SUFFIX = "iter_", ".pt"


def save_checkpoint(directory: str | Path, iteration: int, state: dict, keep: int = 2) -> Path:
    """Write `state` as `directory/iter_{iteration:06d}.pt` atomically; keep the newest `keep` checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{iteration:06d}{_SUFFIX}"
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in _complete(directory)[:-keep]:
        old.unlink()
    for stale in directory.glob(f"{_PREFIX}*{_SUFFIX}.tmp"):
        stale.unlink()
    return final


def _complete(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}"))  # zero-padded: name order is iteration order


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in `directory`, or None."""
    directory = Path(directory)
    found = _complete(directory) if directory.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict:
    """The state saved by `save_checkpoint`; refuses another format version, naming the file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: field 'format_version' is {version!r}, this rairl reads {FORMAT_VERSION}; "
                         "finish the run with the rairl version that wrote it")
    return state
