"""`rairl demo`: the whole R-AIRL pipeline on the embedded task, on a CPU, in minutes.

    task splits -> BPE tokenizer -> tiny policy -> SFT warm start (saved, reloaded by path)
    -> policy samples (negatives) + perturbed experts -> reward model (AIRL discriminator)
    -> validation: choose the rerank selector and the localisation threshold
    -> test: best-of-N reranking and first-error localisation against the baselines
    -> figures: best_of_n.png (accuracy against N) and localise_roc.png (step-level ROC, threshold sweep)

Verifier-free: reward training never reads a gold answer; answers are read
only to evaluate. Under a launcher (`torchrun`, `accelerate launch`) the training
stages and the sampling split their batches over the processes; every rank scores
the evaluation sets and rank 0 writes.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..airl.negatives import perturbed_negatives
from ..configs import check_at_least
from ..data import TaskConfig, make_splits
from ..data.task import quick_task_config
from ..dist import init_dist
from ..eval.localise import (
    best_threshold,
    calibrate_localiser,
    clean_items,
    evaluate_localise,
    localise_curves,
    natural_error_items,
    own_sample_items,
)
from ..eval.rerank import choose_selector, evaluate_rerank, sample_pools
from ..metrics import write_metrics
from ..models.batch import encode_prompts
from ..models.device import OnDevice
from ..models.reward import RewardConfig, RewardModel
from ..models.rollout import RolloutConfig
from ..plots import plot_best_of_n, plot_localise_roc
from ..score import RewardScorer, ScorerSettings
from ..train.folder import claim_run_folder
from ..train.warm_start import (
    RESUMABLE_CHANGES,
    WarmStartConfig,
    build_warm_start,
    check_template,
    quick_warm_config,
    timed_log,
)


@dataclass(frozen=True)
class DemoConfig(OnDevice):
    """`rairl demo`: the whole pipeline on the embedded task."""

    seed: int = 0  # task splits, tiny policy initialisation and every sampling seed
    task: TaskConfig = field(default_factory=TaskConfig)  # the embedded task's splits and problem sizes
    warm: WarmStartConfig = field(default_factory=WarmStartConfig)  # tokenizer, tiny policy, SFT, reward model
    n_samples: int = 16  # N: samples per test problem for best-of-N
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # what samples negatives and test pools: hf | hf_merged | vllm

    def __post_init__(self) -> None:
        super().__post_init__()
        check_template(self.warm, None)  # the embedded task's tiny policy
        if self.n_samples < 2:
            raise ValueError(f"DemoConfig.n_samples={self.n_samples}; need >= 2 for best-of-N")
        check_at_least(self, 0, "seed", "threads")
        for name in ("negative_prompts", "disc_experts"):
            if getattr(self.warm, name) > self.task.n_train:
                raise ValueError(f"DemoConfig.warm.{name}={getattr(self.warm, name)} > task.n_train={self.task.n_train}")


def quick_config(seed: int = 0) -> DemoConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return DemoConfig(seed=seed, task=quick_task_config(), warm=quick_warm_config(), n_samples=4)


def run_demo(cfg: DemoConfig, out_dir: str | Path, progress: bool = True, overwrite: bool = False, resume: bool = False) -> dict:
    """Run the pipeline, write `out_dir/metrics.json`, `best_of_n.png` and `localise_roc.png` (and the warm
    start, models included) into a new folder (or, with `overwrite`, one whose earlier run is replaced),
    return the metrics. `resume`: continue the run killed in `out_dir` (same config, but for how often it
    checkpoints): its warm start resumes stage by stage and the evaluation runs again, to the metrics of a
    run never killed; a finished run resumed trains nothing and reports the same metrics again."""
    t0 = time.time()
    out = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = init_dist("ddp")
    if dist.main:
        claim_run_folder(out, "demo", asdict(cfg), resume, overwrite, may_change=tuple(f"warm.{k}" for k in RESUMABLE_CHANGES))
    dist.barrier()
    progress = progress and dist.main
    rng = random.Random(cfg.seed)
    log = timed_log("", progress)
    splits = make_splits(cfg.seed, cfg.task)
    train_ex, val_ex, test_ex = ([p.example() for p in split] for split in (splits.train, splits.val, splits.test))

    # 1-4. tokenizer, tiny policy, SFT warm start, reward model (AIRL discriminator)
    device = cfg.torch_device()
    warm = build_warm_start(cfg.warm, cfg.seed, train_ex, val_ex, out, rng, {"seed": cfg.seed, "task": asdict(cfg.task)},
                            device=device, dtype=cfg.torch_dtype(), log=log, progress=progress, dist=dist, rollout=cfg.rollout,
                            resume=resume)
    if dist.main:
        warm.save(out, seconds=time.time() - t0)
    tokenizer, policy, w = warm.tokenizer, warm.policy, cfg.warm

    def pools(examples, n: int, seed: int):
        return sample_pools(policy, tokenizer, [e.prompt for e in examples], [e.answer for e in examples], n, w.max_new_tokens,
                            w.temperature, seed, w.max_prompt_tokens, progress, dist, warm.sampler)

    single = pools(test_ex, 1, cfg.seed + 1)
    sft_pass1 = sum(p.correct()[0] for p in single) / len(single)
    log(f"SFT done: sampled test accuracy {sft_pass1:.3f}")

    # 5. validation: selector and localisation threshold, for the reward and the log-prob baseline
    scorer = RewardScorer(warm.reward_model, tokenizer, ScorerSettings(template=w.template))
    logprob = RewardScorer(RewardModel(policy, RewardConfig(granularity="step")).to(device), tokenizer,
                           ScorerSettings(selector="token_mean", template=w.template))
    scorer.settings.selector, val_selector_acc = choose_selector(scorer, warm.val_pools)
    calibrate_localiser(scorer, warm.val_items)  # verifier-free: injected errors and clean experts; saved with the reward
    calibrate_localiser(logprob, warm.val_items)
    if dist.main:
        scorer.save_settings(out / "reward")  # the weights are there already (warm.save)
    # a second calibration on what the policy's traces look like: its own validation samples (gold solutions
    # read to label them) beside the injected errors
    own_val = warm.val_items + own_sample_items(warm.val_pools, [p.solution_steps() for p in splits.val])
    own_threshold, own_threshold_lp = best_threshold(scorer, own_val), best_threshold(logprob, own_val)

    # 6. test: best-of-N reranking and localisation
    test_pools = pools(test_ex, cfg.n_samples, cfg.seed + 4)
    rerank = evaluate_rerank(scorer, logprob, test_pools)
    _, test_perturbed = perturbed_negatives(tokenizer, encode_prompts(tokenizer, [e.prompt for e in test_ex], w.max_prompt_tokens), test_ex, rng)
    test_items = test_perturbed + clean_items(test_ex)
    loc, loc_lp = evaluate_localise(scorer, test_items), evaluate_localise(logprob, test_items)
    roc, roc_lp = localise_curves(scorer, test_items), localise_curves(logprob, test_items)
    natural = natural_error_items(test_pools, [p.solution_steps() for p in splits.test])
    natural_acc = evaluate_localise(scorer, natural)["first_error_accuracy"] if natural else float("nan")
    natural_lp = evaluate_localise(logprob, natural)["first_error_accuracy"] if natural else float("nan")
    own = evaluate_localise(scorer, test_items, own_threshold)
    own_natural = evaluate_localise(scorer, natural, own_threshold)["first_error_accuracy"] if natural else float("nan")
    own_natural_lp = evaluate_localise(logprob, natural, own_threshold_lp)["first_error_accuracy"] if natural else float("nan")
    best = warm.reward_best

    metrics = {
        "seed": cfg.seed,
        "verifier_free": True,
        "rerank": {**rerank, "selector": scorer.settings.selector, "val_selector_accuracy": val_selector_acc},
        "localise": {
            "first_error_accuracy": loc["first_error_accuracy"], "no_error_accuracy": loc["no_error_accuracy"], "f1": loc["f1"],
            "logprob_first_error_accuracy": loc_lp["first_error_accuracy"], "logprob_no_error_accuracy": loc_lp["no_error_accuracy"],
            "logprob_f1": loc_lp["f1"], "natural_first_error_accuracy": natural_acc,
            "step_auroc": roc["auroc"], "logprob_step_auroc": roc_lp["auroc"],  # first wrong steps vs correct ones
            "logprob_natural_first_error_accuracy": natural_lp, "natural_n": len(natural),
            "threshold": scorer.settings.threshold, "logprob_threshold": logprob.settings.threshold,
            # calibrated on injected errors plus the policy's own validation samples (reads gold solutions)
            "own_calibration": {
                "reads_gold": True, "threshold": own_threshold, "logprob_threshold": own_threshold_lp,
                "first_error_accuracy": own["first_error_accuracy"], "no_error_accuracy": own["no_error_accuracy"], "f1": own["f1"],
                "natural_first_error_accuracy": own_natural, "logprob_natural_first_error_accuracy": own_natural_lp,
            },
        },
        "policy": {"sft_pass1": sft_pass1, "sampled_accuracy": rerank["random_expected"]},
        "reward": {"val_auroc": best["auroc"], "val_acc": best["acc"], "best_step": best["step"], **asdict(w.reward)},
        "config": asdict(cfg),
        "seconds": time.time() - t0,
    }
    if dist.main:
        write_metrics(out / "metrics.json", metrics)
        plot_best_of_n(rerank["curve"], out / "best_of_n.png", reward_label=f"R-AIRL reward ({scorer.settings.selector})",
                       title=f"Best-of-N on {rerank['problems']} test problems: exact mean over every N-subset of each {rerank['n']}-sample pool")
        plot_localise_roc({"R-AIRL reward": roc, "policy mean log-prob": roc_lp}, out / "localise_roc.png",
                          f"First-wrong-step localisation on {len(test_items)} test traces (injected errors and clean "
                          "experts); thresholds calibrated on validation")
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
        ("localise, threshold calibrated on the policy's own validation samples too (reads gold)", ""),
        ("  R-AIRL reward: first-error acc (injected)", loc["own_calibration"]["first_error_accuracy"]),
        ("  R-AIRL reward: no-error acc (clean)", loc["own_calibration"]["no_error_accuracy"]),
        ("  natural errors: reward", loc["own_calibration"]["natural_first_error_accuracy"]),
        ("  natural errors: policy log-prob", loc["own_calibration"]["logprob_natural_first_error_accuracy"]),
        ("policy SFT pass@1 (one sample per test problem)", m["policy"]["sft_pass1"]),
        ("reward model val AUROC", m["reward"]["val_auroc"]),
        ("seconds", m["seconds"]),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{v:>8.3f}" if v != "" else k for k, v in rows]
    return "\n".join(lines)

