"""The optimiser step of every training loop, guarded against non-finite losses and gradients.

A step whose loss or gradient norm is NaN or infinite is skipped (no optimiser step: AdamW would
write the NaN into every weight and both moments) with its gradients zeroed, and counted; after
`MAX_NONFINITE_STEPS` such steps in a row the run stops with a `DivergedError` naming the step and
the learning rate to lower. A finite step resets the streak.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

# Consecutive non-finite steps that stop a run: one can be a passing overflow (a rare batch, a
# low-precision spike) and is worth skipping; three in a row is divergence, and skipping on only
# burns compute while the weights sit still.
MAX_NONFINITE_STEPS = 3


class DivergedError(ValueError):
    """A run stopped by `StepGuard` (a ValueError: the CLI prints it as one line)."""


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the gradients' global norm to `max_norm`; returns the norm before clipping (whole, under FSDP2 too)."""
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


class StepGuard:
    """`step()` replaces `clip_grad_norm_` + `opt.step()` in a loop; `skipped` counts the skipped steps.

    lr_field: the config field of the loop's learning rate ("RewardTrainConfig.lr") and lr its value,
    for the error's advice.
    """

    def __init__(self, lr_field: str, lr: float, limit: int = MAX_NONFINITE_STEPS):
        self.lr_field, self.lr, self.limit = lr_field, lr, limit
        self.skipped, self.in_row = 0, 0
        self.grad_norm = float("nan")  # of the last step, before clipping

    def state(self) -> dict[str, int]:
        """The counters a checkpoint keeps, for `load_state` in a resumed loop."""
        return {"skipped": self.skipped, "in_row": self.in_row}

    def load_state(self, state: dict[str, int]) -> None:
        self.skipped, self.in_row = state["skipped"], state["in_row"]

    def step(self, opt: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], loss: float, max_norm: float,
             where: str) -> bool:
        """After `backward()`: clip the gradients of `params` to `max_norm`, then step `opt` if `loss` (the
        value every rank agrees on, e.g. all-summed) and the gradient norm are finite. Otherwise zero the
        gradients and count the step; the `limit`-th in a row raises `DivergedError`, which `where`
        ("reward training step 4") begins. Returns whether the optimiser stepped.
        """
        self.grad_norm = clip_grad_norm(params, max_norm)
        bad = next((f"{name} is {value}" for name, value in (("loss", loss), ("gradient norm", self.grad_norm))
                    if not math.isfinite(value)), None)
        if bad is None:
            opt.step()
            self.in_row = 0
            return True
        opt.zero_grad(set_to_none=True)
        self.skipped += 1
        self.in_row += 1
        if self.in_row >= self.limit:
            raise DivergedError(f"{where}: {bad} {self.in_row} steps in a row (skipped {self.skipped} in all); "
                                f"lower the learning rate {self.lr_field} (now {self.lr:g})")
        return False
