"""Peak GPU memory and seconds of one R-AIRL iteration on one 4-bit base with two LoRA adapters.

    python benchmarks/bench_memory.py --json benchmarks/out/memory.json          # CUDA
    python benchmarks/bench_memory.py --models 0.5b --prompts 8 --group 8
    python benchmarks/bench_memory.py --device cpu --tiny --threads 1            # smoke run

Setup (offline): random-initialised models of the Qwen2.5-0.5B and Qwen2.5-1.5B shapes
(`rairl.plan` presets; vocab 151936, tied embeddings), saved once and loaded through
`rairl.models.adapters.load_base` (NF4 by default), then `SharedBaseModels`: LoRA adapters
"policy" and "reward" (rank 16 on every attention and MLP projection), reference = adapters
disabled. A stand-in tokenizer (ids only: 1 in 32 ids decodes to a newline, so step actions
exist) replaces Qwen's, which would need a download; prompts and expert completions are
random ids of exactly --prompt-tokens and --completion-tokens.

One iteration is `iteration_fn(...)`: `rairl.train.trainer.AIRLTrainer.iteration` (sample B x G
completions of up to --completion-tokens tokens, one discriminator step, rewards, step
advantages, --ppo-epochs of PPO minibatches of --minibatch sequences, with a k3 KL term so the
reference forward runs). A random model almost never samples EOS, so completions are full
length: the worst case the plan is for. The trainer puts its batches on the device of the
policy's parameters, so the models and every batch live on --device.

Measurement, per model: --warmup iterations, then --repeats timed ones (synchronised wall
clock; median, p20, p80 seconds). `peak_gib`: `torch.cuda.max_memory_allocated` over all of
them, and per phase (generation = `sample`; update = the rest of the iteration). Beside it,
`rairl plan`'s estimate for the same settings: its `total` includes a fixed CUDA-context
allowance (`cuda_overhead`) that the allocator never sees; `plan_allocated_gib` leaves it out.
CPU (--tiny only): seconds, no memory numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from _common import write_json

from rairl.airl.discriminator import DiscRecord
from rairl.metrics import environment
from rairl.models.adapters import AdapterConfig, SharedBaseModels, load_base
from rairl.models.lora import LINEAR_NAMES, QUANTIZATIONS
from rairl.models.reward import RewardConfig
from rairl.plan import PlanConfig, estimate, qwen25_0p5b_config, qwen25_1p5b_config, write_config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # read when a tokenizer runs, not at import

GIB = float(2**30)
MODELS = {"0.5b": qwen25_0p5b_config, "1.5b": qwen25_1p5b_config}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "vocab_size": 1024, "bos_token_id": 1, "eos_token_id": 2}


class IdTokenizer:
    """What the trainer reads from a tokenizer, for a vocabulary of bare ids: pad / eos ids,
    `len`, and `decode` of single ids (a newline for 1 id in `newline_every`)."""

    def __init__(self, vocab: int, eos_id: int, pad_id: int, newline_every: int = 32):
        self.vocab, self.eos_token_id, self.pad_token_id = vocab, eos_id, pad_id
        self.newline_every = newline_every

    def __len__(self) -> int:
        return self.vocab

    def decode(self, ids, **kwargs) -> str:
        return "".join("\n" if i % self.newline_every == 7 else "x" for i in ids)

    def batch_decode(self, seqs, **kwargs) -> list[str]:
        return [self.decode(s) for s in seqs]


def iteration_fn(models, tokenizer, prompts: list[list[int]], experts: list[DiscRecord], args, engine: str,
                 sample_peaks: list[int], sync: Callable[[], None]) -> Callable[[], dict]:
    """One full R-AIRL iteration: `AIRLTrainer.iteration` with this benchmark's sizes and rollout `engine`.

    Its sampler records the CUDA peak of each `sample` call (the generation phase) into `sample_peaks`
    and resets the peak after it, so the iteration's peak covers the update alone.
    """
    from rairl.models.rollout import RolloutConfig
    from rairl.train.trainer import AIRLTrainer, TrainConfig

    cfg = TrainConfig(
        prompts_per_iter=args.prompts, group_size=args.group, max_new_tokens=args.completion_tokens,
        disc_batch_size=args.disc_batch, minibatch_size=args.minibatch, ppo_epochs=args.ppo_epochs,
        kl_coef=args.kl_coef, checkpoint_every=0, eval_every=0, seed=args.seed,
    )
    trainer = AIRLTrainer(models, tokenizer, prompts, experts, cfg, progress=False, rollout=RolloutConfig(engine=engine))
    sample, cuda = trainer.sampler.sample, torch.cuda.is_available() and models.policy_parameters()[0].is_cuda

    def phased(prompt_ids, **kwargs):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        out = sample(prompt_ids, **kwargs)
        if cuda:
            sync()
            sample_peaks.append(torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        return out

    trainer.sampler.sample = phased
    return trainer.iteration


def build_base_dir(name: str, workdir: Path, device: torch.device, tiny: bool) -> Path:
    """Write config.json and random bf16 weights of the `name` shape; -> the directory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = workdir / name
    config = MODELS[name]() | (TINY if tiny else {})
    write_config(config, path)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.bfloat16)
    model.save_pretrained(path)
    del model
    return path


def random_data(vocab: int, eos_id: int, args) -> tuple[list[list[int]], list[DiscRecord]]:
    """`prompts` prompts of exactly --prompt-tokens ids and as many expert records (completion of
    exactly --completion-tokens ids, EOS last); ids avoid the first 8 (special) ids."""
    g = torch.Generator().manual_seed(args.seed)

    def ids(n: int) -> list[int]:
        return torch.randint(8, vocab, (n,), generator=g).tolist()

    prompts = [ids(args.prompt_tokens) for _ in range(args.prompts)]
    experts = [DiscRecord(p, ids(args.completion_tokens - 1) + [eos_id], label=1) for p in prompts]
    return prompts, experts


def plan_estimate(path: Path, adapter: AdapterConfig, args, engine: str = "hf") -> dict[str, float]:
    cfg = PlanConfig(engine=engine,
        model=str(path), gpu_gb=args.gpu_gb, prompts_per_iter=args.prompts, group_size=args.group,
        prompt_tokens=args.prompt_tokens, max_new_tokens=args.completion_tokens,
        quantization=adapter.quantization, lora_rank=adapter.lora_rank, target_modules=tuple(adapter.target_modules),
        gradient_checkpointing=adapter.gradient_checkpointing, minibatch_size=args.minibatch,
    )
    return estimate(cfg)


def run_model(name: str, workdir: Path, device: torch.device, adapter: AdapterConfig, args, engine: str = "hf") -> dict:
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    path = workdir / name if (workdir / name / "config.json").exists() else build_base_dir(name, workdir, device, args.tiny)
    config = json.loads((path / "config.json").read_text())
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    models = SharedBaseModels(load_base(path, adapter, device), RewardConfig(), adapter, seed=args.seed)
    weights_bytes = torch.cuda.memory_allocated() if cuda else None
    prompts, experts = random_data(config["vocab_size"], config["eos_token_id"], args)
    tokenizer = IdTokenizer(config["vocab_size"], eos_id=config["eos_token_id"], pad_id=config["eos_token_id"])
    sample_peaks: list[int] = []
    iterate = iteration_fn(models, tokenizer, prompts, experts, args, engine, sample_peaks, sync)
    times, rows, peaks = [], [], []
    for i in range(args.warmup + args.repeats):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        rows.append(iterate())
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        if cuda:
            peaks.append(torch.cuda.max_memory_allocated())  # peak since the sample phase ended
    est = plan_estimate(path, adapter, args, engine)
    out = {
        "model": name, "engine": engine, "config": {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")},
        "seconds": _seconds(times), "last_row": rows[-1], "sampler_gap": rows[-1].get("sampler_gap"),
        "mean_completion_len": rows[-1].get("mean_len"),
        "plan": est, "plan_allocated_gib": est["total"] - est["cuda_overhead"],
    }
    if cuda:
        gen, upd = max(sample_peaks) / GIB, max(peaks) / GIB
        out |= {"peak_gib": max(gen, upd), "peak_generation_gib": gen, "peak_update_gib": upd,
                "after_load_gib": weights_bytes / GIB, "reserved_gib": torch.cuda.max_memory_reserved() / GIB}
    del models, iterate
    if cuda:
        torch.cuda.empty_cache()
    return out


def _seconds(times: list[float]) -> dict[str, float]:
    ts = sorted(times)
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
    return {"median_s": statistics.median(ts), "p20_s": q[1], "p80_s": q[7], "n": len(ts)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="2-layer, 64-wide stand-ins of each shape (smoke run)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--prompts", type=int, default=8, help="B: prompts per iteration")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--completion-tokens", type=int, default=512)
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="nf4")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--minibatch", type=int, default=8, help="sequences per PPO forward/backward")
    p.add_argument("--disc-batch", type=int, default=8, help="sequences per discriminator step")
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--kl-coef", type=float, default=0.04, help="> 0: the reference forward runs")
    p.add_argument("--gpu-gb", type=float, default=24, help="the plan's fits / does-not-fit line")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads")
    p.add_argument("--engines", nargs="+", choices=["hf", "hf_merged", "vllm"], default=["hf"], help="rollout engines, each timed in turn")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("this benchmark measures CUDA memory and torch.cuda.is_available() is False; "
                "for a CPU smoke run use --device cpu --tiny")
    if args.device == "cpu" and not args.tiny:
        p.error("--device cpu runs only with --tiny (the real shapes would take hours on a CPU)")
    if args.tiny:  # small enough for a CPU, unless sizes were given explicitly
        defaults = {"prompts": 8, "group": 8, "prompt_tokens": 256, "completion_tokens": 512, "minibatch": 8, "disc_batch": 8}
        for k, v in {"prompts": 2, "group": 2, "prompt_tokens": 16, "completion_tokens": 16, "minibatch": 2, "disc_batch": 4}.items():
            if getattr(args, k) == defaults[k]:
                setattr(args, k, v)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*checkpointing.* is deprecated", category=FutureWarning)
    adapter = AdapterConfig(quantization=args.quantization, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank,
                            target_modules=LINEAR_NAMES, gradient_checkpointing=not args.no_gradient_checkpointing)
    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, engine in ((n, e) for n in args.models for e in args.engines):
            r = run_model(name, Path(workdir), device, adapter, args, engine)
            results.append(r)
            peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
            print(f"{name}{' (tiny)' if args.tiny else ''} [{engine}]: {r['seconds']['median_s']:.2f} s/iteration, "
                  f"peak {peak} GiB allocated, plan {r['plan_allocated_gib']:.2f} GiB "
                  f"(+{r['plan']['cuda_overhead']:.1f} context = {r['plan']['total']:.2f}), "
                  f"mean completion {r['mean_completion_len']:.0f} tokens, sampler gap {r['sampler_gap'] or 0:.1e} nats/token")
    out = {
        "bench": "memory_iteration",
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"adapter": asdict(adapter)},
        "results": results,
        **environment(args.device),
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
