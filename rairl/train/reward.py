"""Discriminator (reward model) training: class-balanced BCE on ℓ = f − log π.

Positives are expert demonstrations; negatives are policy samples and
perturbed expert traces. A perturbed trace is a negative only from its first
wrong step on: its prefix is the expert's own and carries no signal. The
policy is frozen here; its per-token log-probs are recomputed per batch (no
grad) so the same code serves the alternating AIRL loop.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..airl import ActionLayout, action_layout, discriminator_loss, discriminator_terms
from ..data import first_wrong_step, split_steps
from ..eval.metrics import auroc
from ..models.batch import TokenBatch, collate
from ..models.lm import per_token_logprobs
from ..models.reward import RewardModel
from ..segments import StepRule
from .sft import lr_schedule


@dataclass(frozen=True)
class DiscRecord:
    """One sequence for the discriminator."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: int  # 1 expert, 0 policy sample or perturbed expert
    negative_from: int = 0  # completion token where the negative part starts (perturbed: first wrong step)


@dataclass(frozen=True)
class RewardTrainConfig:
    steps: int = 300  # optimiser steps
    batch_size: int = 32  # sequences per step, half expert and half negative
    lr: float = 3e-4  # peak learning rate (linear warm-up, cosine decay to 10%)
    warmup: int = 20  # warm-up steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm
    eval_every: int = 100  # steps between validation passes (the best one is kept)
    eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RewardTrainConfig.{name}={getattr(self, name)}; must be >= 1")
        if self.batch_size < 2:
            raise ValueError("RewardTrainConfig.batch_size must be >= 2 (one expert, one negative)")


def discriminator_batch(
    records: list[DiscRecord], pad_id: int, rule: StepRule, device: torch.device | str = "cpu"
) -> tuple[TokenBatch, ActionLayout, torch.Tensor, torch.Tensor]:
    """The records as a batch on `device`, their actions, per-action labels and validity (A,)."""
    batch = collate([r.prompt_ids for r in records], [r.completion_ids for r in records], pad_id).to(device)
    layout = action_layout(batch, rule)
    seq_label = torch.tensor([r.label for r in records], dtype=torch.float32, device=batch.input_ids.device)
    neg_from = batch.prompt_lens + torch.tensor([r.negative_from for r in records], device=batch.input_ids.device)  # (B,) position in the row
    T = batch.input_ids.shape[1]
    end_pos = layout.end - layout.seq * T  # (A,) position of each action's last token in its row
    labels = seq_label[layout.seq]
    valid = (labels > 0.5) | (end_pos >= neg_from[layout.seq])
    return batch, layout, labels, valid


@torch.no_grad()
def evaluate_discriminator(
    reward_model: RewardModel,
    policy_logprobs: Callable[..., torch.Tensor],
    records: list[DiscRecord],
    pad_id: int,
    rule: StepRule,
    batch_size: int = 64,
) -> dict[str, float]:
    """Action-level accuracy (class-balanced, ℓ > 0 ⇔ expert), AUROC of ℓ on valid actions, and
    `negatives`, how many negative actions the AUROC ranks.

    `policy_logprobs(input_ids, attention_mask, score_mask=...) -> (B, T)`: the policy's per-token
    log-probs of the completion tokens (the only ones ℓ reads).
    """
    reward_model.eval()
    ells, labels = [], []
    for i in range(0, len(records), batch_size):
        batch, layout, lab, valid = discriminator_batch(records[i : i + batch_size], pad_id, rule)
        policy_logp = policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
        ell = discriminator_terms(reward_model, batch, layout, policy_logp).ell
        ells.append(ell[valid])
        labels.append(lab[valid])
    ell, lab = torch.cat(ells), torch.cat(labels)
    pos, neg = ell[lab > 0.5], ell[lab < 0.5]
    acc = 0.5 * ((pos > 0).float().mean() + (neg <= 0).float().mean())
    return {"acc": float(acc), "auroc": auroc(ell.tolist(), (lab > 0.5).tolist()), "negatives": len(neg)}


STEP_SCORES = ("log_pi", "g", "f", "ell")


@torch.no_grad()
def evaluate_steps(
    reward_model: RewardModel,
    policy_logprobs: Callable[..., torch.Tensor],
    records: list[DiscRecord],
    references: dict[tuple[int, ...], list[str]],
    tokenizer: PreTrainedTokenizerBase,
    rule: StepRule,
    batch_size: int = 64,
) -> dict:
    """Step AUROC of each score (policy log-prob, g, f, ℓ): the policy's correct steps against its first wrong steps.

    `records`: discriminator records; only the policy samples (label 0, not perturbed) are read.
    `references`: prompt ids -> the unique correct solution's steps (tasks with one solution text,
    such as the embedded task; gold text read for evaluation only). Every step of a sample up to
    its first wrong line (`rairl.data.first_wrong_step`) counts; a sample whose lines do not map one
    to one onto its actions, or whose prompt has no reference, is skipped and counted. AUROC is
    None when one class is empty.
    """
    reward_model.eval()
    scored: dict[str, dict[str, list[float]]] = {kind: {k: [] for k in STEP_SCORES} for kind in ("correct", "first_wrong")}
    skipped = 0
    samples = [r for r in records if r.label == 0 and r.negative_from == 0]
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        batch, layout, _, _ = discriminator_batch(chunk, tokenizer.pad_token_id, rule)
        logp = policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
        terms = discriminator_terms(reward_model, batch, layout, logp)
        scores = {"log_pi": terms.f - terms.ell, "g": terms.g_sum, "f": terms.f, "ell": terms.ell}  # (A,) each; ℓ = f − Σ log π
        cu = layout.cu_actions.tolist()
        for b, rec in enumerate(chunk):
            ref = references.get(tuple(rec.prompt_ids))
            lines = split_steps(tokenizer.decode(rec.completion_ids, skip_special_tokens=True))
            if ref is None or len(lines) != cu[b + 1] - cu[b]:
                skipped += 1
                continue
            first = first_wrong_step(lines, ref)
            last = len(lines) - 1 if first is None else first
            for j in range(last + 1):
                kind = "first_wrong" if j == first else "correct"
                for k in STEP_SCORES:
                    scored[kind][k].append(float(scores[k][cu[b] + j]))
    n_ok, n_bad = len(scored["correct"]["g"]), len(scored["first_wrong"]["g"])
    step_auroc = {k: auroc(scored["correct"][k] + scored["first_wrong"][k], [True] * n_ok + [False] * n_bad) if n_ok and n_bad else None
                  for k in STEP_SCORES}
    return {"step_auroc": step_auroc, "correct_steps": n_ok, "first_wrong_steps": n_bad, "skipped_samples": skipped}


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
) -> dict[str, float]:
    """Train the discriminator in place; keeps the weights of the best validation AUROC.

    Writes one JSON line per evaluation to `metrics_path` when given. Returns
    the best validation metrics.
    """
    experts = [r for r in train_records if r.label == 1]
    negatives = [r for r in train_records if r.label == 0]
    if not experts or not negatives:
        raise ValueError(f"train_reward: need experts and negatives, got {len(experts)} and {len(negatives)}")
    rng = random.Random(cfg.seed)
    policy.eval()
    params = [p for p in reward_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best: dict[str, float] = {"auroc": -1.0}
    best_state = None
    log = open(metrics_path, "a") if metrics_path else None  # noqa: SIM115 (closed below)
    bar = tqdm(range(cfg.steps), desc="reward", disable=not progress)
    try:
        for step in bar:
            reward_model.train()
            half = cfg.batch_size // 2
            records = rng.sample(experts, min(half, len(experts))) + rng.sample(negatives, min(cfg.batch_size - half, len(negatives)))
            batch, layout, labels, valid = discriminator_batch(records, pad_id, rule)
            with torch.no_grad():
                policy_logp = per_token_logprobs(policy, batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
            loss = discriminator_loss(reward_model, batch, layout, policy_logp, labels, valid)
            for group in opt.param_groups:
                group["lr"] = lr_schedule(step, cfg.lr, cfg.warmup, cfg.steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                val = evaluate_discriminator(reward_model, partial(per_token_logprobs, policy), val_records, pad_id, rule, cfg.eval_batch_size)
                row = {"step": step + 1, "loss": loss.item(), "val_acc": val["acc"], "val_auroc": val["auroc"]}
                if log:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if val["auroc"] > best["auroc"]:
                    best = {**val, "step": step + 1}
                    best_state = copy.deepcopy(reward_model.state_dict())
    finally:
        if log:
            log.close()
    if best_state is not None:
        reward_model.load_state_dict(best_state)
    reward_model.eval()
    return best

