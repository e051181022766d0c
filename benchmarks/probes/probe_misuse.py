"""A careless user's probes, one per class of failure issue 18 found; each outcome classified.

    python benchmarks/probes/probe_misuse.py --json runs/probe_misuse.json

Each probe runs `rairl` in a subprocess on a tiny policy and reward built here from configs, and says
what a sound tool does: `refuse` (exit 1 or 2, one line on stderr holding the expected words) or
`work` (exit 0 and a check on what it wrote). Outcomes: `ok`, `segfault` (killed by a signal),
`traceback`, `silent` (exit 0 where it must refuse, or a wrong result), `bad message` (a refusal
that is not one line or misses the words). Prints one line per probe and the counts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json

from rairl.metrics import environment


@dataclass
class Probe:
    name: str
    argv: list[str]
    expect: str  # "refuse" | "work"
    words: tuple[str, ...] = ()  # refuse: in the one-line message
    check: Callable[[], bool] | None = None  # work: what it wrote is right
    stdin: str | None = None  # a file piped in (through a pipe, not a file handle)
    before: Callable[[], None] | None = None  # set-up run just before


def build_fixtures(root: Path) -> dict[str, Path]:
    """A tiny policy, a reward on it, a copy with NaN heads, one with a huge interval, and data files."""
    import torch

    from rairl.data import TaskConfig, make_splits
    from rairl.models.lm import TinyLMConfig, build_tiny_lm, load_causal_lm
    from rairl.models.reward import RewardConfig, RewardModel
    from rairl.models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer
    from rairl.score import RewardScorer, ScorerSettings

    splits = make_splits(0, TaskConfig(n_train=60, n_val=10, n_test=10))
    policy = root / "policy"
    corpus = [format_prompt(p.question()) + "\n".join(p.solution_steps()) for p in splits.train]
    train_bpe_tokenizer(corpus, 512).save_pretrained(policy)
    build_tiny_lm(load_tokenizer(policy), TinyLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)).save_pretrained(policy)
    tok = load_tokenizer(policy)
    reward = RewardModel(load_causal_lm(policy), RewardConfig())
    RewardScorer(reward, tok, ScorerSettings()).save_pretrained(root / "reward")
    nan = RewardModel(load_causal_lm(policy), RewardConfig())
    torch.nn.init.normal_(nan.g_head.weight)
    RewardScorer(nan, tok, ScorerSettings()).save_pretrained(root / "reward_nan")
    heads = root / "reward_nan" / "heads.safetensors"  # NaN written past the save-time check, as a damaged file
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(heads))
    save_file({k: torch.full_like(v, float("nan")) if k.startswith("g_head") else v for k, v in tensors.items()}, str(heads))
    RewardScorer(reward, tok, ScorerSettings()).save_pretrained(root / "reward_interval")
    cfg_file = root / "reward_interval" / "reward_config.json"
    meta = json.loads(cfg_file.read_text())
    meta["reward"] |= {"granularity": "interval", "interval": 2**63 - 1}
    cfg_file.write_text(json.dumps(meta))
    examples = [p.example() for p in splits.train[:8]]
    demos = root / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion, "answer": e.answer}) + "\n" for e in examples))
    long = [{"prompt": e.prompt, "completion": e.completion} for e in examples[:4]]
    long[2]["prompt"] = " ".join(["many apples"] * 200)
    (root / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long))
    pools = [{"question": e.prompt, "answer": e.answer, "candidates": [{"solution": e.completion}, {"solution": "1 + 1 = 3\n#### 3"}]}
             for e in examples[:3]]
    (root / "pools.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pools))
    items = [{"id": f"i{k}", "problem": e.prompt, "steps": e.completion.split("\n"), "label": -1} for k, e in enumerate(examples[:3])]
    (root / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (root / "empty.jsonl").write_text("")
    (root / "folder").mkdir()
    (root / "folder" / "a.jsonl").write_text(demos.read_text())
    (root / "bad_types.json").write_text(json.dumps({"batch_size": "many"}))
    (root / "no_tokenizer").mkdir()
    (root / "no_tokenizer" / "config.json").write_text((policy / "config.json").read_text())
    return {"policy": policy, "demos": demos, "root": root}


def probes(f: dict[str, Path]) -> list[Probe]:
    root, demos = f["root"], str(f["demos"])
    r, q = str(root / "reward"), ["--no-progress"]
    train = ["train", "--quick", *q]
    out = lambda name: str(root / "out" / name)  # noqa: E731

    def truncate_newest() -> None:
        newest = sorted((root / "out" / "resume").glob("checkpoints/iter_*"))[-1]
        shard = max(newest.glob("*.distcp"), key=lambda p: p.stat().st_size)
        shard.write_bytes(shard.read_bytes()[:100])

    def scored_all() -> bool:
        return json.loads((root / "out" / "pipe" / "metrics.json").read_text())["scored"] == 8

    def weights_readable() -> bool:
        return all(p.stat().st_mode & 0o044 for p in (root / "reward").rglob("*.safetensors"))

    return [
        Probe("interval 2^63-1 from the command line", ["train-reward", "--data", demos, "--warm.reward.granularity", "interval",
              "--warm.reward.interval", str(2**63 - 1), "--out", out("interval"), *q], "refuse", ("interval",)),
        Probe("interval 2^63-1 in a saved reward_config.json", ["score", "--reward", str(root / "reward_interval"), "--data", demos,
              "--out", out("interval2"), *q], "refuse", ("interval",)),
        Probe("reward_train.lr inf", ["train-reward", "--data", demos, "--warm.reward_train.lr", "inf", "--out", out("lr"), *q],
              "refuse", ("lr", "finite")),
        Probe("reward.beta nan", ["train-reward", "--data", demos, "--warm.reward.beta", "nan", "--out", out("beta"), *q],
              "refuse", ("beta", "finite")),
        Probe("train.lr inf", [*train, "--train.lr", "inf", "--out", out("tlr")], "refuse", ("lr", "finite")),
        Probe("rerank with NaN scores", ["rerank", "--reward", str(root / "reward_nan"), "--pools", str(root / "pools.jsonl"),
              "--out", out("nanrerank"), *q], "refuse", ("nan",)),
        Probe("localise with NaN scores", ["localise", "--reward", str(root / "reward_nan"), "--items", str(root / "items.jsonl"),
              "--out", out("nanloc"), *q], "refuse", ("nan",)),
        Probe("score with NaN scores", ["score", "--reward", str(root / "reward_nan"), "--data", demos, "--out", out("nanscore"), *q],
              "refuse", ("nan",)),
        Probe("a first run", [*train, "--train.iterations", "2", "--train.checkpoint_every", "1", "--out", out("resume")], "work",
              check=lambda: (root / "out" / "resume" / "metrics.json").exists()),
        Probe("a second run into the same --out", [*train, "--out", out("resume")], "refuse", ("holds",)),
        Probe("--resume with an option that changes the run", ["train", "--resume", out("resume"), "--train.lr", "0.5", *q],
              "refuse", ("train.lr",)),
        Probe("a demo into a train run's folder", ["demo", "--quick", "--out", out("resume"), *q], "refuse", ("holds another run",)),
        Probe("resume past a truncated newest checkpoint", ["train", "--resume", out("resume"), "--train.iterations", "3", *q], "work",
              check=lambda: [json.loads(x)["iteration"] for x in (root / "out" / "resume" / "train_log.jsonl").read_text().splitlines()]
              == [1, 2, 3], before=truncate_newest),
        Probe("data piped through /dev/stdin", ["score", "--reward", r, "--data", "/dev/stdin", "--out", out("pipe"), *q], "work",
              check=scored_all, stdin=demos),
        Probe("a folder as --data", ["score", "--reward", r, "--data", str(root / "folder"), "--out", out("dir"), *q], "refuse",
              ("folder",)),
        Probe("an empty file", ["score", "--reward", r, "--data", str(root / "empty.jsonl"), "--out", out("empty"), *q], "refuse",
              ("empty",)),
        Probe("a config file with a wrong type", ["score", "--reward", r, "--data", demos, "--config", str(root / "bad_types.json"),
              "--out", out("types"), *q], "refuse", ("batch_size", "bad_types.json")),
        Probe("a mistyped local --policy", ["train-reward", "--data", demos, "--policy", "./runs/pollicy", "--out", out("typo"), *q],
              "refuse", ("pollicy",)),
        Probe("a --policy folder with no tokenizer", ["train-reward", "--data", demos, "--policy", str(root / "no_tokenizer"),
              "--out", out("notok"), *q], "refuse", ("no tokenizer",)),
        Probe("an over-long prompt on line 3", ["score", "--reward", r, "--data", str(root / "long.jsonl"), "--max_prompt_tokens", "64",
              "--out", out("long"), *q], "refuse", ("long.jsonl:3",)),
        Probe("weight files readable like the folder", ["score", "--reward", r, "--data", demos, "--out", out("modes"), *q], "work",
              check=weights_readable),
    ]


def run(p: Probe, cwd: Path) -> dict:
    if p.before:
        p.before()
    t0 = time.time()
    piped = {"input": Path(p.stdin).read_text()} if p.stdin else {"stdin": subprocess.DEVNULL}
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", *p.argv], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, **piped)
    err = proc.stderr.strip().splitlines()
    last = err[-1] if err else ""
    if proc.returncode < 0:
        outcome = "segfault"
    elif "Traceback (most recent call last)" in proc.stderr:
        outcome = "traceback"
    elif p.expect == "refuse":
        one_line = [line for line in err if line.startswith("rairl ")]
        worded = all(w.lower() in last.lower() for w in p.words)
        outcome = "silent" if proc.returncode == 0 else "ok" if len(one_line) == 1 and worded else "bad message"
    else:
        outcome = "ok" if proc.returncode == 0 and (p.check is None or p.check()) else "silent" if proc.returncode == 0 else "bad message"
    return {"probe": p.name, "expect": p.expect, "outcome": outcome, "exit": proc.returncode, "seconds": round(time.time() - t0, 1),
            "message": last[:300]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fixtures = build_fixtures(root)
        rows = []
        for p in probes(fixtures):
            rows.append(run(p, root))
            row = rows[-1]
            print(f"{row['outcome']:<12} {row['exit']:>4} {row['seconds']:>6.1f}s  {p.name}: {row['message'][:110]}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("ok", "segfault", "traceback", "silent", "bad message")}
    print(" ".join(f"{k}: {v}" for k, v in counts.items()))
    if args.json:
        write_json(args.json, {"provenance": environment("cpu"), "counts": counts, "probes": rows})


if __name__ == "__main__":
    main()
