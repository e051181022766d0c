"""Plumbing shared by the benchmarks: timing, peak memory, JSON output.

The scripts import the installed package (`pip install -e .`) like any user code, and this file
from their own folder (on sys.path when run as a script). The machine and versions each result file
records (its "provenance") come from `rairl.metrics.environment`, which `rairl compare` records too.

Timing: CUDA uses `triton.testing.do_bench` (median, p20, p80 over its own repeats); CPU
runs the variants round-robin (one call of each per round, after warm-up rounds) so that
load from other processes hits every variant alike, and reports median, p20, p80.
Peak memory: CUDA `torch.cuda.max_memory_allocated` above the inputs; CPU the peak RSS
(VmHWM, reset through /proc/self/clear_refs) above the RSS after setup, in a fresh
subprocess per variant, so that one variant's allocator cache never hides another's peak.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def summarize(times_s: list[float]) -> dict[str, float]:
    """Median / p20 / p80 in milliseconds."""
    ts = sorted(times_s)
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
    return {"median_ms": 1e3 * statistics.median(ts), "p20_ms": 1e3 * q[1],
            "p80_ms": 1e3 * q[7], "n": len(ts)}


def time_round_robin(fns: dict[str, Callable[[], object]], reps: int,
                     warmup: int = 1) -> dict[str, dict[str, float]]:
    """CPU timing: `warmup` + `reps` rounds, each calling every fn once, in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: summarize(v) for k, v in times.items()}


def time_cuda(fn: Callable[[], object], rep_ms: int = 200) -> dict[str, float]:
    """CUDA timing with triton.testing.do_bench (ms); fallback: CUDA events."""
    try:
        from triton.testing import do_bench

        med, p20, p80 = do_bench(fn, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return {"median_ms": med, "p20_ms": p20, "p80_ms": p80}
    except ImportError:
        fn()
        times = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return summarize(times)


def cuda_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak CUDA bytes allocated by one call above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def time_variants(fwd_fns: dict[str, Callable[[], object]], full_fns: dict[str, Callable[[], object]],
                  device: str, reps: int, warmup: int) -> dict[str, dict]:
    """Per variant: `fwd` and `fwd_bwd` timings side by side (and on CUDA `peak_bytes` of fwd+bwd).

    On a CPU the variants run round-robin (`time_round_robin`); peak memory there needs a fresh
    process per variant (`run_probe`), which the caller runs.
    """
    out: dict[str, dict] = {name: {} for name in fwd_fns}
    if device == "cuda":
        for name in fwd_fns:
            out[name]["fwd"], out[name]["fwd_bwd"] = time_cuda(fwd_fns[name]), time_cuda(full_fns[name])
            full_fns[name]()
            out[name]["peak_bytes"] = cuda_peak_bytes(full_fns[name])
    else:
        fwd_t, full_t = time_round_robin(fwd_fns, reps, warmup), time_round_robin(full_fns, reps, warmup)
        for name in fwd_fns:
            out[name]["fwd"], out[name]["fwd_bwd"] = fwd_t[name], full_t[name]
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_bytes() -> int:
    return 1024 * _status_kb("VmRSS")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    return 1024 * _status_kb("VmHWM")


def run_probe(argv: list[str], timeout_s: float = 1800) -> dict:
    """Run `python argv...` in a fresh process; it prints one JSON object as its last line."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                         timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_json(path: str | None, obj: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2) + "\n")
        print(f"wrote {path}")


def fmt_ms(s: dict | None) -> str:
    if not s:
        return "-"
    return f"{s['median_ms']:9.2f} ({s['p20_ms']:.2f}-{s['p80_ms']:.2f})"
