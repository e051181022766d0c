"""Benchmark one policy-update iteration: rairl against TRL's `GRPOTrainer`, same model and batch.

    python benchmarks/bench_trainer.py --json runs/bench_trainer_cpu.json
    python benchmarks/bench_trainer.py --prompts 16 --num-generations 8 --max-new-tokens 64
    python benchmarks/bench_trainer.py --device cuda --prompts 64 --num-generations 8 --hidden-size 512

Setup (built offline, as in tests/conftest.py): a byte-level BPE tokenizer trained on the
embedded task's questions, a tiny Llama (defaults: 4 layers, hidden 128, ~0.9M parameters)
saved with `save_pretrained` and loaded twice, one identical copy per side; --prompts task
questions in the one prompt template; a constant reward. Both sides, per iteration:

    generate G = --num-generations completions per prompt (one `generate` call of prompts*G
    rows, temperature 1.0, top-k / top-p off, at most --max-new-tokens tokens, stop at EOS)
    -> reward (constant) -> group-normalised advantages (GRPO) -> one forward with gradient
    for the log-probs of the completion tokens -> PPO clipped loss, token-level mean over
    the batch (DAPO-style; TRL's default loss_type="dapo") -> backward -> clip the gradient
    norm to --max-grad-norm -> AdamW step (fused, as TRL's default optim) -> zero grads.

* rairl  `rairl.train.trainer.AIRLTrainer` over `ModelSet(policy, None)` with
         TrainConfig(method="outcome", advantages="sequence", ppo_epochs=1,
         minibatch_size=prompts*G, kl_coef=0, entropy_coef=0): one round is `iteration()`
         minus its answer check, i.e. `rollout()` (`sample_completions`, `collate`, action
         layout; no separate old-log-prob forward: one epoch of one minibatch), constant
         per-action rewards, `token_advantages()`, `policy_update()` (padding-free fused
         log-probs with gradient, `policy_loss`, clip, fused AdamW step). The trainer is
         built once, outside the timed window; each round it draws all --prompts prompts
         (in a seeded shuffled order) and samples with the seed of its iteration count.
* trl    `GRPOTrainer.train()` with num_iterations=1, beta=0 (no reference model),
         per_device_train_batch_size = prompts*G, steps_per_generation = 1, transformers
         `generate` (no vLLM). With num_iterations=1 and steps_per_generation equal to the
         gradient-accumulation steps, TRL runs no separate no-grad forward for the "old"
         log-probs: it uses `per_token_logps.detach()`, exactly as rairl does here. Its loss
         forward always computes per-token entropies too (`compute_entropy=True`), part of
         what TRL costs per step.

Measurement: one `trainer.train()` of --warmup + --repeats steps. A `TrainerCallback` runs one
rairl iteration at the start of every TRL step (so the order is rairl, trl, rairl, trl, ...)
and stamps TRL's step between `on_step_begin` and `on_step_end`: that window holds
`training_step` (prompt tokenisation, generation, reward, advantages, log-prob forward, loss,
backward), gradient clipping and norm, `optimizer.step`, `lr_scheduler.step` and `zero_grad`;
it leaves out only the data loader's fetch of the prompt strings and logging (disabled).
The first --warmup rounds are dropped. `speedup_vs_trl` is the median over rounds of
trl_seconds / rairl_seconds of the same round (paired, so load from other processes hits
both alike); the ratio of the two medians is reported beside it. CUDA: synchronised stamps
and the peak memory allocated during each side's iteration; CPU: no memory numbers (both
sides share one process).

With a constant reward every advantage is 0, so the loss and the gradients are 0 and AdamW
leaves the weights unchanged: both copies stay identical, generate from the same
distribution, and do the same arithmetic every round. Mean completion lengths are reported
so a reader can check that both sides generated as much.

Rollout engines (`--rollout-engines hf,hf_merged[,vllm]`): after the comparison, the same prompts
are sampled (G each, --max-new-tokens) from a shared base stored as --quantization (nf4 by default)
with a LoRA policy adapter (rank 8, values drawn so that it acts), through each engine in turn
(round-robin over --repeats rounds after --warmup), and completion tokens/s are reported side by
side with each engine's sampler/trainer gap (mean |Δ log-prob| per sampled token, nats). hf
generates through the 4-bit layers and unmerged adapters, hf_merged from its merged plain copy
(refreshed once per round, the refresh timed apart), vllm only where it is installed.

Where the two sides are made to match (TRL pitfalls found on the way):
* GRPOConfig defaults `gradient_checkpointing=True` and `bf16=True`: both are turned off
  (`activation_checkpointing=False`, the transformers 5 name of the first).
* Both sample from the full softmax: TRL passes `top_k=0, top_p=1.0` to `generate`, and so
  does rairl's `sample_completions` (else transformers would fill in its top-k of 50).
* Trainer computes the gradient norm every step even with max_grad_norm=0; both sides clip.
* TRL tokenises plain-text prompts with `add_special_tokens=True`; the script checks that
  this gives the same ids as rairl's `encode_prompts` (no BOS is added by our tokenizer).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass

import torch
from _common import summarize, write_json

from rairl.data import TaskConfig, make_splits
from rairl.metrics import environment
from rairl.models.batch import encode_prompts
from rairl.models.lm import TinyLMConfig, build_tiny_lm, load_causal_lm
from rairl.models.modelset import ModelSet
from rairl.models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer
from rairl.train.trainer import AIRLTrainer, TrainConfig

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # read when a tokenizer runs, not at import


@dataclass(frozen=True)
class IterationConfig:
    """What one policy-update iteration does; the same values drive both sides."""

    num_generations: int  # G completions per prompt
    max_new_tokens: int  # completion tokens at most (EOS included)
    temperature: float = 1.0  # TRL's; rairl's loop always samples at 1.0 (TrainConfig has no knob)
    reward: float = 1.0  # the constant reward of every completion
    clip_eps: float = 0.2  # PPO ratio clip (TRL's epsilon)
    max_grad_norm: float = 1.0  # gradient-norm clip (Trainer's max_grad_norm)
    lr: float = 1e-6  # AdamW learning rate (GRPOConfig's default)


def rairl_trainer(policy, tok, prompt_ids: list[list[int]], cfg: IterationConfig, seed: int) -> AIRLTrainer:
    """`AIRLTrainer` doing one GRPO iteration per round: every prompt, G samples each, one
    epoch of one minibatch of all P*G sequences, sequence advantages, no KL / entropy term."""
    if cfg.temperature != 1.0:
        raise ValueError("rairl's AIRLTrainer samples at temperature 1.0 only")
    train_cfg = TrainConfig(
        method="outcome", iterations=1, prompts_per_iter=len(prompt_ids), group_size=cfg.num_generations,
        max_new_tokens=cfg.max_new_tokens, advantages="sequence",
        ppo_epochs=1, minibatch_size=len(prompt_ids) * cfg.num_generations, lr=cfg.lr,
        clip_eps=cfg.clip_eps, kl_coef=0.0, entropy_coef=0.0, grad_clip=cfg.max_grad_norm,
        checkpoint_every=0, eval_every=0, seed=seed,
    )
    # method="outcome" wants one answer per prompt; never read, the reward below is constant.
    return AIRLTrainer(ModelSet(policy, None), tok, prompt_ids, [], train_cfg,
                       answers=[""] * len(prompt_ids), progress=False)


def rairl_iteration(trainer: AIRLTrainer, reward: float) -> dict[str, float]:
    """`trainer.iteration()` with a constant reward in place of its answer check:
    rollout -> rewards -> advantages -> PPO update. -> {mean_completion_len, loss}."""
    rollout = trainer.rollout()
    rewards = torch.full((rollout.layout.start.numel(),), reward, device=trainer.device)  # (A,), one per completion
    stats = trainer.policy_update(rollout, trainer.token_advantages(rollout, rewards))
    trainer.iteration_done += 1  # as iteration() does: the next rollout samples with a new seed
    B = len(rollout.completions)
    return {"mean_completion_len": sum(map(len, rollout.completions)) / B, "loss": stats["loss"]}


def build_setup(args, workdir: str):
    """Tokenizer + tiny Llama saved under `workdir`; -> (tokenizer, prompt texts, prompt ids)."""
    splits = make_splits(args.seed, TaskConfig(n_train=max(300, args.prompts), n_val=10, n_test=10))
    corpus = [format_prompt(p.question()) + "\n".join(p.solution_steps()) for p in splits.train]
    train_bpe_tokenizer(corpus, args.vocab_size).save_pretrained(workdir)
    tok = load_tokenizer(workdir)
    lm_cfg = TinyLMConfig(hidden_size=args.hidden_size, num_layers=args.layers,
                          num_heads=args.heads, intermediate_size=args.intermediate_size,
                          max_positions=max(512, 128 + args.max_new_tokens))
    build_tiny_lm(tok, lm_cfg, seed=args.seed).save_pretrained(workdir)
    questions = [p.question() for p in splits.train[: args.prompts]]
    prompt_ids = encode_prompts(tok, questions, max_prompt_tokens=lm_cfg.max_positions // 2)
    texts = [format_prompt(q) for q in questions]
    trl_ids = tok(text=texts)["input_ids"]  # how GRPOTrainer tokenises plain-text prompts
    if trl_ids != prompt_ids:
        raise RuntimeError("TRL would tokenise the prompts differently from rairl (special tokens?)")
    return tok, texts, prompt_ids


def build_trl(args, cfg: IterationConfig, model, tok, texts: list[str], reward_fn, callback, out_dir):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    grpo = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.prompts * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        max_steps=args.warmup + args.repeats,
        num_iterations=1,
        beta=0.0,
        epsilon=cfg.clip_eps,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=cfg.lr,
        weight_decay=0.0,
        max_grad_norm=cfg.max_grad_norm,
        temperature=cfg.temperature,
        top_k=0,
        top_p=1.0,
        use_vllm=False,
        activation_checkpointing=False,  # TRL's default gradient_checkpointing=True; rairl doesn't
        bf16=False,  # GRPOConfig's default is True; both sides run fp32
        use_cpu=args.device == "cpu",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=grpo,
                          train_dataset=Dataset.from_dict({"prompt": texts}),
                          processing_class=tok, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-train metrics dict
    return trainer


def _make_callback(rairl_step, sync, cuda: bool):
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        """rairl iteration, then stamp TRL's step: on_step_begin -> on_step_end."""

        def __init__(self):
            self.times = {"rairl": [], "trl": []}
            self.peak = {"rairl": [], "trl": []}
            self.rairl_len: list[float] = []
            self._t0 = 0.0

        def _start(self) -> float:
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            return time.perf_counter()

        def _stop(self, name: str, t0: float) -> None:
            sync()
            self.times[name].append(time.perf_counter() - t0)
            if cuda:
                self.peak[name].append(torch.cuda.max_memory_allocated())

        def on_step_begin(self, args, state, control, **kwargs):
            t0 = self._start()
            self.rairl_len.append(rairl_step(len(self.times["rairl"]))["mean_completion_len"])
            self._stop("rairl", t0)
            self._t0 = self._start()

        def on_step_end(self, args, state, control, **kwargs):
            self._stop("trl", self._t0)

    return Interleave()


def _seconds(times_s: list[float]) -> dict[str, float]:
    s = summarize(times_s)
    return {"median_s": s["median_ms"] / 1e3, "p20_s": s["p20_ms"] / 1e3,
            "p80_s": s["p80_ms"] / 1e3, "n": s["n"], "times_s": times_s}


def _versions() -> dict[str, str]:
    import accelerate
    import datasets
    import transformers
    import trl

    return {m.__name__ + "_version": m.__version__ for m in (transformers, trl, accelerate, datasets)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--prompts", type=int, default=8, help="prompts per iteration")
    p.add_argument("--num-generations", type=int, default=4, help="G completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=384)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (one iteration of each side)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads")
    p.add_argument("--json", default=None)
    p.add_argument("--rollout-engines", default="", help="comma-separated engines to time after the comparison, e.g. hf,hf_merged")
    p.add_argument("--quantization", default="nf4", choices=["nf4", "bf16", "fp32"], help="the shared base for --rollout-engines")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.num_generations < 2:
        p.error("--num-generations must be >= 2 (GRPO's group baseline; TRL refuses fewer)")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    # TRL asks the model `is_gradient_checkpointing`, deprecated in transformers 5: noise only.
    warnings.filterwarnings("ignore", message=".*checkpointing.* is deprecated", category=FutureWarning)
    cfg = IterationConfig(num_generations=args.num_generations, max_new_tokens=args.max_new_tokens)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    with tempfile.TemporaryDirectory() as workdir:
        tok, texts, prompt_ids = build_setup(args, workdir)
        policy = load_causal_lm(workdir).to(args.device)
        trainer = rairl_trainer(policy, tok, prompt_ids, cfg, args.seed)

        def rairl_step(i: int) -> dict[str, float]:
            return rairl_iteration(trainer, cfg.reward)

        trl_len: list[float] = []

        def constant_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
            trl_len.append(sum(map(len, completion_ids)) / len(completion_ids))
            return [cfg.reward] * len(completion_ids)

        callback = _make_callback(rairl_step, sync, cuda)
        trl_trainer = build_trl(args, cfg, load_causal_lm(workdir), tok, texts, constant_reward,
                                callback, os.path.join(workdir, "trl"))
        n_params = sum(q.numel() for q in policy.parameters())
        B = args.prompts * args.num_generations
        print(f"one policy-update iteration: {args.prompts} prompts x G={args.num_generations}, "
              f"<= {args.max_new_tokens} new tokens, {n_params / 1e6:.2f}M-param Llama on "
              f"{args.device}, {args.warmup} warm-up + {args.repeats} rounds")
        trl_trainer.train()
        engines = rollout_engines(args, workdir, prompt_ids) if args.rollout_engines else None

    w = args.warmup
    lens = {"rairl": callback.rairl_len[w:], "trl": trl_len[w:]}
    results = {}
    for name in ("rairl", "trl"):
        times = callback.times[name][w:]
        r = _seconds(times)
        r["mean_completion_len"] = statistics.fmean(lens[name])
        r["completion_lens"] = lens[name]  # per round, mean over the batch
        r["completion_tokens_per_s"] = B * r["mean_completion_len"] / r["median_s"]
        if cuda:
            r["peak_bytes"] = max(callback.peak[name][w:])
        results[name] = r
    ratios = [t / r for t, r in zip(callback.times["trl"][w:], callback.times["rairl"][w:],
                                    strict=True)]
    out = {
        "bench": "trainer_iteration",
        "config": {**{k: getattr(args, k) for k in (
            "device", "prompts", "num_generations", "max_new_tokens", "hidden_size", "layers",
            "heads", "intermediate_size", "vocab_size", "repeats", "warmup", "seed", "threads")},
                   **vars(cfg)},
        "model_params": n_params,
        "batch_sequences": B,
        "results": results,
        "speedup_vs_trl": statistics.median(ratios),
        "ratio_of_medians": results["trl"]["median_s"] / results["rairl"]["median_s"],
        "round_ratios": ratios,
        **environment(args.device),
        **_versions(),
    }
    if engines:
        out["rollout_engines"] = engines
    print(f"{'side':6s} {'median s (p20-p80)':>26s} {'mean compl. len':>16s} {'compl. tok/s':>13s}")
    for name, r in results.items():
        print(f"{name:6s} {r['median_s']:10.3f} ({r['p20_s']:.3f}-{r['p80_s']:.3f})"
              f"{r['mean_completion_len']:17.1f} {r['completion_tokens_per_s']:13.0f}")
    print(f"speedup_vs_trl (median of per-round trl/rairl): {out['speedup_vs_trl']:.3f}  "
          f"(ratio of medians {out['ratio_of_medians']:.3f})")
    for name, r in (engines or {}).items():
        print(f"rollout {name:10s} {r['completion_tokens_per_s']:9.0f} completion tok/s (median {r['median_s']:.3f} s), "
              f"sampler gap {r['sampler_gap']:.2e} nats/token" + (f", refresh {r['refresh_s']:.3f} s" if "refresh_s" in r else ""))
    write_json(args.json, out)
    return out


def rollout_engines(args, workdir: str, prompt_ids: list[list[int]]) -> dict[str, dict]:
    """Completion tokens/s of each engine over one shared base with a LoRA policy adapter, round-robin."""
    from rairl.models.adapters import AdapterConfig, SharedBaseModels, load_base
    from rairl.models.batch import collate
    from rairl.models.rollout import RolloutConfig, make_sampler

    acfg = AdapterConfig(quantization=args.quantization, lora_rank=8, lora_alpha=16)
    models = SharedBaseModels(load_base(workdir, acfg, args.device), cfg=acfg, seed=args.seed)
    with torch.no_grad():
        for q in models.policy_parameters():
            q.normal_(std=0.02)  # an adapter that acts, as after training
    names = [e.strip() for e in args.rollout_engines.split(",") if e.strip()]
    samplers = {e: make_sampler(RolloutConfig(engine=e), models) for e in names}
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    times = {e: [] for e in names}
    refresh = {e: [] for e in names}
    tokens = {e: [] for e in names}
    gaps = {e: [] for e in names}
    for rnd in range(args.warmup + args.repeats):
        for e, sampler in samplers.items():
            sync()
            t0 = time.perf_counter()
            sampler.refresh()
            sync()
            t1 = time.perf_counter()
            samples, logps = sampler.sample(prompt_ids, n_samples=args.num_generations, max_new_tokens=args.max_new_tokens,
                                            eos_id=models.model.config.eos_token_id, pad_id=models.model.config.pad_token_id,
                                            seed=args.seed + rnd, progress=False)
            sync()
            t2 = time.perf_counter()
            if rnd >= args.warmup:
                times[e].append(t2 - t1)
                refresh[e].append(t1 - t0)
                comps = [c for g in samples for c in g]
                tokens[e].append(sum(map(len, comps)))
                batch = collate([p for p in prompt_ids for _ in range(args.num_generations)], comps, 0).to(args.device)
                with torch.no_grad():
                    trainer = models.policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
                diffs = [abs(float(trainer[r, s + k]) - lp) for r, (s, row) in enumerate(zip(batch.prompt_lens.tolist(),
                         [lp for g in logps for lp in g], strict=True)) for k, lp in enumerate(row)]
                gaps[e].append(sum(diffs) / max(len(diffs), 1))
    out = {}
    for e in names:
        r = _seconds(times[e])
        r["completion_tokens_per_s"] = statistics.median(n / t for n, t in zip(tokens[e], times[e], strict=True))
        r["sampler_gap"] = statistics.fmean(gaps[e])
        if e != "hf":
            r["refresh_s"] = statistics.median(refresh[e])
        out[e] = r
    return out


if __name__ == "__main__":
    main()
