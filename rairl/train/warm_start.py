"""The warm start every later stage begins from, built once for `demo`, `train`, `compare` and `train-reward`:

    expert examples -> tokenizer (trained for a tiny policy, or the given policy's)
    -> policy: a tiny one built, or a given checkpoint; SFT'd on the demonstrations for
       `sft.steps` (0: none; early stop at a sampled validation accuracy)
    -> negatives: policy samples on training prompts, one perturbed copy per expert
    -> reward model initialised from the policy, trained as the AIRL discriminator (or a given one)

`WarmStart.save(dir)` writes `policy/` (a tiny or SFT'd policy; an untouched given one stays where it is),
`reward/`, `records.json` and `warm.json`; `load_warm_start(dir)` reads them back,
`warm.json` files of format 1 (written before this module existed) included.
Verifier-free: gold answers are read only by the SFT stop check (sampled accuracy).

A killed build resumes stage by stage (`resume=True`), to the warm start an uninterrupted one gives:
SFT and reward training continue from their checkpoints (`dir/sft_checkpoints`, `dir/reward_checkpoints`;
a finished one restores its end state at once), and the negatives, saved with the random states after
them at the stage's end (`dir/negatives_checkpoint`), are not sampled again.
"""

from __future__ import annotations

import copy
import json
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..airl.discriminator import DiscRecord
from ..airl.layout import step_rule
from ..airl.negatives import discriminator_records, expert_copies
from ..configs import check_at_least, check_finite, config_from_dict, load_config_file
from ..data import Example, LocaliseItem, load_examples
from ..dist import Dist
from ..eval.discriminator import evaluate_discriminator
from ..eval.localise import clean_items
from ..eval.rerank import SampledPool, sample_pools
from ..metrics import write_metrics
from ..models.adapters import AdapterConfig, SharedBaseModels, load_base, load_reward_model
from ..models.batch import encode_completions, encode_prompts
from ..models.device import attn_implementation
from ..models.lm import TinyLMConfig, build_tiny_lm, check_vocab, load_causal_lm, per_token_logprobs
from ..models.modelset import ModelSet
from ..models.reward import RewardConfig, RewardModel
from ..models.rollout import RolloutConfig, make_sampler
from ..models.saving import save_pretrained
from ..models.tokenizer import (
    TEMPLATES,
    format_prompt,
    load_tokenizer,
    set_template,
    train_bpe_tokenizer,
)
from .checkpoint import load_checkpoint, load_newest, restore_rng, rng_states, save_checkpoint
from .reward import RewardTrainConfig, train_reward
from .sft import SFTConfig, train_sft

FORMAT_VERSION = 2  # of warm.json; 1: {"config": <DemoConfig of rairl <= 0.1>, ...}
# WarmStartConfig fields a resumed build may set anew: how often it checkpoints changes no result.
RESUMABLE_CHANGES = ("sft.checkpoint_every", "reward_train.checkpoint_every")


@dataclass(frozen=True)
class WarmStartConfig:
    """How the warm start is built; sizes in examples, tokens or samples."""

    model: TinyLMConfig = field(default_factory=TinyLMConfig)  # shape of the tiny policy built when none is given
    vocab_size: int = 512  # BPE vocabulary of a tiny policy's tokenizer (the embedded task needs ~420)
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=900, check_every=25, check_after=250))
    # SFT of a tiny policy stops once its sampled accuracy on `sft_check_problems` validation
    # examples reaches this: a useful but imperfect policy, whatever the seed or machine (0: no check).
    sft_target_accuracy: float = 0.35
    sft_check_problems: int = 100  # validation examples (with answers) read by the SFT stop check
    reward: RewardConfig = field(default_factory=RewardConfig)  # the reward model's parametrisation and actions
    reward_train: RewardTrainConfig = field(default_factory=RewardTrainConfig)  # the discriminator's training
    val_samples: int = 8  # policy samples per validation example (discriminator validation, selector choice)
    disc_experts: int = 1600  # expert traces (and as many perturbed copies) for discriminator training (at most: all there are)
    negative_prompts: int = 800  # training prompts whose policy samples are discriminator negatives (at most: all there are)
    negative_samples: int = 2  # policy samples per such prompt
    max_new_tokens: int = 64  # sampling limit per completion (the longest embedded solution is ~50 tokens)
    temperature: float = 1.0  # sampling temperature of every policy sample
    max_prompt_tokens: int = 1024  # longer prompts are left out with a warning
    max_completion_tokens: int = 1024  # longer demonstrations are left out with a warning
    template: str = "plain"  # prompt format: plain ("Question: …\nAnswer:\n") | chat (the policy tokenizer's chat template)

    def __post_init__(self) -> None:
        check_finite(self)
        check_at_least(self, 0, "sft_check_problems")
        for name in ("val_samples", "disc_experts", "negative_prompts", "negative_samples", "max_new_tokens",
                     "max_prompt_tokens", "max_completion_tokens", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"WarmStartConfig.{name}={getattr(self, name)}; must be >= 1")
        if not 0.0 <= self.sft_target_accuracy <= 1.0:
            raise ValueError(f"WarmStartConfig.sft_target_accuracy={self.sft_target_accuracy}; must be in [0, 1]")
        if self.temperature <= 0:
            raise ValueError(f"WarmStartConfig.temperature={self.temperature}; must be > 0")
        if self.template not in TEMPLATES:
            raise ValueError(f"WarmStartConfig.template={self.template!r}; choose one of {TEMPLATES}")


def quick_warm_config() -> WarmStartConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return WarmStartConfig(
        model=TinyLMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        sft=SFTConfig(steps=20, batch_size=16, log_every=10, check_every=10, check_after=10),
        reward_train=RewardTrainConfig(steps=8, batch_size=8, eval_every=4),
        val_samples=2, disc_experts=48, negative_prompts=24, negative_samples=1, max_new_tokens=40,
    )


@dataclass
class WarmStart:
    """The SFT policy and a reward model trained against it, with the data that trained it."""

    cfg: WarmStartConfig
    provenance: dict  # where the examples came from (seed, task or data file): a run checks it matches its own
    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel
    policy_path: Path  # where the policy's weights are (`dir/policy` for a tiny one)
    reward_model: RewardModel
    train_records: list[DiscRecord]  # experts, policy samples, perturbed experts
    val_records: list[DiscRecord]
    val_pools: list[SampledPool]  # `val_samples` policy samples per validation example
    val_items: list[LocaliseItem]  # localisation validation: perturbed experts (label: first wrong step), then clean ones (-1)
    # best validation metrics of the reward model (auroc, acc, step), and `negatives_copying_experts`: the share of the
    # policy's samples on training prompts that are their demonstration, token for token (`memorised_share`)
    reward_best: dict
    sampler: object = None  # the vllm rollout engine that sampled the pools, kept for the caller's sampling (not saved)

    def __post_init__(self) -> None:
        check_vocab(self.tokenizer, self.policy)
        check_vocab(self.tokenizer, self.reward_model.lm)

    def save(self, out: str | Path, seconds: float = 0.0) -> None:
        """Write the reward model, records and `warm.json` under `out` (the policy is already on disk)."""
        out = Path(out)
        self.reward_model.save_pretrained(out / "reward")
        records = records_tree(self.train_records, self.val_records, self.val_pools, self.val_items)
        (out / "records.json").write_text(json.dumps(records))
        policy = "policy" if self.policy_path.resolve() == (out / "policy").resolve() else str(self.policy_path)
        write_metrics(out / "warm.json", {"format_version": FORMAT_VERSION, "config": asdict(self.cfg), "provenance": self.provenance,
                                          "policy": policy, "reward_best": self.reward_best, "seconds": seconds})


def load_warm_start(warm_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> WarmStart:
    """The warm start `WarmStart.save` wrote under `warm_dir`, its models on `device` in `dtype`."""
    warm_dir = Path(warm_dir)
    meta_file = warm_dir / "warm.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file}: no finished warm start here")
    meta = load_config_file(meta_file)
    version = meta.get("format_version", 1)
    if version == 1:  # {"config": DemoConfig fields (seed, task and the warm-start knobs), ...}
        old = meta["config"]
        known = {k: v for k, v in old.items() if k in WarmStartConfig.__dataclass_fields__}
        cfg = config_from_dict(WarmStartConfig, {**asdict(WarmStartConfig()), **known})
        provenance, policy, best = {"seed": old["seed"], "task": old["task"]}, "policy", {"auroc": meta["reward_val_auroc"]}
    elif version == FORMAT_VERSION:
        cfg, provenance, policy, best = config_from_dict(WarmStartConfig, meta["config"]), meta["provenance"], meta["policy"], meta["reward_best"]
    else:
        raise ValueError(f"{meta_file}: field 'format_version' is {version!r}; this rairl reads 1 and {FORMAT_VERSION}")
    policy_path = warm_dir / policy if policy == "policy" else Path(policy)
    records = from_records_tree(json.loads((warm_dir / "records.json").read_text()))
    return WarmStart(
        cfg, provenance, set_template(load_tokenizer(policy_path), cfg.template), load_causal_lm(policy_path, dtype, attn_implementation(torch.device(device)), device),
        policy_path, load_reward_model(warm_dir / "reward", dtype, device, attn_implementation(torch.device(device))), *records, best,
    )


def records_tree(train: list[DiscRecord], val: list[DiscRecord], val_pools: list[SampledPool], val_items: list[LocaliseItem]) -> dict:
    """The discriminator data of a warm start as JSON-able lists (`records.json`, the negatives checkpoint)."""
    return {"train": [asdict(r) for r in train], "val": [asdict(r) for r in val],
            "val_pools": [asdict(p) for p in val_pools], "val_items": [asdict(i) for i in val_items]}


def from_records_tree(tree: dict) -> tuple[list[DiscRecord], list[DiscRecord], list[SampledPool], list[LocaliseItem]]:
    """`records_tree`'s lists back as (train, val, val_pools, val_items); old files may lack the last two."""
    return ([DiscRecord(**r) for r in tree["train"]], [DiscRecord(**r) for r in tree["val"]],
            [SampledPool(**p) for p in tree.get("val_pools", [])], [LocaliseItem(**i) for i in tree.get("val_items", [])])


def build_warm_start(
    cfg: WarmStartConfig,
    seed: int,
    train: Sequence[Example],
    val: Sequence[Example],
    out: str | Path,
    rng: random.Random,
    provenance: dict,
    policy_path: str | Path | None = None,
    reward_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] = lambda msg: None,
    progress: bool = True,
    adapters: AdapterConfig | None = None,
    negative_questions: Sequence[str] = (),
    dist: Dist = Dist(),
    rollout: RolloutConfig = RolloutConfig(),
    resume: bool = False,
) -> WarmStart:
    """Tokenizer, policy, negatives and reward model from expert `train` / `val` examples.

    Without `policy_path` a tiny policy (`cfg.model`, seeded by `seed`) and its BPE tokenizer are
    built and saved under `out/policy`; with it, that checkpoint is loaded. Either is then SFT'd on
    `train` for `cfg.sft.steps` steps (0: none) and, when trained, saved under `out/policy`. With
    `reward_path` the reward model is loaded from there instead of trained. With `adapters` the
    reward is a LoRA adapter on the policy as a frozen (e.g. NF4) base, and the policy's log-probs
    come from that base with the adapter off. `negative_questions` (questions without solutions)
    add `cfg.negative_samples` policy samples each to the negatives. Models sit on `device` in `dtype` (heads in fp32). `rng` draws the negative prompts and the
    perturbations (the caller may keep drawing from it). Sampling seeds: `seed + 2` (negatives),
    `seed + 3` (validation pools).

    Under several processes (`dist`) every rank calls this together: SFT, sampling and reward training
    split their batches over the ranks; rank 0 writes the files (the caller saves the `WarmStart`).
    `rollout.engine="vllm"`: the SFT policy's negative and validation samples come from a vLLM engine
    (kept on the returned `WarmStart.sampler`); hf and hf_merged sample the full-weight policy itself.

    `resume`: continue a build killed in `out`, stage by stage (see the module's docstring), with the
    same arguments and an `rng` in the state it was in then; without it, `out`'s stage checkpoints are
    replaced.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    provenance = json.loads(json.dumps(provenance))  # as warm.json will hold it (tuples become lists)
    tiny = policy_path is None
    if tiny:
        if dist.main:
            corpus = [format_prompt(e.prompt) + e.completion for e in train]
            train_bpe_tokenizer(corpus, cfg.vocab_size).save_pretrained(out / "policy")
        dist.barrier()
        policy_path = out / "policy"
    tokenizer = set_template(load_tokenizer(policy_path), cfg.template)
    train, val = within_limits(tokenizer, train, cfg, "train"), within_limits(tokenizer, val, cfg, "val")
    p_ids = encode_prompts(tokenizer, [e.prompt for e in train], cfg.max_prompt_tokens)
    c_ids = encode_completions(tokenizer, [e.completion for e in train], cfg.max_completion_tokens)
    if tiny and dist.main:
        save_pretrained(build_tiny_lm(tokenizer, cfg.model, seed=seed), out / "policy")
    dist.barrier()
    if tiny or cfg.sft.steps:
        policy = load_causal_lm(policy_path, dtype, attn_implementation(torch.device(device)), device)
        log(f"tokenizer: {len(tokenizer)} tokens; policy: {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M parameters")
        if cfg.sft.steps:
            train_sft(policy, p_ids, c_ids, tokenizer.pad_token_id, cfg.sft, metrics_path=out / "sft_log.jsonl", progress=progress,
                      stop_check=_sft_stop_check(cfg, policy, tokenizer, val, log, dist) if cfg.sft_target_accuracy > 0 else None,
                      dist=dist, checkpoint_dir=out / "sft_checkpoints", resume=resume)
            if dist.main:
                save_pretrained(policy, out / "policy")
                tokenizer.save_pretrained(out / "policy")
            dist.barrier()
            policy_path = out / "policy"
    policy = load_causal_lm(policy_path, dtype, attn_implementation(torch.device(device)), device).eval()
    check_vocab(tokenizer, policy)
    if rollout.engine == "vllm" and dist.on:
        raise ValueError("--rollout.engine vllm runs in one process; under torchrun / accelerate use hf or hf_merged")
    sampler = make_sampler(rollout, ModelSet(policy, None)) if rollout.engine == "vllm" else None

    # negatives: policy samples on training prompts; validation pools for model selection
    stage = out / "negatives_checkpoint"
    found = load_newest(stage, lambda path: load_checkpoint(path, {}, dist)) if resume else None
    if found:
        meta, states = found[1]
        train_records, val_records, val_pools, val_perturbed = from_records_tree(meta["records"])
        restore_rng(states, rng)
    else:
        negative = rng.sample(list(train), min(cfg.negative_prompts, len(train)))
        neg_pools = _pools(cfg, policy, tokenizer, negative, cfg.negative_samples, seed + 2, progress, dist, sampler)
        if negative_questions:  # no answers: these pools are negatives only
            neg_pools += sample_pools(policy, tokenizer, list(negative_questions), [None] * len(negative_questions), cfg.negative_samples,
                                      cfg.max_new_tokens, cfg.temperature, seed + 4, cfg.max_prompt_tokens, progress, dist, sampler)
        val_pools = _pools(cfg, policy, tokenizer, val, cfg.val_samples, seed + 3, progress, dist, sampler)
        n_exp = min(cfg.disc_experts, len(train))
        train_records, _ = discriminator_records(tokenizer, train[:n_exp], p_ids[:n_exp], c_ids[:n_exp],
                                                 [(p.prompt_ids, p.completion_ids) for p in neg_pools], rng)
        val_p = encode_prompts(tokenizer, [e.prompt for e in val], cfg.max_prompt_tokens)
        val_c = encode_completions(tokenizer, [e.completion for e in val], cfg.max_completion_tokens)
        val_records, val_perturbed = discriminator_records(tokenizer, val, val_p, val_c,
                                                           [(p.prompt_ids, p.completion_ids) for p in val_pools], rng)
        save_checkpoint(stage, 0, {}, {"records": records_tree(train_records, val_records, val_pools, val_perturbed)},
                        rng_states(rng), dist, keep=1)
    log(f"discriminator data: {len(train_records)} train / {len(val_records)} val sequences")
    copying = memorised_share(train_records, p_ids, c_ids, min(cfg.negative_prompts, len(train)) * cfg.negative_samples)

    if reward_path is not None:  # a given reward model: evaluated on this validation data, not trained
        reward_model = load_reward_model(reward_path, dtype, device, attn_implementation(torch.device(device)))
        check_vocab(tokenizer, reward_model.lm)  # a --reward trained with another tokenizer
        best = {**evaluate_discriminator(reward_model, partial(per_token_logprobs, policy), val_records, tokenizer.pad_token_id,
                                         step_rule(reward_model.cfg, tokenizer)), "step": 0, "given": str(reward_path)}
    else:  # reward model initialised from the policy, trained as the AIRL discriminator
        if adapters is not None:  # the policy's log-probs: the shared base with the (zero) policy adapter
            shared = SharedBaseModels(load_base(policy_path, adapters, device), cfg.reward, adapters, seed=seed)
            reward_model, logp_model, params = shared.reward, shared.model, shared.reward_parameters()
        else:
            reward_model, logp_model, params = RewardModel(copy.deepcopy(policy), cfg.reward).to(device), policy, None
        best = train_reward(reward_model, logp_model, train_records, val_records, tokenizer.pad_token_id, step_rule(cfg.reward, tokenizer),
                            cfg.reward_train, metrics_path=out / "reward_log.jsonl", progress=progress, params=params, dist=dist,
                            checkpoint_dir=out / "reward_checkpoints", resume=resume)
    log(f"reward model: best val AUROC {best['auroc']:.3f} (acc {best['acc']:.3f}) at step {best['step']}")
    best = {**best, "negatives_copying_experts": copying}
    return WarmStart(cfg, provenance, tokenizer, policy, Path(policy_path), reward_model, train_records, val_records,
                     val_pools, val_perturbed + clean_items(val), best, sampler)


# the share of policy negatives copying their demonstration from which a warm start warns. Not lower: where a problem has
# one right solution text (the embedded task) every right sample is a copy; the demo's policy, right on about half of its
# training prompts, copies 0.48 and its reward learns well from the other half
MEMORISED = 0.9


def memorised_share(records: Sequence[DiscRecord], prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]],
                    sampled: int) -> float:
    """The share of the `sampled` policy samples on training prompts that are their demonstration, token for token
    (`expert_copies` of the training examples' ids); from `MEMORISED` on, a warning: such negatives carry no signal."""
    copies = expert_copies(records, zip(prompt_ids, completion_ids, strict=True))
    share = copies / max(sampled, 1)
    if share >= MEMORISED:
        warnings.warn(f"warm start: {copies} of the policy's {sampled} samples on training prompts are their demonstration, token "
                      "for token, and as discriminator negatives those teach the reward nothing; if the policy does much worse on "
                      "new prompts it has learned its demonstrations by heart (train it less, --warm.sft.steps, or give it more)",
                      stacklevel=3)
    return share


def check_template(cfg: WarmStartConfig, policy_path: str | Path | None) -> None:
    """Refuse, before anything is written, a prompt template the policy's tokenizer cannot apply
    (a tiny policy's tokenizer, `policy_path=None`, has no chat template)."""
    if cfg.template == "plain":
        return
    if policy_path is None:
        raise ValueError("warm.template='chat' needs --policy with a chat template; the tiny policy's tokenizer has none")
    set_template(load_tokenizer(policy_path), cfg.template)


def file_provenance(seed: int, demos: str, limit: int, val_fraction: float, policy: str | None, reward: str | None) -> dict:
    """What a warm start built from a demonstrations file was made from (`warm.json`'s provenance)."""
    return {"seed": seed, "demos": str(demos), "limit": limit, "val_fraction": val_fraction, "policy": policy or "", "reward": reward or ""}


def warm_start_from_file(
    cfg: WarmStartConfig, seed: int, demos: str, out: str | Path, policy_path: str | None = None, reward_path: str | None = None,
    val_fraction: float = 0.1, limit: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    progress: bool = True, fields: dict[str, str] | None = None, adapters: AdapterConfig | None = None, dist: Dist = Dist(),
    rollout: RolloutConfig = RolloutConfig(), resume: bool = False,
) -> tuple[WarmStart, list[Example], int]:
    """`build_warm_start` on the expert demonstrations in `demos` (JSONL, GSM8K or a dataset), shuffled
    with `seed`, `val_fraction` of them held out (`fields` maps rairl's field names to the file's columns); returns the warm start, the held-out examples and
    how many examples were read. `resume`: continue a build killed in `out`."""
    examples = load_examples(demos, limit=limit or None, fields=fields)
    rng = random.Random(seed)
    rng.shuffle(examples)
    n_val = max(1, int(len(examples) * val_fraction))
    if len(examples) - n_val < 1:
        raise ValueError(f"{demos}: {len(examples)} demonstration(s); need at least 2 (one to train on, one to validate)")
    val, train = examples[:n_val], examples[n_val:]
    warm = build_warm_start(cfg, seed, train, val, out, rng, file_provenance(seed, demos, limit, val_fraction, policy_path, reward_path), policy_path=policy_path, reward_path=reward_path,
                            device=device, dtype=dtype, log=timed_log("warm ", progress and dist.main), progress=progress, adapters=adapters,
                            dist=dist, rollout=rollout, resume=resume)
    return warm, val, len(examples)


def within_limits(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], cfg: WarmStartConfig, split: str) -> list[Example]:
    """The examples whose prompt and completion fit the token limits; the rest are left out with one warning."""
    kept, over = [], []
    for e in examples:
        n_prompt = len(tokenizer(format_prompt(e.prompt, tokenizer), add_special_tokens=False)["input_ids"])
        n_completion = len(tokenizer(e.completion, add_special_tokens=False)["input_ids"]) + 1  # + EOS
        (kept if n_prompt <= cfg.max_prompt_tokens and n_completion <= cfg.max_completion_tokens else over).append(e)
    if over:
        warnings.warn(f"{split}: {len(over)} example(s) over warm.max_prompt_tokens={cfg.max_prompt_tokens} or "
                      f"warm.max_completion_tokens={cfg.max_completion_tokens} left out (first: {over[0].source or over[0].prompt[:40]})",
                      stacklevel=2)
    if not kept:
        raise ValueError(f"{split}: no example fits the token limits; raise warm.max_prompt_tokens / warm.max_completion_tokens")
    return kept


def _pools(cfg: WarmStartConfig, policy, tokenizer, examples: Sequence[Example], n: int, seed: int, progress: bool,
           dist: Dist = Dist(), sampler=None) -> list[SampledPool]:
    return sample_pools(policy, tokenizer, [e.prompt for e in examples], [e.answer for e in examples], n, cfg.max_new_tokens,
                        cfg.temperature, seed, cfg.max_prompt_tokens, progress, dist, sampler)


def _sft_stop_check(cfg: WarmStartConfig, policy, tokenizer, val: Sequence[Example], log: Callable[[str], None],
                    dist: Dist = Dist()) -> Callable[[int], bool]:
    """`stop_check(step)`: the policy's sampled accuracy on the first validation examples reached the target."""
    check = list(val[: cfg.sft_check_problems])
    if any(e.answer is None for e in check):
        raise ValueError("warm.sft_target_accuracy > 0 needs validation examples with answers; set it to 0 to train all warm.sft.steps")

    def reached_target(step: int) -> bool:
        acc = sum(p.correct()[0] for p in _pools(cfg, policy, tokenizer, check, 1, step, False, dist)) / len(check)
        log(f"SFT step {step}: sampled validation accuracy {acc:.3f} (target {cfg.sft_target_accuracy})")
        return acc >= cfg.sft_target_accuracy

    return reached_target


def timed_log(prefix: str, progress: bool) -> Callable[[str], None]:
    """A `log(msg)` printing `[prefix seconds] msg` when `progress`, else nothing."""
    t0 = time.time()
    return (lambda msg: print(f"[{prefix}{time.time() - t0:6.1f}s] {msg}", flush=True)) if progress else (lambda msg: None)
