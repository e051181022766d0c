"""`rairl demo`: the whole R-AIRL pipeline on the embedded task, on a CPU, in minutes.

    task splits -> BPE tokenizer -> tiny policy -> SFT warm start (saved, reloaded by path)
    -> policy samples (negatives) + perturbed experts -> reward model (AIRL discriminator)
    -> validation: choose the rerank selector and the localisation threshold
    -> test: best-of-N reranking and first-error localisation against the baselines

Verifier-free: reward training never reads a gold answer; answers are read
only to evaluate.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .airl import step_rule
from .data import LocaliseItem, TaskConfig, make_splits
from .data.task import TaskSplits
from .eval.metrics import write_metrics
from .models.batch import encode_completions, encode_prompts
from .models.lm import TinyLMConfig, build_tiny_lm, load_causal_lm
from .models.reward import RewardConfig, RewardModel
from .models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer
from .pipeline import (
    SampledPool,
    calibrate_localiser,
    choose_selector,
    clean_items,
    discriminator_records,
    evaluate_localise,
    evaluate_rerank,
    natural_error_items,
    perturbed_negatives,
)
from .rl.rollout import sample_completions
from .score import RewardScorer, ScorerSettings
from .train.reward import DiscRecord, RewardTrainConfig, train_reward
from .train.sft import SFTConfig, train_sft


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    model: TinyLMConfig = field(default_factory=TinyLMConfig)
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=900, check_every=25, check_after=250))
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    # SFT stops once the policy's sampled accuracy on `sft_check_problems` validation
    # problems reaches this: a useful but imperfect policy, whatever the seed or machine.
    sft_target_accuracy: float = 0.35
    sft_check_problems: int = 100
    vocab_size: int = 512  # BPE vocabulary (the embedded task needs ~420)
    n_samples: int = 16  # N: samples per test problem for best-of-N
    val_samples: int = 8  # samples per validation problem (selector choice, discriminator validation)
    disc_experts: int = 1600  # expert traces (and as many perturbed copies) for discriminator training
    negative_prompts: int = 800  # train prompts whose policy samples are discriminator negatives
    negative_samples: int = 2  # policy samples per such prompt
    max_new_tokens: int = 64  # sampling limit (the longest embedded solution is ~50 tokens)
    temperature: float = 1.0
    threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def __post_init__(self) -> None:
        if self.n_samples < 2 or self.val_samples < 1 or self.negative_samples < 1:
            raise ValueError("DemoConfig: need n_samples >= 2, val_samples >= 1, negative_samples >= 1")
        for name in ("negative_prompts", "disc_experts"):
            if getattr(self, name) > self.task.n_train:
                raise ValueError(f"DemoConfig.{name}={getattr(self, name)} > task.n_train={self.task.n_train}")


def quick_config(seed: int = 0) -> DemoConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return DemoConfig(
        seed=seed,
        task=TaskConfig(n_train=200, n_val=12, n_test=12, max_steps=3),
        model=TinyLMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        sft=SFTConfig(steps=20, batch_size=16, log_every=10, check_every=10, check_after=10),
        reward_train=RewardTrainConfig(steps=8, batch_size=8, eval_every=4),
        n_samples=4, val_samples=2, disc_experts=48, negative_prompts=24, negative_samples=1, max_new_tokens=40,
    )


def _pools(policy, tokenizer, problems, n: int, cfg: DemoConfig, seed: int, progress: bool = True) -> list[SampledPool]:
    prompt_ids = encode_prompts(tokenizer, [p.question() for p in problems], max_prompt_tokens=1024)
    samples = sample_completions(policy, prompt_ids, n_samples=n, max_new_tokens=cfg.max_new_tokens,
                                 eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                                 temperature=cfg.temperature, seed=seed, progress=progress)
    return [SampledPool(p.question(), str(p.values()[-1]), ids, s, tokenizer.batch_decode(s, skip_special_tokens=True))
            for p, ids, s in zip(problems, prompt_ids, samples, strict=True)]


def _disc_records(tokenizer, examples, pools: list[SampledPool], rng: random.Random):
    prompt_ids = encode_prompts(tokenizer, [e.prompt for e in examples], max_prompt_tokens=1024)
    completion_ids = encode_completions(tokenizer, [e.completion for e in examples], max_completion_tokens=1024)
    samples = [(pool.prompt_ids, pool.completion_ids) for pool in pools]
    return discriminator_records(tokenizer, examples, prompt_ids, completion_ids, samples, rng)


@dataclass
class WarmStart:
    """What every later stage starts from: the SFT policy and a reward model trained against it."""

    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel  # SFT warm start, saved under out/policy
    reward_model: RewardModel  # trained once against the SFT policy (not yet saved)
    splits: TaskSplits
    train_records: list[DiscRecord]  # experts, policy samples, perturbed experts
    val_records: list[DiscRecord]
    val_pools: list[SampledPool]
    val_perturbed: list[LocaliseItem]
    sft_pass1: float  # greedy test accuracy of the SFT policy
    reward_best: dict[str, float]  # best validation metrics of the reward model


def warm_start(cfg: DemoConfig, out: Path, rng: random.Random, log: Callable[[str], None], progress: bool = True) -> WarmStart:
    """Stages 1-4: tokenizer, tiny policy, SFT to the target accuracy, reward model (AIRL discriminator)."""
    splits = make_splits(cfg.seed, cfg.task)
    train_ex, val_ex = [p.example() for p in splits.train], [p.example() for p in splits.val]

    # 1. tokenizer and tiny policy, saved and reloaded through the path a real checkpoint takes
    corpus = [format_prompt(e.prompt) + e.completion for e in train_ex]
    train_bpe_tokenizer(corpus, cfg.vocab_size).save_pretrained(out / "policy")
    tokenizer = load_tokenizer(out / "policy")
    build_tiny_lm(tokenizer, cfg.model, seed=cfg.seed).save_pretrained(out / "policy")
    policy = load_causal_lm(out / "policy")
    log(f"tokenizer: {len(tokenizer)} tokens; policy: {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M parameters")

    # 2. SFT warm start on the expert traces
    p_ids = encode_prompts(tokenizer, [e.prompt for e in train_ex], max_prompt_tokens=1024)
    c_ids = encode_completions(tokenizer, [e.completion for e in train_ex], max_completion_tokens=1024)
    check_problems = splits.val[: cfg.sft_check_problems]

    def reached_target(step: int) -> bool:
        acc = sum(p.correct()[0] for p in _pools(policy, tokenizer, check_problems, 1, cfg, step, progress=False)) / len(check_problems)
        log(f"SFT step {step}: sampled validation accuracy {acc:.3f} (target {cfg.sft_target_accuracy})")
        return acc >= cfg.sft_target_accuracy

    train_sft(policy, p_ids, c_ids, tokenizer.pad_token_id, cfg.sft, metrics_path=out / "sft_log.jsonl",
              progress=progress, stop_check=reached_target if cfg.sft_target_accuracy > 0 else None)
    policy.save_pretrained(out / "policy")
    policy = load_causal_lm(out / "policy").eval()
    greedy = _pools(policy, tokenizer, splits.test, 1, cfg, cfg.seed + 1, progress)
    sft_pass1 = sum(p.correct()[0] for p in greedy) / len(greedy)
    log(f"SFT done: greedy test accuracy {sft_pass1:.3f}")

    # 3. negatives: policy samples on train prompts; validation pools for model selection
    neg_problems = rng.sample(splits.train, cfg.negative_prompts)
    neg_pools = _pools(policy, tokenizer, neg_problems, cfg.negative_samples, cfg, cfg.seed + 2, progress)
    val_pools = _pools(policy, tokenizer, splits.val, cfg.val_samples, cfg, cfg.seed + 3, progress)
    train_records, _ = _disc_records(tokenizer, train_ex[: cfg.disc_experts], neg_pools, rng)
    val_records, val_perturbed = _disc_records(tokenizer, val_ex, val_pools, rng)
    log(f"discriminator data: {len(train_records)} train / {len(val_records)} val sequences")

    # 4. reward model initialised from the policy, trained as the AIRL discriminator
    reward_model = RewardModel(copy.deepcopy(policy), cfg.reward)
    best = train_reward(reward_model, policy, train_records, val_records, tokenizer.pad_token_id,
                        step_rule(cfg.reward, tokenizer), cfg.reward_train, metrics_path=out / "reward_log.jsonl", progress=progress)
    log(f"reward model: best val AUROC {best['auroc']:.3f} (acc {best['acc']:.3f}) at step {best['step']}")
    return WarmStart(tokenizer, policy, reward_model, splits, train_records, val_records, val_pools, val_perturbed, sft_pass1, best)


def run_demo(cfg: DemoConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run the pipeline, write `out_dir/metrics.json` (and the models), return the metrics."""
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    log = lambda msg: print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True) if progress else None  # noqa: E731
    warm = warm_start(cfg, out, rng, log, progress)
    tokenizer, policy, reward_model, splits = warm.tokenizer, warm.policy, warm.reward_model, warm.splits
    val_ex, test_ex = [p.example() for p in splits.val], [p.example() for p in splits.test]
    val_pools, val_perturbed, best, sft_pass1 = warm.val_pools, warm.val_perturbed, warm.reward_best, warm.sft_pass1

    # 5. validation: selector and localisation threshold, for the reward and the log-prob baseline
    scorer = RewardScorer(reward_model, tokenizer, ScorerSettings())
    logprob = RewardScorer(RewardModel(policy, RewardConfig(granularity="step")), tokenizer, ScorerSettings(selector="token_mean"))
    scorer.settings.selector, val_selector_acc = choose_selector(scorer, val_pools)
    val_loc_items = val_perturbed + clean_items(val_ex)
    calibrate_localiser(scorer, val_loc_items)
    calibrate_localiser(logprob, val_loc_items)
    scorer.save_pretrained(out / "reward")

    # 6. test: best-of-N reranking and localisation
    test_pools = _pools(policy, tokenizer, splits.test, cfg.n_samples, cfg, cfg.seed + 4, progress)
    rerank = evaluate_rerank(scorer, logprob, test_pools)
    _, test_perturbed = perturbed_negatives(tokenizer, encode_prompts(tokenizer, [e.prompt for e in test_ex], 1024), test_ex, rng)
    test_items = test_perturbed + clean_items(test_ex)
    loc, loc_lp = evaluate_localise(scorer, test_items), evaluate_localise(logprob, test_items)
    natural = natural_error_items(test_pools, [p.solution_steps() for p in splits.test])
    natural_acc = evaluate_localise(scorer, natural)["first_error_accuracy"] if natural else float("nan")
    natural_lp = evaluate_localise(logprob, natural)["first_error_accuracy"] if natural else float("nan")

    metrics = {
        "seed": cfg.seed,
        "verifier_free": True,
        "rerank": {**rerank, "selector": scorer.settings.selector, "val_selector_accuracy": val_selector_acc},
        "localise": {
            "first_error_accuracy": loc["first_error_accuracy"], "no_error_accuracy": loc["no_error_accuracy"], "f1": loc["f1"],
            "logprob_first_error_accuracy": loc_lp["first_error_accuracy"], "logprob_no_error_accuracy": loc_lp["no_error_accuracy"],
            "logprob_f1": loc_lp["f1"], "natural_first_error_accuracy": natural_acc,
            "logprob_natural_first_error_accuracy": natural_lp, "natural_n": len(natural),
            "threshold": scorer.settings.threshold, "logprob_threshold": logprob.settings.threshold,
        },
        "policy": {"sft_pass1": sft_pass1, "sampled_accuracy": rerank["random_expected"]},
        "reward": {"val_auroc": best["auroc"], "val_acc": best["acc"], "best_step": best["step"], **asdict(cfg.reward)},
        "config": asdict(cfg),
        "seconds": time.time() - t0,
    }
    write_metrics(out / "metrics.json", metrics)
    return metrics


def results_table(m: dict) -> str:
    r, loc = m["rerank"], m["localise"]
    rows = [
        (f"rerank (best of N={r['n']}, {r['problems']} problems)", ""),
        (f"  R-AIRL reward ({r['selector']})", r["reward_best_of_n"]),
        ("  policy mean log-prob", r["logprob_best_of_n"]),
        ("  majority vote", r["majority_vote"]),
        ("  random pick (expected)", r["random_expected"]),
        ("  oracle (pass@N)", r["oracle"]),
        ("localise first wrong step (perturbed / clean test traces)", ""),
        ("  R-AIRL reward: first-error acc", loc["first_error_accuracy"]),
        ("  R-AIRL reward: no-error acc", loc["no_error_accuracy"]),
        ("  R-AIRL reward: F1", loc["f1"]),
        ("  policy log-prob: first-error acc", loc["logprob_first_error_accuracy"]),
        ("  policy log-prob: no-error acc", loc["logprob_no_error_accuracy"]),
        ("  policy log-prob: F1", loc["logprob_f1"]),
        (f"  natural errors ({loc['natural_n']} policy mistakes): reward", loc["natural_first_error_accuracy"]),
        ("  natural errors: policy log-prob", loc["logprob_natural_first_error_accuracy"]),
        ("policy SFT greedy pass@1", m["policy"]["sft_pass1"]),
        ("reward model val AUROC", m["reward"]["val_auroc"]),
        ("seconds", m["seconds"]),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{v:>8.3f}" if v != "" else k for k, v in rows]
    return "\n".join(lines)

