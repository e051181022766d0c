"""One post-training run on the embedded task: a method from a warm start to a token budget, then evaluation.

    warm start (built once per seed, saved under a warm directory, shared by every method)
    -> one method to a token budget: R-AIRL (`airl`), `frozen` reward, `outcome` GRPO, or more `sft`
    -> held-out evaluation: pass@1, pass@k, completion length, format validity

`rairl train` runs one; `rairl compare` runs every method for several seeds. Every stage reads
the previous one from disk, so a killed run continues with `resume=True`.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..airl.discriminator import DiscRecord
from ..airl.layout import step_rule
from ..data import TaskConfig, make_splits
from ..data.task import quick_task_config
from ..eval.discriminator import evaluate_steps
from ..eval.policy import PolicyEvalConfig, evaluate_policy
from ..metrics import write_metrics
from ..models.adapters import POLICY, AdapterConfig, SharedBaseModels, active_adapter, load_base
from ..models.batch import encode_completions, encode_prompts
from ..models.lm import load_causal_lm, per_token_logprobs
from ..models.modelset import ModelSet
from ..models.reward import RewardModel
from .sft import SFTConfig, train_sft
from .trainer import AIRLTrainer, TrainConfig
from .warm_start import (
    WarmStart,
    WarmStartConfig,
    build_warm_start,
    load_warm_start,
    quick_warm_config,
    timed_log,
)


@dataclass(frozen=True)
class RunConfig:
    """What a post-training run is made of (shared by `rairl train` and `rairl compare`)."""

    task: TaskConfig = field(default_factory=TaskConfig)  # the embedded task's splits and problem sizes
    warm: WarmStartConfig = field(default_factory=WarmStartConfig)  # tokenizer, SFT policy, initial reward
    train: TrainConfig = field(default_factory=TrainConfig)  # the method and its loop
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)  # held-out evaluation of the policy
    # One frozen base (the SFT policy, NF4 / bf16 / fp32) shared by the policy and the reward
    # through two LoRA adapters (needs rairl[lora]). The reward adapter starts from the base,
    # not from the warm start's full-weight reward: give it train.disc_warmup_iters.
    lora: bool = False
    adapters: AdapterConfig = field(default_factory=AdapterConfig)  # the shared base and its adapters (with lora)

    def __post_init__(self) -> None:
        if self.train.method == "sft" and not self.train.token_budget:
            raise ValueError("train.method='sft' needs train.token_budget > 0 (the matched budget)")
        if self.lora and self.train.method == "sft":
            raise ValueError("lora=True applies to the RL methods; train.method='sft' trains the full model")
        for name in ("negative_prompts", "disc_experts"):
            if getattr(self.warm, name) > self.task.n_train:
                raise ValueError(f"warm.{name}={getattr(self.warm, name)} > task.n_train={self.task.n_train}")


def quick_run_config(method: str = "airl") -> RunConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return RunConfig(
        task=quick_task_config(), warm=quick_warm_config(),
        train=TrainConfig(method=method, iterations=6, token_budget=3000, prompts_per_iter=4, group_size=4, max_new_tokens=32,
                          minibatch_size=8, checkpoint_every=2, eval_every=2),
        eval=PolicyEvalConfig(problems=8, samples=2),
    )


def warm_start_for(cfg: RunConfig, seed: int, warm_dir: Path, progress: bool = True) -> WarmStart:
    """The run's warm start: loaded from `warm_dir` when one is there (it must match the run's seed, task
    and warm config), else built from the task's splits and saved there."""
    provenance = {"seed": seed, "task": asdict(cfg.task)}
    if (warm_dir / "warm.json").exists():
        warm = load_warm_start(warm_dir)
        if warm.provenance != json.loads(json.dumps(provenance)) or warm.cfg != cfg.warm:  # tuples as warm.json holds them
            raise ValueError(f"{warm_dir / 'warm.json'}: this warm start was made with another seed, task or warm config "
                             f"(its provenance: {warm.provenance}); give the run its own --warm directory")
        return warm
    t0 = time.time()
    splits = make_splits(seed, cfg.task)
    warm = build_warm_start(cfg.warm, seed, [p.example() for p in splits.train], [p.example() for p in splits.val], warm_dir,
                            random.Random(seed), provenance, log=timed_log("warm ", progress), progress=progress)
    warm.save(warm_dir, seconds=time.time() - t0)
    return warm


def post_train(cfg: RunConfig, seed: int, out: Path, warm_dir: Path | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Warm start (reused from `warm_dir` when it holds one), post-train with `cfg.train.method`, evaluate.

    Writes `out/config.json` (the run's `seed` and `cfg`), `out/train_log.jsonl` or `out/sft_log.jsonl`,
    checkpoints, the trained models and `out/metrics.json`; returns the metrics.
    """
    t0 = time.time()
    if not resume and ((out / "metrics.json").exists() or any((out / "checkpoints").glob("iter_*.pt"))):
        raise ValueError(f"{out} already holds a run (metrics.json or checkpoints); continue it with --resume {out} "
                         "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    warm_dir = warm_dir or out / "warm"
    warm = warm_start_for(cfg, seed, warm_dir, progress)
    if not resume:
        (out / "config.json").write_text(json.dumps({"seed": seed, **asdict(cfg)}, indent=2))
        (out / "train_log.jsonl").unlink(missing_ok=True)
    tokenizer, policy, reward, method = warm.tokenizer, warm.policy, warm.reward_model, cfg.train.method
    splits = make_splits(seed, cfg.task)
    if method == "sft":
        tokens = continue_sft(cfg, seed, policy, tokenizer, splits.train, out, progress)[-1]["tokens"]
    else:
        if cfg.lora:
            models = SharedBaseModels(load_base(warm.policy_path, cfg.adapters), reward.cfg, cfg.adapters)
            policy, reward = models.model, models.reward
        else:
            models = ModelSet(policy, reward, with_reference=cfg.train.kl_coef > 0)
        prompts = encode_prompts(tokenizer, [p.question() for p in splits.train], max_prompt_tokens=cfg.warm.max_prompt_tokens)
        trainer = AIRLTrainer(models, tokenizer, prompts, warm.train_records, cfg.train, answers=[str(p.values()[-1]) for p in splits.train],
                              val_records=warm.val_records, out_dir=out, progress=progress)
        if resume:
            trainer.resume()
        trainer.train()
        tokens = trainer.tokens_trained
    if cfg.lora:
        models.save_pretrained(out / "adapters")  # adapters/policy, adapters/reward over the warm start's base policy
    else:
        policy.save_pretrained(out / "policy")
        tokenizer.save_pretrained(out / "policy")
        if method == "airl":
            reward.save_pretrained(out / "reward")
    with active_adapter(policy, POLICY) if cfg.lora else contextlib.nullcontext():
        ev = evaluate_on_test(cfg, seed, policy, tokenizer, progress)
    metrics = {"method": method, "seed": seed, "tokens_trained": tokens, "verifier_free": method != "outcome", **ev}
    if method in ("airl", "frozen") and not cfg.lora:  # the reward the policy was trained on, at the end
        metrics["reward_steps"] = reward_step_metrics(cfg, seed, reward, load_causal_lm(warm.policy_path), tokenizer, warm.val_records)
    metrics["seconds"] = time.time() - t0
    write_metrics(out / "metrics.json", metrics)
    return metrics


def evaluate_on_test(cfg: RunConfig, seed: int, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, progress: bool = True) -> dict:
    """`evaluate_policy` on the run's held-out problems with its fixed sampling seed (every method alike)."""
    test = make_splits(seed, cfg.task).test[: cfg.eval.problems]
    return evaluate_policy(policy, tokenizer, [p.question() for p in test], [str(p.values()[-1]) for p in test],
                           cfg.eval.samples, cfg.train.max_new_tokens, seed=seed + 10_000, progress=progress)


def reward_step_metrics(cfg: RunConfig, seed: int, reward: RewardModel, warm_policy: PreTrainedModel,
                        tokenizer: PreTrainedTokenizerBase, val_records: list[DiscRecord]) -> dict:
    """`evaluate_steps` of `reward` on the warm start's validation samples against their gold solutions.

    The samples are `warm_policy`'s (the warm start's, before any post-training), so ℓ and log π
    are taken under it; the embedded task has one correct solution text per problem.
    """
    policy = warm_policy.to(next(reward.parameters()).device).eval()
    val = make_splits(seed, cfg.task).val
    prompt_ids = encode_prompts(tokenizer, [p.question() for p in val], max_prompt_tokens=cfg.warm.max_prompt_tokens)
    references = {tuple(ids): p.solution_steps() for ids, p in zip(prompt_ids, val, strict=True)}
    return evaluate_steps(reward, partial(per_token_logprobs, policy), val_records, references, tokenizer, step_rule(reward.cfg, tokenizer))


def continue_sft(cfg: RunConfig, seed: int, policy, tokenizer, problems, out: Path, progress: bool) -> list[dict]:
    """The SFT baseline: more SFT on the demonstrations, to the same token budget as the RL methods."""
    examples = [p.example() for p in problems]
    p_ids = encode_prompts(tokenizer, [e.prompt for e in examples], max_prompt_tokens=cfg.warm.max_prompt_tokens)
    c_ids = encode_completions(tokenizer, [e.completion for e in examples], max_completion_tokens=cfg.warm.max_completion_tokens)
    batch_size = 64
    mean_len = sum(map(len, c_ids)) / len(c_ids)
    budget = cfg.train.token_budget
    steps = math.ceil(budget / (batch_size * mean_len)) + 1  # the schedule ends where the budget does
    sft = SFTConfig(steps=steps, batch_size=batch_size, lr=cfg.train.sft_lr, warmup=max(1, steps // 20), log_every=max(1, steps // 10),
                    seed=seed, max_tokens=budget)
    return train_sft(policy, p_ids, c_ids, tokenizer.pad_token_id, sft, metrics_path=out / "sft_log.jsonl", progress=progress)
