"""`rairl train`: post-train the policy on the embedded task with the learned reward (or a baseline).

    warm start (once, saved under DIR/warm): tokenizer, SFT policy, reward model trained against it
    -> one method to a token budget: R-AIRL (`airl`), `frozen` reward, `outcome` GRPO, or more `sft`
    -> held-out evaluation: pass@1, pass@k, completion length, format validity

Every stage reads the previous one from disk, so `rairl compare` shares one warm
start between all methods of a seed and `--resume DIR` continues a killed run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .airl import step_rule
from .configs import config_from_dict
from .data import answers_match, extract_answer, make_splits
from .demo import DemoConfig, quick_config, warm_start
from .eval.metrics import write_metrics
from .models.adapters import POLICY, AdapterConfig, SharedBaseModels, active_adapter, load_base
from .models.batch import encode_completions, encode_prompts
from .models.lm import load_causal_lm, per_token_logprobs
from .models.modelset import ModelSet
from .models.reward import RewardModel
from .models.tokenizer import load_tokenizer
from .rl.rollout import sample_completions
from .train.airl import AIRLTrainer, TrainConfig
from .train.reward import DiscRecord, evaluate_steps
from .train.sft import SFTConfig, train_sft

METHODS = ("sft", "airl", "frozen", "outcome")


@dataclass(frozen=True)
class TrainRunConfig:
    """`rairl train`: warm start, one post-training method, evaluation."""

    method: str = "airl"  # sft | airl | frozen | outcome
    warm: DemoConfig = field(default_factory=DemoConfig)  # task, model, SFT warm start, initial reward
    train: TrainConfig = field(default_factory=TrainConfig)  # the RL loop (its `method` is set from `method`)
    sft_lr: float = 1e-3  # peak learning rate of the `sft` baseline's continued training
    eval_problems: int = 200  # held-out test problems
    eval_samples: int = 8  # samples per test problem: pass@1 is their mean, pass@k with k = eval_samples
    # One frozen base (the SFT policy, NF4 / bf16 / fp32) shared by the policy and the reward
    # through two LoRA adapters (needs rairl[lora]). The reward adapter starts from the base,
    # not from the warm start's full-weight reward: give it train.disc_warmup_iters.
    lora: bool = False
    adapters: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TrainRunConfig.method={self.method!r}; choose one of {METHODS}")
        if self.method == "sft" and not self.train.token_budget:
            raise ValueError("TrainRunConfig: method='sft' needs train.token_budget > 0 (the matched budget)")
        if self.lora and self.method == "sft":
            raise ValueError("TrainRunConfig: lora=True applies to the RL methods; method='sft' trains the full model")
        if self.eval_samples < 1 or self.eval_problems < 1:
            raise ValueError("TrainRunConfig: eval_problems and eval_samples must be >= 1")


def quick_run_config(method: str = "airl", seed: int = 0) -> TrainRunConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return TrainRunConfig(
        method=method, warm=quick_config(seed),
        train=TrainConfig(iterations=6, token_budget=3000, prompts_per_iter=4, group_size=4, max_new_tokens=32,
                          minibatch_size=8, checkpoint_every=2, eval_every=2, seed=seed),
        eval_problems=8, eval_samples=2,
    )


# warm start ----------------------------------------------------------------------------------
def prepare_warm(cfg: DemoConfig, warm_dir: Path, progress: bool = True) -> None:
    """Run the warm start and save it: `policy/`, `reward/`, `records.json`, `warm.json`."""
    t0 = time.time()
    warm_dir.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[warm {time.time() - t0:6.1f}s] {msg}", flush=True) if progress else None  # noqa: E731
    warm = warm_start(cfg, warm_dir, random.Random(cfg.seed), log, progress)
    warm.reward_model.save_pretrained(warm_dir / "reward")
    records = {"train": [asdict(r) for r in warm.train_records], "val": [asdict(r) for r in warm.val_records]}
    (warm_dir / "records.json").write_text(json.dumps(records))
    write_metrics(warm_dir / "warm.json", {"config": asdict(cfg), "sft_greedy_pass1": warm.sft_pass1,
                                           "reward_val_auroc": warm.reward_best["auroc"], "seconds": time.time() - t0})


def load_warm(warm_dir: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, RewardModel, list[DiscRecord], list[DiscRecord]]:
    """(tokenizer, SFT policy, reward model, train records, val records) saved by `prepare_warm`."""
    if not (warm_dir / "warm.json").exists():
        raise FileNotFoundError(f"{warm_dir / 'warm.json'}: no finished warm start here")
    records = json.loads((warm_dir / "records.json").read_text())
    return (load_tokenizer(warm_dir / "policy"), load_causal_lm(warm_dir / "policy"), RewardModel.from_pretrained(warm_dir / "reward"),
            [DiscRecord(**r) for r in records["train"]], [DiscRecord(**r) for r in records["val"]])


# evaluation ----------------------------------------------------------------------------------
def evaluate_policy(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], answers: Sequence[str],
    n_samples: int, max_new_tokens: int, seed: int, progress: bool = True,
) -> dict:
    """Sampled (temperature 1) held-out accuracy: pass@1 = mean over samples, pass@k = any of k correct.

    Format-valid: the completion stopped (EOS) and has a `#### N` answer line.
    Also returns `per_problem_pass1`, one value per question, for intervals.
    """
    prompt_ids = encode_prompts(tokenizer, questions, max_prompt_tokens=1024)
    samples = sample_completions(policy, prompt_ids, n_samples=n_samples, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                                 pad_id=tokenizer.pad_token_id, seed=seed, progress=progress)
    per_problem, any_correct, lengths, valid = [], [], [], []
    for group, answer in zip(samples, answers, strict=True):
        texts = tokenizer.batch_decode(group, skip_special_tokens=True)
        extracted = [extract_answer(t) for t in texts]
        correct = [answers_match(a, answer) for a in extracted]
        per_problem.append(sum(correct) / len(correct))
        any_correct.append(any(correct))
        lengths += [len(c) for c in group]
        valid += [bool(c) and c[-1] == tokenizer.eos_token_id and a is not None for c, a in zip(group, extracted, strict=True)]
    return {
        "pass1": sum(per_problem) / len(per_problem), "passk": sum(any_correct) / len(any_correct), "k": n_samples,
        "mean_len": sum(lengths) / len(lengths), "format_valid": sum(valid) / len(valid), "per_problem_pass1": per_problem,
    }


def warm_config(warm_dir: Path) -> DemoConfig:
    """The `DemoConfig` a warm start saved by `prepare_warm` was made with."""
    return config_from_dict(DemoConfig, json.loads((warm_dir / "warm.json").read_text())["config"])


def reward_step_metrics(warm: DemoConfig, reward: RewardModel, warm_policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                        val_records: list[DiscRecord]) -> dict:
    """`evaluate_steps` of `reward` on the warm start's validation samples against their gold solutions.

    The samples are `warm_policy`'s (the warm start's, before any post-training), so ℓ and log π
    are taken under it; the embedded task has one correct solution text per problem.
    """
    policy = warm_policy.to(next(reward.parameters()).device).eval()
    val = make_splits(warm.seed, warm.task).val
    prompt_ids = encode_prompts(tokenizer, [p.question() for p in val], max_prompt_tokens=1024)
    references = {tuple(ids): p.solution_steps() for ids, p in zip(prompt_ids, val, strict=True)}
    return evaluate_steps(reward, partial(per_token_logprobs, policy), val_records, references, tokenizer, step_rule(reward.cfg, tokenizer))


def evaluate_on_test(cfg: TrainRunConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, progress: bool = True) -> dict:
    """`evaluate_policy` on the run's held-out problems with its fixed sampling seed (every method alike)."""
    test = make_splits(cfg.warm.seed, cfg.warm.task).test[: cfg.eval_problems]
    return evaluate_policy(policy, tokenizer, [p.question() for p in test], [str(p.values()[-1]) for p in test],
                           cfg.eval_samples, cfg.train.max_new_tokens, seed=cfg.warm.seed + 10_000, progress=progress)


# one method ----------------------------------------------------------------------------------
def run_train(cfg: TrainRunConfig, out: Path, warm_dir: Path | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Warm start (unless `warm_dir` holds one), post-train with `cfg.method`, evaluate; writes `out/metrics.json`."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    warm_dir = warm_dir or out / "warm"
    if not (warm_dir / "warm.json").exists():
        prepare_warm(cfg.warm, warm_dir, progress)
    if not resume:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        for stale in ("train_log.jsonl",):
            (out / stale).unlink(missing_ok=True)
    tokenizer, policy, reward, train_records, val_records = load_warm(warm_dir)
    splits = make_splits(cfg.warm.seed, cfg.warm.task)
    if cfg.method == "sft":
        rows = _continue_sft(cfg, policy, tokenizer, splits.train, out, progress)
        tokens = rows[-1]["tokens"]
    else:
        train_cfg = TrainConfig(**{**asdict(cfg.train), "method": cfg.method})
        if cfg.lora:
            models = SharedBaseModels(load_base(warm_dir / "policy", cfg.adapters), reward.cfg, cfg.adapters)
            policy, reward = models.model, models.reward
        else:
            models = ModelSet(policy, reward, with_reference=train_cfg.kl_coef > 0)
        prompts = encode_prompts(tokenizer, [p.question() for p in splits.train], max_prompt_tokens=1024)
        trainer = AIRLTrainer(models, tokenizer, prompts, train_records, train_cfg, answers=[str(p.values()[-1]) for p in splits.train],
                              val_records=val_records, out_dir=out, progress=progress)
        if resume:
            trainer.resume()
        trainer.train()
        tokens = trainer.tokens_trained
    if cfg.lora:
        models.save_pretrained(out / "adapters")  # adapters/policy, adapters/reward over the base in warm/policy
    else:
        policy.save_pretrained(out / "policy")
        tokenizer.save_pretrained(out / "policy")
        if cfg.method == "airl":
            reward.save_pretrained(out / "reward")
    with active_adapter(policy, POLICY) if cfg.lora else contextlib.nullcontext():
        ev = evaluate_on_test(cfg, policy, tokenizer, progress)
    metrics = {"method": cfg.method, "seed": cfg.warm.seed, "tokens_trained": tokens, "verifier_free": cfg.method != "outcome", **ev}
    if cfg.method in ("airl", "frozen") and not cfg.lora:  # the reward the policy was trained on, at the end
        metrics["reward_steps"] = reward_step_metrics(cfg.warm, reward, load_causal_lm(warm_dir / "policy"), tokenizer, val_records)
    metrics["seconds"] = time.time() - t0
    write_metrics(out / "metrics.json", metrics)
    return metrics


def _continue_sft(cfg: TrainRunConfig, policy, tokenizer, problems, out: Path, progress: bool) -> list[dict]:
    """The SFT baseline: more SFT on the demonstrations, to the same token budget as the RL methods."""
    examples = [p.example() for p in problems]
    p_ids = encode_prompts(tokenizer, [e.prompt for e in examples], max_prompt_tokens=1024)
    c_ids = encode_completions(tokenizer, [e.completion for e in examples], max_completion_tokens=1024)
    batch_size = 64
    mean_len = sum(map(len, c_ids)) / len(c_ids)
    steps = math.ceil(cfg.train.token_budget / (batch_size * mean_len)) + 1  # the schedule ends where the budget does
    sft = SFTConfig(steps=steps, batch_size=batch_size, lr=cfg.sft_lr, warmup=max(1, steps // 20), log_every=max(1, steps // 10),
                    seed=cfg.warm.seed, max_tokens=cfg.train.token_budget)
    rows = train_sft(policy, p_ids, c_ids, tokenizer.pad_token_id, sft, metrics_path=out / "sft_log.jsonl", progress=progress)
    return rows


def resume_config(out: Path) -> TrainRunConfig:
    """The config a run in `out` was started with (for `--resume`)."""
    path = out / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {out} a `rairl train` output directory?")
    return config_from_dict(TrainRunConfig, json.loads(path.read_text()))
