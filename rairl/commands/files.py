"""The file-driven commands of `rairl`: train-reward, score, rerank, localise, plan.

Each command reads its inputs through `rairl.data` loaders (errors name the
file, line and field), calls the library and writes `metrics.json` into `out`.
Under a launcher (`torchrun`, `accelerate launch`), score, rerank and localise split
the items between the processes and gather the results in order; rank 0 writes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..data import (
    extract_answer,
    load_candidate_pools,
    load_examples,
    load_localise_items,
    parse_fields,
    split_steps,
)
from ..data.steps import step_separator
from ..dist import Dist, init_dist
from ..eval.localise import calibrate_localiser, evaluate_localise, item_step_scores
from ..metrics import first_below, localisation_metrics, rerank_metrics, write_metrics
from ..models.adapters import AdapterConfig
from ..models.device import OnDevice, attn_implementation
from ..models.lm import load_causal_lm
from ..models.reward import RewardConfig, RewardModel
from ..models.rollout import RolloutConfig
from ..plan import PlanConfig, estimate, format_plan
from ..score import SELECTORS, RewardScorer, ScorerSettings
from ..train.reward import RewardTrainConfig
from ..train.sft import SFTConfig
from ..train.warm_start import WarmStartConfig, check_template, warm_start_from_file

# train-reward's warm start: real data is longer than the embedded task's; every example is an expert
# and a negative prompt (the counts below are caps), and SFT runs its steps with no stop check by default.
FILE_WARM_DEFAULTS = WarmStartConfig(
    vocab_size=2000, sft=SFTConfig(steps=200, batch_size=16), sft_target_accuracy=0.0,
    reward_train=RewardTrainConfig(steps=100, batch_size=16, eval_every=50),
    negative_prompts=100_000, disc_experts=100_000, max_new_tokens=256, max_prompt_tokens=512, max_completion_tokens=256,
)


@dataclass(frozen=True)
class TrainRewardConfig(OnDevice):
    """`rairl train-reward`: a reward model from expert demonstrations in a file."""

    data: str  # expert demonstrations: JSONL {prompt, completion} or GSM8K rows, Parquet / CSV / Arrow, or a dataset name
    policy: str = ""  # policy checkpoint directory (model + tokenizer), SFT'd for warm.sft.steps; empty: a tiny one built for `data`
    limit: int = 2000  # examples read from `data` (0: all)
    val_fraction: float = 0.1  # held-out share of the examples for discriminator validation
    seed: int = 0  # shuffle of the examples, tiny policy initialisation, sampling seeds
    fields: str = ""  # your files' column names as rairl's=yours, e.g. prompt=problem,completion=solution,answer=final
    warm: WarmStartConfig = field(default_factory=lambda: FILE_WARM_DEFAULTS)  # tokenizer, policy, negatives, reward model
    # The reward as a LoRA adapter on the (SFT'd) policy, stored frozen as adapters.quantization (nf4:
    # 4-bit), the policy's log-probs from the same base with the adapter off (needs rairl[lora])
    lora: bool = False
    adapters: AdapterConfig = field(default_factory=AdapterConfig)  # the shared base and the reward adapter (with lora)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # what samples the negatives: hf | hf_merged | vllm

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainRewardConfig.val_fraction={self.val_fraction}; must be in (0, 1)")
        if not self.policy:
            check_template(self.warm, None)  # a given policy's tokenizer is checked when the command starts
        parse_fields(self.fields)
        if self.limit < 0:
            raise ValueError(f"TrainRewardConfig.limit={self.limit}; must be >= 0 (0: all)")


def train_reward_command(cfg: TrainRewardConfig, out: Path, progress: bool = True) -> dict:
    """Warm start on the file's examples, the localiser calibrated on held-out ones; writes `out/reward` and metrics."""
    t0 = time.time()
    check_template(cfg.warm, cfg.policy or None)  # before anything is written
    dist = init_dist("ddp", cfg.lora)  # under a launcher: SFT, sampling and reward training split over the ranks
    warm, val_ex, n_read = warm_start_from_file(cfg.warm, cfg.seed, cfg.data, out, cfg.policy or None, None, cfg.val_fraction, cfg.limit,
                                        cfg.torch_device(), cfg.torch_dtype(), progress, parse_fields(cfg.fields),
                                        cfg.adapters if cfg.lora else None, dist, cfg.rollout)
    if dist.main:
        warm.save(out, seconds=time.time() - t0)
    scorer = RewardScorer(warm.reward_model, warm.tokenizer, ScorerSettings(template=cfg.warm.template),
                          max_prompt_tokens=cfg.warm.max_prompt_tokens,
                          max_completion_tokens=cfg.warm.max_completion_tokens)
    calibrate_localiser(scorer, warm.val_items)  # on every rank: the same validation items, the same threshold
    if dist.main:
        scorer.save_settings(out / "reward")  # the weights are there already (warm.save)
    best = warm.reward_best
    metrics = {"reward": {"val_auroc": best["auroc"], "val_acc": best["acc"], "best_step": best["step"]},
               "data": {"read": n_read, "train": sum(r.label == 1 for r in warm.train_records), "val": len(val_ex), "path": cfg.data},
               "localise_val": evaluate_localise(scorer, warm.val_items), "config": asdict(cfg), **_placement(scorer)}
    if dist.main:
        write_metrics(out / "metrics.json", metrics)
    return metrics


@dataclass(frozen=True, kw_only=True)
class Scoring(OnDevice):
    """The reward scorer's device, precision and limits (score, rerank, localise)."""

    max_prompt_tokens: int = 1024  # longest prompt in tokens; a longer one is an error naming its item (raise it for long problems)
    max_completion_tokens: int = 1024  # longest completion or step list in tokens; a longer one is an error naming its item
    batch_size: int = 64  # sequences per scoring pass (lower it if long traces run out of memory)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_prompt_tokens", "max_completion_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)}: must be >= 1")

    def dist(self) -> Dist:
        """The launched processes (scoring replicates the model: no engine wraps it)."""
        return init_dist("ddp")

    def scorer(self, reward: str) -> RewardScorer:
        return RewardScorer.from_pretrained(reward, self.device, self.dtype, batch_size=self.batch_size,
                                            max_prompt_tokens=self.max_prompt_tokens, max_completion_tokens=self.max_completion_tokens)


@dataclass(frozen=True)
class ScoreConfig(Scoring):
    """`rairl score`: per-step rewards of (prompt, completion) pairs from a file."""

    reward: str  # reward model directory (written by `rairl demo` or `rairl train-reward`)
    data: str  # expert-format JSONL ({prompt, completion}) or GSM8K jsonl
    step_delimiter: str = "line"  # how a completion splits into steps: line | blank-line | a regex matching a step's start
    fields: str = ""  # your files' column names as rairl's=yours, e.g. prompt=problem,completion=solution,answer=final

    def __post_init__(self) -> None:
        super().__post_init__()
        step_separator(self.step_delimiter)  # a bad regex is refused here, before anything is read
        parse_fields(self.fields)


def score_command(cfg: ScoreConfig, out: Path, progress: bool = True) -> dict:
    """Per-step scores of every completion in `cfg.data`, each with its step texts."""
    examples, dist = load_examples(cfg.data, fields=parse_fields(cfg.fields)), cfg.dist()
    scorer = cfg.scorer(cfg.reward)
    mine = [examples[k] for k in dist.share(len(examples))]
    scores = dist.gather(scorer.score([e.prompt for e in mine], [e.completion for e in mine], cfg.step_delimiter,
                                      progress=progress and dist.main))
    sep = step_separator(cfg.step_delimiter)
    rows = [{"source": e.source, "steps": split_steps(e.completion, sep), "step_scores": s} for e, s in zip(examples, scores, strict=True)]
    metrics = {"scored": len(rows), "rows": rows, **_placement(scorer)}
    if dist.main:
        write_metrics(out / "metrics.json", metrics)
    return metrics


@dataclass(frozen=True)
class RerankConfig(Scoring):
    """`rairl rerank`: best-of-N over candidate pools from a file."""

    reward: str  # reward model directory
    pools: str  # candidate pools JSONL: {question, answer?, candidates: [{solution, is_correct?}]}
    policy: str = ""  # policy checkpoint for the mean log-prob baseline (empty: no baseline)
    selector: str = ""  # mean | min | last | sum | token_mean (empty: the one calibrated on validation)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selector and self.selector not in SELECTORS:
            raise ValueError(f"RerankConfig.selector={self.selector!r}; choose one of {SELECTORS}")


def rerank_command(cfg: RerankConfig, out: Path, progress: bool = True) -> dict:
    """Best-of-N over candidate pools; with `policy`, also the policy's mean log-prob selector."""
    pools = load_candidate_pools(cfg.pools)
    scorer = cfg.scorer(cfg.reward)
    selector = cfg.selector or scorer.settings.selector
    if any(c is None for p in pools for c in p.is_correct):
        raise ValueError(f"{cfg.pools}: every candidate needs 'is_correct' (or the pool an 'answer') to be evaluated")
    device = cfg.torch_device()
    policy = load_causal_lm(cfg.policy, cfg.torch_dtype(), attn_implementation(device), device) if cfg.policy else None
    same_format = ScorerSettings(template=scorer.settings.template)
    baseline = (RewardScorer(RewardModel(policy, RewardConfig()).to(device), scorer.tokenizer, same_format, batch_size=cfg.batch_size,
                             max_prompt_tokens=cfg.max_prompt_tokens, max_completion_tokens=cfg.max_completion_tokens)
                if policy is not None else None)
    dist = cfg.dist()
    scored = []  # (reward scores, log-prob scores, answers) of this rank's pools
    for k in tqdm(dist.share(len(pools)), desc="rerank", disable=not (progress and dist.main)):
        p = pools[k]
        p_ids, c_ids = scorer.encode([p.question] * len(p.solutions), p.solutions)
        scored.append((scorer.solution_scores_ids(p_ids, c_ids, selector),
                       baseline.solution_scores_ids(p_ids, c_ids, "token_mean") if baseline else None,
                       [extract_answer(s) for s in p.solutions]))
    reward_scores, logprob_scores, answers = (list(column) for column in zip(*dist.gather(scored), strict=True))
    correct = [list(p.is_correct) for p in pools]
    metrics = rerank_metrics(correct, reward_scores, logprob_scores if baseline else reward_scores, answers)
    if not baseline:
        metrics.pop("logprob_best_of_n")
    metrics["selector"] = selector
    if dist.main:
        write_metrics(out / "metrics.json", {"rerank": metrics, **_placement(scorer)})
    return metrics


@dataclass(frozen=True)
class LocaliseConfig(Scoring):
    """`rairl localise`: the first wrong step of ProcessBench-style items from a file."""

    reward: str  # reward model directory
    items: str  # ProcessBench-style JSON/JSONL: {id, problem, steps, label}
    threshold: float | None = None  # override the threshold calibrated on validation


def localise_command(cfg: LocaliseConfig, out: Path, progress: bool = True) -> dict:
    items, dist = load_localise_items(cfg.items), cfg.dist()
    scorer = cfg.scorer(cfg.reward)
    if cfg.threshold is not None:
        scorer.settings.threshold = cfg.threshold
    scores = dist.gather(item_step_scores(scorer, [items[k] for k in dist.share(len(items))], progress=progress and dist.main))
    predicted = [first_below(row, scorer.settings.threshold) for row in scores]
    metrics = {**localisation_metrics(predicted, [it.label for it in items]), "threshold": scorer.settings.threshold}
    if dist.main:
        write_metrics(out / "metrics.json", {"localise": metrics, **_placement(scorer), "predictions": [{"id": it.id, "label": it.label, "predicted": p}
                                                                              for it, p in zip(items, predicted, strict=True)]})
    return metrics


def plan_command(cfg: PlanConfig, out: Path | None) -> tuple[dict, str]:
    """The memory plan of one iteration and its table; with `out`, also `out/metrics.json`."""
    est = estimate(cfg)
    if out is not None:
        write_metrics(out / "metrics.json", {"plan": est, "model": cfg.model})
    return est, format_plan(cfg, est)


def _placement(scorer: RewardScorer) -> dict[str, str]:
    """Where the reward model ran: `device` and `dtype` of its LM, for metrics.json."""
    weight = next(scorer.reward_model.lm.parameters())
    return {"device": str(weight.device), "dtype": str(weight.dtype).removeprefix("torch.")}
