"""Benchmark the fused AIRL discriminator loss (segment sums, shaping, class-balanced BCE).

    python benchmarks/bench_airl_loss.py --device cpu --n 65536 --action-len 32 --json out.json
    python benchmarks/bench_airl_loss.py --device cuda --n 1048576 --action-len 1 --dtype bf16

Workload: sequences of --seq-len tokens, each a 1-64 token prompt then actions of random
length with mean --action-len (1 = dense, one action per token); the last action of each
sequence is terminal, labels alternate by sequence, ~10% of actions invalid.

Variants (loss forward, and forward + backward to g_tok and h_tok):

* reference  the per-action Python loop (only when A <= --max-ref-actions)
* torch      rairl's vectorised torch backend (index_add_ segment sums, autograd)
* compile    torch.compile of the torch backend (skipped, with a note, if it fails)
* triton     rairl's fused kernels (CUDA)

Effective GB/s counts the bytes the fused loss must move: forward reads g, logp (N each),
h at 2 positions per action, the per-action start/end/terminal/label/valid and writes ell;
backward reads those per-action inputs and ell and writes d g_tok and d h_tok (N each).
On CUDA a device-to-device copy of --copy-mib MiB gives the achievable bandwidth beside it.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _common import (
    fmt_ms,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    run_probe,
    time_cuda,
    time_variants,
    write_json,
)
from rairl.kernels.airl_loss import airl_loss, airl_loss_reference

from rairl.metrics import environment

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("reference", "torch", "compile", "triton")
GAMMA = 0.99


class Skip(Exception):
    """A variant that cannot run here; the message is printed and recorded."""


def make_inputs(args) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(args.seed)
    seq_len = min(args.seq_len, args.n)
    starts, ends, terms, labels = [], [], [], []
    for seq, off in enumerate(range(0, args.n - seq_len + 1, seq_len)):
        pos = off + int(rng.integers(1, min(65, seq_len)))          # prompt of 1-64 tokens
        last = off + seq_len                                        # exclusive
        while pos < last:
            length = min(last - pos, 1 if args.action_len == 1
                         else int(rng.geometric(1.0 / args.action_len)))
            starts.append(pos)
            ends.append(pos + length - 1)
            terms.append(pos + length == last)
            labels.append(float(seq % 2 == 0))
            pos += length
    dev, dt = torch.device(args.device), DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(args.seed)
    a = len(starts)
    return {
        "g_tok": torch.randn(args.n, generator=gen).to(dev, dt).requires_grad_(True),
        "h_tok": torch.randn(args.n, generator=gen).to(dev, dt).requires_grad_(True),
        "logp_tok": (-3 * torch.rand(args.n, generator=gen)).to(dev, dt),
        "action_start": torch.tensor(starts, dtype=torch.int64, device=dev),
        "action_end": torch.tensor(ends, dtype=torch.int64, device=dev),
        "action_terminal": torch.tensor(terms, dtype=torch.bool, device=dev),
        "labels": torch.tensor(labels, device=dev),
        "valid": (torch.rand(a, generator=gen) > 0.1).to(dev),
    }


def fused_bytes(n: int, a: int, elem: int) -> tuple[int, int]:
    """Minimal bytes moved by the fused forward and backward."""
    per_action_in = 8 + 8 + 1 + 4 + 1                               # start, end, term, label, valid
    fwd = 2 * n * elem + 2 * a * elem + a * per_action_in + 4 * a  # g, logp, h x2, ell
    bwd = a * (per_action_in + 4) + 2 * n * elem                    # + ell; dg, dh
    return fwd, fwd + bwd


def build(name: str, args, b: dict):
    """-> loss() callable."""
    kw = {k: v for k, v in b.items() if k != "valid"}
    if name == "reference":
        if b["action_start"].numel() > args.max_ref_actions:
            raise Skip(f"reference: {b['action_start'].numel()} actions > --max-ref-actions")
        return lambda: airl_loss_reference(**kw, gamma=GAMMA, valid=b["valid"])
    if name == "torch":
        return lambda: airl_loss(**kw, gamma=GAMMA, valid=b["valid"], backend="torch")
    if name == "compile":
        fn = torch.compile(lambda **k: airl_loss(**k, gamma=GAMMA, backend="torch"))
        loss = lambda: fn(**kw, valid=b["valid"])  # noqa: E731
        try:
            loss().backward()
        except Exception as e:  # noqa: BLE001  (any inductor / compiler failure)
            raise Skip(f"torch.compile failed here: {type(e).__name__}: {str(e)[:120]}") from e
        return loss
    if name == "triton":
        if args.device != "cuda":
            raise Skip("triton: CUDA only in benchmarks (the CPU interpreter is a test tool)")
        return lambda: airl_loss(**kw, gamma=GAMMA, valid=b["valid"], backend="triton")
    raise ValueError(name)


def _fwd_bwd(loss, b):
    def run():
        b["g_tok"].grad = b["h_tok"].grad = None
        loss().backward()
    return run


def probe_cpu_memory(args) -> dict:
    b = make_inputs(args)
    run = _fwd_bwd(build(args.probe, args, b), b)
    run()
    b["g_tok"].grad = b["h_tok"].grad = None
    base = rss_bytes()
    if not reset_peak_rss():
        return {"error": "cannot reset VmHWM (/proc/self/clear_refs)"}
    run()
    return {"peak_bytes": peak_rss_bytes() - base}


def copy_bandwidth_gbs(mib: int) -> float:
    """CUDA device-to-device copy: (read + write) bytes / median time."""
    src = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src))
    return 2 * src.numel() / (t["median_ms"] * 1e-3) / 1e9


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--n", type=int, default=65536, help="flat tokens")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence")
    p.add_argument("--action-len", type=int, default=32, help="mean tokens per action (1: dense)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--max-ref-actions", type=int, default=3000)
    p.add_argument("--reps", type=int, default=20, help="CPU timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="CPU warm-up rounds")
    p.add_argument("--copy-mib", type=int, default=1024, help="CUDA copy-bandwidth buffer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads")
    p.add_argument("--json", default=None)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: memory probe
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe_cpu_memory(args)))
        return None
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")

    b = make_inputs(args)
    n, a = args.n, b["action_start"].numel()
    elem = b["g_tok"].element_size()
    bytes_fwd, bytes_full = fused_bytes(n, a, elem)
    print(f"airl_loss N={n} A={a} (mean action {n / max(a, 1):.1f} tokens) {args.dtype} "
          f"on {args.device}")
    results, fwd_fns, full_fns = {}, {}, {}
    for name in args.variants:
        try:
            loss = build(name, args, b)
        except Skip as e:
            print(f"  skip {name}: {e}")
            results[name] = {"skipped": str(e)}
            continue
        fwd_fns[name], full_fns[name] = loss, _fwd_bwd(loss, b)
        results[name] = {}
    ref = None
    for name, loss in fwd_fns.items():  # sanity: all variants give the same loss
        val = loss().item()
        ref = val if ref is None else ref
        results[name]["loss"] = val
        results[name]["abs_diff_vs_first"] = abs(val - ref)
    for name, timing in time_variants(fwd_fns, full_fns, args.device, args.reps, args.warmup).items():
        results[name].update(timing)
    if args.device == "cpu":
        for name in fwd_fns:
            argv_probe = [__file__, "--probe", name] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                ("device", "n", "seq_len", "action_len", "dtype", "max_ref_actions", "seed",
                 "threads") if getattr(args, k) is not None]
            mem = run_probe(argv_probe)
            results[name].update(mem if "error" not in mem else {"peak_error": mem["error"]})
    for r in results.values():
        if "fwd" in r:
            r["fwd_gbs"] = bytes_fwd / (r["fwd"]["median_ms"] * 1e-3) / 1e9
            r["fwd_bwd_gbs"] = bytes_full / (r["fwd_bwd"]["median_ms"] * 1e-3) / 1e9
    base = results.get("torch", {})
    for r in results.values():
        if "fwd_bwd" in r and "fwd_bwd" in base:
            r["time_ratio_vs_torch"] = r["fwd_bwd"]["median_ms"] / base["fwd_bwd"]["median_ms"]
    out = {
        "bench": "airl_loss",
        "config": {k: getattr(args, k) for k in ("device", "n", "seq_len", "action_len", "dtype",
                                                 "reps", "warmup", "seed", "threads")},
        "actions": a, "bytes_fwd": bytes_fwd, "bytes_fwd_bwd": bytes_full,
        "results": results,
        **environment(args.device),
    }
    if args.device == "cuda":
        out["copy_gbs"] = copy_bandwidth_gbs(args.copy_mib)
    print(f"{'variant':10s} {'fwd ms (p20-p80)':>28s} {'fwd+bwd ms (p20-p80)':>28s} "
          f"{'fwd GB/s':>9s} {'full GB/s':>9s} {'peak MB':>8s}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:10s} skipped: {r['skipped']}")
            continue
        peak = r.get("peak_bytes")
        peak = f"{peak / 2**20:8.2f}" if peak is not None else f"{'-':>8s}"
        print(f"{name:10s} {fmt_ms(r['fwd']):>28s} {fmt_ms(r['fwd_bwd']):>28s} "
              f"{r['fwd_gbs']:9.3f} {r['fwd_bwd_gbs']:9.3f} {peak}")
    if "copy_gbs" in out:
        print(f"device-to-device copy: {out['copy_gbs']:.0f} GB/s")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
