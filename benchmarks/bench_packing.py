"""Benchmark the padding-free (packed) decoder pass against the right-padded one, CPU.

    python benchmarks/bench_packing.py --json runs/bench_packing.json
    python benchmarks/bench_packing.py --n-seqs 64 --repeats 11 --threads 2

Workload: a reward-scoring pass (`rairl.models.lm.per_token_logprobs(..., return_hidden=True)`
under `torch.no_grad()`) of a random-weight tiny Llama (hidden 128, 4 layers, vocab 512, sdpa,
fp32, CPU) over --n-seqs sequences of uniform 20-512 tokens, as one right-padded batch.

Variants, same batch, runs alternating (the order flips every round, after one warm-up each):

* padded  `packing=False`: the decoder runs on the (B, T) padded batch
* packed  `packing=True`: first-fit-decreasing rows with a block-causal mask (`rairl.models.packing`)

Reports seconds per pass (median, p20, p80), real tokens per second (median, p20, p80 over
the rounds) and "slots" (tokens the decoder computes, padding included), which stand in for
activation memory. `scoring_speedup` is packed / padded real tokens per second; the largest
packed-vs-padded log-prob difference (relative) is the accuracy check.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import fmt_ms, summarize, write_json

from rairl.metrics import environment
from rairl.models.lm import TinyLMConfig, build_tiny_lm, per_token_logprobs
from rairl.models.packing import first_fit_decreasing

VOCAB = 512
LENGTHS = (20, 512)  # inclusive, uniform
MODEL = TinyLMConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384, max_positions=512)


class _Vocab:
    """The three ids and the size `build_tiny_lm` reads from a tokenizer."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return VOCAB


def make_batch(n_seqs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids (B, T) int64, attention_mask (B, T) int64), lengths uniform 20-512."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(LENGTHS[0], LENGTHS[1] + 1, (n_seqs,), generator=g)
    mask = (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()
    return torch.randint(3, VOCAB, mask.shape, generator=g) * mask, mask


def time_alternating(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each fn over `repeats` rounds after one warm-up each; the order flips every round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats):
        for name in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def measure(args: argparse.Namespace) -> dict:
    model = build_tiny_lm(_Vocab(), MODEL).eval()
    ids, mask = make_batch(args.n_seqs, args.seed)
    lengths = mask.sum(1).numpy()
    row, offset = first_fit_decreasing(lengths, int(lengths.max()))
    tokens = int(lengths.sum())

    def score(packing: bool) -> torch.Tensor:
        with torch.no_grad():
            return per_token_logprobs(model, ids, mask, return_hidden=True, packing=packing)[0]

    lp_padded, lp_packed = score(False), score(True)
    times = time_alternating({"padded": lambda: score(False), "packed": lambda: score(True)},
                             args.repeats)
    results = {}
    for name, ts in times.items():
        q = np.quantile([tokens / t for t in ts], [0.2, 0.8])
        results[name] = {**summarize(ts), "tokens_per_s": tokens / statistics.median(ts),
                         "tokens_per_s_p20": float(q[0]), "tokens_per_s_p80": float(q[1])}
    return {
        "results": results,
        "scoring_tokens_per_s_packed": results["packed"]["tokens_per_s"],
        "scoring_tokens_per_s_padded": results["padded"]["tokens_per_s"],
        "scoring_speedup": results["packed"]["tokens_per_s"] / results["padded"]["tokens_per_s"],
        "max_rel_err_logprobs": float((lp_packed - lp_padded).abs().max() / lp_padded.abs().max()),
        "workload": {"n_seqs": args.n_seqs, "tokens": tokens, "padded_slots": int(mask.numel()),
                     "packed_slots": int((row.max() + 1) * (offset + lengths).max()),
                     "packed_rows": int(row.max() + 1),
                     "model": "llama h128 L4 V512 sdpa fp32"},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-seqs", type=int, default=32, help="sequences in the batch")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (one pass of each layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="write results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"packed scoring (no_grad, per_token_logprobs + hidden): {args.n_seqs} seqs of "
          f"{LENGTHS[0]}-{LENGTHS[1]} tokens, tiny Llama on cpu, {args.threads} thread(s)")
    res = measure(args)
    w = res["workload"]
    print(f"{w['tokens']:,} real tokens, {w['model']}, {args.repeats} rounds")
    print(f"{'layout':8s} {'slots':>8s} {'ms/pass (p20-p80)':>28s} {'tok/s':>8s} {'p20':>8s} {'p80':>8s}")
    for name, r in res["results"].items():
        print(f"{name:8s} {w[f'{name}_slots']:>8,} {fmt_ms(r):>28s} {r['tokens_per_s']:8.0f} "
              f"{r['tokens_per_s_p20']:8.0f} {r['tokens_per_s_p80']:8.0f}")
    print(f"scoring_speedup = {res['scoring_speedup']:.2f}x (packed / padded, {w['packed_rows']} rows)   "
          f"max rel err of log-probs = {res['max_rel_err_logprobs']:.1e}")
    out = {
        "bench": "packing",
        "config": {k: getattr(args, k) for k in ("n_seqs", "repeats", "seed", "threads")},
        **res,
        **environment("cpu"),
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
