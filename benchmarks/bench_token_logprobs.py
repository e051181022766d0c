"""Benchmark `token_logprobs` (LM head + log-softmax + gather, fused) against the baselines.

    python benchmarks/bench_token_logprobs.py --device cpu --n 4096 --h 256 --v 32000 --json out.json
    python benchmarks/bench_token_logprobs.py --device cuda --n 16384 --h 3584 --v 151936 --dtype bf16

Variants, all computing logp (N,) fp32 from hidden (N, H) and weight (V, H), then the
backward of sum(g * logp) for a fixed random g:

* naive        logits = hidden @ weight.T (input dtype, upcast to fp32), log_softmax, gather
* compile      torch.compile of naive (skipped, with a note, where it fails to compile)
* trl          TRL's selective_log_softmax on the full logits as (N/512, 512, V): gather, then
               a Python loop over sequences of logsumexp (fp32) or log_softmax (16-bit)
* liger        Liger-Kernel fused linear cross-entropy, reduction="sum" (CUDA, if installed)
* rairl        rairl.kernels.token_logprobs, automatic backend (torch on CPU, triton on CUDA)
* rairl_torch  the chunked torch backend, on CUDA (on CPU it is `rairl`)

Reports fwd and fwd+bwd time (median, p20, p80), peak memory above the inputs (CPU: peak RSS
in a fresh process per variant; CUDA: max_memory_allocated), ratios against naive and the
max |logp - fp32 reference on the upcast inputs| (16-bit naive rounds its logits). The
JSON's top-level `time_ratio_vs_naive` / `peak_mem_ratio_vs_naive` are rairl's fwd+bwd.
`--sweep` (CUDA) times the Triton forward tile configs.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import sys

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
from rairl.kernels._dispatch import resolve_backend
from rairl.kernels.token_logprobs import token_logprobs

from rairl.metrics import environment

# the module, for --sweep (the package re-exports the function under the module's name)
tlp_mod = sys.modules["rairl.kernels.token_logprobs"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("naive", "compile", "trl", "liger", "rairl", "rairl_torch")
TRL_SEQ = 512  # tokens per sequence for the TRL baseline
# (BLOCK_N, BLOCK_V, BLOCK_H, warps, stages) for --sweep; the first is the default
SWEEP = [(64, 128, 32, 8, 3), (64, 128, 64, 8, 3), (128, 128, 32, 8, 3), (128, 64, 64, 8, 3),
         (64, 256, 32, 8, 3), (128, 128, 64, 8, 3)]


class Skip(Exception):
    """A baseline that cannot run here; the message is printed and recorded."""


def make_inputs(args):
    torch.manual_seed(args.seed)
    dev, dt = torch.device(args.device), DTYPES[args.dtype]
    x = torch.randn(args.n, args.h, device=dev, dtype=dt).requires_grad_(True)
    w = torch.randn(args.v, args.h, device=dev, dtype=dt).mul_(args.h ** -0.5).requires_grad_(True)
    t = torch.randint(0, args.v, (args.n,), device=dev)
    g = torch.randn(args.n, device=dev)
    return x, w, t, g


def _naive(x, w, t):
    return torch.log_softmax((x @ w.t()).float(), dim=-1).gather(1, t[:, None]).squeeze(1)


def _trl_selective(x, w, t):
    # trl.trainer.utils.selective_log_softmax on the full logits seen as (B, T, V) sequences
    # of T = TRL_SEQ tokens: its loop runs over B (a loop over single tokens would make the
    # select-backward allocate a full (N, V) gradient per token).
    seq = TRL_SEQ if x.shape[0] % TRL_SEQ == 0 else x.shape[0]
    logits = (x @ w.t()).view(-1, seq, w.shape[0])                 # (B, T, V)
    index = t.view(-1, seq)
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, index[..., None]).squeeze(-1)
        return (picked - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])).view(-1)
    rows = [torch.log_softmax(row, -1).gather(-1, i[:, None]).squeeze(-1)
            for row, i in zip(logits, index, strict=True)]
    return torch.stack(rows).view(-1).float()


def build(name: str, args, x, w, t, g):
    """-> (fwd, loss) callables; loss() runs the forward and returns the scalar to backward."""
    if name == "naive":
        fwd = lambda: _naive(x, w, t)  # noqa: E731
    elif name == "compile":
        compiled = torch.compile(_naive)
        fwd = lambda: compiled(x, w, t)  # noqa: E731
        try:
            (fwd() * g).sum().backward()
        except Exception as e:  # noqa: BLE001  (any inductor / compiler failure)
            raise Skip(f"torch.compile failed here: {type(e).__name__}: {str(e)[:120]}") from e
    elif name == "trl":
        fwd = lambda: _trl_selective(x, w, t)  # noqa: E731
    elif name == "liger":
        if args.device != "cuda":
            raise Skip("liger: Triton-only (CUDA); not run on CPU")
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        except ImportError as e:
            raise Skip("liger: liger-kernel not installed") from e
        fwd = lambda: -liger_fused_linear_cross_entropy(x, w, t, reduction="sum")  # noqa: E731
        return fwd, fwd  # scalar sum of logp; its grad is computed in the forward anyway
    elif name == "rairl":
        fwd = lambda: token_logprobs(x, w, t, chunk_size=args.chunk_size)  # noqa: E731
    elif name == "rairl_torch":
        if args.device != "cuda":
            raise Skip("rairl_torch: on CPU this is `rairl`")
        fwd = lambda: token_logprobs(  # noqa: E731
            x, w, t, backend="torch", chunk_size=args.chunk_size)
    else:
        raise ValueError(name)
    return fwd, lambda: (fwd() * g).sum()


def _fwd_bwd(loss, x, w):
    def run():
        x.grad = w.grad = None
        loss().backward()
    return run


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def probe_cpu_memory(args) -> dict:
    """Fresh-process CPU peak RSS above the post-setup RSS, for fwd and for fwd+bwd."""
    x, w, t, g = make_inputs(args)
    fwd, loss = build(args.probe, args, x, w, t, g)
    _fwd_bwd(loss, x, w)()  # warm-up: compile, lazy init, allocator pools
    x.grad = w.grad = None
    _trim_heap()
    base = rss_bytes()
    if not reset_peak_rss():
        return {"error": "cannot reset VmHWM (/proc/self/clear_refs)"}
    out = loss()
    fwd_peak = peak_rss_bytes() - base
    out.backward()
    return {"peak_fwd_bytes": fwd_peak, "peak_bytes": peak_rss_bytes() - base}


def measure(args) -> dict:
    x, w, t, g = make_inputs(args)
    results, fns_fwd, fns_full = {}, {}, {}
    for name in args.variants:
        try:
            fwd, loss = build(name, args, x, w, t, g)
        except Skip as e:
            print(f"  skip {name}: {e}")
            results[name] = {"skipped": str(e)}
            continue
        fns_fwd[name] = fwd
        fns_full[name] = _fwd_bwd(loss, x, w)
        results[name] = {}
    with torch.no_grad():  # accuracy: log-probs vs fp32 math on the upcast inputs
        ref = _naive(x.float(), w.float(), t)
        for name, fwd in fns_fwd.items():
            out = fwd()
            if out.dim() == 1:
                results[name]["max_abs_err_vs_fp32"] = (out.float() - ref).abs().max().item()
        del ref, out
    for name, timing in time_variants(fns_fwd, fns_full, args.device, args.reps, args.warmup).items():
        results[name].update(timing)
    if args.device == "cpu":
        del x, w, t, g, fns_fwd, fns_full
        _trim_heap()
        for name, res in results.items():
            if "skipped" in res:
                continue
            argv = [__file__, "--probe", name] + _size_argv(args)
            mem = run_probe(argv)
            res.update(mem if "error" not in mem else {"peak_error": mem["error"]})
    return results


def _size_argv(args) -> list[str]:
    argv = ["--device", args.device, "--n", str(args.n), "--h", str(args.h), "--v", str(args.v),
            "--dtype", args.dtype, "--seed", str(args.seed)]
    argv += ["--chunk-size", str(args.chunk_size)] if args.chunk_size else []
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def add_ratios(results: dict) -> None:
    base = results.get("naive", {})
    for res in results.values():
        if "fwd_bwd" in res and "fwd_bwd" in base:
            res["time_ratio_vs_naive"] = res["fwd_bwd"]["median_ms"] / base["fwd_bwd"]["median_ms"]
            res["fwd_time_ratio_vs_naive"] = res["fwd"]["median_ms"] / base["fwd"]["median_ms"]
        if res.get("peak_bytes") and base.get("peak_bytes"):
            res["peak_mem_ratio_vs_naive"] = res["peak_bytes"] / base["peak_bytes"]


def sweep(args) -> list[dict]:
    """CUDA: time rairl's Triton path over the SWEEP tile configs (restores the defaults)."""
    x, w, t, g = make_inputs(args)
    key = "fp32" if args.dtype == "fp32" else "16bit"
    saved = dict(tlp_mod._GPU_TILES[key])
    rows = []
    try:
        for bn, bv, bh, warps, stages in SWEEP:
            cfg = dict(BLOCK_N=bn, BLOCK_V=bv, BLOCK_H=bh, num_warps=warps, num_stages=stages)
            tlp_mod._GPU_TILES[key] = dict(cfg)
            fwd = lambda: token_logprobs(x, w, t, backend="triton")  # noqa: E731
            loss = lambda fwd=fwd: (fwd() * g).sum()  # noqa: E731
            try:
                row = {"config": cfg, "fwd": time_cuda(fwd),
                       "fwd_bwd": time_cuda(_fwd_bwd(loss, x, w))}
            except Exception as e:  # noqa: BLE001  (out of shared memory, etc.)
                row = {"config": cfg, "error": f"{type(e).__name__}: {str(e)[:100]}"}
            rows.append(row)
            print(f"  sweep {cfg}: fwd {fmt_ms(row.get('fwd'))}  "
                  f"fwd+bwd {fmt_ms(row.get('fwd_bwd'))}"
                  + (f"  {row['error']}" if "error" in row else ""))
    finally:
        tlp_mod._GPU_TILES[key] = saved
    return rows


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--n", type=int, default=4096, help="tokens")
    p.add_argument("--h", type=int, default=256, help="hidden size")
    p.add_argument("--v", type=int, default=32000, help="vocabulary size")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--reps", type=int, default=5, help="CPU timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="CPU warm-up rounds")
    p.add_argument("--chunk-size", type=int, default=None, help="torch backend rows per chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads")
    p.add_argument("--sweep", action="store_true", help="CUDA: time Triton tile configs")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: memory probe
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        import json

        print(json.dumps(probe_cpu_memory(args)))
        return None
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")

    backend = resolve_backend(None, torch.device(args.device))
    print(f"token_logprobs N={args.n} H={args.h} V={args.v} {args.dtype} on {args.device} "
          f"(rairl backend: {backend})")
    results = measure(args)
    add_ratios(results)
    print(f"{'variant':12s} {'fwd ms (p20-p80)':>28s} {'fwd+bwd ms (p20-p80)':>28s} "
          f"{'peak MB':>9s} {'t/naive':>8s} {'mem/naive':>9s}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:12s} skipped: {r['skipped']}")
            continue
        peak = f"{r['peak_bytes'] / 2**20:9.1f}" if r.get("peak_bytes") else f"{'-':>9s}"
        print(f"{name:12s} {fmt_ms(r.get('fwd')):>28s} {fmt_ms(r.get('fwd_bwd')):>28s} {peak} "
              f"{r.get('time_ratio_vs_naive', float('nan')):8.3f} "
              f"{r.get('peak_mem_ratio_vs_naive', float('nan')):9.3f}")
    out = {
        "bench": "token_logprobs",
        "config": {k: getattr(args, k) for k in ("device", "n", "h", "v", "dtype", "reps",
                                                 "warmup", "chunk_size", "seed", "threads")},
        "rairl_backend": backend,
        "results": results,
        "time_ratio_vs_naive": results.get("rairl", {}).get("time_ratio_vs_naive"),
        "peak_mem_ratio_vs_naive": results.get("rairl", {}).get("peak_mem_ratio_vs_naive"),
        **environment(args.device),
    }
    if args.sweep and args.device == "cuda":
        out["sweep"] = sweep(args)
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
