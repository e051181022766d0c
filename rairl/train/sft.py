"""Supervised fine-tuning on expert traces: the policy warm start (loss on completion tokens only).

Under several processes (`dist`) each batch is drawn once, split over the ranks, and its loss
divides by the batch's global token count; the policy trains under DDP (its replicas also
serve the stop check's sampling on every rank).

Given a checkpoint folder, `train_sft` checkpoints every `checkpoint_every` steps and when it ends
(`rairl.train.checkpoint`); `resume=True` continues from the newest readable one, bit-exact.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..configs import check_at_least, check_finite
from ..dist import Dist
from ..models.batch import collate
from ..models.engine import TrainModule, wrap
from ..models.lm import per_token_logprobs
from ..tracking import log_row
from .checkpoint import LoopCheckpoints, drop_rows_after, rng_states
from .guard import StepGuard


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 700  # optimiser steps (0: no SFT, e.g. for an instruction-tuned policy)
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak learning rate (linear warm-up, cosine decay to 10%)
    warmup: int = 50  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    log_every: int = 50  # steps between rows of the JSONL log
    seed: int = 0  # order of the training batches
    # Early stop for a useful-but-imperfect warm start: every `check_every` steps from
    # `check_after` on, `stop_check(step)` (supplied by the caller, e.g. sampled accuracy
    # on validation problems >= a target) may end training. 0 disables the check.
    check_every: int = 0
    check_after: int = 0  # first step at which the early-stop check may run
    # Matched budgets: stop once this many completion tokens were trained on (0: `steps` only).
    max_tokens: int = 0
    checkpoint_every: int = 100  # steps between resumable checkpoints, where the caller keeps them (0: never)

    def __post_init__(self) -> None:
        for name in ("batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name}={getattr(self, name)}; must be >= 1")
        for name in ("steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"SFTConfig.{name}={getattr(self, name)}; must be >= 0 (0: {'no SFT' if name == 'steps' else 'never'})")
        check_finite(self)
        check_at_least(self, 0, "warmup", "weight_decay", "seed", "check_every", "check_after", "max_tokens")
        check_at_least(self, 0, "lr", "grad_clip", strict=True)


def lr_schedule(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 10% of it at `total`."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    progress = min(1.0, step / max(total - 1, 1))
    return peak * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def completion_nll(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int,
                   engine: torch.nn.Module | None = None, dist: Dist = Dist()) -> torch.Tensor:
    """Mean negative log-likelihood (nats/token) of the completion tokens.

    With `engine` (the `TrainModule` of `model`, possibly DDP-wrapped) the pass runs through it; with
    several processes the sum divides by the token count of every rank's rows together.
    """
    batch = collate(prompt_ids, completion_ids, pad_id).to(next(model.parameters()).device)
    mask = batch.completion_mask()
    if engine is None:
        logp = per_token_logprobs(model, batch.input_ids, batch.attention_mask, score_mask=mask)  # (B, T)
    else:
        logp = engine("policy", batch.input_ids, batch.attention_mask, mask)
    return -(logp * mask).sum() / dist.all_sum(mask.sum().double()).to(logp).clamp(min=1)


def train_sft(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
    cfg: SFTConfig = SFTConfig(),
    metrics_path: str | Path | None = None,
    progress: bool = True,
    stop_check: Callable[[int], bool] | None = None,
    dist: Dist = Dist(),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> list[dict]:
    """Train `model` in place on (prompt, completion) pairs; returns the logged rows (rank 0 writes them).

    A step with a non-finite loss or gradient is skipped (rows count them in `skipped_steps`; a logged
    `loss` averages the steps taken); `rairl.train.guard.MAX_NONFINITE_STEPS` in a row raise `DivergedError`.

    With `cfg.check_every` and `stop_check`, training ends early the first time
    `stop_check(step)` returns True (the model is put back in train mode after each check); under
    several processes every rank runs the check and must reach the same answer. A stateless
    `stop_check` (one whose answer depends only on the step and the weights) keeps a resume bit-exact.

    With `checkpoint_dir`, a checkpoint every `cfg.checkpoint_every` steps and one when training ends
    (weights, optimiser, the batch draw's and torch's random states, counters, rows); `resume=True`
    continues from the newest readable one there (a finished run returns at once; none: from the start)
    with the log's later rows dropped, to the weights and rows of a run never stopped. Without `resume`
    the checkpoints already in `checkpoint_dir` are removed.
    """
    if len(prompt_ids) != len(completion_ids) or not prompt_ids:
        raise ValueError(f"train_sft: {len(prompt_ids)} prompts and {len(completion_ids)} completions")
    if dist.world_size > min(cfg.batch_size, len(prompt_ids)):
        raise ValueError(f"train_sft: {dist.world_size} processes for batches of {min(cfg.batch_size, len(prompt_ids))} sequences")
    engine = wrap(TrainModule(model, None), replace(dist, engine="ddp"))
    progress = progress and dist.main
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    rows: list[dict] = []
    log_path = Path(metrics_path) if metrics_path and dist.main else None

    def emit(row: dict) -> None:  # each row as it comes: a long SFT shows its progress on disk and in the tracker
        rows.append(row)
        if log_path:
            log_row(log_path, row)
    guard = StepGuard("SFTConfig.lr", cfg.lr)
    running, taken, tokens, done, finished = 0.0, 0, 0, 0, False
    checkpoints = LoopCheckpoints(checkpoint_dir, cfg, model, opt, dist)
    found = checkpoints.start(resume, rng)
    if found:
        saved = found[0]
        rows[:], running, taken, tokens, done, finished = saved["rows"], saved["running"], saved["taken"], saved["tokens"], saved["step"], saved["finished"]
        guard.load_state(saved["guard"])
    if resume and log_path:  # rows after the checkpoint (all, when the run stopped before its first) are redone
        drop_rows_after(log_path, "step", done)

    def save(final: bool) -> None:
        checkpoints.save(done, {"rows": rows, "running": running, "taken": taken, "tokens": tokens, "finished": final,
                                "guard": guard.state()}, rng_states(rng))
    model.train()
    bar = tqdm(range(done, done if finished else cfg.steps), desc="sft", initial=done, total=cfg.steps, disable=not progress)
    for step in bar:
        if cfg.max_tokens and tokens >= cfg.max_tokens:
            emit({"step": step, "tokens": tokens, "budget_reached": True})
            break
        idx = rng.sample(range(len(prompt_ids)), min(cfg.batch_size, len(prompt_ids)))  # the same on every rank
        tokens += sum(len(completion_ids[i]) for i in idx)
        mine = [idx[k] for k in dist.share(len(idx))]
        loss = completion_nll(model, [prompt_ids[i] for i in mine], [completion_ids[i] for i in mine], pad_id, engine, dist)
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step, cfg.lr, cfg.warmup, cfg.steps)
        opt.zero_grad(set_to_none=True)
        dist.scale_loss(loss).backward()
        loss_value = float(dist.all_sum(loss.detach().double()))
        if guard.step(opt, model.parameters(), loss_value, cfg.grad_clip, f"SFT step {step + 1}"):
            running, taken = running + loss_value, taken + 1
        done = step + 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            emit({"step": step + 1, "loss": running / taken if taken else float("nan"), "lr": opt.param_groups[0]["lr"],
                  "tokens": tokens, "skipped_steps": guard.skipped})
            running, taken = 0.0, 0
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
        if stop_check and cfg.check_every and step + 1 >= cfg.check_after and (step + 1) % cfg.check_every == 0:
            stop = stop_check(step + 1)
            model.train()
            if stop:
                emit({"step": step + 1, "stopped_early": True, "tokens": tokens})
                break
        if done < cfg.steps and checkpoints.due(done):
            save(final=False)
    if not finished:
        save(final=True)
    model.eval()
    return rows


def train_sft_es(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
    cfg: SFTConfig,
    validate: Callable[[], float],
    patience: int,
    seconds: float = 0.0,
    start_score: float | None = None,
    metrics_path: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """SFT with its checkpoint chosen on validation: every `cfg.check_every` steps `validate()` (higher
    is better) scores the model; training stops after `patience` checks without a better score (0: never,
    the whole schedule runs), at `cfg.steps`, or once `seconds` of wall-clock have passed (0: no limit). The model ends with the
    best checked weights; the starting ones (check 0, scored `start_score` or `validate()`) count.

    Returns {"best_step", "best_val", "checks": [[step, score], ...], "tokens", "steps"}.
    """
    if cfg.check_every < 1 or patience < 0:
        raise ValueError(f"train_sft_es needs SFTConfig.check_every >= 1 and patience >= 0 (0: the whole schedule), not "
                         f"{cfg.check_every} and {patience}")
    t0 = time.time()
    start = validate() if start_score is None else start_score
    state = {"best": start, "best_step": 0, "weights": copy.deepcopy(model.state_dict()), "since": 0, "checks": [[0, start]]}

    def check(step: int) -> bool:
        score = validate()
        state["checks"].append([step, score])
        if score > state["best"]:
            state.update(best=score, best_step=step, weights=copy.deepcopy(model.state_dict()), since=0)
        else:
            state["since"] += 1
        if progress:
            print(f"  sft step {step}: val {score:.3f} (best {state['best']:.3f} at step {state['best_step']})", flush=True)
        return bool(patience and state["since"] >= patience) or bool(seconds and time.time() - t0 >= seconds)

    es_cfg = replace(cfg, check_after=max(cfg.check_after, cfg.check_every))
    rows = train_sft(model, prompt_ids, completion_ids, pad_id, es_cfg, metrics_path=metrics_path, progress=progress, stop_check=check)
    model.load_state_dict(state["weights"])
    tokens = max((r.get("tokens", 0) for r in rows), default=0)
    return {"best_step": state["best_step"], "best_val": state["best"], "checks": state["checks"], "tokens": tokens,
            "steps": max((r["step"] for r in rows), default=0)}
