"""Every figure rairl draws, as PNG files (matplotlib on its Agg backend, imported only to draw).

    plot_curves           a comparison's training curves: a panel per logged metric, a line per method
    plot_protocol_curves  a scarce / length comparison's validation pass@1 over RFT rounds
    plot_comparison       either of those, read from the folder `rairl compare` wrote
    plot_run_logs         a run's JSONL logs: a panel per numeric column against the log's own step
    plot_dir              `rairl plot`: whichever of these a folder holds
    plot_best_of_n        best-of-N accuracy against N (`rairl.metrics.best_of_n_curve`)
    plot_localise_roc     the localiser's step-level ROC and threshold sweep (`rairl.eval.localise.localise_curves`)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .tracking import STEP_COLUMNS

CURVE_KEYS = ("mean_reward", "disc_loss", "disc_acc", "approx_kl", "sampled_entropy", "clipfrac", "mean_len", "val_auroc")
RUN_LOGS = ("train_log.jsonl", "sft_log.jsonl", "reward_log.jsonl")
BOOKKEEPING = frozenset({"tokens", "tokens_sampled", "tokens_trained", "seconds"})  # counters, not curves


def _pyplot() -> Any:
    """matplotlib.pyplot drawing to files only, or an ImportError naming the extra that brings it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("rairl draws its plots with matplotlib: pip install 'rairl[dev]' (or matplotlib)") from e
    return plt


def _rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# comparisons -----------------------------------------------------------------------------------
def _seed_means(out: Path, seeds: Sequence[int], name: str, x: str, y: str) -> tuple[list[int], list[float]]:
    """(sorted x values, mean of y over seeds at each) from every `out/seed<S>/<name>/train_log.jsonl` row holding y."""
    by_x: dict[int, list[float]] = {}
    for seed in seeds:
        log = out / f"seed{seed}" / name / "train_log.jsonl"
        if log.exists():
            for row in _rows(log):
                if row.get(y) is not None:
                    by_x.setdefault(row[x], []).append(row[y])
    xs = sorted(by_x)
    return xs, [float(np.mean(by_x[v])) for v in xs]


def plot_curves(out: Path, seeds: Sequence[int], methods: Sequence[str], path: Path) -> None:
    """One panel per logged metric, one line per method (mean over seeds at each iteration), from
    `out/seed<S>/<method>/train_log.jsonl`."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, key in zip(axes.flat, CURVE_KEYS, strict=True):
        for name in methods:
            its, means = _seed_means(out, seeds, name, "iteration", key)
            if its:
                ax.plot(its, means, label=name)
        ax.set_title(key)
        ax.set_xlabel("iteration")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_protocol_curves(out: Path, seeds: Sequence[int], methods: Sequence[str], path: Path) -> None:
    """Validation pass@1 over RFT rounds (mean over seeds), one line per arm."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in methods:
        rounds, means = _seed_means(out, seeds, name, "round", "val")
        if rounds:
            ax.plot(rounds, means, marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("V pass@1 (T = 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_comparison(out: Path, path: Path) -> None:
    """The curves `rairl compare` draws, from the folder it wrote (its metrics.json: protocol, seeds, methods)."""
    metrics = json.loads((out / "metrics.json").read_text())
    methods = [m for m in metrics["methods"] if m != "sft_init"]  # the warm start itself trains nothing
    draw = plot_curves if metrics.get("protocol", "unlimited") == "unlimited" else plot_protocol_curves
    draw(out, metrics["seeds"], methods, path)


# runs ------------------------------------------------------------------------------------------
def plot_run_logs(logs: Sequence[Path], path: Path, title: str = "") -> None:
    """One panel per numeric column of each JSONL log (counters and flags left out) against the log's
    own step column (`STEP_COLUMNS`), four panels a row."""
    panels = []  # (log name, column, step column, xs, ys)
    for log in logs:
        rows = _rows(log)
        x = next((k for k in STEP_COLUMNS if any(k in r for r in rows)), None)
        if x is None:
            continue
        columns = dict.fromkeys(k for r in rows for k, v in r.items() if _number(v) and k not in BOOKKEEPING and k not in STEP_COLUMNS)
        for col in columns:
            points = [(r[x], r[col]) for r in rows if x in r and _number(r.get(col))]
            panels.append((log.name, col, x, *zip(*points, strict=True)))
    if not panels:
        raise ValueError(f"{', '.join(map(str, logs))}: no numeric column against an {', '.join(STEP_COLUMNS)} column to plot")
    plt = _pyplot()
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
    for ax, (log, col, x, xs, ys) in zip(axes.flat, panels, strict=False):
        ax.plot(xs, ys, marker="." if len(xs) <= 60 else None)
        ax.set_title(f"{col}  ({log})", fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_dir(folder: Path, path: Path | None = None) -> Path:
    """`rairl plot`: a comparison folder's curves (a metrics.json with `methods`), else a run folder's
    JSONL logs (`RUN_LOGS`), drawn to `path` (default: `folder/curves.png`); returns the path written."""
    folder = Path(folder)
    path = Path(path) if path else folder / "curves.png"
    metrics = folder / "metrics.json"
    if metrics.is_file() and "methods" in json.loads(metrics.read_text()):
        plot_comparison(folder, path)
        return path
    logs = [folder / name for name in RUN_LOGS if (folder / name).is_file()]
    if not logs:
        raise FileNotFoundError(f"{folder}: nothing to plot (looked for {', '.join(RUN_LOGS)} and a comparison's metrics.json)")
    plot_run_logs(logs, path, title=str(folder))
    return path


# evaluation ------------------------------------------------------------------------------------
BEST_OF_N_LINES = (  # curve key, legend label, line style
    ("reward", "R-AIRL reward", "-"), ("majority_vote", "majority vote", "-"), ("logprob", "policy mean log-prob", "-"),
    ("random", "random pick", "--"), ("oracle", "oracle (pass@N)", ":"),
)


def plot_best_of_n(curve: dict[str, list[float]], path: Path, title: str, reward_label: str = "R-AIRL reward") -> None:
    """Accuracy of each selector's pick against N (log2 axis), from `best_of_n_curve`'s lists."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    n = curve["n"]
    for key, label, style in BEST_OF_N_LINES:
        if key in curve:
            ax.plot(n, curve[key], style, marker="o", markersize=4, label=reward_label if key == "reward" else label,
                    color="0.45" if key in ("random", "oracle") else None)
    ax.set_xscale("log", base=2)
    ticks = sorted({2**k for k in range(int(math.log2(n[-1])) + 1)} | {n[-1]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("N: samples per problem the selector picks from")
    ax.set_ylabel("accuracy of the picked sample")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_localise_roc(rocs: dict[str, dict], path: Path, title: str) -> None:
    """Left: each scorer's step-level ROC (`step_roc`), its threshold marked; right: the first scorer's
    localisation metrics against the threshold (`threshold_sweep`), its threshold marked. `rocs`: legend
    label -> `localise_curves` output."""
    plt = _pyplot()
    fig, (roc_ax, sweep_ax) = plt.subplots(1, 2, figsize=(13, 5))
    for k, (label, roc) in enumerate(rocs.items()):  # the first thickest: drawn first, it still shows under the others
        (line,) = roc_ax.plot(roc["fpr"], roc["tpr"], linewidth=2.4 if k == 0 else 1.4, label=f"{label} (AUROC {roc['auroc']:.3f})")
        roc_ax.plot([roc["fpr_at"]], [roc["tpr_at"]], "o", color=line.get_color(), markersize=8,
                    label=f"{label}: calibrated threshold")
    roc_ax.plot([0, 1], [0, 1], ":", color="0.6", label="chance")
    first = next(iter(rocs.values()))
    roc_ax.set_title(f"Step-level ROC: {first['n_pos']} first wrong steps vs {first['n_neg']} correct steps", fontsize=10)
    roc_ax.set_xlabel("false-positive rate (correct steps scoring below the threshold)")
    roc_ax.set_ylabel("true-positive rate (first wrong steps below it)")
    roc_ax.legend(fontsize=8, loc="lower right")
    name, sweep = next(iter(rocs)), first["sweep"]
    for key, label in (("f1", "F1 (harmonic mean)"), ("first_error_accuracy", "first-error accuracy (error traces)"),
                       ("no_error_accuracy", "no-error accuracy (clean traces)")):
        sweep_ax.plot(sweep["threshold"], sweep[key], label=label, linewidth=2 if key == "f1" else 1.2)
    sweep_ax.axvline(first["threshold"], color="k", linestyle="--", linewidth=1, label=f"calibrated threshold {first['threshold']:.3f}")
    sweep_ax.set_title(f"{name}: predicted first error = first step scoring below the threshold", fontsize=10)
    sweep_ax.set_xlabel("threshold on the step score")
    sweep_ax.set_ylabel("accuracy on the test traces")
    sweep_ax.legend(fontsize=8)
    for ax in (roc_ax, sweep_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
