"""Processes: one by default, several under `torchrun` or `accelerate launch` (DESIGN.md §7).

`init_dist()` reads the launcher's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, set
alike by torchrun and accelerate) and returns a `Dist`; with one process every method is a
no-op, so library code calls them unconditionally. Two rules keep results independent of
the world size:

* every trained pass goes through the wrapped module's `forward` (`rairl.models.engine`);
* token means and class-balanced losses divide by global counts: `all_sum` them first.

Gradients: DDP and FSDP2 average gradients over ranks, so a rank's loss is its share of the
global loss (local sum / global count) times `world_size` (`Dist.scale_loss`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

ENGINES = ("auto", "ddp", "fsdp2")
_STARTED = False  # whether this module started the process group (a colocated vLLM may start its own)


@dataclass(frozen=True)
class Dist:
    """This process's place among the launched ones."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    engine: str = "ddp"  # how trained modules are wrapped when world_size > 1: ddp | fsdp2

    @property
    def main(self) -> bool:
        """The process that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world_size > 1

    def all_sum(self, x: torch.Tensor | float) -> torch.Tensor:
        """`x` summed over ranks (a new tensor; `x` is untouched). Floats become fp64 tensors."""
        t = x.detach().clone() if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)
        if self.on:
            t = t.to(self.comm_device())
            torch_dist.all_reduce(t)
        return t.to(x.device) if isinstance(x, torch.Tensor) else t.cpu()

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call `backward()` on: the engine averages gradients over ranks, so undo the average."""
        return loss * self.world_size if self.on else loss

    def share(self, n: int) -> range:
        """This rank's contiguous block of `range(n)`; blocks in rank order cover it, sizes differ by at most 1."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def gather(self, items: Sequence[Any]) -> list[Any]:
        """Every rank's `items` (picklable), concatenated in rank order; every rank gets the whole list."""
        if not self.on:
            return list(items)
        parts: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(parts, list(items))
        return [x for part in parts for x in part]

    def barrier(self) -> None:
        if self.on:
            torch_dist.barrier()

    def comm_device(self) -> torch.device:
        """Where collective tensors live: the rank's GPU under NCCL, else the CPU (gloo)."""
        if self.on and torch_dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def launched() -> bool:
    """True when a launcher started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_dist(engine: str = "auto", lora: bool = False, timeout_s: float = 1800.0) -> Dist:
    """The `Dist` of this process; under a launcher with more than one process, the process group too.

    `engine`: `ddp`, `fsdp2`, or `auto` (FSDP2 when accelerate was configured for FSDP, else DDP for
    LoRA runs and FSDP2 for full-weight ones). Backend: NCCL when CUDA is present, else gloo. A rank
    that waits longer than `timeout_s` on the others raises instead of hanging.
    """
    if engine not in ENGINES:
        raise ValueError(f"--parallel {engine!r}: choose one of {ENGINES}")
    if engine == "auto":
        engine = "fsdp2" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else ("ddp" if lora else "fsdp2")
    if engine == "fsdp2" and lora:
        raise ValueError("--parallel fsdp2 shards full weights; a LoRA run (--lora true) uses --parallel ddp")
    if not launched():
        return Dist(engine=engine)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    global _STARTED
    if not torch_dist.is_initialized():
        _STARTED = True
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        torch_dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(rank=rank, world_size=world, local_rank=local, engine=engine)


def finish_dist() -> None:
    """Every rank, once its work is done: wait for the others, then leave the process group `init_dist` started
    (a no-op without one; a group someone else started, e.g. a colocated vLLM engine, is theirs to end)."""
    global _STARTED
    if _STARTED and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
        _STARTED = False
