"""How well each per-step score tells a correct step from a wrong one, on the policy's own samples.

    python benchmarks/probes/probe_reward_steps.py --warm runs/compare/seed0/warm --json runs/probe_steps.json
    python benchmarks/probes/probe_reward_steps.py --warm DIR --reward runs/compare/seed0/airl_step/reward

Embedded task only (every problem has one correct solution text, so the first wrong line of a
sample is the first line that differs from it; gold solutions are read here, for evaluation
only). From a warm start's validation records (DIR/records.json: expert traces, the warm policy's
samples, perturbed experts), every action of every policy sample before or at its first wrong
line is scored by:

    log_pi   the policy's own log-prob of the action (the confidence baseline)
    g        the reward term (what `rairl rerank` / `rairl localise` read)
    f        g plus the shaping difference (the AIRL reward; the policy's with policy_reward="f")
    ell      f − log π (the discriminator logit; the policy's reward by default)

and the AUROC of each for "correct step" against "first wrong step" is reported. Also the
discriminator's own validation AUROC (expert actions against all negative actions) beside the
value a perfect step checker would get: a policy sample's correct steps look like expert steps,
so it ranks every wrong negative below every expert and ties the correct ones (AUROC 0.5 on them).
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

# _common.py sits one folder up, in benchmarks/; running `python benchmarks/probes/x.py` puts
# only benchmarks/probes/ on sys.path, so add its parent (for _common alone: rairl is installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json

from rairl.airl.layout import step_rule
from rairl.configs import config_from_dict
from rairl.data import TaskConfig
from rairl.eval.discriminator import evaluate_discriminator
from rairl.metrics import environment
from rairl.models.lm import per_token_logprobs
from rairl.models.reward import RewardModel
from rairl.train.run import RunConfig, reward_step_metrics
from rairl.train.warm_start import load_warm_start


def probe(warm_dir: Path, reward_dir: Path | None) -> dict:
    """Step AUROCs per score, step counts, and the discriminator's validation AUROC beside a perfect step checker's."""
    warm = load_warm_start(warm_dir)
    tokenizer, policy, val_records = warm.tokenizer, warm.policy, warm.val_records
    reward = warm.reward_model if reward_dir is None else RewardModel.from_pretrained(reward_dir)
    cfg = RunConfig(task=config_from_dict(TaskConfig, warm.provenance["task"]), warm=warm.cfg)  # JSON lists -> tuples
    steps = reward_step_metrics(cfg, warm.provenance["seed"], reward, policy, tokenizer, val_records)
    val = evaluate_discriminator(reward, partial(per_token_logprobs, policy), val_records, tokenizer.pad_token_id,
                                 step_rule(reward.cfg, tokenizer))
    return steps | {"val_auroc": val["auroc"], "val_auroc_step_checker": 1.0 - 0.5 * steps["correct_steps"] / val["negatives"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", type=Path, required=True, help="a warm-start directory (holds warm.json, records.json)")
    ap.add_argument("--reward", type=Path, help="score with this reward model instead of the warm start's")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    t0 = time.time()
    result = probe(args.warm, args.reward) | {"warm": str(args.warm), "reward": str(args.reward or args.warm / "reward")}
    result["seconds"] = time.time() - t0
    print(f"correct steps {result['correct_steps']}, first wrong steps {result['first_wrong_steps']} "
          f"(skipped samples {result['skipped_samples']})")
    for k, v in result["step_auroc"].items():
        print(f"  step AUROC, correct vs first wrong, {k:6s} {'n/a (one class empty)' if v is None else f'{v:.3f}'}")
    print(f"discriminator val AUROC {result['val_auroc']:.3f} (a perfect step checker: {result['val_auroc_step_checker']:.3f})")
    write_json(args.json, result | {"provenance": environment("cpu")})


if __name__ == "__main__":
    main()
