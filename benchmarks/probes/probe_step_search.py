"""How often is a judge-guided step-by-step search right, against plain sampling? The data a search round would train on.

    python benchmarks/probes/probe_step_search.py --run runs/tune_d500b --seed 0 --json runs/probe_search_seed0.json

From a `rairl compare --protocol scarce|length` seed folder (its SFT-ES policy and its reward): for B
unlabelled questions, `step_search` (below) with N candidates per step, judged by the learned reward
(`g`) and by the policy's own log-prob of the step; beside them, one plain sample per question. Reports
each one's accuracy (final answer) and the seconds it took. Gold answers are read here to measure, never to train.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json
from _seed import load_seed

from rairl.data import answers_match, extract_answer
from rairl.metrics import environment
from rairl.models.reward import RewardConfig, RewardModel
from rairl.models.sampling import sample_completions
from rairl.score import RewardScorer, ScorerSettings


def step_search(policy, judge: RewardScorer, prompts: Sequence[list[int]], n: int, max_new_tokens: int,
                step_tokens: int, eos_id: int, pad_id: int, seed: int) -> list[list[int]]:
    """Judge-guided decoding, one step (line) at a time: from each prompt and its steps so far, sample `n`
    candidate next steps (temperature 1, at most `step_tokens` tokens, cut after their first newline) and
    append the one `judge` scores highest; a prompt is done when its chosen step ends in EOS, when
    `max_new_tokens` are spent, or when no candidate ends its line. Returns one completion (ids) per prompt;
    one that did not end in EOS stopped early, like a sample that hit its limit."""
    boundary = set(judge.line_rule.boundary_ids)
    done: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))
    for step in range(max_new_tokens):  # each step adds >= 1 token: at most this many
        if not active:
            break
        contexts = [list(prompts[i]) + done[i] for i in active]
        room = [min(step_tokens, max_new_tokens - len(done[i])) for i in active]
        drawn = sample_completions(policy, contexts, n_samples=n, max_new_tokens=max(room), eos_id=eos_id, pad_id=pad_id,
                                   seed=seed * 1009 + step, progress=False)
        pairs = []  # (row in active, candidate ids): candidates that end their step within the row's room
        for r, (group, limit) in enumerate(zip(drawn, room, strict=True)):
            for cand in group:
                end = next((k for k, t in enumerate(cand) if t in boundary or t == eos_id), None)
                if end is not None and end < limit:
                    pairs.append((r, cand[: end + 1]))
        scores = judge.score_ids([prompts[active[r]] for r, _ in pairs], [done[active[r]] + c for r, c in pairs]) if pairs else []
        best: dict[int, tuple[float, list[int]]] = {}
        for (r, cand), steps in zip(pairs, scores, strict=True):
            if r not in best or steps[-1] > best[r][0]:
                best[r] = (steps[-1], cand)
        still = []
        for r, i in enumerate(active):
            if r in best:
                done[i] = done[i] + best[r][1]
                if best[r][1][-1] != eos_id and len(done[i]) < max_new_tokens:
                    still.append(i)
        active = still
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--samples", type=int, default=8, help="candidates per step (N)")
    ap.add_argument("--step-tokens", type=int, default=16)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    ps = load_seed(args.run, args.seed, args.questions)
    cfg, gold, warm, policy, tok, questions, prompts = ps.cfg, ps.gold, ps.warm, ps.policy, ps.tok, ps.questions, ps.prompts

    def accuracy(completions: list[list[int]]) -> float:
        texts = tok.batch_decode(completions, skip_special_tokens=True)
        return sum(answers_match(extract_answer(t), gold.answer(q)) for q, t in zip(questions, texts, strict=True)) / len(questions)

    out = {"seed": args.seed, "questions": len(questions), "candidates": args.samples, "accuracy": {}, "seconds": {},
           "provenance": environment("cpu")}
    t0 = time.time()
    plain = sample_completions(policy, prompts, n_samples=1, max_new_tokens=cfg.scarce.rft.max_new_tokens, eos_id=tok.eos_token_id,
                               pad_id=tok.pad_token_id, seed=1, progress=False)
    out["accuracy"]["sample"], out["seconds"]["sample"] = accuracy([g[0] for g in plain]), time.time() - t0
    judges = {"reward": RewardScorer(warm.reward_model, tok, ScorerSettings()),
              "logprob": RewardScorer(RewardModel(policy, RewardConfig()), tok, ScorerSettings())}
    for name, judge in judges.items():
        t0 = time.time()
        found = step_search(policy, judge, prompts, args.samples, cfg.scarce.rft.max_new_tokens, args.step_tokens,
                            tok.eos_token_id, tok.pad_token_id, seed=1)
        out["accuracy"][f"search_{name}"], out["seconds"][f"search_{name}"] = accuracy(found), time.time() - t0
        print(name, out["accuracy"][f"search_{name}"], f"{out['seconds'][f'search_{name}']:.0f}s", flush=True)
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
