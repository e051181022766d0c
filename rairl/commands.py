"""The file-driven commands of `rairl`: train-reward, score, rerank, localise.

Each command reads its inputs through `rairl.data` loaders (errors name the
file, line and field), calls the library, prints a short table and writes
`metrics.json` into `--out`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .airl import step_rule
from .data import extract_answer, load_candidate_pools, load_examples, load_localise_items
from .eval.metrics import first_below, localisation_metrics, rerank_metrics, write_metrics
from .models.batch import encode_completions, encode_prompts
from .models.lm import TinyLMConfig, build_tiny_lm, load_causal_lm
from .models.reward import RewardConfig, RewardModel
from .models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer
from .pipeline import (
    calibrate_localiser,
    clean_items,
    discriminator_records,
    evaluate_localise,
    item_step_scores,
)
from .rl.rollout import sample_completions
from .score import RewardScorer
from .train.reward import RewardTrainConfig, train_reward
from .train.sft import SFTConfig, train_sft


@dataclass(frozen=True)
class TrainRewardConfig:
    """`rairl train-reward`: a reward model from expert demonstrations in a file."""

    data: str = ""  # expert JSONL ({prompt, completion}) or GSM8K jsonl ({question, answer})
    policy: str = ""  # policy checkpoint directory (model + tokenizer); empty: build a tiny one and SFT it on `data`
    limit: int = 2000  # examples read from `data` (0: all)
    val_fraction: float = 0.1  # held-out share of the examples for discriminator validation
    negative_samples: int = 2  # policy samples per training prompt
    max_prompt_tokens: int = 512
    max_completion_tokens: int = 256  # longer expert completions are truncated with a warning
    max_new_tokens: int = 256
    vocab_size: int = 2000  # tokenizer of a tiny policy built from `data`
    seed: int = 0
    model: TinyLMConfig = field(default_factory=TinyLMConfig)
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=200, batch_size=16))
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_train: RewardTrainConfig = field(default_factory=lambda: RewardTrainConfig(steps=100, batch_size=16, eval_every=50))

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainRewardConfig.val_fraction={self.val_fraction}; must be in (0, 1)")


def train_reward_command(cfg: TrainRewardConfig, out: Path, progress: bool = True) -> dict:
    if not cfg.data:
        raise ValueError("train-reward: --data is required")
    examples = load_examples(cfg.data, limit=cfg.limit or None)
    rng = random.Random(cfg.seed)
    rng.shuffle(examples)
    n_val = max(1, int(len(examples) * cfg.val_fraction))
    val_ex, train_ex = examples[:n_val], examples[n_val:]
    out.mkdir(parents=True, exist_ok=True)
    if cfg.policy:
        tokenizer, policy = load_tokenizer(cfg.policy), load_causal_lm(cfg.policy)
    else:  # a tiny policy for the data: tokenizer, SFT warm start, saved like a real checkpoint
        train_bpe_tokenizer([format_prompt(e.prompt) + e.completion for e in train_ex], cfg.vocab_size).save_pretrained(out / "policy")
        tokenizer = load_tokenizer(out / "policy")
        policy = None
    train_ex, val_ex = _within_limits(tokenizer, train_ex, cfg), _within_limits(tokenizer, val_ex, cfg)
    if policy is None:
        policy = build_tiny_lm(tokenizer, cfg.model, seed=cfg.seed)
        train_sft(policy, *_encode(tokenizer, train_ex, cfg), tokenizer.pad_token_id, cfg.sft, progress=progress)
        policy.save_pretrained(out / "policy")
    policy.eval()

    def records(examples):
        p_ids, c_ids = _encode(tokenizer, examples, cfg)
        samples = sample_completions(policy, p_ids, n_samples=cfg.negative_samples, max_new_tokens=cfg.max_new_tokens,
                                     eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, seed=cfg.seed, progress=progress)
        return discriminator_records(tokenizer, examples, p_ids, c_ids, list(zip(p_ids, samples, strict=True)), rng)

    train_records, _ = records(train_ex)
    val_records, val_items = records(val_ex)
    reward_model = RewardModel(copy.deepcopy(policy), cfg.reward)
    best = train_reward(reward_model, policy, train_records, val_records, tokenizer.pad_token_id, step_rule(cfg.reward, tokenizer),
                        cfg.reward_train, metrics_path=out / "reward_log.jsonl", progress=progress)
    scorer = RewardScorer(reward_model, tokenizer, max_prompt_tokens=cfg.max_prompt_tokens, max_completion_tokens=cfg.max_completion_tokens)
    calibrate_localiser(scorer, val_items + clean_items(val_ex))
    scorer.save_pretrained(out / "reward")
    metrics = {"reward": {"val_auroc": best["auroc"], "val_acc": best["acc"], "best_step": best["step"]},
               "data": {"read": len(examples), "train": len(train_ex), "val": len(val_ex), "path": cfg.data},
               "localise_val": evaluate_localise(scorer, val_items + clean_items(val_ex)), "config": asdict(cfg)}
    write_metrics(out / "metrics.json", metrics)
    return metrics


def _within_limits(tokenizer, examples, cfg: TrainRewardConfig):
    """Examples whose prompt and completion fit the token limits; the rest are left out with one warning."""
    kept, over = [], []
    for e in examples:
        n_prompt = len(tokenizer(format_prompt(e.prompt), add_special_tokens=False)["input_ids"])
        n_completion = len(tokenizer(e.completion, add_special_tokens=False)["input_ids"]) + 1
        (kept if n_prompt <= cfg.max_prompt_tokens and n_completion <= cfg.max_completion_tokens else over).append(e)
    if over:
        warnings.warn(f"{len(over)} example(s) over max_prompt_tokens={cfg.max_prompt_tokens} or "
                      f"max_completion_tokens={cfg.max_completion_tokens} left out (first: {over[0].source})", stacklevel=2)
    if not kept:
        raise ValueError("train-reward: no example fits the token limits; raise max_prompt_tokens / max_completion_tokens")
    return kept


def _encode(tokenizer, examples, cfg: TrainRewardConfig):
    return (encode_prompts(tokenizer, [e.prompt for e in examples], cfg.max_prompt_tokens),
            encode_completions(tokenizer, [e.completion for e in examples], cfg.max_completion_tokens))


def rerank_command(reward: str, pools_path: str, out: Path, selector: str | None = None, policy: str | None = None) -> dict:
    """Best-of-N over candidate pools; with `--policy`, also the policy's mean log-prob selector."""
    pools = load_candidate_pools(pools_path)
    scorer = RewardScorer.from_pretrained(reward)
    selector = selector or scorer.settings.selector
    if any(c is None for p in pools for c in p.is_correct):
        raise ValueError(f"{pools_path}: every candidate needs 'is_correct' (or the pool an 'answer') to be evaluated")
    baseline = RewardScorer(RewardModel(load_causal_lm(policy), RewardConfig()), scorer.tokenizer) if policy else None
    reward_scores, logprob_scores, answers = [], [], []
    for p in tqdm(pools, desc="rerank"):
        p_ids, c_ids = scorer.encode([p.question] * len(p.solutions), p.solutions)
        reward_scores.append(scorer.solution_scores_ids(p_ids, c_ids, selector))
        if baseline:
            logprob_scores.append(baseline.solution_scores_ids(p_ids, c_ids, "token_mean"))
        answers.append([extract_answer(s) for s in p.solutions])
    correct = [list(p.is_correct) for p in pools]
    metrics = rerank_metrics(correct, reward_scores, logprob_scores if baseline else reward_scores, answers)
    if not baseline:
        metrics.pop("logprob_best_of_n")
    metrics["selector"] = selector
    _write(out, {"rerank": metrics})
    return metrics


def localise_command(reward: str, items_path: str, out: Path, threshold: float | None = None) -> dict:
    items = load_localise_items(items_path)
    scorer = RewardScorer.from_pretrained(reward)
    if threshold is not None:
        scorer.settings.threshold = threshold
    scores = item_step_scores(scorer, items, progress=True)
    predicted = [first_below(row, scorer.settings.threshold) for row in scores]
    metrics = {**localisation_metrics(predicted, [it.label for it in items]), "threshold": scorer.settings.threshold}
    _write(out, {"localise": metrics, "predictions": [{"id": it.id, "label": it.label, "predicted": p} for it, p in zip(items, predicted, strict=True)]})
    return metrics


def _write(out: Path, metrics: dict) -> None:
    write_metrics(out / "metrics.json", metrics)


def register(sub: argparse._SubParsersAction) -> None:
    from .cli import add_config_options, build_config

    p = sub.add_parser("train-reward", help="train a reward model on expert demonstrations from a file")
    p.add_argument("--out", default="runs/reward")
    p.add_argument("--config", help="JSON file of TrainRewardConfig fields")
    p.add_argument("--no-progress", action="store_true")
    add_config_options(p, TrainRewardConfig)

    def run_train(args):
        cfg = build_config(TrainRewardConfig, TrainRewardConfig(), args, args.config)
        m = train_reward_command(cfg, Path(args.out), progress=not args.no_progress)
        print(f"reward val AUROC {m['reward']['val_auroc']:.3f}  acc {m['reward']['val_acc']:.3f}; "
              f"localise (val) F1 {m['localise_val']['f1']:.3f}\nmetrics: {Path(args.out) / 'metrics.json'}")
        return 0

    p.set_defaults(func=run_train)

    from .plan import PlanConfig

    p = sub.add_parser("plan", help="expected peak GPU memory of one R-AIRL iteration (reads config.json only)")
    p.add_argument("--model", help="model directory or config.json, or a preset: qwen2.5-0.5b, qwen2.5-1.5b")
    p.add_argument("--out", help="also write DIR/metrics.json")
    add_config_options(p, PlanConfig)
    _file_command(p, plan_command, required=("model",))

    p = sub.add_parser("score", help="per-step rewards of (prompt, completion) pairs from a JSONL file")
    p.add_argument("--reward", help="reward model directory")
    p.add_argument("--data", help="expert-format JSONL ({prompt, completion}) or GSM8K jsonl")
    p.add_argument("--out", default="runs/score")

    def run_score(args):
        examples = load_examples(args.data)
        scorer = RewardScorer.from_pretrained(args.reward)
        scores = scorer.score([e.prompt for e in examples], [e.completion for e in examples], progress=True)
        rows = [{"source": e.source, "step_scores": s} for e, s in zip(examples, scores, strict=True)]
        _write(Path(args.out), {"scored": len(rows), "rows": rows})
        print(f"scored {len(rows)} completions -> {Path(args.out) / 'metrics.json'}")
        return 0

    _file_command(p, run_score, required=("reward", "data"))

    p = sub.add_parser("rerank", help="best-of-N over a candidate-pool JSONL file")
    p.add_argument("--reward", help="reward model directory")
    p.add_argument("--pools", help="candidate pools JSONL: {question, answer?, candidates: [{solution, is_correct?}]}")
    p.add_argument("--policy", help="policy checkpoint for the mean log-prob baseline")
    p.add_argument("--selector", help="mean | min | last | sum | token_mean (default: the calibrated one)")
    p.add_argument("--out", default="runs/rerank")
    _file_command(p, lambda a: _print(rerank_command(a.reward, a.pools, Path(a.out), a.selector, a.policy), a.out),
                  required=("reward", "pools"))

    p = sub.add_parser("localise", help="first wrong step of ProcessBench-style items")
    p.add_argument("--reward", help="reward model directory")
    p.add_argument("--items", help="ProcessBench-style JSON/JSONL: {id, problem, steps, label}")
    p.add_argument("--threshold", type=float, help="override the calibrated threshold")
    p.add_argument("--out", default="runs/localise")
    _file_command(p, lambda a: _print(localise_command(a.reward, a.items, Path(a.out), a.threshold), a.out),
                  required=("reward", "items"))


def plan_command(args: argparse.Namespace) -> int:
    """`rairl plan`: print the memory plan of one iteration; `--model` may name a preset."""
    import tempfile

    from .plan import (
        PlanConfig,
        estimate,
        format_plan,
        qwen25_0p5b_config,
        qwen25_1p5b_config,
        write_config,
    )

    presets = {"qwen2.5-0.5b": qwen25_0p5b_config, "qwen2.5-1.5b": qwen25_1p5b_config}
    model = args.model
    if model.lower() in presets:
        model = str(write_config(presets[model.lower()](), tempfile.mkdtemp(prefix="rairl-plan-")))
    fields = {f.name for f in dataclasses.fields(PlanConfig)} - {"model"}
    kwargs = {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}
    cfg = PlanConfig(model=model, **kwargs)
    est = estimate(cfg)
    print(format_plan(cfg, est))
    if args.out:
        _write(Path(args.out), {"plan": est, "model": args.model})
    return 0


def _file_command(parser: argparse.ArgumentParser, run, required: tuple[str, ...]) -> None:
    """Add `--config FILE.json` (its keys are the command's options; the command line wins) and required checks."""
    parser.add_argument("--config", help="JSON file whose keys are this command's options")
    defaults = {a.dest: a.default for a in parser._actions}

    def run_with_config(args: argparse.Namespace) -> int:
        if args.config:
            for key, value in json.loads(Path(args.config).read_text()).items():
                dest = key.replace("-", "_")
                if dest not in defaults or dest in ("config", "func", "help"):
                    raise ValueError(f"{args.config}: unknown field '{key}'")
                if getattr(args, dest) == defaults[dest]:
                    setattr(args, dest, value)
        missing = [f"--{r}" for r in required if not getattr(args, r)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (on the command line or in --config)")
        return run(args)

    parser.set_defaults(func=run_with_config)


def _print(metrics: dict, out: str) -> int:
    for k, v in metrics.items():
        print(f"{k:<28}{v:>10.4f}" if isinstance(v, float) else f"{k:<28}{v!s:>10}")
    print(f"metrics: {Path(out) / 'metrics.json'}")
    return 0
