"""One post-training run: a method from a warm start to a token budget, then evaluation, on the embedded
task or (`UserData`) on a user's policy, demonstrations, unlabelled prompts and held-out file.

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
from ..data import Example, TaskConfig, load_examples, load_prompts, make_splits, parse_fields
from ..data.task import quick_task_config
from ..dist import ENGINES, Dist, init_dist
from ..eval.discriminator import evaluate_steps
from ..eval.policy import PolicyEvalConfig, evaluate_policy
from ..metrics import write_metrics
from ..models.adapters import POLICY, AdapterConfig, SharedBaseModels, active_adapter, load_base
from ..models.batch import encode_completions, encode_prompts
from ..models.device import OnDevice
from ..models.lm import checked_path, load_causal_lm, per_token_logprobs
from ..models.modelset import ModelSet
from ..models.reward import REWARD_FILES, RewardModel
from ..models.rollout import RolloutConfig
from ..models.saving import save_pretrained
from .folder import claim_run_folder
from .rft import RFTConfig, by_gold, by_length, by_warm_reward, run_rft, warm_step_trim
from .sft import SFTConfig, train_sft
from .trainer import RESUMABLE_CHANGES, AIRLTrainer, TrainConfig
from .warm_start import (
    WarmStart,
    WarmStartConfig,
    build_warm_start,
    check_template,
    file_provenance,
    load_warm_start,
    quick_warm_config,
    timed_log,
    warm_start_from_file,
    within_limits,
)


@dataclass(frozen=True)
class RunConfig(OnDevice):
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
    rft: RFTConfig = field(default_factory=RFTConfig)  # train.operator='rft': rounds of reward-ranked fine-tuning
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # the engine that samples the rollouts: hf | hf_merged | vllm
    # Under torchrun / accelerate launch: ddp | fsdp2 | auto (FSDP2 when accelerate is configured for it,
    # else DDP with lora, FSDP2 for full weights). One process (no launcher) ignores it.
    parallel: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train.operator == "rft" and (self.lora or self.train.method == "sft"):
            raise ValueError("train.operator='rft' fine-tunes the full policy of method airl, frozen or outcome; "
                             "it does not run with lora=True or method='sft'")
        if self.rft.cut_steps and (self.train.operator != "rft" or self.train.method != "frozen"):
            raise ValueError("rft.cut_steps=True cuts samples by a frozen learned reward: it needs train.operator='rft' and "
                             "train.method='frozen'")
        if self.train.method == "sft" and not self.train.token_budget:
            raise ValueError("train.method='sft' needs train.token_budget > 0 (the matched budget)")
        if self.lora and self.train.method == "sft":
            raise ValueError("lora=True applies to the RL methods; train.method='sft' trains the full model")
        if self.parallel not in ENGINES:
            raise ValueError(f"parallel={self.parallel!r}; choose one of {ENGINES}")
        if self.parallel == "fsdp2" and self.lora:
            raise ValueError("parallel='fsdp2' shards full weights; lora=True runs under parallel='ddp'")
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


@dataclass(frozen=True)
class UserData:
    """Your policy and data for `rairl train` (no `policy`: a tiny policy on the embedded task)."""

    policy: str = ""  # your policy: a checkpoint directory (or hub id); empty: a tiny policy on the embedded task
    demos: str = ""  # with --policy: expert demonstrations for SFT and the reward (JSONL {prompt, completion} or GSM8K rows)
    prompts: str = ""  # with --policy: questions without solutions for the rollouts ({prompt} or {question} rows)
    reward: str = ""  # with --policy: a reward directory to start from (default: one trained on the demonstrations)
    eval_data: str = ""  # with --policy: labelled questions ({question, answer} rows) for held-out evaluation; empty: none
    val_fraction: float = 0.1  # with --policy: share of the demonstrations held out to validate the reward
    fields: str = ""  # with --policy: the files' column names as rairl's=yours, e.g. prompt=problem,completion=solution

    def __post_init__(self) -> None:
        given = [f"--{k}" for k in ("demos", "prompts", "reward", "eval_data", "fields") if getattr(self, k)]
        if given and not self.policy:
            raise ValueError(f"{', '.join(given)} need --policy (without it rairl train runs the embedded task)")
        if self.policy and not (self.demos and self.prompts):
            raise ValueError("--policy needs --demos (expert demonstrations) and --prompts (questions for the rollouts)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction}; must be in (0, 1)")
        parse_fields(self.fields)
        if self.policy:
            checked_path(self.policy, "--policy")
        if self.reward:
            checked_path(self.reward, "--reward", REWARD_FILES, "reward model", hub=False)


@dataclass
class RunData:
    """What one run trains and evaluates on, whatever its source."""

    prompts: list[str]  # rollout questions
    answers: list[str | None]  # their gold answers where known (read by method="outcome" only)
    demos: list[Example]  # expert demonstrations (method="sft" trains on them)
    eval_questions: list[str]  # held-out evaluation (empty: none)
    eval_answers: list[str]
    prompt_sources: list[str] | None = None  # "file:line" of each rollout question, for errors (None: from the task)


def warm_start_for(cfg: RunConfig, seed: int, warm_dir: Path, progress: bool = True, data: UserData = UserData(),
                   dist: Dist = Dist(), resume: bool = False) -> WarmStart:
    """The run's warm start: loaded from `warm_dir` when one is there (it must match the run's seed, data
    and warm config), else built (from the task's splits, or `data.demos` with `data.policy`) and saved there
    (by rank 0; every launched rank builds it together); `resume` continues a build killed there."""
    if data.policy:
        provenance = file_provenance(seed, data.demos, 0, data.val_fraction, data.policy, data.reward)
    else:
        provenance = {"seed": seed, "task": asdict(cfg.task)}
    device, dtype = cfg.torch_device(), cfg.torch_dtype()
    if (warm_dir / "warm.json").exists():
        warm = load_warm_start(warm_dir, device, dtype)
        if warm.provenance != json.loads(json.dumps(provenance)) or warm.cfg != cfg.warm:  # tuples as warm.json holds them
            raise ValueError(f"{warm_dir / 'warm.json'}: this warm start was made with another seed, data or warm config "
                             f"(its provenance: {warm.provenance}); give the run its own --warm directory")
        return warm
    t0 = time.time()
    if data.policy:
        warm, _, _ = warm_start_from_file(cfg.warm, seed, data.demos, warm_dir, data.policy, data.reward or None,
                                          data.val_fraction, 0, device, dtype, progress, parse_fields(data.fields), dist=dist,
                                          rollout=cfg.rollout, resume=resume)
    else:
        splits = make_splits(seed, cfg.task)
        warm = build_warm_start(cfg.warm, seed, [p.example() for p in splits.train], [p.example() for p in splits.val], warm_dir,
                                random.Random(seed), provenance, device=device, dtype=dtype, log=timed_log("warm ", progress and dist.main),
                                progress=progress, dist=dist, rollout=cfg.rollout, resume=resume)
    if dist.main:
        warm.save(warm_dir, seconds=time.time() - t0)
    dist.barrier()
    return warm


def run_data(cfg: RunConfig, seed: int, data: UserData) -> RunData:
    """The embedded task's splits, or the user's files (`data.policy` set)."""
    if not data.policy:
        splits = make_splits(seed, cfg.task)
        test = splits.test[: cfg.eval.problems]
        return RunData([p.question() for p in splits.train], [str(p.values()[-1]) for p in splits.train],
                       [p.example() for p in splits.train], [p.question() for p in test], [str(p.values()[-1]) for p in test])
    check_template(cfg.warm, data.policy)  # before anything is written
    fields = parse_fields(data.fields)
    prompt_fields = {k: v for k, v in fields.items() if k in ("prompt", "answer")}
    prompts = load_prompts(data.prompts, fields=prompt_fields)
    held_out = load_prompts(data.eval_data, fields=prompt_fields, limit=cfg.eval.problems) if data.eval_data else []
    unlabelled = [p.source or p.prompt[:40] for p in held_out if p.answer is None]
    if unlabelled:
        raise ValueError(f"{data.eval_data}: evaluation needs an answer on every row (first without: {unlabelled[0]})")
    if cfg.train.method == "outcome" and any(p.answer is None for p in prompts):
        raise ValueError(f"{data.prompts}: train.method='outcome' reads a gold answer for every prompt; some have none")
    return RunData([p.prompt for p in prompts], [p.answer for p in prompts], load_examples(data.demos, fields=fields),
                   [p.prompt for p in held_out], [p.answer for p in held_out], [p.source for p in prompts])


def post_train(cfg: RunConfig, seed: int, out: Path, warm_dir: Path | None = None, resume: bool = False, progress: bool = True,
               data: UserData = UserData(), overwrite: bool = False) -> dict:
    """Warm start (reused from `warm_dir` when it holds one), post-train with `cfg.train.method`, evaluate.

    On the embedded task, or with `data.policy` on the user's policy and files. Writes `out/config.json`
    (the run's `seed`, `cfg` and `data`; `run.json` claims the folder, see `rairl.train.folder`: `resume`
    continues the run there, `overwrite` replaces it), `out/train_log.jsonl` or `out/sft_log.jsonl`, checkpoints,
    the trained models and `out/metrics.json`; returns the metrics.

    Under a launcher (several processes): rank 0 builds the warm start while the others wait, then every
    rank trains its share of each batch (`AIRLTrainer`); rank 0 alone writes, evaluates and returns the
    metrics (the other ranks return `{}`).
    """
    t0 = time.time()
    dist = init_dist(cfg.parallel, cfg.lora)
    if dist.on and (cfg.train.method == "sft" or cfg.train.operator == "rft"):
        raise ValueError(f"train.method={cfg.train.method!r}, train.operator={cfg.train.operator!r} run in one process; "
                         "launch it without torchrun / accelerate launch")
    rd = run_data(cfg, seed, data)  # files are read (and refused) before anything is written
    run_tree = {"seed": seed, **asdict(cfg), **asdict(data)}
    if dist.main:
        claim_run_folder(out, "train", run_tree, resume, overwrite, may_change=tuple(f"train.{k}" for k in RESUMABLE_CHANGES))
    dist.barrier()  # rank 0 claimed the folder before anyone writes into it
    warm_dir = warm_dir or out / "warm"
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    warm = warm_start_for(cfg, seed, warm_dir, progress, data, dist, resume)
    warm.sampler = None  # the warm start's vLLM engine (if any) held the SFT policy; the trainer builds its own
    if dist.main:  # a resume may have changed how long the run goes: config.json says so
        (out / "config.json").write_text(json.dumps(run_tree, indent=2))
    tokenizer, policy, reward, method = warm.tokenizer, warm.policy, warm.reward_model, cfg.train.method
    if method == "sft":
        tokens = continue_sft(cfg, seed, policy, tokenizer, rd.demos, out, progress, resume)[-1]["tokens"]
    elif cfg.train.operator == "rft":
        if resume:
            raise ValueError(f"{out}: a train.operator='rft' run has no checkpoints to resume; start it again in a new --out")
        tokens = improve_by_rft(cfg, seed, warm, rd, out, progress)
    else:
        if cfg.lora:
            models = SharedBaseModels(load_base(warm.policy_path, cfg.adapters, cfg.torch_device()), reward.cfg, cfg.adapters, seed=seed)
            policy, reward = models.model, models.reward
        else:
            models = ModelSet(policy, reward, with_reference=cfg.train.kl_coef > 0)
        prompts = encode_prompts(tokenizer, rd.prompts, max_prompt_tokens=cfg.warm.max_prompt_tokens, names=rd.prompt_sources)
        trainer = AIRLTrainer(models, tokenizer, prompts, warm.train_records, cfg.train, answers=rd.answers,
                              val_records=warm.val_records, out_dir=out, progress=progress, dist=dist, rollout=cfg.rollout)
        if resume:
            trainer.resume()
        trainer.train()
        tokens = trainer.tokens_trained
        models.whole()  # FSDP2: plain, whole copies from here on
        if not cfg.lora:
            policy, reward = models.policy, models.reward
        if not dist.main:
            return {}
    if cfg.lora:
        models.save_pretrained(out / "adapters")  # adapters/policy, adapters/reward over the warm start's base policy
    else:
        save_pretrained(policy, out / "policy")
        tokenizer.save_pretrained(out / "policy")
        if method == "airl":
            reward.save_pretrained(out / "reward")
    with active_adapter(policy, POLICY) if cfg.lora else contextlib.nullcontext():
        ev = evaluate_held_out(cfg, seed, rd, policy, tokenizer, progress)
    metrics = {"method": method, "seed": seed, "tokens_trained": tokens, "verifier_free": method != "outcome", **ev,
               "device": str(next(policy.parameters()).device), "dtype": str(cfg.torch_dtype()).removeprefix("torch."),
               "world_size": dist.world_size, "parallel": dist.engine if dist.on else "none"}
    if method in ("airl", "frozen") and not cfg.lora and not data.policy:  # the reward the policy was trained on, at the end
        warm_policy = load_causal_lm(warm.policy_path, cfg.torch_dtype(), device=cfg.torch_device())
        metrics["reward_steps"] = reward_step_metrics(cfg, seed, reward, warm_policy, tokenizer, warm.val_records)
    metrics["seconds"] = time.time() - t0
    write_metrics(out / "metrics.json", metrics)
    return metrics


def improve_by_rft(cfg: RunConfig, seed: int, warm: WarmStart, rd: RunData, out: Path, progress: bool) -> int:
    """`cfg.rft` rounds of reward-ranked fine-tuning of `warm.policy` on the run's prompts, mixed with its
    demonstrations; samples ranked by the warm start's reward (re-trained each round for method airl)
    or, for method outcome, by their gold answers; with `cfg.rft.cut_steps`, cut first at the reward's first
    low step (`warm_step_trim`). No labelled validation: the last round is kept.
    Returns the tokens trained on."""
    tok, method = warm.tokenizer, cfg.train.method
    prompts = encode_prompts(tok, rd.prompts, max_prompt_tokens=cfg.warm.max_prompt_tokens, names=rd.prompt_sources)
    kept = within_limits(tok, rd.demos, cfg.warm, "demos")  # as in the warm start: over-long ones left out, with a warning
    demos = list(zip(encode_prompts(tok, [e.prompt for e in kept], cfg.warm.max_prompt_tokens),
                     encode_completions(tok, [e.completion for e in kept], cfg.warm.max_completion_tokens), strict=True))
    trim = None
    if method == "outcome":
        gold = {tuple(p): a for p, a in zip(prompts, rd.answers, strict=True)}
        score = by_gold(tok, lambda p: gold[tuple(p)])
    elif cfg.rft.cut_steps:  # method frozen (checked by RunConfig)
        trim, bar = warm_step_trim(warm, demos, cfg.rft)
        score = by_length
        if progress:
            print(f"  rft: samples cut at the first step the reward scores below {bar:.3f} (q{cfg.rft.step_quantile:g} of the demos' steps)")
    else:
        score = by_warm_reward(warm, warm.policy, cfg.rft, adversarial=method == "airl", seed=seed)
    res = run_rft(warm.policy, tok, prompts, demos, cfg.rft, score, None, seed, log_path=out / "train_log.jsonl", progress=progress,
                  trim=trim)
    return res["tokens_trained"]


def evaluate_held_out(cfg: RunConfig, seed: int, rd: RunData, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      progress: bool = True) -> dict:
    """`evaluate_policy` on the run's held-out questions with its fixed sampling seed (every method alike);
    `{"evaluated": False}` when the run has none."""
    if not rd.eval_questions:
        return {"evaluated": False}
    return evaluate_policy(policy, tokenizer, rd.eval_questions, rd.eval_answers, cfg.eval.samples, cfg.train.max_new_tokens,
                           seed=seed + 10_000, progress=progress)


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


def continue_sft(cfg: RunConfig, seed: int, policy, tokenizer, examples: list[Example], out: Path, progress: bool,
                 resume: bool = False) -> list[dict]:
    """The SFT baseline: more SFT on the demonstrations, to the same token budget as the RL methods (checkpointed
    under `out/sft_checkpoints`; `resume` continues from there)."""
    p_ids = encode_prompts(tokenizer, [e.prompt for e in examples], max_prompt_tokens=cfg.warm.max_prompt_tokens)
    c_ids = encode_completions(tokenizer, [e.completion for e in examples], max_completion_tokens=cfg.warm.max_completion_tokens)
    batch_size = 64
    mean_len = sum(map(len, c_ids)) / len(c_ids)
    budget = cfg.train.token_budget
    steps = math.ceil(budget / (batch_size * mean_len)) + 1  # the schedule ends where the budget does
    sft = SFTConfig(steps=steps, batch_size=batch_size, lr=cfg.train.sft_lr, warmup=max(1, steps // 20), log_every=max(1, steps // 10),
                    seed=seed, max_tokens=budget)
    return train_sft(policy, p_ids, c_ids, tokenizer.pad_token_id, sft, metrics_path=out / "sft_log.jsonl", progress=progress,
                     checkpoint_dir=out / "sft_checkpoints", resume=resume)
