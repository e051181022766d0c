"""PPO clipped surrogate on token ratios, the k3 KL to the reference, entropy bonus.

    ratio_t = π_new(t) / π_old(t)
    L_clip  = −min(ratio_t·A_t, clip(ratio_t, 1−ε, 1+ε)·A_t)
    KL_k3   = exp(ref_t − logp_t) − (ref_t − logp_t) − 1        (Schulman's k3, ≥ 0)
    loss    = L_clip + kl_coef·KL_k3 − entropy_coef·H

Every term is a token-level masked mean over the whole batch (each valid token
weighs the same, DAPO-style), not a per-sequence mean then a mean over sequences
as in the original GRPO paper.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .advantages import masked_mean


def ppo_clip_loss(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2, count: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate loss, a scalar, and stats `{clipfrac, approx_kl}`.

    `logp_new` `(B, T)` float: log-probs of the sampled tokens under the current
    policy (carries the gradient); `logp_old` `(B, T)`: the same at sampling time
    (treated as a constant); `advantages` `(B, T)` per token; `mask` `(B, T)` bool,
    True at completion tokens.

    `clipfrac`: fraction of valid tokens where the clipped term is the active one
    (ratio > 1+ε with A > 0, or ratio < 1−ε with A < 0), i.e. tokens with zero
    gradient. `approx_kl`: masked mean of `(ratio − 1) − log ratio` (k3 of old to
    new). Stats are detached 0-dim tensors. `count`: the token count every mean divides by
    instead of the mask's (the global one under several processes; `masked_mean`).
    """
    log_ratio = logp_new - logp_old.detach()  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    adv = advantages.detach()
    surr = ratio * adv
    surr_clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = masked_mean(-torch.minimum(surr, surr_clipped), mask, count=count)
    with torch.no_grad():
        clipped = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
        stats = {
            "clipfrac": masked_mean(clipped.float(), mask, count=count),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask, count=count),
        }
    return loss, stats


def kl_k3(logp: Tensor, logp_ref: Tensor, mask: Tensor, count: Tensor | None = None) -> Tensor:
    """k3 estimate of KL(π ‖ π_ref) from sampled tokens, a scalar ≥ 0.

    `logp`, `logp_ref` `(B, T)` float log-probs of the sampled tokens under the
    policy and the reference; `mask` `(B, T)` bool. Masked mean of
    `exp(ref − logp) − (ref − logp) − 1`; the gradient flows through `logp`.
    """
    d = logp_ref.detach() - logp  # (B, T)
    return masked_mean(d.exp() - d - 1.0, mask, count=count)


def sampled_entropy(logp: Tensor) -> Tensor:
    """Per-token entropy estimate from the policy's own samples, with the entropy's gradient.

    `logp` `(B, T)` log-probs of tokens sampled from the policy (with grad). The
    value is `−logp` (E_{a~π}[−log π(a)] = H); the gradient is the score-function
    one, `−logp·∇logp`, whose expectation is ∇H. The fused log-prob path never
    forms the full distribution, so the exact entropy is not at hand.
    """
    surrogate = -logp.detach() * logp
    return -logp.detach() + surrogate - surrogate.detach()


def policy_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float,
    kl_coef: float = 0.0,
    logp_ref: Tensor | None = None,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    count: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`ppo_clip_loss + kl_coef·kl_k3 − entropy_coef·mean entropy`, and detached stats.

    Shapes as in `ppo_clip_loss`; `logp_ref` `(B, T)` reference-policy log-probs,
    needed when `kl_coef > 0`; `entropy` `(B, T)` per-token entropy in nats,
    needed when `entropy_coef > 0`. Stats: `loss`, `pg_loss`, `clipfrac`,
    `approx_kl`, and `kl` / `entropy` when given. `count`: as in `ppo_clip_loss`.
    """
    if kl_coef > 0 and logp_ref is None:
        raise ValueError(f"kl_coef={kl_coef} needs logp_ref (reference log-probs), got None")
    if entropy_coef > 0 and entropy is None:
        raise ValueError(f"entropy_coef={entropy_coef} needs entropy (per-token), got None")
    pg_loss, stats = ppo_clip_loss(logp_new, logp_old, advantages, mask, clip_eps=clip_eps, count=count)
    loss = pg_loss
    stats["pg_loss"] = pg_loss.detach()
    if logp_ref is not None:
        kl = kl_k3(logp_new, logp_ref, mask, count=count)
        loss = loss + kl_coef * kl
        stats["kl"] = kl.detach()
    if entropy is not None:
        ent = masked_mean(entropy, mask, count=count)
        loss = loss - entropy_coef * ent
        stats["entropy"] = ent.detach()
    stats["loss"] = loss.detach()
    return loss, stats
