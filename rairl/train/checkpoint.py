"""Training checkpoints: one folder per saved iteration, written by every rank, committed by rank 0.

    checkpoints/iter_000010/
        .metadata, *.distcp   tensors: models and optimisers (`torch.distributed.checkpoint`: each rank
                              writes its FSDP2 shards, replicated tensors once; loads at any world size)
        trainer.json          the loop's counters and config, the world size that wrote it
        rng_rank{r}.pt        each rank's RNG states
        COMMITTED             written last, after every rank finished: the folder is complete

A run killed at any moment leaves the previous committed folder intact; a folder without
COMMITTED is ignored, and removed at the next save. The policy loop (`AIRLTrainer`), SFT and reward
training (`LoopCheckpoints`) and the warm start's stage boundaries all save in this one format.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from ..dist import Dist
from ..models.saving import nonfinite_tensor

FORMAT_VERSION = 3  # 3: a folder (distributed checkpoint) with a commit marker
_PREFIX, _MARKER = "iter_", "COMMITTED"
T = TypeVar("T")


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
    with _one_process_quiet():
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


@contextlib.contextmanager
def _one_process_quiet() -> Iterator[None]:
    """DCP warns, in one process, that it "assumes the intent is to save in a single process": it is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


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
    with _one_process_quiet():
        dcp.load(tensors, checkpoint_id=str(path), no_dist=not dist.on)
    rng_file = path / f"rng_rank{dist.rank}.pt"
    rng = torch.load(rng_file if rng_file.exists() else path / "rng_rank0.pt", weights_only=True)
    return meta, rng


def load_newest(directory: str | Path, load: Callable[[Path], T], run_id: str | None = None,
                check: Callable[[Path], None] = lambda path: None) -> tuple[Path, T] | None:
    """`(path, load(path))` for the newest committed checkpoint in `directory` (of `run_id`) that reads; a
    damaged one (a truncated shard or RNG file) is passed over for the one before, with a warning. None when
    there is no checkpoint; ValueError when none reads. `check(path)` runs first and may refuse one (its
    error is raised, not passed over)."""
    errors = []
    for path in committed_checkpoints(directory, run_id)[::-1]:
        check(path)
        try:
            return path, load(path)
        except (Exception, CheckpointException) as e:  # (a BaseException) a truncated shard or RNG file: the one before is whole
            errors.append(f"{path.name}: {(str(e).strip().splitlines() or [type(e).__name__])[-1]}")  # DCP's: a traceback
            warnings.warn(f"{path}: cannot be read ({errors[-1]}); trying the checkpoint before it", stacklevel=2)
    if errors:
        raise ValueError(f"{directory}: no committed checkpoint can be read ({'; '.join(errors)})")
    return None


def check_config(path: Path, cfg: Any, may_differ: tuple[str, ...]) -> None:
    """Refuse the checkpoint `path` when it was written under a config other than `cfg` (a frozen dataclass
    with defaults) in a field not in `may_differ`; fields added since it was written count as their defaults."""
    saved = {**_as_json(asdict(type(cfg)())), **read_meta(path)["config"]}
    diff = sorted(k for k, v in _as_json(asdict(cfg)).items() if saved.get(k) != v and k not in may_differ)
    if diff:
        raise ValueError(f"{path}: written with another {type(cfg).__name__} (fields {diff} differ); resume with the run's config")


def _as_json(tree: dict) -> dict:
    return json.loads(json.dumps(tree))  # as trainer.json holds it: tuples become lists


def rng_states(rng: random.Random) -> dict:
    """The random states a bit-exact resume restores: `rng`'s, torch's CPU generator's and, where CUDA is
    available, the current CUDA device's."""
    states = {"python": rng.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(states: dict, rng: random.Random) -> None:
    """Set `rng` and torch's generators back to `rng_states`' `states`."""
    rng.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def drop_rows_after(log_path: Path, key: str, last: int) -> None:
    """Rewrite the JSONL log `log_path` (when there is one) without the rows whose `key` is past `last`, nor a
    line the kill cut short: the resumed loop writes them again."""
    if not log_path.exists():
        return

    def kept(line: str) -> bool:
        try:
            return json.loads(line)[key] <= last
        except ValueError:
            return False
    _write_atomic(log_path, "".join(line + "\n" for line in log_path.read_text().splitlines() if kept(line)))


class LoopCheckpoints:
    """The checkpoints of a training loop counted in steps (SFT, reward training) in `directory` (None: none).

    A checkpoint holds the parameters `opt` trains (named as in `module`), `opt`'s state, the loop's random
    states, its `meta` (JSON-able: counters, logged rows) and any extra tensors. `cfg` is the loop's config, a
    frozen dataclass whose `checkpoint_every` sets how often `due` is true (0: never); a checkpoint written
    under another config, but for `checkpoint_every`, is refused on resume. Every rank calls `start` and
    `save` together.
    """

    def __init__(self, directory: str | Path | None, cfg: Any, module: torch.nn.Module, opt: torch.optim.Optimizer,
                 dist: Dist = Dist()):
        self.directory, self.cfg, self.module, self.opt, self.dist = Path(directory) if directory else None, cfg, module, opt, dist

    def due(self, step: int) -> bool:
        """A checkpoint falls after `step` (1-based) steps; never before the optimiser's first step (saving its
        state would initialise it, and change how the next step's bias correction counts)."""
        return bool(self.directory and self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0 and self.opt.state)

    def save(self, step: int, meta: dict, rng: dict, extra: dict | None = None) -> None:
        """Checkpoint the loop after `step` steps (when checkpoints are on): `rng` from `rng_states`, `extra`
        nested dicts of tensors."""
        if self.directory and self.cfg.checkpoint_every:
            save_checkpoint(self.directory, step, {**self._tensors(), **(extra or {})},
                            {"step": step, "config": asdict(self.cfg), **meta}, rng, self.dist)

    def start(self, resume: bool, rng: random.Random, extra: Callable[[dict], dict] = lambda meta: {}) -> tuple[dict, dict] | None:
        """Before the loop. With `resume`: load the newest committed checkpoint that reads into the parameters,
        the optimiser, `rng` and torch's generators; return its meta and its extra tensors, laid out as
        `extra(meta)` gives them (None when there is no checkpoint). Without: remove the checkpoints an
        earlier run left in `directory`; return None."""
        if self.directory is None:
            return None
        if not resume:
            if self.dist.main and self.directory.is_dir():
                for old in self.directory.glob(f"{_PREFIX}*"):
                    shutil.rmtree(old)
            self.dist.barrier()
            return None

        def load(path: Path) -> tuple[dict, dict]:
            extras = extra(read_meta(path))
            tensors = {**self._tensors(), **extras}
            meta, states = load_checkpoint(path, tensors, self.dist)  # the parameters are filled in place
            set_optimizer_state_dict(self.module, self.opt, tensors["opt"])
            restore_rng(states, rng)
            return meta, extras

        found = load_newest(self.directory, load, check=lambda path: check_config(path, self.cfg, ("checkpoint_every",)))
        return found[1] if found else None

    def _tensors(self) -> dict:
        trained = {id(p) for group in self.opt.param_groups for p in group["params"]}
        return {"params": {n: p.detach() for n, p in self.module.named_parameters() if id(p) in trained},
                "opt": get_optimizer_state_dict(self.module, self.opt)}
