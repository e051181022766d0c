"""`rairl train`: the alternating R-AIRL loop, read top to bottom like the paper.

Each iteration:

    1. rollout        G completions for each of B prompts from the policy
    2. discriminator  n_disc steps of class-balanced BCE on ℓ: experts (label 1) vs
                      this rollout and perturbed experts (label 0)
    3. rewards        r_k = ℓ_k = f_k − log π(a_k|s_k) per action at the reward's granularity
                      (or r_k = f_k with policy_reward="f")
    4. advantages     `step`: discounted reward-to-go with a group baseline (default);
                      `sequence`: GRPO group-normalised sum
    5. PPO            `ppo_epochs` passes over minibatches of the clipped surrogate
                      (+ k3 KL to the reference, + entropy bonus), gradient clipping
    6. log            one JSONL row; an atomic checkpoint every `checkpoint_every` iterations

Methods in the same loop (budgets counted in policy tokens trained on):
`airl` (the above), `frozen` (step 2 skipped: the reward stays as trained
against the SFT policy), `outcome` (r = 1 if the final answer matches the gold
answer, else 0, one action per completion: the verifier reference; it reads
answers, the others never do). The SFT baseline is `rairl.train.sft` run to the
same token budget.

Several processes (`torchrun`, `accelerate launch`; `dist`): every rank samples whole prompt
groups with per-group seeds and the rollout is gathered, so every rank holds all of it; each
discriminator batch and PPO minibatch (one global draw) is split over the ranks, and every
loss divides by global counts. The rows it logs are those of one process, to rounding.

Departures from the paper: the discriminator's negatives also include
perturbed expert traces (negative from their first wrong step on); every loss
is a token-level masked mean over the minibatch; the entropy bonus uses the
sampled estimate of `rairl.rl.ppo.sampled_entropy`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..airl.discriminator import (
    DiscRecord,
    class_counts,
    discriminator_batch,
    discriminator_loss,
    discriminator_terms,
)
from ..airl.layout import ActionLayout, action_layout, step_rule
from ..configs import check_at_least, check_finite
from ..data import answer_kind, answers_match, extract_answer
from ..dist import Dist
from ..eval.discriminator import evaluate_discriminator
from ..kernels.segments import StepRule
from ..models.batch import TokenBatch, collate
from ..models.modelset import ModelSet
from ..models.rollout import RolloutConfig, make_sampler
from ..models.sampling import mix_seed
from ..rl.advantages import broadcast_to_tokens, masked_mean, sequence_advantages, step_advantages
from ..rl.ppo import policy_loss, sampled_entropy
from ..tracking import log_row, log_table
from .checkpoint import (
    check_config,
    drop_rows_after,
    load_checkpoint,
    load_newest,
    restore_rng,
    rng_states,
    save_checkpoint,
)
from .folder import folder_run_id
from .guard import StepGuard
from .samples import sample_rows

# Every post-training method; `sft` is continued SFT (`rairl.train.sft`), the others run this loop.
METHODS = ("sft", "airl", "frozen", "outcome")
ADVANTAGES = ("step", "sequence")
OPERATORS = ("ppo", "rft")
# Fields a resumed run may change: how long it runs and how often it saves or logs, never what it computes.
RESUMABLE_CHANGES = ("iterations", "token_budget", "checkpoint_every", "keep_checkpoints", "eval_every", "log_samples")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the loop; `rairl train` builds its options from these fields."""

    # airl | frozen (reward fixed) | outcome (gold-answer reward, reads answers) | sft (more SFT on the
    # demonstrations to the same token budget, with `sft_lr`; run by `rairl.train.run`, not this loop)
    method: str = "airl"
    # ppo: this loop (clipped PPO; advantages="sequence" is GRPO); rft: reward-ranked fine-tuning (expert
    # iteration, `rairl.train.rft`, set by the `rft` options): airl re-trains the reward each round, frozen
    # keeps it, outcome keeps samples with the gold answer
    operator: str = "ppo"
    iterations: int = 40  # upper bound on iterations
    token_budget: int = 0  # stop once this many policy tokens were trained on (0: iterations only)
    prompts_per_iter: int = 16  # B
    group_size: int = 8  # G: samples per prompt
    max_new_tokens: int = 64  # sampling limit per completion (the loop samples at temperature 1, the policy it trains)
    # discriminator
    n_disc: int = 1  # discriminator steps per iteration (airl only)
    disc_batch_size: int = 32  # sequences per discriminator step, half expert
    disc_lr: float = 1e-4  # discriminator (reward model) AdamW learning rate
    disc_warmup_iters: int = 0  # first iterations update the discriminator only
    eval_every: int = 10  # iterations between reward-model validation AUROC passes (0: never)
    # rows of prompt / completion / per-step reward / advantage written to samples.jsonl (and to the
    # tracker as a table) every eval_every iterations (0: none)
    log_samples: int = 0
    # policy
    # What the policy maximises per action: "ell" = f − log π (AIRL's log D − log(1 − D), i.e. f plus
    # an entropy bonus of weight 1 sampled as −log π), or "f" = the shaped reward alone (any entropy
    # bonus then comes from entropy_coef). Ignored by method="outcome".
    policy_reward: str = "ell"
    advantages: str = "step"  # step | sequence
    gamma: float = 1.0  # discount of the reward-to-go (step advantages)
    ppo_epochs: int = 2  # passes over each rollout
    minibatch_size: int = 64  # sequences per PPO minibatch
    lr: float = 1e-4  # policy AdamW learning rate (constant after the warm-up)
    lr_warmup_steps: int = 0  # policy optimiser steps of linear lr warm-up (Adam's first steps move every weight by ≈ lr)
    sft_lr: float = 1e-3  # method="sft" only: peak learning rate of the continued SFT
    clip_eps: float = 0.2  # PPO ratio clip: [1 - clip_eps, 1 + clip_eps]
    kl_coef: float = 0.0  # k3 KL to the reference policy; > 0 keeps a reference
    entropy_coef: float = 0.0  # weight of the sampled entropy bonus
    grad_clip: float = 1.0  # max gradient norm (policy and discriminator)
    # AdamW eps of both optimisers. A weight whose true gradient is ~0 moves by lr·sign(rounding noise)
    # at 1e-8: runs that differ only in rounding (another world size) drift apart by ~lr there.
    adam_eps: float = 1e-8
    # bookkeeping
    checkpoint_every: int = 5  # iterations between checkpoints (0: never)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    seed: int = 0  # prompt draws, sampling and minibatch order of the loop

    def __post_init__(self) -> None:
        check_finite(self)
        check_at_least(self, 0, "disc_lr", "clip_eps", "grad_clip", strict=True)
        check_at_least(self, 0, "seed")
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig.method={self.method!r}; choose one of {METHODS}")
        if self.operator not in OPERATORS:
            raise ValueError(f"TrainConfig.operator={self.operator!r}; choose one of {OPERATORS}")
        if self.policy_reward not in ("ell", "f"):
            raise ValueError(f"TrainConfig.policy_reward={self.policy_reward!r}; choose 'ell' or 'f'")
        if self.advantages not in ADVANTAGES:
            raise ValueError(f"TrainConfig.advantages={self.advantages!r}; choose one of {ADVANTAGES}")
        for name in ("iterations", "prompts_per_iter", "group_size", "max_new_tokens", "disc_batch_size",
                     "ppo_epochs", "minibatch_size", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}; must be >= 1")
        for name in ("token_budget", "n_disc", "disc_warmup_iters", "lr_warmup_steps", "eval_every", "log_samples", "checkpoint_every",
                     "kl_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}; must be >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"TrainConfig.gamma={self.gamma}; must be in [0, 1]")
        if self.log_samples and (self.eval_every == 0 or self.method == "sft" or self.operator != "ppo"):
            raise ValueError(f"TrainConfig.log_samples={self.log_samples} logs the PPO loop's rollouts every eval_every "
                             f"iterations: it needs operator='ppo', a method other than 'sft' and eval_every >= 1")
        if self.adam_eps <= 0:
            raise ValueError(f"TrainConfig.adam_eps={self.adam_eps}; must be > 0")
        if self.lr <= 0 or self.sft_lr <= 0:
            raise ValueError(f"TrainConfig: lr={self.lr} and sft_lr={self.sft_lr} must be > 0")


@dataclass
class Rollout:
    """The B·G sampled completions of one iteration, G consecutive rows per prompt."""

    prompt_index: list[int]  # (B·G,) index into the trainer's prompts
    completions: list[list[int]]  # token ids, EOS included when the policy stopped
    batch: TokenBatch  # (B·G, T)
    layout: ActionLayout  # actions at the reward's granularity
    old_logp: torch.Tensor | None  # (B·G, T) policy log-probs at sampling time; None: taken from the one update
    ref_logp: torch.Tensor | None  # (B·G, T) reference log-probs when kl_coef > 0
    sampler_logp: torch.Tensor | None = None  # (B·G, T) the rollout engine's own log-probs of the sampled tokens
    is_weight: torch.Tensor | None = None  # (B·G, T) min(π_trainer / π_sampler, is_cap) per token; None: 1


class AIRLTrainer:
    """The loop over a `ModelSet` (or `SharedBaseModels`); `train()` runs it, `iteration()` does one."""

    def __init__(
        self,
        models: ModelSet,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[list[int]],
        disc_records: Sequence[DiscRecord],
        cfg: TrainConfig,
        answers: Sequence[str] | None = None,
        val_records: Sequence[DiscRecord] = (),
        out_dir: str | Path | None = None,
        progress: bool = True,
        dist: Dist = Dist(),
        rollout: RolloutConfig = RolloutConfig(),
    ):
        if cfg.method == "sft" or cfg.operator != "ppo":
            raise ValueError(f"method={cfg.method!r}, operator={cfg.operator!r}: continued SFT and rft run in rairl.train.run, not this loop")
        if cfg.method == "outcome" and (answers is None or len(answers) != len(prompts)):
            raise ValueError("method='outcome' needs one gold answer per prompt")
        if cfg.method == "airl" and not any(r.label == 1 for r in disc_records):
            raise ValueError("method='airl' needs expert records (label 1) for the discriminator")
        self.models, self.tokenizer, self.cfg = models, tokenizer, cfg
        self.prompts, self.answers = [list(p) for p in prompts], answers
        self.experts = [r for r in disc_records if r.label == 1]
        # perturbed experts (and any earlier policy samples given): replayed beside each rollout
        self.fixed_negatives = [r for r in disc_records if r.label == 0]
        self.val_records = list(val_records)
        self.out_dir = Path(out_dir) if out_dir else None
        self.dist = dist
        self.progress = progress and dist.main
        if dist.world_size > min(cfg.minibatch_size, cfg.disc_batch_size):
            raise ValueError(f"{dist.world_size} processes: minibatch_size={cfg.minibatch_size} and disc_batch_size="
                             f"{cfg.disc_batch_size} must each be at least the number of processes")
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        if cfg.method != "outcome" and models.reward is None:
            raise ValueError(f"method={cfg.method!r} needs a reward model; only method='outcome' runs without one")
        self.rule: StepRule = StepRule("whole") if cfg.method == "outcome" else step_rule(models.reward.cfg, tokenizer)
        models.parallelize(dist)  # before the optimisers: FSDP2 replaces the parameters by shards
        self.reward = models.routed_reward() if models.reward is not None else None
        fused = not (dist.on and dist.engine == "fsdp2")  # the fused CPU AdamW takes plain tensors, not DTensor shards
        self.policy_opt = torch.optim.AdamW(models.policy_parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=0.0, fused=fused)
        self.reward_opt = (torch.optim.AdamW(models.reward_parameters(), lr=cfg.disc_lr, eps=cfg.adam_eps, weight_decay=0.0, fused=fused)
                           if cfg.method == "airl" else None)
        self.device = models.policy_parameters()[0].device  # batches go where the policy is
        elsewhere = {str(p.device) for p in models.reward_parameters()} - {str(self.device)}
        if elsewhere:  # a model on the wrong device is an error, never a silent copy per batch
            raise ValueError(f"AIRLTrainer: the policy is on {self.device}, the reward model on {sorted(elsewhere)}")
        if dist.on and rollout.engine == "vllm":  # vLLM starts a process group of its own in each rank: untested together
            raise ValueError("--rollout.engine vllm runs in one process; under torchrun / accelerate use hf or hf_merged")
        self.rollout_cfg, self.sampler = rollout, make_sampler(rollout, models)
        self.rng = random.Random(cfg.seed)
        self.iteration_done, self.tokens_trained, self.policy_steps = 0, 0, 0
        # non-finite steps are skipped and counted (`skipped_steps`, `disc_skipped_steps` in the rows)
        self.policy_guard, self.disc_guard = StepGuard("TrainConfig.lr", cfg.lr), StepGuard("TrainConfig.disc_lr", cfg.disc_lr)

    # 1. rollout ----------------------------------------------------------------------------
    def rollout(self) -> Rollout:
        cfg = self.cfg
        chosen = self.rng.sample(range(len(self.prompts)), min(cfg.prompts_per_iter, len(self.prompts)))
        mine = [chosen[k] for k in self.dist.share(len(chosen))]  # this rank's whole groups, seeded per group
        samples, logps = self.sampler.sample(
            [self.prompts[i] for i in mine], n_samples=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
            eos_id=self.eos_id, pad_id=self.pad_id, seeds=[mix_seed(cfg.seed, self.iteration_done, i) for i in mine], progress=False,
        )  # called with no prompts too: FSDP2 gathers the weights on every rank together
        prompt_index = [i for i in chosen for _ in range(cfg.group_size)]
        groups = self.dist.gather(list(zip(samples, logps, strict=True)))
        return self.make_rollout(prompt_index, [c for g, _ in groups for c in g], [lp for _, g in groups for lp in g])

    def make_rollout(self, prompt_index: list[int], completions: list[list[int]],
                     sampler_logps: list[list[float]] | None = None) -> Rollout:
        """The rollout of these completions (G consecutive per prompt), with their log-probs at sampling time
        (and, given the rollout engine's own log-probs, its importance weights)."""
        cfg = self.cfg
        batch = collate([self.prompts[i] for i in prompt_index], completions, self.pad_id).to(self.device)
        # One epoch of one minibatch with no reward reading log π: the update's own forward gives
        # the old log-probs (ratio 1, as in GRPO with one iteration), so skip a second forward.
        single_pass = cfg.method == "outcome" and cfg.ppo_epochs == 1 and cfg.minibatch_size >= len(completions)
        with torch.no_grad():
            old_logp = None if single_pass else self._by_rows(self.models.policy_logprobs, batch)
            ref_logp = self._by_rows(self.models.reference_logprobs, batch) if cfg.kl_coef > 0 else None
        rollout = Rollout(prompt_index, completions, batch, action_layout(batch, self.rule), old_logp, ref_logp)
        if sampler_logps is not None:
            rollout.sampler_logp = torch.zeros(batch.input_ids.shape, device=self.device)
            for r, (start, lps) in enumerate(zip(batch.prompt_lens.tolist(), sampler_logps, strict=True)):
                rollout.sampler_logp[r, start : start + len(lps)] = torch.tensor(lps, device=self.device)
            if old_logp is not None and self.rollout_cfg.is_cap > 0:  # truncated importance sampling
                ratio = (old_logp - rollout.sampler_logp).exp().clamp(max=self.rollout_cfg.is_cap)
                rollout.is_weight = torch.where(batch.completion_mask(), ratio, torch.zeros_like(ratio))
        return rollout

    def _by_rows(self, logprobs, batch: TokenBatch) -> torch.Tensor:
        """`logprobs(ids, mask, completion mask)` of every row, `(rows, T)`: each rank scores its share in
        minibatch-sized chunks (the peak stays one minibatch's), then the shares are gathered."""
        scored = batch.completion_mask()
        return self._gather_rows(lambda a, b: logprobs(batch.input_ids[a:b], batch.attention_mask[a:b], score_mask=scored[a:b]),
                                 batch.input_ids.shape[0])

    def _gather_rows(self, fn, n: int) -> torch.Tensor:
        """`fn(start, stop)` -> a tensor whose first dim runs over rows or their actions, for this rank's share of
        `n` rows in minibatch-sized chunks; every rank's results concatenated in row order, on every rank."""
        size, mine = self.cfg.minibatch_size, self.dist.share(n)
        parts = []
        for k in range(math.ceil(math.ceil(n / self.dist.world_size) / size)):  # as many passes on every rank:
            a, b = mine.start + k * size, min(mine.start + (k + 1) * size, mine.stop)  # FSDP2 gathers in each
            part = fn(a, b) if a < b else fn(0, 1)[:0]
            parts.append(part.cpu() if self.dist.on else part)
        local = torch.cat(parts) if parts else torch.zeros(0)
        self.models.reshard()
        return torch.cat(self.dist.gather([local])).to(self.device) if self.dist.on else local

    # 2. discriminator ---------------------------------------------------------------------
    def discriminator_step(self, rollout: Rollout) -> dict[str, float]:
        """One class-balanced BCE step: experts vs this rollout's samples and perturbed experts.

        The batch is drawn once (the same on every rank); each rank takes its share of it, and
        each class's loss divides by that class's global action count.
        """
        half = self.cfg.disc_batch_size // 2
        negatives = [DiscRecord(self.prompts[i], c, label=0) for i, c in zip(rollout.prompt_index, rollout.completions, strict=True)]
        n_pert = min(half // 2, len(self.fixed_negatives))
        records = (self.rng.sample(self.experts, min(half, len(self.experts)))
                   + self.rng.sample(negatives, min(half - n_pert, len(negatives))) + self.rng.sample(self.fixed_negatives, n_pert))
        records = [records[k] for k in self.dist.share(len(records))]
        batch, layout, labels, valid = discriminator_batch(records, self.pad_id, self.rule, self.device)
        pos, counts = labels > 0.5, class_counts(labels, valid, self.dist)
        with torch.no_grad():
            policy_logp = self.models.policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
        self.models.train()
        loss, ell = discriminator_loss(self.reward, batch, layout, policy_logp, labels, valid, class_counts=counts)
        self.reward_opt.zero_grad(set_to_none=True)
        self.dist.scale_loss(loss).backward()
        loss_value = float(self.dist.all_sum(loss.detach().double()))
        self.disc_guard.step(self.reward_opt, self.models.reward_parameters(), loss_value, self.cfg.grad_clip,
                             f"iteration {self.iteration_done + 1}: discriminator step")
        hits = torch.stack([((ell > 0) & valid & pos).sum(), ((ell <= 0) & valid & ~pos).sum()]).double()
        acc = self.dist.all_sum(hits) / counts.clamp(min=1)  # ℓ before the step
        return {"disc_loss": loss_value, "disc_acc": float(acc.mean()), "disc_skipped_steps": self.disc_guard.skipped}

    # 3. rewards ----------------------------------------------------------------------------
    @torch.no_grad()
    def action_rewards(self, rollout: Rollout) -> torch.Tensor:
        """`(A,)` reward per action: ℓ_k (or f_k, per `policy_reward`) for airl/frozen, answer correctness for outcome."""
        if self.cfg.method == "outcome":
            texts = self.tokenizer.batch_decode(rollout.completions, skip_special_tokens=True)
            golds = [self.answers[i] for i in rollout.prompt_index]
            correct = [answers_match(extract_answer(t, kind=answer_kind(g)), g) for t, g in zip(texts, golds, strict=True)]
            return torch.tensor(correct, dtype=torch.float32, device=self.device)[rollout.layout.seq]  # one action per completion
        self.reward.eval()

        def rows(start: int, stop: int) -> torch.Tensor:  # actions are ordered by sequence: row chunks concatenate
            terms = discriminator_terms(self.reward, rollout.batch.rows(start, stop), rollout.layout.rows(start, stop),
                                        rollout.old_logp[start:stop])
            return terms.ell if self.cfg.policy_reward == "ell" else terms.f
        return self._gather_rows(rows, len(rollout.completions))

    # 4. advantages -------------------------------------------------------------------------
    def token_advantages(self, rollout: Rollout, rewards: torch.Tensor) -> torch.Tensor:
        """`(B·G, T)` advantage of every completion token."""
        per_seq = rollout.layout.per_sequence(rewards)
        B, T = rollout.batch.input_ids.shape
        if self.cfg.advantages == "sequence":
            totals = torch.stack([r.sum() for r in per_seq])  # (B·G,)
            adv = sequence_advantages(totals, self.cfg.group_size)
            return adv[:, None] * rollout.batch.completion_mask()
        adv = torch.cat(step_advantages(per_seq, self.cfg.group_size, self.cfg.gamma))  # (A,)
        return broadcast_to_tokens(adv, rollout.layout.start, rollout.layout.end, B * T).view(B, T)

    # 5. PPO --------------------------------------------------------------------------------
    def policy_update(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """`ppo_epochs` passes of clipped-surrogate minibatch steps; returns the mean stats of the steps taken
        and `skipped_steps`, the non-finite steps `StepGuard` skipped so far."""
        cfg, batch = self.cfg, rollout.batch
        mask = batch.completion_mask()  # (B·G, T)
        self.models.train()
        stats: dict[str, list[float]] = {}
        order_rng = torch.Generator().manual_seed(cfg.seed * 7919 + self.iteration_done)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(rollout.completions), generator=order_rng)  # one global permutation
            for start in range(0, len(order), cfg.minibatch_size):
                minibatch = order[start : start + cfg.minibatch_size]
                share = self.dist.share(len(minibatch))
                # A rank whose share is empty still steps with the others: one row, no token counted.
                idx = minibatch[share.start : share.stop] if len(share) else minibatch[:1]
                T = int(batch.seq_lens[idx].max())  # trim the minibatch's padding
                ids, attn, m = batch.input_ids[idx, :T], batch.attention_mask[idx, :T], mask[idx, :T] & (len(share) > 0)
                count = self.dist.all_sum(m.sum().double())  # the minibatch's tokens on every rank
                logp = self.models.policy_logprobs(ids, attn, score_mask=m)
                old = logp.detach() if rollout.old_logp is None else rollout.old_logp[idx, :T]
                loss, st = policy_loss(
                    logp, old, advantages[idx, :T], m, clip_eps=cfg.clip_eps,
                    kl_coef=cfg.kl_coef, logp_ref=None if rollout.ref_logp is None else rollout.ref_logp[idx, :T],
                    entropy=sampled_entropy(logp), entropy_coef=cfg.entropy_coef, count=count,
                )
                self.policy_opt.zero_grad(set_to_none=True)
                self.dist.scale_loss(loss).backward()
                for group in self.policy_opt.param_groups:
                    group["lr"] = self.policy_lr()
                summed = self.dist.all_sum(torch.stack(list(st.values())).double())  # shares of global means
                means = dict(zip(st, summed.tolist(), strict=True))
                if not self.policy_guard.step(self.policy_opt, self.models.policy_parameters(), means["loss"], cfg.grad_clip,
                                              f"iteration {self.iteration_done + 1}: policy step {self.policy_steps + 1}"):
                    continue  # skipped: no tokens trained, no stats
                self.policy_steps += 1
                self.tokens_trained += int(count)
                for k, v in {**means, "grad_norm": self.policy_guard.grad_norm}.items():
                    stats.setdefault(k, []).append(float(v))
        return {**{k: sum(v) / len(v) for k, v in stats.items()}, "skipped_steps": self.policy_guard.skipped}

    def policy_lr(self) -> float:
        """The learning rate of the next policy step: linear warm-up over `lr_warmup_steps`, then `lr`."""
        warmup = self.cfg.lr_warmup_steps
        return self.cfg.lr * min(1.0, (self.policy_steps + 1) / warmup) if warmup else self.cfg.lr

    # one iteration -------------------------------------------------------------------------
    def iteration(self) -> dict[str, float]:
        """Rollout → discriminator → rewards → advantages → PPO; returns the iteration's metrics row."""
        t0 = time.time()
        rollout = self.rollout()
        row: dict[str, float] = {}
        if self.cfg.method == "airl":
            for _ in range(self.cfg.n_disc):
                row.update(self.discriminator_step(rollout))
        rewards = self.action_rewards(rollout)
        mask = rollout.batch.completion_mask()
        row |= {
            "mean_reward": float(rewards.mean()) if len(rewards) else 0.0,
            "mean_len": float(mask.sum(1).float().mean()),
            "stopped_frac": sum(c[-1] == self.eos_id for c in rollout.completions) / len(rollout.completions),
        }
        if rollout.old_logp is not None:
            row["sampled_entropy"] = float(masked_mean(-rollout.old_logp, mask))
            if rollout.sampler_logp is not None:  # nats/token between the rollout engine and the trainer
                row["sampler_gap"] = float(masked_mean((rollout.old_logp - rollout.sampler_logp).abs(), mask))
        advantages = self.token_advantages(rollout, rewards)
        if self.iteration_done >= self.cfg.disc_warmup_iters or self.cfg.method != "airl":
            row |= self.policy_update(rollout, advantages if rollout.is_weight is None else advantages * rollout.is_weight)
            self.sampler.refresh()  # the rollout engine samples the updated policy next
        self.iteration_done += 1
        evaluating = self.cfg.eval_every and self.iteration_done % self.cfg.eval_every == 0
        if evaluating and self.cfg.log_samples and self.out_dir and self.dist.main:
            log_table(self.out_dir / "samples.jsonl", sample_rows(self.tokenizer, rollout.batch, rollout.layout, rewards, advantages,
                                                                   self.cfg.group_size, self.cfg.log_samples, self.iteration_done),
                      self.iteration_done)
        if evaluating and self.val_records and self.models.reward is not None:
            val = evaluate_discriminator(self.reward, self.models.policy_logprobs, self.val_records, self.pad_id, self.rule)
            row |= {"val_auroc": val["auroc"], "val_acc": val["acc"]}
            self.models.reshard()
        return {"iteration": self.iteration_done, "tokens": self.tokens_trained, **row, "seconds": time.time() - t0}

    def done(self) -> bool:
        budget_hit = self.cfg.token_budget and self.tokens_trained >= self.cfg.token_budget
        return bool(budget_hit) or self.iteration_done >= self.cfg.iterations

    def train(self) -> list[dict]:
        """Run (or, after `resume()`, continue) to the budget; log JSONL rows and checkpoints under `out_dir`."""
        rows = []
        if self.out_dir and self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / "train_log.jsonl" if self.out_dir and self.dist.main else None
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration_done, desc=f"train[{self.cfg.method}]", disable=not self.progress)
        while not self.done():
            row = self.iteration()
            rows.append(row)
            if log_path:
                log_row(log_path, row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['mean_reward']:.3f}", len=f"{row['mean_len']:.1f}")
            if self.out_dir and self.cfg.checkpoint_every and self.iteration_done % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        if self.out_dir and self.cfg.checkpoint_every:
            self.save_checkpoint()
        return rows

    # checkpoints ---------------------------------------------------------------------------
    def _tensors(self) -> dict:
        """Everything a checkpoint restores that is a tensor: models and optimisers (FQN-keyed, so they
        reshard to another world size)."""
        self.models.reshard()  # the optimisers hold the shards
        opts = {"policy_opt": get_optimizer_state_dict(self.models.module, self.policy_opt)}
        if self.reward_opt:
            opts["reward_opt"] = get_optimizer_state_dict(self.models.module, self.reward_opt)
        return {"models": self.models.state_dict(), **opts}

    def save_checkpoint(self) -> Path:
        """Every rank together: a committed checkpoint folder under `out_dir/checkpoints`."""
        meta = {"iteration": self.iteration_done, "tokens": self.tokens_trained, "policy_steps": self.policy_steps,
                "config": asdict(self.cfg), "run_id": folder_run_id(self.out_dir)}
        return save_checkpoint(self.out_dir / "checkpoints", self.iteration_done, self._tensors(), meta, rng_states(self.rng), self.dist,
                               keep=self.cfg.keep_checkpoints)

    def resume(self) -> int:
        """Load the newest committed checkpoint of this run under `out_dir` (written at any world size; a
        damaged one is passed over for the one before, with a warning); drop log rows written after it.
        Returns its iteration."""
        found = load_newest(self.out_dir / "checkpoints", self._load, folder_run_id(self.out_dir),
                            check=lambda path: check_config(path, self.cfg, RESUMABLE_CHANGES))
        if found is None:
            raise FileNotFoundError(f"{self.out_dir / 'checkpoints'}: no committed checkpoint of this run to resume from")
        if self.dist.main:
            for log_path in (self.out_dir / "train_log.jsonl", self.out_dir / "samples.jsonl"):
                drop_rows_after(log_path, "iteration", self.iteration_done)
        return self.iteration_done

    def _load(self, path: Path) -> None:
        tensors = self._tensors()
        meta, rng = load_checkpoint(path, tensors, self.dist)
        self.models.load_state_dict(tensors["models"])
        set_optimizer_state_dict(self.models.module, self.policy_opt, tensors["policy_opt"])
        if self.reward_opt:
            set_optimizer_state_dict(self.models.module, self.reward_opt, tensors["reward_opt"])
        restore_rng(rng, self.rng)
        self.iteration_done, self.tokens_trained, self.policy_steps = meta["iteration"], meta["tokens"], meta["policy_steps"]
