"""Seconds per `rairl train` iteration at world size 1 and 2 on one machine, and whether the logs agree.

    python benchmarks/bench_world_size.py [--iterations 8] [--out runs/bench_world]

One warm start (built by the world-1 run) serves both. World 1 runs with all the machine's
threads; world 2 under `torchrun --nproc_per_node 2` with half of them per process (gloo on
loopback when there is no GPU). Medians skip the first iteration. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--out", default="runs/bench_world")
    args = ap.parse_args()
    out, threads = Path(args.out), os.cpu_count() or 1
    if out.exists():
        raise SystemExit(f"{out} exists; give another --out")
    run = ["train", "--quick", "--no-progress", "--train.iterations", str(args.iterations), "--train.token_budget", "0",
           "--train.checkpoint_every", "0", "--train.eval_every", "0", "--train.adam_eps", "1e-6"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    subprocess.run([sys.executable, "-m", "rairl.cli", *run, "--out", str(out / "w1")], check=True, env=env)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", "--master_port=29533",
                    "-m", "rairl.cli", *run, "--out", str(out / "w2"), "--warm", str(out / "w1" / "warm"), "--parallel", "ddp"],
                   check=True, env={**env, "OMP_NUM_THREADS": str(max(1, threads // 2))})
    w1, w2 = _rows(out / "w1"), _rows(out / "w2")
    med = {w: statistics.median(r["seconds"] for r in rows[1:]) for w, rows in (("world1", w1), ("world2", w2))}
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for a, b in zip(w2, w1, strict=True) for k in a
                if k not in ("seconds", "iteration") and isinstance(a[k], float))
    print(json.dumps({"iterations": args.iterations, "threads": threads, "seconds_per_iteration": med,
                      "speedup_world2": med["world1"] / med["world2"], "max_rel_diff_logged": worst,
                      "world2_wall_s": time.time() - t0}, indent=2))


if __name__ == "__main__":
    main()
