"""score, rerank and localise under 2 processes: the items split between them, the same metrics as 1 process."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rairl.models.lm import load_causal_lm
from rairl.models.reward import RewardConfig, RewardModel
from rairl.models.tokenizer import load_tokenizer
from rairl.score import RewardScorer, ScorerSettings

HERE = Path(__file__).parent
QUESTION = "Tom has {a} pens. Tom gets {b} more."


def files(tmp_path: Path, n: int = 5) -> tuple[Path, Path]:
    """n candidate pools (3 candidates each) and n step-labelled items: an odd count splits unevenly."""
    rng = random.Random(n)
    pools, items = tmp_path / "pools.jsonl", tmp_path / "items.jsonl"
    with open(pools, "w") as p, open(items, "w") as it:
        for k in range(n):
            a, b = rng.randrange(2, 9), rng.randrange(2, 9)
            cands = [{"solution": f"{a} + {b} = {a + b + d}\n#### {a + b + d}"} for d in (0, 1, -1)]
            p.write(json.dumps({"question": QUESTION.format(a=a, b=b), "answer": str(a + b), "candidates": cands}) + "\n")
            steps = [f"{a} + {b} = {a + b + k % 2}", f"#### {a + b + k % 2}"]
            it.write(json.dumps({"id": str(k), "problem": QUESTION.format(a=a, b=b), "steps": steps, "label": -1 if k % 2 == 0 else 0}) + "\n")
    return pools, items


def same(a, b, rel: float = 1e-5) -> bool:
    """Equal, numbers to `rel`, through nested dicts and lists."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-7)
    return a == b


def one_process(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rairl.cli", *args], check=True, capture_output=True, text=True, timeout=300)


def test_rerank_with_two_processes_gives_the_metrics_of_one(reward_dir, tmp_path, launch):
    pools, _ = files(tmp_path)
    args = ["rerank", "--reward", str(reward_dir), "--pools", str(pools), "--policy", str(reward_dir / "lm"), "--no-progress"]
    one_process(*args, "--out", str(tmp_path / "one"))
    proc = launch("-m", "rairl.cli", *args, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text())["rerank"] for d in ("one", "two"))
    assert same(one, two) and one["n"] == 3
    assert proc.stdout.count("metrics:") == 1  # rank 0 reports, rank 1 is silent


@pytest.mark.slow
def test_score_and_localise_with_two_processes_give_the_metrics_of_one(reward_dir, tmp_path, launch):
    pools, items = files(tmp_path, n=7)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": QUESTION.format(a=k, b=2), "completion": f"{k} + 2 = {k + 2}\n#### {k + 2}"}) + "\n"
                            for k in range(7)))
    for cmd, key in (("score", "rows"), ("localise", "predictions")):
        args = [cmd, "--reward", str(reward_dir), "--no-progress", *(["--data", str(data)] if cmd == "score" else ["--items", str(items)])]
        one_process(*args, "--out", str(tmp_path / f"{cmd}1"))
        proc = launch("-m", "rairl.cli", *args, "--out", str(tmp_path / f"{cmd}2"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        one, two = (json.loads((tmp_path / f"{cmd}{w}" / "metrics.json").read_text()) for w in (1, 2))
        assert len(one[key]) == 7 and same(one[key], two[key])


def test_a_rank_that_raises_ends_the_launch_with_an_error(launch):
    t0 = time.time()
    proc = launch(str(HERE / "raise_worker.py"), timeout=120)
    assert proc.returncode != 0 and "rank 1 fails on purpose" in proc.stderr
    assert time.time() - t0 < 60  # stopped, not waiting out the collective's timeout
