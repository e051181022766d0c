"""Check the `vllm` rollout engine against the trainer, and time it beside `hf` and `hf_merged` (CPU or CUDA).

    ENV/bin/python benchmarks/vllm_env/check_engine.py [--device cpu] [--json runs/vllm_check.json]

Run in the environment `benchmarks/vllm_env/setup.sh` builds. Setup (offline): a tiny Llama and BPE
tokenizer on the embedded task, a shared base (fp32 on CPU, bf16 on CUDA) with a LoRA policy adapter
whose weights are redrawn to stand for a policy update. Checks, each an assertion:

* after construction and after `refresh()`, the mean |engine log-prob − trainer log-prob| per sampled
  token is below --tol (nats); a stale engine (updated policy, no refresh) is far from it;
* a prompt's samples depend on its seed only (alone or in a batch);
* completions that stopped end with EOS, as `sample_completions` returns them.

Then completion tokens/s of hf, hf_merged and vllm on the same prompts (round-robin, medians). Prints
one JSON object (and writes it with --json).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from rairl.data import TaskConfig, make_splits
    from rairl.models.adapters import AdapterConfig, SharedBaseModels, load_base
    from rairl.models.batch import collate, encode_prompts
    from rairl.models.lm import TinyLMConfig, build_tiny_lm
    from rairl.models.rollout import RolloutConfig, make_sampler
    from rairl.models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer

    folder = tempfile.mkdtemp(prefix="rairl_vllm_check_")
    examples = [p.example() for p in make_splits(0, TaskConfig(n_train=300, n_val=10, n_test=10)).train]
    train_bpe_tokenizer([format_prompt(e.prompt) + e.completion for e in examples], 512).save_pretrained(folder)
    tok = load_tokenizer(folder)
    build_tiny_lm(tok, TinyLMConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)).save_pretrained(folder)
    cfg = AdapterConfig(quantization="bf16" if args.device.startswith("cuda") else "fp32", lora_rank=4, lora_alpha=8)
    models = SharedBaseModels(load_base(folder, cfg, args.device), cfg=cfg)

    @torch.no_grad()
    def update() -> None:
        for p in models.policy_parameters():
            p.normal_(std=0.3)

    update()
    prompts = encode_prompts(tok, [e.prompt for e in examples[: args.prompts]], 512)
    kw = dict(n_samples=args.samples, max_new_tokens=args.max_new_tokens, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, progress=False)
    t0 = time.perf_counter()
    samplers = {e: make_sampler(RolloutConfig(engine=e), models) for e in ("hf", "hf_merged", "vllm")}
    construct_s = time.perf_counter() - t0

    def gap(sampler) -> tuple[float, list[list[int]]]:
        ids, lps = sampler.sample(prompts, seed=random.randrange(10**6), **kw)
        comps, rows = [c for g in ids for c in g], [lp for g in lps for lp in g]
        batch = collate([p for p in prompts for _ in range(args.samples)], comps, tok.pad_token_id).to(args.device)
        with torch.no_grad():
            trainer = models.policy_logprobs(batch.input_ids, batch.attention_mask, score_mask=batch.completion_mask())
        diffs = [abs(float(trainer[r, s + k]) - lp) for r, (s, row) in enumerate(zip(batch.prompt_lens.tolist(), rows, strict=True))
                 for k, lp in enumerate(row)]
        return sum(diffs) / len(diffs), comps

    vllm = samplers["vllm"]
    out = {"construct_s": construct_s}
    out["gap_fresh"], comps = gap(vllm)
    assert out["gap_fresh"] < args.tol, out
    stopped = [c for c in comps if len(c) < args.max_new_tokens]
    assert all(c[-1] == tok.eos_token_id for c in stopped), "a stopped completion must end with EOS"
    update()
    out["gap_stale"], _ = gap(vllm)
    assert out["gap_stale"] > 100 * args.tol, out
    for s in samplers.values():
        s.refresh()
    out["gap_refreshed"], _ = gap(vllm)
    assert out["gap_refreshed"] < args.tol, out
    alone = vllm.sample(prompts[1:2], seeds=[7], **kw)[0]
    batch = vllm.sample(prompts[:3], seeds=[5, 7, 9], **kw)[0]
    assert alone[0] == batch[1], "a prompt's samples depend on its seed, not on the batch"

    times = {e: [] for e in samplers}
    tokens = {e: [] for e in samplers}
    for rnd in range(args.repeats + 1):
        for e, s in samplers.items():
            t0 = time.perf_counter()
            ids, _ = s.sample(prompts, seed=rnd, **kw)
            if rnd:  # the first round warms up
                times[e].append(time.perf_counter() - t0)
                tokens[e].append(sum(len(c) for g in ids for c in g))
    out["completion_tokens_per_s"] = {e: statistics.median(n / t for n, t in zip(tokens[e], times[e], strict=True)) for e in samplers}
    out["config"] = vars(args)
    import vllm as vllm_module
    out["versions"] = {"torch": torch.__version__, "vllm": vllm_module.__version__}
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
