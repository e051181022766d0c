"""Reward best-of-N against a reward-weighted majority vote, on a finished `rairl demo` folder.

    python benchmarks/probes/probe_rerank_vote.py --run /tmp/demo0 --json runs/probe_rerank_vote.json

The demo's test pools are drawn again (same seed, so the same samples as its rerank table) and scored by
its saved reward under its chosen selector. Each sample's vote is weighted exp((s − the problem's best s) /
(T · σ)) (`rairl.train.rft.by_vote`'s weights: T → ∞ is majority vote, T → 0 the reward's own pick), on
the warm start's validation pools (where T would be chosen) and on the test pools.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json

from rairl.commands.demo import DemoConfig
from rairl.configs import config_from_dict
from rairl.data import make_splits
from rairl.eval.rerank import SampledPool, sample_pools, solution_scores
from rairl.metrics import environment, majority_vote_accuracy, pick_accuracy
from rairl.score import RewardScorer
from rairl.train.rft import vote_scores, vote_weights
from rairl.train.warm_start import load_warm_start


def measure(scorer: RewardScorer, pools: list[SampledPool], temperatures: list[float]) -> dict:
    correct, answers = [p.correct() for p in pools], [p.final_answers() for p in pools]
    scores = solution_scores(scorer, pools, scorer.settings.selector)
    out = {"reward": pick_accuracy(scores, correct), "majority": majority_vote_accuracy(answers, correct),
           "random": float(np.mean([np.mean(c) for c in correct])), "oracle": float(np.mean([any(c) for c in correct]))}
    return out | {f"vote@{t:g}": pick_accuracy(vote_scores(answers, vote_weights(scores, t)), correct) for t in temperatures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished rairl demo output folder")
    ap.add_argument("--temperatures", default="0.125,0.25,0.5,1,2,4", help="comma-separated vote temperatures T")
    ap.add_argument("--json", default="", help="also write the numbers here")
    args = ap.parse_args()
    cfg = config_from_dict(DemoConfig, json.loads((Path(args.run) / "run.json").read_text())["config"])
    warm, scorer = load_warm_start(args.run), RewardScorer.from_pretrained(Path(args.run) / "reward")
    test = [p.example() for p in make_splits(cfg.seed, cfg.task).test]
    w = cfg.warm
    pools = sample_pools(warm.policy, warm.tokenizer, [e.prompt for e in test], [e.answer for e in test], cfg.n_samples,
                         w.max_new_tokens, w.temperature, cfg.seed + 4, w.max_prompt_tokens, progress=False)  # the demo's test draw
    temperatures = [float(t) for t in args.temperatures.split(",")]
    out = {"selector": scorer.settings.selector, "val": measure(scorer, warm.val_pools, temperatures),
           "test": measure(scorer, pools, temperatures), "provenance": environment("cpu")}
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
