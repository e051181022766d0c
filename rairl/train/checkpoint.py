"""Training checkpoints: one folder per saved iteration, written by every rank, committed by rank 0.

    checkpoints/iter_000010/
        .metadata, *.distcp   tensors: models and optimisers (`torch.distributed.checkpoint`: each rank
                              writes its FSDP2 shards, replicated tensors once; loads at any world size)
        trainer.json          the loop's counters and config, the world size that wrote it
        rng_rank{r}.pt        each rank's RNG states
        COMMITTED             written last, after every rank finished: the folder is complete

A run killed at any moment leaves the previous committed folder intact; a folder without
COMMITTED is ignored, and removed at the next save.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from ..dist import Dist
from ..models.saving import nonfinite_tensor

FORMAT_VERSION = 3  # 3: a folder (distributed checkpoint) with a commit marker
_PREFIX, _MARKER = "iter_", "COMMITTED"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(directory: str | Path, iteration: int, tensors: dict, meta: dict, rng: dict, dist: Dist = Dist(),
                    keep: int = 2) -> Path:
    """Write `directory/iter_{iteration:06d}/` on every rank; rank 0 commits it and keeps the newest `keep`.

    `tensors`: nested dicts of tensors (DTensor shards included); `meta`: JSON-able; `rng`: this rank's
    RNG states (torch-saveable). Every rank calls this together. Refuses (every rank, before writing
    anything) when a tensor holds NaN or inf: resuming from it would only carry the divergence on.
    """
    directory = Path(directory)
    path = directory / f"{_PREFIX}{iteration:06d}"
    bad = nonfinite_tensor(_named_tensors(tensors))
    if float(dist.all_sum(float(bad is not None))) > 0:  # a shard anywhere: every rank refuses together
        raise ValueError(f"{path}: not saved: {bad or 'a tensor on another rank'} holds NaN or inf values "
                         "(the run diverged; lower the learning rate and train again)")
    if dist.main:
        if path.exists():  # an uncommitted folder of a killed save, or a checkpoint being redone
            shutil.rmtree(path)
        path.mkdir(parents=True)
    dist.barrier()
    dcp.save(tensors, checkpoint_id=str(path), no_dist=not dist.on)
    torch.save(rng, path / f"rng_rank{dist.rank}.pt")
    dist.barrier()  # every rank's shards are on disk
    if dist.main:
        (path / "trainer.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "world_size": dist.world_size, **meta}, indent=2))
        _write_atomic(path / _MARKER, f"{iteration}\n")
        for old in committed_checkpoints(directory, meta.get("run_id"))[:-keep]:  # never another run's
            shutil.rmtree(old)
        for stale in directory.glob(f"{_PREFIX}*"):
            if stale.is_dir() and not (stale / _MARKER).exists():
                shutil.rmtree(stale)
    dist.barrier()
    return path


def _named_tensors(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of every leaf of nested dicts."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _named_tensors(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _committed(directory: Path) -> list[Path]:
    found = [p for p in directory.glob(f"{_PREFIX}*") if (p / _MARKER).exists()] if directory.is_dir() else []
    return sorted(found)  # zero-padded: name order is iteration order


def committed_checkpoints(directory: str | Path, run_id: str | None = None) -> list[Path]:
    """The committed checkpoint folders in `directory`, oldest first; with `run_id`, only that run's
    (and those written before checkpoints carried one)."""
    return [p for p in _committed(Path(directory)) if run_id is None or _run_of(p) in (run_id, None)]


def latest_checkpoint(directory: str | Path, run_id: str | None = None) -> Path | None:
    """The newest committed checkpoint folder in `directory` (of `run_id`, see `committed_checkpoints`), or None."""
    found = committed_checkpoints(directory, run_id)
    return found[-1] if found else None


def _run_of(path: Path) -> str | None:
    try:
        return json.loads((path / "trainer.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def read_meta(path: str | Path) -> dict:
    """A checkpoint's `trainer.json`; refuses another format version, naming the file."""
    meta_file = Path(path) / "trainer.json"
    if not meta_file.exists():
        raise ValueError(f"{meta_file}: missing; {path} is not a checkpoint folder written by this rairl "
                         "(older ones were single .pt files: finish that run with the rairl version that wrote it)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_file}: field 'format_version' is {meta.get('format_version')!r}, this rairl reads "
                         f"{FORMAT_VERSION}; finish the run with the rairl version that wrote it")
    return meta


def load_checkpoint(path: str | Path, tensors: dict, dist: Dist = Dist()) -> tuple[dict, dict]:
    """Fill `tensors` (laid out as at save time, for this world size) in place from `path`; returns
    `(meta, rng)`, rng being this rank's states (rank 0's when the writing run had fewer ranks)."""
    path = Path(path)
    meta = read_meta(path)
    dcp.load(tensors, checkpoint_id=str(path), no_dist=not dist.on)
    rng_file = path / f"rng_rank{dist.rank}.pt"
    rng = torch.load(rng_file if rng_file.exists() else path / "rng_rank0.pt", weights_only=True)
    return meta, rng
