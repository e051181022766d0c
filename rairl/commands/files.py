"""The file-driven commands of `rairl`: train-reward, score, rerank, localise, view, plan.

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
    Example,
    LocaliseItem,
    extract_answer,
    load_candidate_pools,
    load_examples,
    load_localise_items,
    load_traces,
    parse_fields,
    split_steps,
)
from ..data.steps import step_separator
from ..dist import Dist, init_dist
from ..eval.localise import calibrate_localiser, evaluate_localise, item_step_scores
from ..metrics import first_below, localisation_metrics, rerank_metrics, write_metrics
from ..models.adapters import AdapterConfig
from ..models.device import OnDevice, attn_implementation
from ..models.lm import checked_path, load_causal_lm
from ..models.reward import REWARD_FILES, RewardConfig, RewardModel
from ..models.rollout import RolloutConfig
from ..plan import PlanConfig, estimate, format_plan
from ..score import SELECTORS, RewardScorer, ScorerSettings
from ..train.folder import claim_run_folder
from ..train.reward import RewardTrainConfig
from ..train.sft import SFTConfig
from ..train.warm_start import (
    RESUMABLE_CHANGES,
    WarmStartConfig,
    check_template,
    warm_start_from_file,
)
from ..view import example_traces, item_traces, view_summary, write_view

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
        if self.policy:
            checked_path(self.policy, "--policy")  # a mistyped local path fails here, not after a hub lookup
        else:
            check_template(self.warm, None)  # a given policy's tokenizer is checked when the command starts
        parse_fields(self.fields)
        if self.limit < 0:
            raise ValueError(f"TrainRewardConfig.limit={self.limit}; must be >= 0 (0: all)")


def train_reward_command(cfg: TrainRewardConfig, out: Path, progress: bool = True, overwrite: bool = False,
                         resume: bool = False) -> dict:
    """Warm start on the file's examples, the localiser calibrated on held-out ones; writes `out/reward` and metrics
    into `out`, a new folder (or, with `overwrite`, one whose earlier run is replaced). `resume`: continue the run
    killed in `out` (same config, but for how often it checkpoints) to the result of a run never killed; a finished
    run resumed trains nothing and reports the same metrics again."""
    t0 = time.time()
    check_template(cfg.warm, cfg.policy or None)  # before anything is written
    dist = init_dist("ddp", cfg.lora)  # under a launcher: SFT, sampling and reward training split over the ranks
    if dist.main:
        claim_run_folder(out, "train-reward", asdict(cfg), resume, overwrite, may_change=tuple(f"warm.{k}" for k in RESUMABLE_CHANGES))
    dist.barrier()
    warm, val_ex, n_read = warm_start_from_file(cfg.warm, cfg.seed, cfg.data, out, cfg.policy or None, None, cfg.val_fraction, cfg.limit,
                                        cfg.torch_device(), cfg.torch_dtype(), progress, parse_fields(cfg.fields),
                                        cfg.adapters if cfg.lora else None, dist, cfg.rollout, resume)
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
               "data": {"read": n_read, "train": sum(r.label == 1 for r in warm.train_records), "val": len(val_ex), "path": cfg.data,
                        "negatives_copying_experts": best["negatives_copying_experts"]},
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
        checked_path(reward, "--reward", REWARD_FILES, "reward model", hub=False)
        return RewardScorer.from_pretrained(reward, self.device, self.dtype, batch_size=self.batch_size,
                                            max_prompt_tokens=self.max_prompt_tokens, max_completion_tokens=self.max_completion_tokens)


@dataclass(frozen=True)
class ScoreConfig(Scoring):
    """`rairl score`: per-step rewards of (prompt, completion) pairs from a file."""

    reward: str  # reward model directory (written by `rairl demo` or `rairl train-reward`)
    data: str  # expert-format JSONL ({prompt, completion}) or GSM8K jsonl
    step_delimiter: str = "line"  # how a completion splits into steps: line | blank-line | a regex matching a step's start
    fields: str = ""  # your files' column names as rairl's=yours, e.g. prompt=problem,completion=solution,answer=final
    html: str = ""  # also write the per-step view of the scores (as `rairl view`) to this HTML file; empty: none

    def __post_init__(self) -> None:
        super().__post_init__()
        step_separator(self.step_delimiter)  # a bad regex is refused here, before anything is read
        parse_fields(self.fields)


def score_command(cfg: ScoreConfig, out: Path, progress: bool = True) -> dict:
    """Per-step scores of every completion in `cfg.data`, each with its step texts."""
    examples, dist = load_examples(cfg.data, fields=parse_fields(cfg.fields)), cfg.dist()
    scorer = cfg.scorer(cfg.reward)
    scores = _example_scores(scorer, examples, cfg.step_delimiter, dist, progress)
    sep = step_separator(cfg.step_delimiter)
    rows = [{"source": e.source, "steps": split_steps(e.completion, sep), "step_scores": s} for e, s in zip(examples, scores, strict=True)]
    metrics = {"scored": len(rows), "rows": rows, **_placement(scorer)}
    if dist.main:
        write_metrics(out / "metrics.json", metrics)
        if cfg.html:
            write_view(cfg.html, example_traces(examples, [r["steps"] for r in rows], scores), scorer.settings.threshold,
                       title=f"rairl score: {cfg.data}")
    return metrics


def _example_scores(scorer: RewardScorer, examples: list[Example], delimiter: str, dist: Dist, progress: bool) -> list[list[float]]:
    """Step scores of every example's completion split by `delimiter`: the examples shared between the ranks, gathered in order."""
    mine = [examples[k] for k in dist.share(len(examples))]
    return dist.gather(scorer.score([e.prompt for e in mine], [e.completion for e in mine], delimiter, progress=progress and dist.main,
                                    names=[e.source for e in mine]))


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
        if self.policy:
            checked_path(self.policy, "--policy")


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
        names = [f"{p.source} candidate {c}" for c in range(len(p.solutions))]
        p_ids, c_ids = scorer.encode([p.question] * len(p.solutions), p.solutions, names=names)
        scored.append((scorer.solution_scores_ids(p_ids, c_ids, selector, names),
                       baseline.solution_scores_ids(p_ids, c_ids, "token_mean", names) if baseline else None,
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
    html: str = ""  # also write the per-step view of the scores (as `rairl view`) to this HTML file; empty: none


def localise_command(cfg: LocaliseConfig, out: Path, progress: bool = True) -> dict:
    items, dist = load_localise_items(cfg.items), cfg.dist()
    scorer = cfg.scorer(cfg.reward)
    if cfg.threshold is not None:
        scorer.settings.threshold = cfg.threshold
    scores = _item_scores(scorer, items, dist, progress)
    predicted = [first_below(row, scorer.settings.threshold) for row in scores]
    metrics = {**localisation_metrics(predicted, [it.label for it in items]), "threshold": scorer.settings.threshold}
    if dist.main:
        write_metrics(out / "metrics.json", {"localise": metrics, **_placement(scorer), "predictions": [{"id": it.id, "label": it.label, "predicted": p}
                                                                              for it, p in zip(items, predicted, strict=True)]})
        if cfg.html:
            write_view(cfg.html, item_traces(items, scores), scorer.settings.threshold, title=f"rairl localise: {cfg.items}")
    return metrics


def _item_scores(scorer: RewardScorer, items: list[LocaliseItem], dist: Dist, progress: bool) -> list[list[float]]:
    """Step scores of every item by its step index: the items shared between the ranks, gathered in order."""
    return dist.gather(item_step_scores(scorer, [items[k] for k in dist.share(len(items))], progress=progress and dist.main))


@dataclass(frozen=True)
class ViewConfig(Scoring):
    """`rairl view`: one self-contained HTML page of every trace's step scores (`rairl.view`)."""

    reward: str  # reward model directory
    # ProcessBench-style items {id, problem, steps, label} (gold first wrong step shown) or what `rairl score` reads,
    # {prompt, completion, answer?} or GSM8K (answer correctness shown); the form is read from the first record
    data: str
    step_delimiter: str = "line"  # examples: how a completion splits into steps: line | blank-line | a regex matching a step's start
    fields: str = ""  # examples: your files' column names as rairl's=yours, e.g. prompt=problem,completion=solution,answer=final
    threshold: float | None = None  # override the threshold calibrated on validation (the colour scale's centre)
    max_traces: int = 500  # traces drawn as cards, the first in the file (the summary covers all); 0: all

    def __post_init__(self) -> None:
        super().__post_init__()
        step_separator(self.step_delimiter)
        parse_fields(self.fields)
        if self.max_traces < 0:
            raise ValueError(f"ViewConfig.max_traces={self.max_traces}; must be >= 0 (0: all)")


def view_command(cfg: ViewConfig, out: Path, progress: bool = True) -> dict:
    """Score the traces of `cfg.data` (as `rairl localise` or `rairl score` would) and write their view to
    the file `out`; returns the view's summary."""
    kind, data = load_traces(cfg.data, parse_fields(cfg.fields))
    dist, scorer = cfg.dist(), cfg.scorer(cfg.reward)
    if cfg.threshold is not None:
        scorer.settings.threshold = cfg.threshold
    if kind == "items":
        traces = item_traces(data, _item_scores(scorer, data, dist, progress))
    else:
        sep = step_separator(cfg.step_delimiter)
        scores = _example_scores(scorer, data, cfg.step_delimiter, dist, progress)
        traces = example_traces(data, [split_steps(e.completion, sep) for e in data], scores)
    if dist.main:
        write_view(out, traces, scorer.settings.threshold, title=f"rairl view: {cfg.data}", max_traces=cfg.max_traces)
    return view_summary(traces, scorer.settings.threshold)


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
