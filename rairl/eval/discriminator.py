"""Evaluation of the reward model as the discriminator.

    evaluate_discriminator  action-level accuracy and AUROC of ℓ on held-out records
    evaluate_steps          step AUROC of log π, g, f, ℓ: the policy's correct steps against its first wrong ones
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerBase

from ..airl.discriminator import (
    DiscRecord,
    balanced_accuracy,
    discriminator_batch,
    discriminator_terms,
)
from ..data import first_wrong_step, split_steps
from ..kernels.segments import StepRule
from ..metrics import auroc
from ..models.reward import RewardModel


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
        batch, layout, lab, valid = discriminator_batch(records[i : i + batch_size], pad_id, rule, _device(reward_model))
        policy_logp = policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
        ell = discriminator_terms(reward_model, batch, layout, policy_logp).ell
        ells.append(ell[valid])
        labels.append(lab[valid])
    ell, lab = torch.cat(ells), torch.cat(labels)
    return {"acc": balanced_accuracy(ell, lab), "auroc": auroc(ell.tolist(), (lab > 0.5).tolist()), "negatives": int((lab < 0.5).sum())}


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
    min_step: int = 0,
) -> dict:
    """Step AUROC of each score (policy log-prob, g, f, ℓ): the policy's correct steps against its first wrong steps.

    `records`: discriminator records; only the policy samples (label 0, not perturbed) are read.
    `references`: prompt ids -> the unique correct solution's steps (tasks with one solution text,
    such as the embedded task; gold text read for evaluation only). Every step (0-based line index
    `min_step` or later) of a sample up to its first wrong line (`rairl.data.first_wrong_step`) counts; a sample whose lines do not map one
    to one onto its actions, or whose prompt has no reference, is skipped and counted. AUROC is
    None when one class is empty.
    """
    reward_model.eval()
    scored: dict[str, dict[str, list[float]]] = {kind: {k: [] for k in STEP_SCORES} for kind in ("correct", "first_wrong")}
    skipped = 0
    samples = [r for r in records if r.label == 0 and r.negative_from == 0]
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        batch, layout, _, _ = discriminator_batch(chunk, tokenizer.pad_token_id, rule, _device(reward_model))
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
            for j in range(min_step, last + 1):
                kind = "first_wrong" if j == first else "correct"
                for k in STEP_SCORES:
                    scored[kind][k].append(float(scores[k][cu[b] + j]))
    n_ok, n_bad = len(scored["correct"]["g"]), len(scored["first_wrong"]["g"])
    step_auroc = {k: auroc(scored["correct"][k] + scored["first_wrong"][k], [True] * n_ok + [False] * n_bad) if n_ok and n_bad else None
                  for k in STEP_SCORES}
    return {"step_auroc": step_auroc, "correct_steps": n_ok, "first_wrong_steps": n_bad, "skipped_samples": skipped}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
