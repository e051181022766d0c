"""Print one table from the bench_token_logprobs / bench_airl_loss JSON files in a folder.

Files are told apart by their "bench" field ("token_logprobs", "airl_loss"), not by their
names, so results written under the old script names (bench_logprobs, bench_airl: files
logprobs_*.json, airl_*.json) read the same.

    python benchmarks/gpu/summarize.py benchmarks/out
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _ms(r: dict, key: str) -> str:
    return f"{r[key]['median_ms']:.2f}" if key in r else "-"


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def summarize(folder: Path) -> None:
    files = sorted(folder.glob("*.json"))
    logprobs = [json.loads(f.read_text()) for f in files]
    logprobs = [d for d in logprobs if d.get("bench") == "token_logprobs"]
    airl = [json.loads(f.read_text()) for f in files]
    airl = [d for d in airl if d.get("bench") == "airl_loss"]
    if logprobs:
        print(f"\ntoken_logprobs ({logprobs[0].get('gpu') or logprobs[0].get('cpu')}): "
              "fwd / fwd+bwd median ms, peak GiB above inputs, ratios vs naive fwd+bwd, "
              "max |logp - fp32 reference|")
        print(f"{'N':>6} {'H':>5} {'V':>7} {'dtype':>5} {'variant':12} {'fwd':>9} {'fwd+bwd':>9} "
              f"{'peak':>7} {'t/naive':>8} {'mem/naive':>9} {'err':>8}")
        for d in sorted(logprobs, key=lambda d: (d["config"]["n"], d["config"]["h"])):
            c = d["config"]
            for name, r in d["results"].items():
                if "skipped" in r:
                    continue
                peak = r.get("peak_bytes")
                print(f"{c['n']:>6} {c['h']:>5} {c['v']:>7} {c['dtype']:>5} {name:12} "
                      f"{_ms(r, 'fwd'):>9} {_ms(r, 'fwd_bwd'):>9} "
                      f"{_num(peak / 2**30 if peak else None, '7.2f'):>7} "
                      f"{_num(r.get('time_ratio_vs_naive'), '8.3f'):>8} "
                      f"{_num(r.get('peak_mem_ratio_vs_naive'), '9.3f'):>9} "
                      f"{_num(r.get('max_abs_err_vs_fp32'), '8.1e'):>8}")
            for row in d.get("sweep", []):
                print(f"{'':>33} sweep {row['config']}: fwd {_ms(row, 'fwd')} "
                      f"fwd+bwd {_ms(row, 'fwd_bwd')} {row.get('error', '')}")
    if airl:
        print("\nairl_loss: median ms and effective GB/s of the fused loss "
              f"(device copy: {_num(airl[0].get('copy_gbs'), '.0f')} GB/s)")
        print(f"{'N':>8} {'A':>8} {'dtype':>5} {'variant':10} {'fwd':>8} {'fwd+bwd':>8} "
              f"{'fwd GB/s':>9} {'full GB/s':>9}")
        for d in sorted(airl, key=lambda d: (d["config"]["n"], d["actions"])):
            c = d["config"]
            for name, r in d["results"].items():
                if "skipped" in r:
                    continue
                print(f"{c['n']:>8} {d['actions']:>8} {c['dtype']:>5} {name:10} "
                      f"{_ms(r, 'fwd'):>8} {_ms(r, 'fwd_bwd'):>8} "
                      f"{_num(r.get('fwd_gbs'), '9.1f'):>9} "
                      f"{_num(r.get('fwd_bwd_gbs'), '9.1f'):>9}")
    if not (logprobs or airl):
        print(f"no benchmark JSON in {folder}")


if __name__ == "__main__":
    summarize(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out"))
