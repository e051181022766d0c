"""Benchmark the step-segment packer: C++ vs its NumPy twin vs the Python reference.

    python benchmarks/bench_segments.py --json runs/bench_segments.json [--n-seqs 100000]

Workload: sequences of uniform 20-800 tokens with uniform 10-60 prompt tokens (at most
half the sequence, so every sequence has a completion) and a
boundary token placed so each completion has ~8 steps, rule "boundary". All three
take the flat form (ids + offsets); the C++ list entry point, which also
concatenates, is timed as an extra row. The Python reference is timed on the first
--ref-seqs sequences and scaled by token count (it is linear in tokens).
Times are medians (p20/p80) of --repeats runs after one warm-up run.
(The padding-free decoder pass, sequence packing for scoring, is bench_packing.py.)
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
from rairl.kernels.segments import (
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


def bench_packer(args: argparse.Namespace) -> dict:
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


def print_packer(result: dict) -> None:
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
            "command": " ".join(sys.argv)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--n-seqs", type=int, default=100_000)
    parser.add_argument("--ref-seqs", type=int, default=5_000,
                        help="sequences the Python reference is timed on (then scaled)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    report = {"env": environment()}
    packer = bench_packer(args)
    print_packer(packer)
    report.update(packer)  # top-level speedup_vs_python / speedup_vs_numpy / seconds

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
