"""Benchmark the step-segment packer (C++ vs NumPy twin vs Python reference) and packed scoring.

    python benchmarks/bench_segments.py --json runs/bench_segments.json [--n-seqs 100000]
    python benchmarks/bench_segments.py --json runs/bench_scoring.json --skip-packer

Workload: sequences of uniform 20-800 tokens with uniform 10-60 prompt tokens (at most
half the sequence, so every sequence has a completion) and a
boundary token placed so each completion has ~8 steps, rule "boundary". All three
take the flat form (ids + offsets); the C++ list entry point, which also
concatenates, is timed as an extra row. The Python reference is timed on the first
--ref-seqs sequences and scaled by token count (it is linear in tokens).
Times are medians (p20/p80) of --repeats runs after one warm-up run.

Scoring section: a reward-scoring pass (`per_token_logprobs(..., return_hidden=True)`
under `torch.no_grad()`) of a random-weight tiny Llama (hidden 128, 4 layers, vocab
512, sdpa, fp32, CPU) over --scoring-seqs sequences of uniform 20-512 tokens, padded
(right-padded batch) vs packed (`packing=True`: first-fit-decreasing rows with a
block-causal mask), same batch, runs alternating. Speed is real tokens per second;
"slots" (tokens the decoder computes, padding included) stand in for activation memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from rairl.models.lm import TinyLMConfig, build_tiny_lm, per_token_logprobs  # noqa: E402
from rairl.models.packing import first_fit_decreasing  # noqa: E402
from rairl.segments import (  # noqa: E402
    StepRule,
    pack_segments,
    pack_segments_flat,
    pack_segments_numpy,
    pack_segments_reference,
)

VOCAB = 32_000
BOUNDARY_ID = 13  # a "\n"-like step separator
STEPS_PER_COMPLETION = 8


def make_workload(n_seqs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat_ids (T,) int64, offsets (B+1,) int64, prompt_lens (B,) int64)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 801, n_seqs)
    prompt_lens = np.minimum(rng.integers(10, 61, n_seqs), lengths // 2)  # keep a completion
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat_ids = rng.integers(BOUNDARY_ID + 1, VOCAB, offsets[-1])
    # each completion token is a boundary with p = 8 / completion length
    p_boundary = np.repeat(STEPS_PER_COMPLETION / (lengths - prompt_lens), lengths)
    flat_ids[rng.random(offsets[-1]) < p_boundary] = BOUNDARY_ID
    return flat_ids, offsets, prompt_lens


def time_it(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median / p20 / p80 seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q = np.quantile(times, [0.2, 0.8])
    return {"median_s": statistics.median(times), "p20_s": float(q[0]), "p80_s": float(q[1])}


def peak_traced_mb(fn: Callable[[], object]) -> float:
    """Peak NumPy/Python heap during one call (C++ std::vector scratch is not traced)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def bench_packing(args: argparse.Namespace) -> dict:
    flat, offsets, prompt_lens = make_workload(args.n_seqs, args.seed)
    rule = StepRule("boundary", (BOUNDARY_ID,))
    n_ref = min(args.ref_seqs, args.n_seqs)
    ref_flat, ref_offsets = flat[: offsets[n_ref]], offsets[: n_ref + 1]
    sequences = np.split(flat, offsets[1:-1])
    runs = {
        "cpp_flat": lambda: pack_segments_flat(flat, offsets, prompt_lens, rule),
        "cpp_list": lambda: pack_segments(sequences, prompt_lens, rule),
        "numpy": lambda: pack_segments_numpy(flat, offsets, prompt_lens, rule),
        "python_subset": lambda: pack_segments_reference(
            ref_flat, ref_offsets, prompt_lens[:n_ref], rule),
    }
    rows = {}
    for name, fn in runs.items():
        rows[name] = time_it(fn, args.ref_repeats if name == "python_subset" else args.repeats)
        rows[name]["peak_traced_mb"] = peak_traced_mb(fn)
        rows[name]["tokens"] = len(ref_flat) if name == "python_subset" else len(flat)
    scale = len(flat) / len(ref_flat)
    rows["python_scaled"] = {k: v * scale for k, v in rows["python_subset"].items()
                             if k.endswith("_s")}
    rows["python_scaled"]["tokens"] = len(flat)
    seconds = {name: row["median_s"] for name, row in rows.items()}
    packed = runs["cpp_flat"]()
    return {
        "speedup_vs_python": seconds["python_scaled"] / seconds["cpp_flat"],
        "speedup_vs_numpy": seconds["numpy"] / seconds["cpp_flat"],
        "seconds": seconds,
        "rows": rows,
        "workload": {"n_seqs": args.n_seqs, "tokens": int(len(flat)),
                     "actions": packed.num_actions, "python_ref_seqs": n_ref,
                     "python_ref_tokens": int(len(ref_flat)), "python_scale": scale},
    }


def print_packing(result: dict) -> None:
    w = result["workload"]
    print(f"\nstep-segment packing: {w['n_seqs']} seqs, {w['tokens']:,} tokens, "
          f"{w['actions']:,} actions (rule 'boundary')")
    print(f"{'impl':<15}{'median s':>11}{'p20 s':>10}{'p80 s':>10}{'Mtok/s':>10}{'peak MB':>10}")
    for name, row in result["rows"].items():
        mtok = row["tokens"] / row["median_s"] / 1e6
        peak = f"{row['peak_traced_mb']:.0f}" if "peak_traced_mb" in row else "-"
        print(f"{name:<15}{row['median_s']:>11.4f}{row['p20_s']:>10.4f}{row['p80_s']:>10.4f}"
              f"{mtok:>10.1f}{peak:>10}")
    print(f"python_scaled = python_subset on the first {w['python_ref_seqs']} sequences "
          f"({w['python_ref_tokens']:,} tokens) x {w['python_scale']:.1f} (token ratio)")
    print(f"speedup_vs_python = {result['speedup_vs_python']:.1f}x   "
          f"speedup_vs_numpy = {result['speedup_vs_numpy']:.2f}x   (cpp_flat)")


SCORING_VOCAB = 512
SCORING_LENGTHS = (20, 512)  # inclusive, uniform


class _Vocab:
    """The three ids and the size `build_tiny_lm` reads from a tokenizer."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return SCORING_VOCAB


def scoring_batch(n_seqs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids (B, T) int64, attention_mask (B, T) int64), lengths uniform 20-512."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(SCORING_LENGTHS[0], SCORING_LENGTHS[1] + 1, (n_seqs,), generator=g)
    mask = (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()
    return torch.randint(3, SCORING_VOCAB, mask.shape, generator=g) * mask, mask


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


def bench_scoring(args: argparse.Namespace) -> dict:
    model = build_tiny_lm(_Vocab(), TinyLMConfig(hidden_size=128, num_layers=4, num_heads=4,
                                                  intermediate_size=384, max_positions=512)).eval()
    ids, mask = scoring_batch(args.scoring_seqs, args.seed)
    lengths = mask.sum(1).numpy()
    row, offset = first_fit_decreasing(lengths, int(lengths.max()))
    tokens = int(lengths.sum())

    def score(packing: bool) -> torch.Tensor:
        with torch.no_grad():
            return per_token_logprobs(model, ids, mask, return_hidden=True, packing=packing)[0]

    lp_padded, lp_packed = score(False), score(True)
    times = time_alternating({"padded": lambda: score(False), "packed": lambda: score(True)},
                             args.scoring_repeats)
    rows = {}
    for name, ts in times.items():
        q = np.quantile([tokens / t for t in ts], [0.2, 0.8])
        rows[name] = {"median_s": statistics.median(ts), "tokens_per_s": tokens / statistics.median(ts),
                      "tokens_per_s_p20": float(q[0]), "tokens_per_s_p80": float(q[1])}
    return {
        "scoring_tokens_per_s_packed": rows["packed"]["tokens_per_s"],
        "scoring_tokens_per_s_padded": rows["padded"]["tokens_per_s"],
        "scoring_speedup": rows["packed"]["tokens_per_s"] / rows["padded"]["tokens_per_s"],
        "scoring": {
            "rows": rows,
            "max_rel_err_logprobs": float((lp_packed - lp_padded).abs().max() / lp_padded.abs().max()),
            "workload": {"n_seqs": args.scoring_seqs, "tokens": tokens,
                         "padded_slots": int(mask.numel()),
                         "packed_slots": int((row.max() + 1) * (offset + lengths).max()),
                         "packed_rows": int(row.max() + 1), "repeats": args.scoring_repeats,
                         "model": "llama h128 L4 V512 sdpa fp32", "threads": torch.get_num_threads()},
        },
    }


def print_scoring(result: dict) -> None:
    s, w = result["scoring"], result["scoring"]["workload"]
    print(f"\nreward scoring (no_grad, per_token_logprobs + hidden): {w['n_seqs']} seqs, "
          f"{w['tokens']:,} real tokens, {w['model']}, {w['threads']} thread(s)")
    print(f"{'layout':<10}{'slots':>9}{'median s':>11}{'tok/s':>10}{'p20':>10}{'p80':>10}")
    for name, row in s["rows"].items():
        slots = w[f"{name}_slots"]
        print(f"{name:<10}{slots:>9,}{row['median_s']:>11.4f}{row['tokens_per_s']:>10.0f}"
              f"{row['tokens_per_s_p20']:>10.0f}{row['tokens_per_s_p80']:>10.0f}")
    print(f"scoring_speedup = {result['scoring_speedup']:.2f}x (packed / padded, {w['packed_rows']} rows)   "
          f"max rel err of log-probs = {s['max_rel_err_logprobs']:.1e}")


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment() -> dict:
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "command": " ".join(sys.argv)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--n-seqs", type=int, default=100_000)
    parser.add_argument("--ref-seqs", type=int, default=5_000,
                        help="sequences the Python reference is timed on (then scaled)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-packer", action="store_true", help="run the scoring section only")
    parser.add_argument("--skip-scoring", action="store_true", help="run the packer section only")
    parser.add_argument("--scoring-seqs", type=int, default=32)
    parser.add_argument("--scoring-repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the scoring pass")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    report = {"env": environment()}
    if not args.skip_packer:
        packing = bench_packing(args)
        print_packing(packing)
        report.update(packing)  # top-level speedup_vs_python / speedup_vs_numpy / seconds
    if not args.skip_scoring:
        scoring = bench_scoring(args)
        print_scoring(scoring)
        report.update(scoring)  # top-level scoring_* keys and the "scoring" details

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
