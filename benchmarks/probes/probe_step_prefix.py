"""How many correct steps can a step judge harvest from the policy's own samples? Prefix selection, measured.

    python benchmarks/probes/probe_step_prefix.py --run runs/tune_d500b --seed 0 --json runs/probe_prefix_seed0.json

From a `rairl compare --protocol scarce|length` seed folder (its SFT-ES policy and its reward): N samples
for each of B unlabelled questions, as an rft round draws them. Each sample is cut before its first step
whose score falls below a bar, the bar being the q-quantile of the same judge's scores over D's steps;
each question keeps its longest accepted prefix. Judges: the learned reward `g` and the policy's log-prob
of the step. For each (judge, q): questions kept, steps kept per question, and the share of kept steps
that are right with every step before them right ("step precision"). Gold, for the ceiling: each
question's longest correct prefix. Gold references are read here to measure, never to train.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json
from _seed import load_seed

from rairl.data.task import make_splits
from rairl.metrics import environment
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.reward import RewardConfig, RewardModel
from rairl.score import RewardScorer, ScorerSettings


def correct_prefix(lines: list[str], reference: list[str]) -> int:
    """How many leading lines equal the reference's."""
    n = 0
    while n < min(len(lines), len(reference)) and lines[n].strip() == reference[n].strip():
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--questions", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--quantiles", default="0.01,0.05,0.1,0.2,0.3")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    ps = load_seed(args.run, args.seed, args.questions)
    cfg, data, warm, policy, tok, questions, prompts = ps.cfg, ps.data, ps.warm, ps.policy, ps.tok, ps.questions, ps.prompts
    if cfg.protocol != "scarce":
        raise SystemExit("this probe reads the scarce protocol's references")
    split = cfg.scarce.split
    problems = make_splits(args.seed, replace(cfg.task, n_train=split.n_demos + split.n_unlabelled, n_val=split.n_val,
                                              n_test=cfg.eval.problems)).train[split.n_demos:]
    reference = {p.question(): p.example().completion.split("\n") for p in problems}
    samples = ps.sample(args.samples)
    flat = [(qi, c) for qi, g in enumerate(samples) for c in g if c]
    texts = tok.batch_decode([c for _, c in flat], skip_special_tokens=True)
    lines = [t.split("\n") for t in texts]
    right = [correct_prefix(ls, reference[questions[qi]]) for (qi, _), ls in zip(flat, lines, strict=True)]
    judges = {"reward": RewardScorer(warm.reward_model, tok, ScorerSettings()),
              "logprob": RewardScorer(RewardModel(policy, RewardConfig()), tok, ScorerSettings())}
    demo_c = encode_completions(tok, [e.completion for e in data.demos], cfg.warm.max_completion_tokens)
    demo_p = encode_prompts(tok, [e.prompt for e in data.demos], cfg.warm.max_prompt_tokens)
    n_steps = np.array([len(s) for s in lines])
    out = {"seed": args.seed, "questions": len(questions), "samples": args.samples,
           "judges": {}, "provenance": environment("cpu")}
    best_gold = [0] * len(questions)
    for (qi, _), r in zip(flat, right, strict=True):
        best_gold[qi] = max(best_gold[qi], r)
    out["gold"] = {"steps_per_question": float(np.mean(best_gold)), "questions_with_a_correct_step": float(np.mean([b > 0 for b in best_gold])),
                   "mean_sample_steps": float(n_steps.mean()), "mean_correct_prefix": float(np.mean(right))}
    for name, judge in judges.items():
        steps = judge.score_ids([prompts[qi] for qi, _ in flat], [c for _, c in flat])
        demo_steps = np.concatenate([np.array(s) for s in judge.score_ids(demo_p, demo_c)])
        for q in map(float, args.quantiles.split(",")):
            bar = float(np.quantile(demo_steps, q))
            accepted = [next((k for k, s in enumerate(st) if s < bar), len(st)) for st in steps]
            best: dict[int, tuple[int, int]] = {}  # question -> (accepted steps, correct of them)
            for (qi, _), a, r in zip(flat, accepted, right, strict=True):
                if a > best.get(qi, (0, 0))[0]:
                    best[qi] = (a, min(a, r))
            kept = sum(a for a, _ in best.values())
            good = sum(c for _, c in best.values())
            out["judges"][f"{name}@q{q:g}"] = {"bar": bar, "questions_kept": len(best) / len(questions),
                                               "steps_per_question": kept / len(questions),
                                               "step_precision": good / kept if kept else None,
                                               "sample_step_precision": float(sum(min(a, r) for a, r in zip(accepted, right, strict=True))
                                                                              / max(sum(accepted), 1))}
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
