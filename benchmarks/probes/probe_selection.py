"""How good is each RFT ranking at picking a correct sample? The first round of every rft arm, measured.

    python benchmarks/probes/probe_selection.py --run runs/scarce --seed 1 --json runs/probe_selection_seed1.json

From a `rairl compare --protocol scarce|length` seed folder (its SFT-ES policy and its reward), N
samples for each of B unlabelled questions, as an rft round draws them; then, for each ranking
(the learned reward, majority vote, the policy's mean log-prob, a uniform random pick), the share of
questions whose kept sample is correct ("precision": what the round fine-tunes on), the same on the
contested questions only (some samples right, some wrong: where a ranking decides anything), and
the share of questions with any correct sample (the ceiling, what ranking by the gold answer keeps).
`--all-selectors` adds the reward and the log-prob under every way of combining step scores (`rairl.score.SELECTORS`);
`--vote-temperatures 0.5,1,2` adds weighted majority votes (`rairl.train.rft.by_vote`), each sample's vote weighted
by its reward (`reward_vote@T`) or its log-prob (`logprob_vote@T`) at each temperature;
`--fresh-reward` adds `fresh_<selector>`: a reward trained anew from SFT-ES on D against `--perturb-copies`
perturbed copies of each demonstration and no policy samples (D's own questions' samples are copies of D once
SFT-ES has learned it by heart); with `--crossfit-folds K`, also the wrong samples of K policies each SFT'd as
SFT-ES is on D less one fold, drawn on that fold's questions and labelled by D's answers, negative from the first
line that differs from the demonstration (D only: the policies' own errors, on questions that have a positive);
`--demo-recall 1,1.5` adds, at each temperature, SFT-ES's N samples on every question of D: the share that are
right and the share that are the demonstration's exact text (how much of D it has learned by heart);
`--accept-quantiles 0.1,0.5` the share and precision of the samples whose reward reaches D's own q-quantile.
Gold answers are read here to measure, never to train.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_json
from _seed import load_seed

from rairl.airl.discriminator import DiscRecord
from rairl.airl.layout import step_rule
from rairl.airl.negatives import perturbed_negatives
from rairl.data import answers_match, extract_answer, first_wrong_step, split_steps
from rairl.metrics import environment
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.lm import build_tiny_lm
from rairl.models.reward import RewardConfig, RewardModel
from rairl.models.sampling import sample_completions
from rairl.models.tokenizer import newline_token_ids
from rairl.score import SELECTORS, RewardScorer, ScorerSettings, select_all
from rairl.train.protocol import ES_DRAW, val_pass1
from rairl.train.reward import RewardTrainConfig, train_reward
from rairl.train.rft import by_logprob, by_majority, by_reward, by_vote, pick_best
from rairl.train.sft import train_sft_es


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="rairl compare --protocol scarce|length output folder")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--questions", type=int, default=256, help="unlabelled questions drawn (B)")
    ap.add_argument("--samples", type=int, default=8, help="samples per question (N)")
    ap.add_argument("--retrain-steps", type=int, default=0, help="then train the reward on minority-answer negatives (0: no)")
    ap.add_argument("--all-selectors", action="store_true", help="also rank by the reward and by the log-prob under every selector")
    ap.add_argument("--vote-temperatures", default="", help="comma-separated T: also rank by votes weighted by the reward "
                    "and by the log-prob at each T")
    ap.add_argument("--fresh-reward", action="store_true", help="also rank by a reward trained anew on D against perturbed D only")
    ap.add_argument("--perturb-copies", type=int, default=8, help="--fresh-reward: perturbed copies per demonstration")
    ap.add_argument("--crossfit-folds", type=int, default=0, help="--fresh-reward: also cross-fitted negatives from this many folds "
                    "of D (0: none)")
    ap.add_argument("--crossfit-samples", type=int, default=8, help="--crossfit-folds: samples per held-out question")
    ap.add_argument("--fresh-steps", type=int, default=600, help="--fresh-reward: its optimiser steps")
    ap.add_argument("--demo-recall", default="", help="comma-separated T: also sample SFT-ES on D's questions at each T")
    ap.add_argument("--accept-quantiles", default="", help="comma-separated q: also keep only samples whose reward is at least "
                    "the q-quantile of D's own rewards (a verifier-free acceptance bar), each selector")
    ap.add_argument("--json", default="", help="also write the numbers here")
    args = ap.parse_args()
    ps = load_seed(args.run, args.seed, args.questions)
    cfg, data, gold, warm, policy, tok, questions, prompts = ps.cfg, ps.data, ps.gold, ps.warm, ps.policy, ps.tok, ps.questions, ps.prompts
    samples = ps.sample(args.samples)
    correct = [[answers_match(extract_answer(t), gold.answer(q)) for t in tok.batch_decode(g, skip_special_tokens=True)]
               for q, g in zip(questions, samples, strict=True)]
    scorer = RewardScorer(warm.reward_model, tok, ScorerSettings(selector=cfg.scarce.rft.reward_selector))
    rankings = {"reward": by_reward(scorer, cfg.scarce.rft.reward_selector), "majority": by_majority(tok),
                "logprob": by_logprob(policy, tok), "random": lambda p, s: [[0.0] * len(g) for g in s]}
    if args.vote_temperatures:
        for name in ("reward", "logprob"):
            grouped = rankings[name](prompts, samples)  # scored once, weighted at each T
            for t in map(float, args.vote_temperatures.split(",")):
                rankings[f"{name}_vote@{t:g}"] = by_vote(tok, lambda p, s, grouped=grouped: grouped, t)
    if args.fresh_reward:
        extra, crossfit = crossfit_negatives(ps, args.crossfit_folds, args.crossfit_samples) if args.crossfit_folds else ([], [])
        rankings |= fresh_rankings(ps, args.perturb_copies, args.fresh_steps, extra)
    flat_prompts = [p for p, g in zip(prompts, samples, strict=True) for c in g if c]  # every non-empty sample, in order
    flat_samples = [c for g in samples for c in g if c]
    if args.all_selectors:
        logprob = RewardScorer(RewardModel(policy, RewardConfig()), tok, ScorerSettings())
        for name, sc in (("reward", scorer), ("logprob", logprob)):
            steps = sc.score_ids(flat_prompts, flat_samples)
            for selector in SELECTORS:  # the samples' scores under each way of combining step scores, regrouped per question
                flat = iter(select_all(steps, flat_samples, selector))
                grouped = [[next(flat) if c else None for c in g] for g in samples]
                rankings[f"{name}_{selector}"] = lambda p, s, grouped=grouped: grouped
    out = {"seed": args.seed, "questions": len(questions), "samples": args.samples,
           "sample_accuracy": sum(map(sum, correct)) / sum(map(len, correct)), "any_correct": sum(map(any, correct)) / len(correct),
           "precision": {}, "provenance": environment("cpu")}
    contested = [i for i, c in enumerate(correct) if any(c) and not all(c)]  # where the ranking decides
    out["contested"] = len(contested) / len(correct)
    if args.fresh_reward and args.crossfit_folds:
        out["crossfit"] = crossfit
    out["precision_contested"] = {}
    for name, score in rankings.items():
        picks = pick_best(score(prompts, samples), random.Random(0))
        kept = [c[k] for c, k in zip(correct, picks, strict=True) if k is not None]
        out["precision"][name] = sum(kept) / max(len(kept), 1)
        out["precision_contested"][name] = sum(correct[i][picks[i]] for i in contested if picks[i] is not None) / max(len(contested), 1)
    if args.retrain_steps:
        others = [q for q in data.unlabelled if q not in set(questions)][: len(questions)]
        o_prompts = encode_prompts(tok, others, cfg.warm.max_prompt_tokens)
        o_samples = sample_completions(policy, o_prompts, n_samples=args.samples, max_new_tokens=cfg.scarce.rft.max_new_tokens,
                                       eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, seed=args.seed * 1000 + 2, progress=False)
        shares = by_majority(tok)(o_prompts, o_samples)
        minority = [DiscRecord(list(p), list(c), label=0) for p, g, sh in zip(o_prompts, o_samples, shares, strict=True)
                    for c, v in zip(g, sh, strict=True) if c and v < 0.5]
        fixed = [r for r in warm.train_records if r.label == 1 or r.negative_from > 0]
        train_reward(warm.reward_model, policy, fixed + minority, warm.val_records, tok.pad_token_id, step_rule(warm.reward_model.cfg, tok),
                     RewardTrainConfig(steps=args.retrain_steps, eval_every=args.retrain_steps), progress=False)
        warm.reward_model.eval()
        picks = pick_best(by_reward(scorer, cfg.scarce.rft.reward_selector)(prompts, samples), random.Random(0))
        out["minority_negatives"] = len(minority)
        out["precision"]["reward_minority"] = sum(c[k] for c, k in zip(correct, picks, strict=True) if k is not None) / len(correct)
        out["precision_contested"]["reward_minority"] = (sum(correct[i][picks[i]] for i in contested if picks[i] is not None)
                                                         / max(len(contested), 1))
    if args.accept_quantiles:  # every sample scoring at least D's q-quantile is kept: how many, and how many of those are right
        right = np.array([k for g, ok in zip(samples, correct, strict=True) for c, k in zip(g, ok, strict=True) if c])
        steps = scorer.score_ids(flat_prompts, flat_samples)
        demo_c = encode_completions(tok, [e.completion for e in data.demos], cfg.warm.max_completion_tokens)
        demo_steps = scorer.score_ids(encode_prompts(tok, [e.prompt for e in data.demos], cfg.warm.max_prompt_tokens), demo_c)
        out["accept"] = {}
        for selector in SELECTORS:
            ours, theirs = np.array(select_all(steps, flat_samples, selector)), np.array(select_all(demo_steps, demo_c, selector))
            for q in map(float, args.accept_quantiles.split(",")):
                keep = ours >= np.quantile(theirs, q)
                out["accept"][f"{selector}@q{q:g}"] = {"kept": int(keep.sum()), "kept_share": float(keep.mean()),
                                                       "precision": float(right[keep].mean()) if keep.any() else None}
    if args.demo_recall:
        out["demo_recall"] = {f"T={t:g}": demo_recall(ps, args.samples, t) for t in map(float, args.demo_recall.split(","))}
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=1))
    if args.json:
        write_json(args.json, out)


def demo_recall(ps, n: int, temperature: float) -> dict:
    """SFT-ES's `n` samples on each of D's questions at `temperature`: the share right (D's answer), the share that are
    the demonstration's exact text, and the count of wrong samples."""
    demos = list(ps.data.demos)
    prompts = encode_prompts(ps.tok, [e.prompt for e in demos], ps.cfg.warm.max_prompt_tokens)
    samples = sample_completions(ps.policy, prompts, n_samples=n, max_new_tokens=ps.cfg.scarce.rft.max_new_tokens, eos_id=ps.tok.eos_token_id,
                                 pad_id=ps.tok.pad_token_id, seed=ps.seed * 1000 + 3, progress=False, temperature=temperature)
    texts = [(e, ps.tok.batch_decode(g, skip_special_tokens=True)) for e, g in zip(demos, samples, strict=True)]
    right = [answers_match(extract_answer(t), e.answer) for e, g in texts for t in g]
    exact = [t.strip() == e.completion.strip() for e, g in texts for t in g]
    return {"right": sum(right) / len(right), "exact_text": sum(exact) / len(exact), "wrong": len(right) - sum(right)}


def crossfit_negatives(ps, folds: int, n: int) -> tuple[list[DiscRecord], list[dict]]:
    """For each of `folds` folds of D: a tiny policy SFT'd as SFT-ES is (its schedule, its checks on V) on the other folds,
    `n` samples on each held-out question; the wrong ones (by D's answer) as negatives from the first line that differs
    from the demonstration. Returns the negatives and per fold its best V, step and counts."""
    tok, demos, cfg = ps.tok, list(ps.data.demos), ps.cfg
    p_ids = encode_prompts(tok, [e.prompt for e in demos], cfg.warm.max_prompt_tokens)
    c_ids = encode_completions(tok, [e.completion for e in demos], cfg.warm.max_completion_tokens)
    boundary = set(newline_token_ids(tok))
    order = random.Random(ps.seed * 7 + 2).sample(range(len(demos)), len(demos))
    records, info = [], []
    for k in range(folds):
        held = order[k::folds]
        train = sorted(set(range(len(demos))) - set(held))
        policy = build_tiny_lm(tok, cfg.warm.model, seed=ps.seed * 10 + k)
        validate = partial(val_pass1, policy, tok, ps.data, cfg.scarce, ps.seed, 1.0, ES_DRAW)
        es = train_sft_es(policy, [p_ids[i] for i in train], [c_ids[i] for i in train], tok.pad_token_id,
                          replace(cfg.scarce.sft, seed=ps.seed * 10 + k), validate, cfg.scarce.patience, start_score=0.0, progress=False)
        policy.eval()
        samples = sample_completions(policy, [p_ids[i] for i in held], n_samples=n, max_new_tokens=cfg.scarce.rft.max_new_tokens,
                                     eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, seed=ps.seed * 1000 + 4 + k, progress=False)
        wrong = 0
        for i, group in zip(held, samples, strict=True):
            reference = split_steps(demos[i].completion)
            for c, text in zip(group, tok.batch_decode(group, skip_special_tokens=True), strict=True):
                if not c or answers_match(extract_answer(text), demos[i].answer):
                    continue
                first = first_wrong_step(split_steps(text), reference) or 0  # None: a cut-short prefix, negative throughout
                ends = [t for t, token in enumerate(c) if token in boundary]  # line j starts after the j-th newline
                records.append(DiscRecord(list(p_ids[i]), list(c), label=0, negative_from=ends[first - 1] + 1 if 0 < first <= len(ends) else 0))
                wrong += 1
        info.append({"fold": k, "trained_on": len(train), "best_val": es["best_val"], "best_step": es["best_step"],
                     "samples": sum(map(len, samples)), "wrong": wrong})
        print(f"crossfit fold {k}: V {es['best_val']:.3f} at step {es['best_step']}, {wrong} wrong of {sum(map(len, samples))}", flush=True)
    return records, info


def fresh_rankings(ps, copies: int, steps: int, extra: list[DiscRecord] = ()) -> dict:
    """`fresh_<selector>` rankings by a reward trained anew from SFT-ES: D (label 1) against `copies` perturbed copies of
    each demonstration (label 0) and the `extra` negatives, no SFT-ES samples."""
    warm, tok, data = ps.warm, ps.tok, ps.data
    rng = random.Random(ps.seed * 7 + 1)
    p_ids = encode_prompts(tok, [e.prompt for e in data.demos], ps.cfg.warm.max_prompt_tokens)
    experts = [r for r in warm.train_records if r.label == 1]
    records = list(experts)
    for _ in range(copies):
        records += perturbed_negatives(tok, p_ids, list(data.demos), rng)[0]
    records += list(extra)
    reward = RewardModel(copy.deepcopy(ps.policy), warm.reward_model.cfg)
    best = train_reward(reward, ps.policy, records, warm.val_records, tok.pad_token_id, step_rule(reward.cfg, tok),
                        RewardTrainConfig(steps=steps, eval_every=max(steps // 4, 1), seed=ps.seed), progress=False)
    print(f"fresh reward ({len(records) - len(experts) - len(extra)} perturbed and {len(extra)} cross-fitted negatives): val AUROC {best['auroc']:.3f} at step {best['step']}")
    scorer = RewardScorer(reward.eval(), tok, ScorerSettings())
    return {f"fresh_{sel}": by_reward(scorer, sel) for sel in ("token_mean", "min")}


if __name__ == "__main__":
    main()
