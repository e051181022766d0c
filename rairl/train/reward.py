"""Discriminator (reward model) training: class-balanced BCE on ℓ = f − log π.

Positives are expert demonstrations; negatives are policy samples and
perturbed expert traces. A perturbed trace is a negative only from its first
wrong step on: its prefix is the expert's own and carries no signal. The
policy is frozen here; its per-token log-probs are recomputed per batch (no
grad) so the same code serves the alternating AIRL loop. Under several processes
(`dist`) each batch is drawn once and split over the ranks, each class's loss
divides by its global action count, and the reward trains under DDP. Given a checkpoint folder,
training checkpoints every `checkpoint_every` steps and when it ends, and resumes bit-exact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..airl.discriminator import DiscRecord, class_counts, discriminator_batch, discriminator_loss
from ..configs import check_at_least, check_finite
from ..dist import Dist
from ..eval.discriminator import evaluate_discriminator
from ..kernels.segments import StepRule
from ..models.engine import RoutedReward, TrainModule, wrap
from ..models.lm import per_token_logprobs
from ..models.reward import RewardModel
from ..models.saving import nonfinite_tensor
from ..tracking import log_row
from .checkpoint import LoopCheckpoints, drop_rows_after, rng_states
from .guard import DivergedError, StepGuard
from .sft import lr_schedule


@dataclass(frozen=True)
class RewardTrainConfig:
    steps: int = 300  # optimiser steps
    batch_size: int = 32  # sequences per step, half expert and half negative
    lr: float = 3e-4  # peak learning rate (linear warm-up, cosine decay to 10%)
    warmup: int = 20  # warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    eval_every: int = 100  # steps between validation passes (the best one is kept)
    eval_batch_size: int = 64  # sequences per validation batch
    seed: int = 0  # draw of the training batches
    checkpoint_every: int = 100  # steps between resumable checkpoints, where the caller keeps them (0: never)

    def __post_init__(self) -> None:
        check_finite(self)
        check_at_least(self, 0, "warmup", "weight_decay", "seed")
        check_at_least(self, 0, "lr", "grad_clip", strict=True)
        if self.checkpoint_every < 0:
            raise ValueError(f"RewardTrainConfig.checkpoint_every={self.checkpoint_every}; must be >= 0 (0: never)")
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RewardTrainConfig.{name}={getattr(self, name)}; must be >= 1")
        if self.batch_size < 2:
            raise ValueError("RewardTrainConfig.batch_size must be >= 2 (one expert, one negative)")


def train_reward(
    reward_model: RewardModel,
    policy: PreTrainedModel,
    train_records: list[DiscRecord],
    val_records: list[DiscRecord],
    pad_id: int,
    rule: StepRule,
    cfg: RewardTrainConfig = RewardTrainConfig(),
    metrics_path: str | Path | None = None,
    progress: bool = True,
    params: list[torch.nn.Parameter] | None = None,
    dist: Dist = Dist(),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train the discriminator in place; keeps the weights of the best validation AUROC (a pass whose
    AUROC is NaN, or whose weights are not all finite, never counts: none that does raises `DivergedError`).
    A step with a non-finite loss or gradient is skipped and counted (`skipped_steps` in the rows);
    `rairl.train.guard.MAX_NONFINITE_STEPS` in a row raise `DivergedError`.

    `params`: what trains (default: every parameter of `reward_model` that requires grad; a
    LoRA reward on a shared base passes its adapter and heads).

    Writes one JSON line per evaluation to `metrics_path` when given (rank 0). Returns
    the best validation metrics.

    With `checkpoint_dir`, a checkpoint every `cfg.checkpoint_every` steps and at the last (the trained
    parameters, optimiser, random states, skip counters, the best AUROC so far with its step and weights);
    `resume=True` continues from the newest readable one there (a finished run returns at once; none: from
    the start) with the log's later rows dropped, to the weights and metrics of a run never stopped. Without
    `resume` the checkpoints already in `checkpoint_dir` are removed.
    """
    experts = [r for r in train_records if r.label == 1]
    negatives = [r for r in train_records if r.label == 0]
    if not experts or not negatives:
        raise ValueError(f"train_reward: need experts and negatives, got {len(experts)} and {len(negatives)}")
    rng = random.Random(cfg.seed)
    policy.eval()
    params = params or [p for p in reward_model.parameters() if p.requires_grad]
    device = params[0].device  # batches go where the reward model is; the policy must be there too
    if next(policy.parameters()).device != device:
        raise ValueError(f"train_reward: the policy is on {next(policy.parameters()).device}, the reward model on {device}")
    if dist.world_size > cfg.batch_size:
        raise ValueError(f"train_reward: {dist.world_size} processes for batches of {cfg.batch_size} sequences")
    reward = RoutedReward(wrap(TrainModule(None, reward_model), replace(dist, engine="ddp")), reward_model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best: dict[str, float] = {"auroc": -1.0}
    best_state, row, start = None, None, 0
    guard = StepGuard("RewardTrainConfig.lr", cfg.lr)
    names = _names(reward_model, params)
    checkpoints = LoopCheckpoints(checkpoint_dir, cfg, reward_model, opt, dist)

    def best_layout(meta: dict) -> dict:  # a checkpoint holds the best weights once a validation pass counted
        return {"best": {n: torch.empty_like(p) for n, p in zip(names, params, strict=True)}} if meta["has_best"] else {}
    found = checkpoints.start(resume, rng, best_layout)
    if found:
        saved, extra = found
        start, best, row = saved["step"], saved["best"], saved["row"]
        best_state = [extra["best"][n] for n in names] if extra else None
        guard.load_state(saved["guard"])
    if resume and metrics_path and dist.main:  # rows after the checkpoint (all, when the run stopped before its first) are redone
        drop_rows_after(Path(metrics_path), "step", start)
    bar = tqdm(range(start, cfg.steps), desc="reward", initial=start, total=cfg.steps, disable=not (progress and dist.main))
    for step in bar:
        reward_model.train()
        half = cfg.batch_size // 2
        records = rng.sample(experts, min(half, len(experts))) + rng.sample(negatives, min(cfg.batch_size - half, len(negatives)))
        records = [records[k] for k in dist.share(len(records))]
        batch, layout, labels, valid = discriminator_batch(records, pad_id, rule, device)
        counts = class_counts(labels, valid, dist)
        with torch.no_grad():
            policy_logp = per_token_logprobs(policy, batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
        loss, _ = discriminator_loss(reward, batch, layout, policy_logp, labels, valid, class_counts=counts)
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step, cfg.lr, cfg.warmup, cfg.steps)
        opt.zero_grad(set_to_none=True)
        dist.scale_loss(loss).backward()
        loss_value = float(dist.all_sum(loss.detach().double()))
        guard.step(opt, params, loss_value, cfg.grad_clip, f"reward training step {step + 1}")
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val = evaluate_discriminator(reward_model, partial(per_token_logprobs, policy), val_records, pad_id, rule, cfg.eval_batch_size)
            row = {"step": step + 1, "loss": loss_value, "val_acc": val["acc"], "val_auroc": val["auroc"],
                   "skipped_steps": guard.skipped}
            if metrics_path and dist.main:
                log_row(metrics_path, row)
            finite = math.isfinite(val["auroc"]) and nonfinite_tensor((str(k), p) for k, p in enumerate(params)) is None
            if finite and val["auroc"] > best["auroc"]:
                best = {**val, "step": step + 1}
                best_state = [p.detach().clone() for p in params]
        if checkpoints.due(step + 1) or step + 1 == cfg.steps:
            checkpoints.save(step + 1, {"best": best, "has_best": best_state is not None, "row": row, "guard": guard.state()},
                             rng_states(rng), {"best": dict(zip(names, best_state, strict=True))} if best_state else None)
    if best_state is None:
        raise DivergedError(f"reward training: no validation pass had finite weights and a finite AUROC (the last: "
                            f"{row['val_auroc']}); lower the learning rate RewardTrainConfig.lr (now {cfg.lr:g})")
    with torch.no_grad():
        for p, best_p in zip(params, best_state, strict=True):
            p.copy_(best_p)
    reward_model.eval()
    return best


def _names(module: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    """The name in `module` of each of `params` (what a checkpoint files them under)."""
    named = {id(p): n for n, p in module.named_parameters()}
    missing = [k for k, p in enumerate(params) if id(p) not in named]
    if missing:
        raise ValueError(f"train_reward: params[{missing[0]}] is not a parameter of the reward model")
    return [named[id(p)] for p in params]
