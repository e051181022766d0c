"""Does the reward know arithmetic that D does not show? Step accuracy and step AUROC, split by whether D holds the fact.

    python benchmarks/probes/probe_fact_coverage.py --run runs/scarce --seed 8 --json runs/probe_facts_s8.json

On the embedded task every step is one fact, `x op k = y`, and a step is right when it is the unique
correct solution's step. From a `rairl compare --protocol scarce|length` seed folder: SFT-ES's N samples (T = 1)
on B unlabelled questions, each sample's steps up to and including its first wrong one, and for each such
step the fact it had to compute (the correct solution's step there). A fact is *seen* when one of D's
demonstrations states it. Reported, for seen and unseen facts apart:

- how many of U's and T's correct steps are unseen facts (what D leaves to generalisation);
- the policy's step accuracy (right steps / steps reached);
- the step AUROC of the reward's step score g and of the policy's step log-prob, right steps against
  first wrong ones: how well each tells the policy's errors from its right steps;
- the first wrong steps by kind: `reading` (its operator or operand is not the question's), `carry` (it starts
  from another value than the last one), `arithmetic` (the right operation, a wrong result), `answer` (the
  answer line where a step belongs, a step where it belongs, or a wrong answer), `other` (not a step); and
  each kind's AUROC against all right steps.

A ranking can only add what its scorer knows; if neither scorer separates steps on unseen facts, no
ranking of SFT-ES's samples teaches the policy a fact D does not hold. U's gold solutions are drawn
again (`rairl.data.protocols.protocol_problems`) to measure, never to train.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json
from _seed import load_seed

from rairl.data import first_wrong_step, split_steps
from rairl.data.protocols import protocol_problems
from rairl.metrics import auroc, environment
from rairl.models.reward import RewardConfig, RewardModel
from rairl.score import RewardScorer, ScorerSettings

FACT = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")


def fact(line: str) -> tuple[int, str, int] | None:
    """`(x, op, k)` of a step `x op k = y`; None for any other line (the answer line, a malformed step)."""
    m = FACT.match(line)
    return (int(m[1]), m[2], int(m[3])) if m else None


def error_kind(line: str, ref: str) -> str:
    """What a first wrong step `line` got wrong, against the correct solution's step `ref` there."""
    got, want = FACT.match(line), FACT.match(ref)
    if want is None:
        return "answer"
    if got is None:
        return "answer" if line.startswith("####") else "other"
    if (got[2], got[3]) != (want[2], want[3]):
        return "reading"
    return "carry" if got[1] != want[1] else "arithmetic"


def facts_of(completions: list[str]) -> set[tuple[int, str, int]]:
    """Every fact `(x, op, k)` a step of `completions` states."""
    return {f for c in completions for line in split_steps(c) if (f := fact(line))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="rairl compare --protocol scarce|length output folder")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--questions", type=int, default=512, help="unlabelled questions drawn (B)")
    ap.add_argument("--samples", type=int, default=8, help="samples per question (N)")
    ap.add_argument("--json", default="", help="also write the numbers here")
    args = ap.parse_args()
    ps = load_seed(args.run, args.seed, args.questions)
    _, unlabelled, _, _ = protocol_problems(ps.cfg.protocol, args.seed, ps.cfg.scarce.split, ps.cfg.task, ps.cfg.eval.problems)
    solution = {p.question(): p.solution_steps() for p in unlabelled}  # U's solutions: read to measure
    seen = facts_of([e.completion for e in ps.data.demos])

    def unseen_share(steps_lists: list[list[str]]) -> float:
        fs = [f for s in steps_lists for line in s if (f := fact(line))]
        return sum(f not in seen for f in fs) / len(fs)

    samples = ps.sample(args.samples)
    flat_prompts = [p for p, g in zip(ps.prompts, samples, strict=True) for c in g if c]
    flat_ids = [c for g in samples for c in g if c]
    flat_ref = [solution[q] for q, g in zip(ps.questions, samples, strict=True) for c in g if c]
    texts = ps.tok.batch_decode(flat_ids, skip_special_tokens=True)
    scorers = {"reward": RewardScorer(ps.warm.reward_model, ps.tok, ScorerSettings()),
               "logprob": RewardScorer(RewardModel(ps.policy, RewardConfig()), ps.tok, ScorerSettings())}
    step_scores = {name: sc.score_ids(flat_prompts, flat_ids) for name, sc in scorers.items()}

    rows: dict[str, dict[str, list]] = {k: {"right": [], **{n: [] for n in scorers}} for k in ("seen", "unseen")}
    right_scores: dict[str, list[float]] = {n: [] for n in scorers}
    wrong_kinds: dict[str, dict[str, list[float]]] = {}
    skipped = 0
    for i, (text, ref) in enumerate(zip(texts, flat_ref, strict=True)):
        lines = text.split("\n")  # score_ids' steps are the completion's lines
        if any(len(step_scores[n][i]) != len(lines) for n in scorers):
            skipped += 1
            continue
        wrong = first_wrong_step([s.strip() for s in lines], ref)
        for j in range(len(lines) if wrong is None else wrong + 1):
            f = fact(ref[j]) if j < len(ref) else None
            if j == wrong:  # every first wrong step, whatever its kind
                kind = wrong_kinds.setdefault(error_kind(lines[j].strip(), ref[j] if j < len(ref) else ""), {n: [] for n in scorers})
                for n in scorers:
                    kind[n].append(step_scores[n][i][j])
            elif f is not None:
                for n in scorers:
                    right_scores[n].append(step_scores[n][i][j])
            if f is None:  # the answer line, or a step past the solution's end: no fact to compute
                continue
            r = rows["seen" if f in seen else "unseen"]
            r["right"].append(j != wrong)
            for n in scorers:
                r[n].append(step_scores[n][i][j])

    out = {"seed": args.seed, "questions": len(ps.questions), "samples": args.samples, "demos": len(ps.data.demos),
           "facts_in_D": len(seen), "skipped_samples": skipped,
           "unseen_share_of_steps": {"U": unseen_share([solution[q] for q in ps.questions]),
                                     "T": unseen_share([split_steps(e.completion) for e in ps.data.test])},
           "steps": {}, "provenance": environment("cpu")}
    for k, r in rows.items():
        out["steps"][k] = {"reached": len(r["right"]), "accuracy": sum(r["right"]) / max(len(r["right"]), 1),
                           **{f"auroc_{n}": auroc(r[n], r["right"]) for n in scorers}}
    out["first_wrong"] = {k: {"count": len(v["reward"]), **{f"auroc_{n}": auroc(right_scores[n] + v[n], [True] * len(right_scores[n])
                                                                                  + [False] * len(v[n])) for n in scorers}}
                          for k, v in sorted(wrong_kinds.items())}
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
