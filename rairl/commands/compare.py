"""`rairl compare`: R-AIRL against its baselines on the embedded task, several seeds.

`--protocol scarce` and `--protocol length` (a few worked solutions, many questions without one;
`rairl.train.protocol` runs one seed of them, its module docstring lists the arms) compare every
arm against SFT stopped early on validation. `--protocol unlimited` (the default) is the
matched-budget comparison below, with fresh demonstrations for every batch.

For each seed: one warm start (SFT policy + reward trained against it), then
every method from it to the same budget of policy tokens trained on, then the
same held-out evaluation. Methods:

    sft_init       the warm start itself (no more training; the no-collapse reference)
    sft            more SFT on the demonstrations
    airl_step      R-AIRL, step advantages (reward-to-go, group baseline)
    airl_sequence  R-AIRL, sequence advantages (GRPO)
    frozen         the warm-start reward, never updated (step advantages)
    outcome        GRPO on gold-answer correctness (reads answers: the verifier reference)

Each arm is `rairl.train.run.post_train` with its `train.method` and `train.advantages`.
Writes `DIR/metrics.json` (a `methods` map), `DIR/results.md`, `DIR/curves.png`;
finished (seed, method) runs are reused, so a stopped comparison continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.protocols import PROTOCOLS
from ..dist import launched
from ..metrics import bootstrap_ci, write_metrics
from ..plots import plot_curves, plot_protocol_curves
from ..train.checkpoint import latest_checkpoint
from ..train.folder import claim_run_folder
from ..train.protocol import ARMS as PROTOCOL_ARMS
from ..train.protocol import ProtocolConfig, quick_protocol_config, run_protocol_seed
from ..train.rft import RFTConfig
from ..train.run import (
    RunConfig,
    UserData,
    evaluate_held_out,
    post_train,
    quick_run_config,
    reward_step_metrics,
    run_data,
    warm_start_for,
)
from ..train.trainer import TrainConfig
from ..train.warm_start import check_template

# Each arm of the comparison: name -> (train.method, train.advantages).
ARMS = {
    "sft": ("sft", "step"),
    "airl_step": ("airl", "step"),
    "airl_sequence": ("airl", "sequence"),
    "frozen": ("frozen", "step"),
    "outcome": ("outcome", "sequence"),
}

# Budget sized so that three seeds of all methods fit 90 minutes on 2 CPU cores.
TRAIN_DEFAULTS = TrainConfig(iterations=200, token_budget=300_000, checkpoint_every=10)


@dataclass(frozen=True)
class CompareConfig(RunConfig):
    """`rairl compare`: every arm from one warm start per seed, at the same policy-token budget."""

    # unlimited: fresh demonstrations every batch, matched policy-token budgets; scarce: a fixed demonstration set
    # and many unlabelled questions; length: the same with short demonstrations and long questions
    protocol: str = "unlimited"
    train: TrainConfig = field(default_factory=lambda: TRAIN_DEFAULTS)  # protocol unlimited: shared by every arm; each sets method, advantages, seed
    scarce: ProtocolConfig = field(default_factory=ProtocolConfig)  # protocols scarce and length: sets, SFT-ES, RFT, temperatures
    seeds: tuple[int, ...] = (1, 2, 3)  # one warm start and one run of every arm per seed
    methods: tuple[str, ...] = ()  # the arms to run (empty: every arm of the protocol; unlimited runs sft_init always)
    results_md: str = ""  # also append the Markdown table to this file (e.g. benchmarks/RESULTS.md)

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms to run: `methods`, or every arm of the protocol."""
        return tuple(self.methods) or (tuple(ARMS) if self.protocol == "unlimited" else tuple(PROTOCOL_ARMS))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_template(self.warm, None)  # the embedded task's tiny policy
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))  # the CLI passes strings
        if self.protocol not in ("unlimited", *PROTOCOLS):
            raise ValueError(f"CompareConfig.protocol={self.protocol!r}; choose one of {('unlimited', *PROTOCOLS)}")
        known = tuple(ARMS) if self.protocol == "unlimited" else tuple(PROTOCOL_ARMS)
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ValueError(f"CompareConfig.methods: unknown {unknown} for protocol {self.protocol}; choose from {known}")
        if "sft_more" in self.arms and "rft_reward" not in self.arms:
            raise ValueError("CompareConfig.methods: sft_more is matched in wall-clock to rft_reward; run both")
        if not self.seeds:
            raise ValueError("CompareConfig.seeds: give at least one seed")
        if not self.train.token_budget:
            raise ValueError("CompareConfig: train.token_budget must be > 0 (budgets are matched in policy tokens)")
        fixed = {"method": "airl", "advantages": "step", "seed": 0, "operator": "ppo"}  # set per arm and seed: refuse a value that would be ignored
        set_anyway = [f"train.{k}" for k, v in fixed.items() if getattr(self.train, k) != v]
        if self.rft != RFTConfig():  # rairl train's operator options would be ignored here
            raise ValueError("CompareConfig: rft.* is rairl train's; the scarce and length protocols take --scarce.rft.*")
        if set_anyway:
            raise ValueError(f"CompareConfig: {', '.join(set_anyway)} are set per arm and seed; choose arms with --methods, seeds with --seeds")


def quick_compare_config(seeds: tuple[int, ...] = (1, 2), protocol: str = "unlimited") -> CompareConfig:
    """A minutes-long preset for tests: two seeds, every arm, nothing learns much."""
    return CompareConfig(**vars(quick_run_config()), seeds=seeds, protocol=protocol, scarce=quick_protocol_config())


def run_compare(cfg: CompareConfig, out: str | Path, progress: bool = True, overwrite: bool = False) -> dict:
    if launched():
        raise ValueError("rairl compare runs its arms in one process; launch it without torchrun / accelerate launch "
                         "(benchmarks/compare_parallel.sh runs seeds side by side)")
    out = Path(out)
    # a comparison continues in its own folder (runs are per seed and arm): seeds, methods and results_md may change
    claim_run_folder(out, "compare", asdict(cfg), resume=True, overwrite=overwrite, may_change=("seeds", "methods", "results_md"))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.protocol != "unlimited":
        return run_protocol(cfg, out, progress)
    t0 = time.time()
    run = RunConfig(**{k: getattr(cfg, k) for k in RunConfig.__dataclass_fields__})
    per_seed: dict[str, list[dict]] = {m: [] for m in ("sft_init", *cfg.arms)}
    for seed in cfg.seeds:
        warm_dir = out / f"seed{seed}" / "warm"
        per_seed["sft_init"].append(_evaluate_warm(run, seed, warm_dir, out / f"seed{seed}" / "sft_init", progress))
        for name in cfg.arms:
            method, advantages = ARMS[name]
            run_cfg = replace(run, train=replace(run.train, method=method, advantages=advantages, seed=seed))
            run_dir = out / f"seed{seed}" / name
            done = run_dir / "metrics.json"
            if done.exists():
                per_seed[name].append(json.loads(done.read_text()))
                continue
            resume = latest_checkpoint(run_dir / "checkpoints") is not None
            if progress:
                print(f"[compare {time.time() - t0:7.1f}s] seed {seed}: {name}{' (resumed)' if resume else ''}", flush=True)
            per_seed[name].append(post_train(run_cfg, seed, run_dir, warm_dir, resume=resume, progress=progress))
    metrics = {"protocol": "unlimited", "seeds": list(cfg.seeds), "methods": summarise(per_seed), "config": asdict(cfg),
               "seconds": time.time() - t0}
    metrics["methods"] = {k: {**v, **_curve_summary(out, cfg.seeds, k)} for k, v in metrics["methods"].items()}
    _write_results(out, cfg, metrics)
    plot_curves(out, cfg.seeds, cfg.arms, out / "curves.png")
    return metrics


def _write_results(out: Path, cfg: CompareConfig, metrics: dict) -> None:
    """`out/metrics.json`, `out/results.md`, and the table appended to `cfg.results_md` when set."""
    write_metrics(out / "metrics.json", metrics)
    table = results_markdown(metrics)
    (out / "results.md").write_text(table)
    if cfg.results_md:
        with open(cfg.results_md, "a") as f:
            f.write("\n" + table)


def run_protocol(cfg: CompareConfig, out: Path, progress: bool = True) -> dict:
    """Protocol scarce or length: every arm of `cfg.methods` for every seed, then the summary, table and curves."""
    t0 = time.time()
    per_arm: dict[str, list[dict]] = {m: [] for m in cfg.arms}
    shared = {}
    for seed in cfg.seeds:
        summary, results = run_protocol_seed(cfg.protocol, cfg.scarce, cfg.task, cfg.warm, cfg.eval.problems, cfg.eval.samples, seed,
                                             cfg.arms, out / f"seed{seed}", cfg.torch_device(), cfg.torch_dtype(), progress)
        shared[str(seed)] = summary
        for arm, m in results.items():
            per_arm[arm].append(m)
    metrics = {"protocol": cfg.protocol, "seeds": list(cfg.seeds), "methods": summarise_protocol(per_arm), "shared": shared,
               "config": asdict(cfg), "seconds": time.time() - t0}
    if "sft_es" in per_arm:
        metrics["go_no_go"] = {
            "sft_es_passk": float(np.mean([m["passk"] for m in per_arm["sft_es"]])), "k": per_arm["sft_es"][0]["k"],
            "reward_step_auroc_from_line5": {k: _mean_defined([s["reward_steps_late"]["step_auroc"][k] for s in shared.values()])
                                             for k in ("log_pi", "g", "f", "ell")},
            "reward_step_auroc": {k: _mean_defined([s["reward_steps"]["step_auroc"][k] for s in shared.values()])
                                  for k in ("log_pi", "g", "f", "ell")},
        }
    _write_results(out, cfg, metrics)
    plot_protocol_curves(out, cfg.seeds, cfg.arms, out / "curves.png")
    return metrics


def summarise_protocol(per_arm: dict[str, list[dict]]) -> dict[str, dict]:
    """Per arm: pass@1 at T = 1 and at the V-tuned temperature (means over seeds, 95% bootstrap intervals
    over (seed, problem) pairs), paired deltas against sft_es, and what the arm used."""
    out = {}
    ref = per_arm.get("sft_es", [])
    for name, runs in per_arm.items():
        if not runs:
            continue
        t1 = np.concatenate([r["per_problem_pass1"] for r in runs])
        tuned = np.concatenate([r["per_problem_pass1_tuned_T"] for r in runs])
        m = {
            "pass1_mean": float(np.mean([r["pass1"] for r in runs])), "pass1_ci": list(bootstrap_ci(t1)),
            "pass1_tuned_T": float(np.mean([r["pass1_tuned_T"] for r in runs])), "pass1_tuned_T_ci": list(bootstrap_ci(tuned)),
            "tuned_T_per_seed": [r["tuned_T"] for r in runs], "pass1_per_seed": [r["pass1"] for r in runs],
            "pass1_tuned_T_per_seed": [r["pass1_tuned_T"] for r in runs], "passk": float(np.mean([r["passk"] for r in runs])),
            "k": runs[0]["k"], "demos": runs[0]["demos"], "reads_gold": runs[0]["reads_gold"],
            "policy_tokens": {k: float(np.mean([r["policy_tokens"][k] for r in runs])) for k in ("sampled", "trained")},
            "seconds": float(np.mean([r["seconds"] for r in runs])), "mean_len": float(np.mean([r["mean_len"] for r in runs])),
            "format_valid": float(np.mean([r["format_valid"] for r in runs])),
            "chosen_checkpoint_per_seed": [r["train"].get("best_round", r["train"].get("best_step")) for r in runs],
        }
        if name != "sft_es" and len(ref) == len(runs):  # same problems and seeds, paired
            d_tuned = tuned - np.concatenate([r["per_problem_pass1_tuned_T"] for r in ref])
            d_t1 = t1 - np.concatenate([r["per_problem_pass1"] for r in ref])
            m |= {"delta_vs_sft_es": float(d_tuned.mean()), "delta_vs_sft_es_ci": list(bootstrap_ci(d_tuned)),
                  "delta_vs_sft_es_T1": float(d_t1.mean()), "delta_vs_sft_es_T1_ci": list(bootstrap_ci(d_t1))}
        out[name] = m
    return out


def protocol_markdown(metrics: dict) -> str:
    seeds = ",".join(map(str, metrics["seeds"]))
    lines = [
        f"### rairl compare --protocol {metrics['protocol']}, seeds {seeds} ({metrics['seconds'] / 60:.1f} min in this invocation; "
        "finished stages are reused, not re-timed)", "",
        "| arm | pass@1, V-tuned T [95% CI] | Δ vs sft_es, tuned T [95% CI] | pass@1, T = 1 [95% CI] | Δ vs sft_es, T = 1 | tuned T per seed "
        "| demos | policy tokens sampled / trained | seconds | reads gold | checkpoint per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["methods"].items():
        delta = f"{m['delta_vs_sft_es']:+.3f} [{m['delta_vs_sft_es_ci'][0]:+.3f}, {m['delta_vs_sft_es_ci'][1]:+.3f}]" if "delta_vs_sft_es" in m else ""
        delta1 = f"{m['delta_vs_sft_es_T1']:+.3f}" if "delta_vs_sft_es_T1" in m else ""
        lines.append(
            f"| {name} | {m['pass1_tuned_T']:.3f} [{m['pass1_tuned_T_ci'][0]:.3f}, {m['pass1_tuned_T_ci'][1]:.3f}] | {delta} "
            f"| {m['pass1_mean']:.3f} [{m['pass1_ci'][0]:.3f}, {m['pass1_ci'][1]:.3f}] | {delta1} | {', '.join(map(str, m['tuned_T_per_seed']))} "
            f"| {m['demos']} | {m['policy_tokens']['sampled']:,.0f} / {m['policy_tokens']['trained']:,.0f} | {m['seconds']:.0f} "
            f"| {'yes' if m['reads_gold'] else 'no'} | {', '.join(map(str, m['chosen_checkpoint_per_seed']))} |")
    if "go_no_go" in metrics:
        g = metrics["go_no_go"]
        fmt = lambda a: ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in a.items())  # noqa: E731
        lines += ["", f"Go/no-go: SFT-ES pass@{g['k']} on T {g['sft_es_passk']:.3f}; the reward's step AUROC (SFT-ES's correct V steps "
                  f"against its first wrong ones, gold read to evaluate only) from line 5 on: {fmt(g['reward_step_auroc_from_line5'])}; "
                  f"all lines: {fmt(g['reward_step_auroc'])}."]
    lines += ["", "Checkpoints are chosen on V (SFT-ES: the SFT step; rft arms: the round, 0 = SFT-ES itself). Seconds: each arm's own "
              "training after SFT-ES (sft_es: SFT-ES itself); the shared reward's time is under `shared` in metrics.json."]
    return "\n".join(lines) + "\n"


def _evaluate_warm(cfg: RunConfig, seed: int, warm_dir: Path, run_dir: Path, progress: bool) -> dict:
    """The warm start of `seed` (built if missing) evaluated as the `sft_init` arm."""
    warm = warm_start_for(cfg, seed, warm_dir, progress)
    done = run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    ev = evaluate_held_out(cfg, seed, run_data(cfg, seed, UserData()), warm.policy, warm.tokenizer, progress)
    metrics = {"method": "sft_init", "seed": seed, "tokens_trained": 0, "verifier_free": True, **ev,  # the warm start's reward:
               "reward_steps": reward_step_metrics(cfg, seed, warm.reward_model, warm.policy, warm.tokenizer, warm.val_records)}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(done, metrics)
    return metrics


def summarise(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean over seeds; 95% bootstrap intervals over (seed, problem) pairs; paired deltas against `sft`."""
    out = {}
    for name, runs in per_seed.items():
        if not runs:
            continue
        pooled = np.concatenate([r["per_problem_pass1"] for r in runs])
        out[name] = {
            "pass1_mean": float(np.mean([r["pass1"] for r in runs])), "pass1_ci": list(bootstrap_ci(pooled)),
            "pass1_per_seed": [r["pass1"] for r in runs], "passk": float(np.mean([r["passk"] for r in runs])), "k": runs[0]["k"],
            "mean_len": float(np.mean([r["mean_len"] for r in runs])), "format_valid": float(np.mean([r["format_valid"] for r in runs])),
            "tokens_trained": float(np.mean([r["tokens_trained"] for r in runs])), "verifier_free": runs[0]["verifier_free"],
        }
        step_aurocs = [r["reward_steps"]["step_auroc"] for r in runs if "reward_steps" in r]
        if step_aurocs:  # mean over the seeds where both step classes occurred
            out[name]["reward_step_auroc"] = {k: _mean_defined([a[k] for a in step_aurocs]) for k in step_aurocs[0]}
        if "sft" in per_seed and name != "sft" and len(per_seed["sft"]) == len(runs):
            diff = pooled - np.concatenate([r["per_problem_pass1"] for r in per_seed["sft"]])  # same problems, paired
            out[name] |= {"delta_vs_sft": float(diff.mean()), "delta_vs_sft_ci": list(bootstrap_ci(diff))}
    if "sft_init" in out:  # no collapse: length and format validity within 20% of the warm-start policy's
        ref = out["sft_init"]
        for m in out.values():
            m["len_ratio_vs_sft_init"] = m["mean_len"] / ref["mean_len"]
            m["format_ratio_vs_sft_init"] = m["format_valid"] / max(ref["format_valid"], 1e-9)
    return out


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _curve_summary(out: Path, seeds, name: str) -> dict:
    """Reward-model validation AUROC over training (airl runs), per seed: [[iteration, auroc], ...]."""
    curves = []
    for seed in seeds:
        log = out / f"seed{seed}" / name / "train_log.jsonl"
        if log.exists():
            rows = [json.loads(line) for line in log.read_text().splitlines()]
            points = [[r["iteration"], r["val_auroc"]] for r in rows if "val_auroc" in r]
            if points:
                curves.append(points)
    return {"val_auroc_curves": curves} if curves else {}


def results_markdown(metrics: dict) -> str:
    """The comparison's Markdown table (and notes) from its metrics."""
    if metrics.get("protocol", "unlimited") != "unlimited":
        return protocol_markdown(metrics)
    seeds = ",".join(map(str, metrics["seeds"]))
    lines = [
        f"### rairl compare, seeds {seeds} ({metrics['seconds'] / 60:.1f} min)", "",
        "| method | pass@1 (mean over seeds) [95% CI] | Δ vs sft [95% CI] | pass@k | mean len | format-valid | policy tokens | pass@1 per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["methods"].items():
        delta = f"{m['delta_vs_sft']:+.3f} [{m['delta_vs_sft_ci'][0]:+.3f}, {m['delta_vs_sft_ci'][1]:+.3f}]" if "delta_vs_sft" in m else ""
        label = name + ("" if m["verifier_free"] else " (reads answers)")
        lines.append(
            f"| {label} | {m['pass1_mean']:.3f} [{m['pass1_ci'][0]:.3f}, {m['pass1_ci'][1]:.3f}] | {delta} | {m['passk']:.3f} (k={m['k']}) "
            f"| {m['mean_len']:.1f} | {m['format_valid']:.3f} | {m['tokens_trained']:,.0f} | {', '.join(f'{v:.3f}' for v in m['pass1_per_seed'])} |"
        )
    ms = metrics["methods"]
    rewards = [(name, m["reward_step_auroc"]) for name, m in ms.items() if "reward_step_auroc" in m]
    if rewards:
        lines += ["", "Reward step AUROC, the warm policy's correct validation steps against its first wrong ones (gold read to "
                  "evaluate only; sft_init: the warm start's reward; others: the reward each policy trained on, at the end):", "",
                  "| reward | log π | g | f | ℓ = f − log π |", "|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join("n/a" if a[k] is None else f"{a[k]:.3f}" for k in ("log_pi", "g", "f", "ell")) + " |"
                  for name, a in rewards]
    if "airl_step" in ms and "airl_sequence" in ms:
        a, b = ms["airl_step"]["pass1_mean"], ms["airl_sequence"]["pass1_mean"]
        winner = "step" if a > b else ("sequence" if b > a else "neither")
        lines += ["", f"Step vs sequence advantages: **{winner}** wins (pass@1 step {a:.3f}, sequence {b:.3f})."]
    return "\n".join(lines) + "\n"
