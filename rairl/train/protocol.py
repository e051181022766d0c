"""One seed of `rairl compare`'s scarce-demonstration protocols (`scarce`, `length`), every arm.

    data      D (worked solutions), V (labelled: early stopping and checkpoint choice only),
              U (questions with no solution and no answer), T (test); `rairl.data.protocols`
    sft_es    a tiny policy SFT'd on D over its whole schedule (`patience`: stop earlier), the check best on V kept
    reward    trained on D (label 1) against SFT-ES samples on D and U questions and perturbed D
              (label 0), by the warm-start code of `train-reward`
    arms      each from SFT-ES, fine-tuned at most at SFT-ES's rate where it was chosen (`arm_lr`), its
              checkpoint chosen on V (the start counts):

        sft_es            SFT-ES itself
        sft_more          more SFT on D, for as long (wall-clock) as rft_reward took
        rft_reward        reward-ranked fine-tuning on U (`rairl.train.rft`), samples ranked by the learned reward
        rft_reward_steps  ... each sample cut before its first step the learned reward scores below a bar (D's
                          `rft.step_quantile` of its step scores), the longest cut sample kept (`rft.cut_steps`)
        rft_majority      ... ranked by majority vote (self-consistency; no learned reward)
        rft_logprob       ... ranked by the policy's mean log-prob
        rft_gold          ... ranked by the gold answer (reads U's labels: the upper reference)
        airl_adversarial  rft_reward with the reward re-trained each round against that round's samples

    evaluation  pass@1 on T at temperature 1 and at the temperature best on V

V is sampled in three independent draws: SFT-ES's checks, the arms' checkpoint choice (the start scored
again: its score on the first draw is the best of many checks, biased up) and the temperature choice.

Every stage writes its result under `DIR/seed{S}/`; a finished stage is read back, so a stopped run continues.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..airl.layout import step_rule
from ..configs import check_finite
from ..data import TaskConfig
from ..data.protocols import GoldKey, ProtocolData, SplitConfig, protocol_data
from ..eval.discriminator import evaluate_steps
from ..eval.policy import evaluate_policy
from ..metrics import environment, write_metrics
from ..models.batch import encode_completions, encode_prompts
from ..models.lm import build_tiny_lm, load_causal_lm, per_token_logprobs
from ..models.saving import save_pretrained
from ..models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer
from .rft import (
    RFTConfig,
    ScoreFn,
    TrimFn,
    by_gold,
    by_length,
    by_logprob,
    by_majority,
    by_warm_reward,
    run_rft,
    warm_step_trim,
)
from .sft import SFTConfig, lr_schedule, train_sft_es
from .warm_start import WarmStart, WarmStartConfig, build_warm_start, load_warm_start, timed_log

# arm -> how its samples are ranked (None: no sampling); every arm after sft_es starts from SFT-ES.
ARMS = {
    "sft_es": None,
    "rft_reward": "reward",
    "sft_more": None,
    "rft_reward_steps": "reward_steps",
    "rft_majority": "majority",
    "rft_logprob": "logprob",
    "rft_gold": "gold",
    "airl_adversarial": "reward",
}
READS_GOLD = ("rft_gold",)  # arms handed U's gold answers
ES_DRAW, CHOICE_DRAW, TEMPERATURE_DRAW = 0, 1, 2  # V's sampling draws: SFT-ES, the arms' checkpoint choice, the temperature


@dataclass(frozen=True)
class ProtocolConfig:
    """The scarce protocols' sets, SFT-ES, the reward's extra negatives, RFT and the evaluation temperatures."""

    split: SplitConfig = field(default_factory=SplitConfig)  # sizes of D, V and U (T: eval.problems)
    # SFT-ES on D: the cosine schedule of `steps`, checked on V every `check_every` steps, the best check kept.
    # 2200: tuning seed 0 at D = 500 ends at V 0.24 (1200: 0.21, 1700: 0.71, 3000: 0.11; measured under patience 6)
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=2200, batch_size=32, lr=3e-3, warmup=50, log_every=50, check_every=50))
    # SFT-ES: checks without a better V score before stopping (0: the whole schedule). 0, as stopping on the
    # plateau V sits on for hundreds of steps left policies that more SFT on D alone improved (seeds 4 and 6)
    patience: int = 0
    val_samples: int = 4  # samples per V problem of every checkpoint choice (pass@1 at temperature 1)
    unlabelled_negatives: int = 500  # U questions whose SFT-ES samples are also reward negatives
    # the rounds of every rft_* arm and airl_adversarial; their lr (and sft_more's) is rft.lr capped at SFT-ES's
    # rate where its chosen weights were made (`arm_lr`)
    rft: RFTConfig = field(default_factory=lambda: RFTConfig(rounds=3, batch_size=32))
    temperatures: tuple[float, ...] = (0.3, 0.6, 1.0)  # evaluation temperatures; the best on V is reported beside T = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        check_finite(self)
        if self.patience < 0 or self.val_samples < 1 or self.unlabelled_negatives < 0:
            raise ValueError("ProtocolConfig: patience must be >= 0 (0: the whole schedule), val_samples >= 1, "
                             "unlabelled_negatives >= 0")
        if self.rft.cut_steps:
            raise ValueError("ProtocolConfig.rft.cut_steps: the arm rft_reward_steps is the one that cuts (at rft.step_quantile); "
                             "the other arms never do")
        if self.sft.check_every < 1:
            raise ValueError("ProtocolConfig.sft.check_every must be >= 1 (SFT-ES's checkpoint is chosen on validation)")
        if not self.temperatures or 1.0 not in self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ValueError(f"ProtocolConfig.temperatures={self.temperatures}; positive values, 1.0 among them")


def quick_protocol_config() -> ProtocolConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return ProtocolConfig(
        split=SplitConfig(n_demos=40, n_val=8, n_unlabelled=40), patience=2, val_samples=2, unlabelled_negatives=8,
        sft=SFTConfig(steps=20, batch_size=16, lr=3e-3, warmup=2, log_every=10, check_every=10),
        rft=RFTConfig(rounds=2, prompts_per_round=8, samples=3, max_new_tokens=40, steps_per_round=3, batch_size=8, adversarial_steps=2),
        temperatures=(0.5, 1.0),
    )


@dataclass
class Shared:
    """What every arm of a seed starts from."""

    data: ProtocolData
    tokenizer: PreTrainedTokenizerBase
    policy_dir: Path  # SFT-ES
    warm_dir: Path  # the reward trained against SFT-ES (a warm-start directory)
    demos: list[tuple[list[int], list[int]]]  # D as (prompt ids, completion ids)
    questions: list[list[int]]  # U's prompt ids
    question_text: dict[tuple[int, ...], str]  # U prompt ids -> question (for the gold arm)
    summary: dict  # SFT-ES, reward and go/no-go numbers


def run_protocol_seed(protocol: str, cfg: ProtocolConfig, task: TaskConfig, warm_cfg: WarmStartConfig, eval_problems: int,
                      eval_samples: int, seed: int, methods: Sequence[str], out: Path, device: torch.device, dtype: torch.dtype,
                      progress: bool = True, gold: GoldKey | None = None) -> tuple[dict, dict[str, dict]]:
    """Shared stages and the chosen arms of `protocol` for `seed` under `out` (= DIR/seed{S});
    returns the shared summary and each arm's metrics. `gold` replaces U's gold key (tests)."""
    out.mkdir(parents=True, exist_ok=True)
    log = timed_log(f"{protocol} seed {seed} ", progress)
    data, key = protocol_data(protocol, seed, cfg.split, task, eval_problems)
    key = gold or key
    shared = _shared(protocol, cfg, warm_cfg, data, seed, out, device, dtype, log, progress)
    results: dict[str, dict] = {}
    for arm in [a for a in ARMS if a in methods]:  # ARMS order: rft_reward before sft_more, whose wall-clock it sets
        done = out / arm / "metrics.json"
        if done.exists():
            results[arm] = json.loads(done.read_text())
            continue
        log(f"arm {arm}")
        (out / arm).mkdir(parents=True, exist_ok=True)
        (out / arm / "train_log.jsonl").unlink(missing_ok=True)
        t0 = time.time()
        policy = load_causal_lm(shared.policy_dir, dtype, device=device)
        if arm == "sft_es":
            trained = {"tokens_sampled": 0, **json.loads((shared.policy_dir.parent / "es.json").read_text())}
            seconds = trained["seconds"]
        else:
            trained = _train_arm(arm, cfg, shared, policy, key if arm in READS_GOLD else None, seed, out / arm, device, dtype,
                                 results, progress)
            seconds = time.time() - t0
        metrics = {"arm": arm, "seed": seed, "protocol": protocol, "reads_gold": arm in READS_GOLD, "demos": len(data.demos),
                   "policy_tokens": {"sampled": trained["tokens_sampled"], "trained": trained["tokens"]}, "seconds": seconds,
                   "train": {k: v for k, v in trained.items() if k not in ("rounds", "environment")},
                   **_evaluate(policy, shared.tokenizer, data, cfg, eval_samples, seed, progress)}
        write_metrics(done, metrics)
        results[arm] = metrics
    return shared.summary, results


def _shared(protocol: str, cfg: ProtocolConfig, warm_cfg: WarmStartConfig, data: ProtocolData, seed: int, out: Path,
            device: torch.device, dtype: torch.dtype, log: Callable[[str], None], progress: bool) -> Shared:
    """SFT-ES (`out/sft_es/policy`) and the reward trained against it (`out/reward`), built once per seed."""
    es_dir = out / "sft_es"
    policy_dir = es_dir / "policy"
    if not (es_dir / "es.json").exists():
        t0 = time.time()
        (es_dir / "sft_log.jsonl").unlink(missing_ok=True)  # a stopped SFT-ES starts again
        corpus = [format_prompt(e.prompt) + e.completion for e in data.demos]
        train_bpe_tokenizer(corpus, warm_cfg.vocab_size).save_pretrained(policy_dir)
        tokenizer = load_tokenizer(policy_dir)
        policy = build_tiny_lm(tokenizer, warm_cfg.model, seed=seed).to(device=device, dtype=dtype)
        p_ids, c_ids = _encode(tokenizer, data.demos, warm_cfg)
        validate = partial(val_pass1, policy, tokenizer, data, cfg, seed, 1.0, ES_DRAW)
        es = train_sft_es(policy, p_ids, c_ids, tokenizer.pad_token_id, replace(cfg.sft, seed=seed), validate, cfg.patience,
                          start_score=0.0, metrics_path=es_dir / "sft_log.jsonl", progress=progress)
        save_pretrained(policy, policy_dir)
        tokenizer.save_pretrained(policy_dir)
        # the machine too: on D = 500 whether SFT makes its climb has differed between machines for one seed
        write_metrics(es_dir / "es.json", {**es, "seconds": time.time() - t0, "environment": environment(device.type)})
        log(f"SFT-ES: val pass@1 {es['best_val']:.3f} at step {es['best_step']} of {es['steps']}")
    tokenizer = load_tokenizer(policy_dir)
    warm_dir = out / "reward"
    if not (warm_dir / "warm.json").exists():
        t0 = time.time()
        reward_cfg = replace(warm_cfg, sft=replace(warm_cfg.sft, steps=0), sft_target_accuracy=0.0)
        rng = random.Random(seed)
        negatives = random.Random(seed + 5).sample(list(data.unlabelled), min(cfg.unlabelled_negatives, len(data.unlabelled)))
        warm = build_warm_start(reward_cfg, seed, list(data.demos), list(data.val), warm_dir, rng, {"seed": seed, "protocol": protocol},
                                policy_path=policy_dir, device=device, dtype=dtype, log=log, progress=progress,
                                negative_questions=negatives)
        warm.save(warm_dir, seconds=time.time() - t0)
    summary_file = out / "shared.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
    else:  # the reward's numbers, once: a finished seed is not loaded again just to be summarised
        warm = load_warm_start(warm_dir, device, dtype)
        summary = {"sft_es": json.loads((es_dir / "es.json").read_text()), "reward_best": warm.reward_best,
                   "reward_steps": _reward_steps(warm, data, 0), "reward_steps_late": _reward_steps(warm, data, 4),
                   "reward_seconds": json.loads((warm_dir / "warm.json").read_text())["seconds"]}
        write_metrics(summary_file, summary)
    demos = list(zip(*_encode(tokenizer, data.demos, warm_cfg), strict=True))
    questions = encode_prompts(tokenizer, list(data.unlabelled), warm_cfg.max_prompt_tokens)
    return Shared(data, tokenizer, policy_dir, warm_dir, demos, questions,
                  {tuple(q): t for q, t in zip(questions, data.unlabelled, strict=True)}, summary)


def _train_arm(arm: str, cfg: ProtocolConfig, shared: Shared, policy: PreTrainedModel, gold: GoldKey | None, seed: int, out: Path,
               device: torch.device, dtype: torch.dtype, done: dict[str, dict], progress: bool) -> dict:
    """Train `policy` (SFT-ES) in place as `arm`; returns its tokens and checkpoint choice."""
    tok = shared.tokenizer
    validate = partial(val_pass1, policy, tok, shared.data, cfg, seed, 1.0, CHOICE_DRAW)
    lr = arm_lr(cfg, shared.summary["sft_es"]["best_step"])
    if arm == "sft_more":
        if "rft_reward" not in done:
            raise ValueError("arm sft_more is matched in wall-clock to rft_reward: run both")
        more = replace(cfg.sft, lr=lr, seed=seed + 1)
        es = train_sft_es(policy, [p for p, _ in shared.demos], [c for _, c in shared.demos], tok.pad_token_id, more, validate,
                          patience=0, seconds=done["rft_reward"]["seconds"],
                          metrics_path=out / "sft_log.jsonl", progress=progress)
        return {**es, "tokens_sampled": 0, "lr": lr}
    score, trim, notes = _scorer(ARMS[arm], shared, policy, gold, device, dtype, adversarial=arm == "airl_adversarial", cfg=cfg,
                                 seed=seed)
    res = run_rft(policy, tok, shared.questions, shared.demos, replace(cfg.rft, lr=lr), score, validate, seed,
                  log_path=out / "train_log.jsonl", progress=progress, trim=trim)
    return {**res, **notes, "tokens": res["tokens_trained"], "lr": lr}


def arm_lr(cfg: ProtocolConfig, es_step: int) -> float:
    """Peak learning rate of the fine-tuning every arm after SFT-ES does: `rft.lr`, capped at the rate of SFT-ES's
    schedule at the step that made its chosen weights (`es_step`; 0: untrained, no cap). Rounds restarting at 1e-3
    on a policy SFT-ES had left at 3e-4 all lost ground, gold-ranked ones too (seed 5, V 0.87)."""
    if es_step == 0:
        return cfg.rft.lr
    return min(cfg.rft.lr, lr_schedule(es_step - 1, cfg.sft.lr, cfg.sft.warmup, cfg.sft.steps))


def _scorer(by: str, shared: Shared, policy: PreTrainedModel, gold: GoldKey | None, device, dtype, adversarial: bool,
            cfg: ProtocolConfig, seed: int) -> tuple[ScoreFn, TrimFn | None, dict]:
    """How an arm ranks its samples (`by`: reward | reward_steps | majority | logprob | gold), how it cuts them first
    (None: not), and what to record of it."""
    tok = shared.tokenizer
    if by == "majority":
        return by_majority(tok), None, {}
    if by == "logprob":
        return by_logprob(policy, tok), None, {}
    if by == "gold":
        if gold is None:
            raise ValueError("ranking by the gold answer needs the GoldKey (only rft_gold reads it)")
        return by_gold(tok, lambda prompt_ids: gold.answer(shared.question_text[tuple(prompt_ids)])), None, {}
    warm = load_warm_start(shared.warm_dir, device, dtype)  # a fresh copy per arm
    if by == "reward_steps":
        trim, bar = warm_step_trim(warm, shared.demos, cfg.rft)
        return by_length, trim, {"step_bar": bar}
    return by_warm_reward(warm, policy, cfg.rft, adversarial, seed), None, {}


def val_pass1(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: ProtocolData, cfg: ProtocolConfig, seed: int,
              temperature: float, draw: int) -> float:
    """Sampled pass@1 on V, on sampling draw `draw` (fixed per draw: every checkpoint a draw compares sees the same samples)."""
    val = evaluate_policy(policy, tokenizer, [e.prompt for e in data.val], [e.answer for e in data.val], cfg.val_samples,
                          cfg.rft.max_new_tokens, seed=seed + 20_000 + 1_000 * draw, progress=False, temperature=temperature)
    policy.train()  # callers train on
    return val["pass1"]


def _evaluate(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: ProtocolData, cfg: ProtocolConfig, samples: int,
              seed: int, progress: bool) -> dict:
    """Pass@1 on T at temperature 1 and at the temperature best on V's temperature draw (ties: the higher one)."""
    val = {t: val_pass1(policy, tokenizer, data, cfg, seed, t, TEMPERATURE_DRAW) for t in cfg.temperatures}
    tuned = max(sorted(val, reverse=True), key=lambda t: val[t])
    questions, answers = [e.prompt for e in data.test], [e.answer for e in data.test]
    at = {t: evaluate_policy(policy, tokenizer, questions, answers, samples, cfg.rft.max_new_tokens, seed=seed + 10_000,
                             progress=progress, temperature=t) for t in sorted({1.0, tuned})}
    policy.eval()
    return {**at[1.0], "tuned_T": tuned, "val_pass1_by_T": {str(t): v for t, v in val.items()},
            "pass1_tuned_T": at[tuned]["pass1"], "per_problem_pass1_tuned_T": at[tuned]["per_problem_pass1"],
            "passk_tuned_T": at[tuned]["passk"]}


def _reward_steps(warm: WarmStart, data: ProtocolData, min_step: int) -> dict:
    """Step AUROC of the reward (SFT-ES's correct V steps against its first wrong ones, line `min_step` on; gold read to evaluate)."""
    references = {tuple(ids): e.completion.split("\n") for ids, e in
                  zip(encode_prompts(warm.tokenizer, [e.prompt for e in data.val], warm.cfg.max_prompt_tokens), data.val, strict=True)}
    return evaluate_steps(warm.reward_model, partial(per_token_logprobs, warm.policy), warm.val_records, references, warm.tokenizer,
                          step_rule(warm.reward_model.cfg, warm.tokenizer), min_step=min_step)


def _encode(tokenizer: PreTrainedTokenizerBase, examples: Sequence, warm_cfg: WarmStartConfig) -> tuple[list[list[int]], list[list[int]]]:
    return (encode_prompts(tokenizer, [e.prompt for e in examples], warm_cfg.max_prompt_tokens),
            encode_completions(tokenizer, [e.completion for e in examples], warm_cfg.max_completion_tokens))
