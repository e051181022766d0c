"""The per-step view: one self-contained HTML page of what the reward sees in each trace.

A card per trace and a row per step. A step's background sits on a diverging scale centred at the
localisation threshold: red below it (the reward doubts the step), blue above it. The first step
below the threshold (`first_below`) is the predicted first wrong step and is marked; a gold first
wrong step and a final answer's correctness are shown when the data has them. The page loads
nothing and runs no script; every text from the data or a model is escaped (`_e`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Example, LocaliseItem, answer_kind, answers_match, extract_answer
from .metrics import first_below, localisation_metrics

_RED, _BLUE, _WHITE = (214, 47, 39), (49, 104, 176), (255, 255, 255)
_MAX_TINT = 0.62  # the strongest background keeps 14 px dark text at a contrast above 4.5:1


@dataclass(frozen=True)
class Trace:
    """One scored trace: `scores[k]` is step k's reward (the scorer's units, higher is better)."""

    name: str  # an item's id, or where the example came from ("file:line")
    problem: str
    steps: list[str]
    scores: list[float]
    label: int | None = None  # gold first wrong step, 0-based (-1: none); None when unknown
    answer: str | None = None  # the final answer read from the steps, when the data has a gold one
    gold_answer: str | None = None
    correct: bool | None = None  # answer matches gold_answer; None when there is no gold answer

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.scores):
            raise ValueError(f"trace {self.name!r}: {len(self.steps)} steps but {len(self.scores)} scores")


def item_traces(items: Sequence[LocaliseItem], scores: Sequence[Sequence[float]]) -> list[Trace]:
    """ProcessBench-style items with their step scores (zipped by index), gold labels kept."""
    return [Trace(it.id, it.problem, list(it.steps), list(s), label=it.label) for it, s in zip(items, scores, strict=True)]


def example_traces(examples: Sequence[Example], steps: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> list[Trace]:
    """(prompt, completion[, answer]) examples, each split into `steps` and scored; correctness where
    there is a gold answer."""
    out = []
    for k, (ex, st, s) in enumerate(zip(examples, steps, scores, strict=True)):
        answer = extract_answer(ex.completion, kind=answer_kind(ex.answer)) if ex.answer is not None else None
        correct = answers_match(answer, ex.answer) if ex.answer is not None else None
        out.append(Trace(ex.source or f"example {k}", ex.prompt, list(st), list(s), answer=answer, gold_answer=ex.answer, correct=correct))
    return out


def view_summary(traces: Sequence[Trace], threshold: float) -> dict:
    """Counts over all traces: `flagged` have a step below `threshold`; with gold labels the
    localisation metrics, with gold answers the share correct and how often each kind is flagged."""
    predicted = [first_below(t.scores, threshold) for t in traces]
    out: dict = {"traces": len(traces), "threshold": threshold, "flagged": sum(p >= 0 for p in predicted)}
    labelled = [(p, t.label) for p, t in zip(predicted, traces, strict=True) if t.label is not None]
    if labelled:
        out["localise"] = localisation_metrics(*zip(*labelled, strict=True))
    answered = [(p >= 0, t.correct) for p, t in zip(predicted, traces, strict=True) if t.correct is not None]
    if answered:
        right = [flag for flag, ok in answered if ok]
        wrong = [flag for flag, ok in answered if not ok]
        out["answers"] = {"n": len(answered), "correct": len(right) / len(answered),
                          "flagged_if_correct": _share(right), "flagged_if_wrong": _share(wrong)}
    return out


def render_view(traces: Sequence[Trace], threshold: float, *, title: str = "rairl view", max_traces: int = 500) -> str:
    """The page: summary (over all traces), legend, and a card for each of the first `max_traces`
    traces (0: all), with a note of how many were left out."""
    spread = _spread(traces, threshold)
    shown = traces if max_traces <= 0 else traces[:max_traces]
    left_out = len(traces) - len(shown)
    note = (f'<p class="capped">Showing the first {len(shown)} of {len(traces)} traces; {left_out} left out '
            "(the summary above covers all of them).</p>") if left_out else ""
    cards = "\n".join(_card(t, threshold, spread) for t in shown)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body><h1>{_e(title)}</h1>\n"
            f"{_summary_html(view_summary(traces, threshold))}\n{_legend(threshold, spread)}\n{note}\n{cards}\n</body></html>\n")


def write_view(path: str | Path, traces: Sequence[Trace], threshold: float, *, title: str = "rairl view", max_traces: int = 500) -> None:
    """`render_view` written to `path` (UTF-8; parent folders made)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render_view(traces, threshold, title=title, max_traces=max_traces), encoding="utf-8")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def _spread(traces: Sequence[Trace], threshold: float) -> float:
    """Half-width of the colour scale: the 95th percentile of |score - threshold| (an outlier would wash out the rest)."""
    gaps = np.abs(np.asarray([s for t in traces for s in t.scores], dtype=np.float64) - threshold)
    gaps = gaps[np.isfinite(gaps)]
    spread = float(np.quantile(gaps, 0.95)) if len(gaps) else 0.0
    return spread if spread > 0 else 1.0


def _colour(score: float, threshold: float, spread: float) -> str:
    if not math.isfinite(score):
        return "rgb(200,200,200)"
    d = max(-1.0, min(1.0, (score - threshold) / spread))
    w = _MAX_TINT * abs(d) ** 0.7  # the power lifts small distances off white
    end = _RED if d < 0 else _BLUE
    r, g, b = (round(a + (c - a) * w) for a, c in zip(_WHITE, end, strict=True))
    return f"rgb({r},{g},{b})"


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _summary_html(s: dict) -> str:
    cells = [("traces", str(s["traces"])), ("threshold", f"{s['threshold']:.3f}"),
             ("flagged (a step below threshold)", f"{s['flagged']} ({_pct(s['flagged'] / max(s['traces'], 1))})")]
    if "localise" in s:
        m = s["localise"]
        cells += [("localisation F1", _pct(m["f1"])),
                  (f"first-error accuracy ({m['n_error']} with an error)", _pct(m["first_error_accuracy"])),
                  (f"no-error accuracy ({m['n_correct']} without)", _pct(m["no_error_accuracy"]))]
    if "answers" in s:
        a = s["answers"]
        cells += [(f"answers correct (of {a['n']})", _pct(a["correct"])),
                  ("flagged among correct answers", _pct(a["flagged_if_correct"])),
                  ("flagged among wrong answers", _pct(a["flagged_if_wrong"]))]
    return '<section class="summary">' + "".join(f'<div class="stat"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                                 for k, v in cells) + "</section>"


def _legend(threshold: float, spread: float) -> str:
    stops = ", ".join(_colour(threshold + spread * x / 4, threshold, spread) for x in range(-4, 5))
    return (f'<section class="legend"><div class="bar" style="background: linear-gradient(to right, {stops})"></div>'
            f'<div class="ticks"><span>≤ {threshold - spread:.2f}</span><span>{threshold:.2f} (threshold)</span>'
            f"<span>≥ {threshold + spread:.2f}</span></div>"
            "<p>Each row is a step (numbered from 0, as the data's labels are), coloured by its reward score: "
            "<b class=\"red\">red below the threshold</b> (the reward doubts the step), <b class=\"blue\">blue above</b>; "
            'the stronger the colour, the further from the threshold. <span class="tag pred">predicted first error</span> '
            'marks the first step below the threshold, <span class="tag gold">gold first error</span> the labelled one. '
            "Hover a step for its exact score.</p></section>")


def _card(t: Trace, threshold: float, spread: float) -> str:
    pred = first_below(t.scores, threshold)
    chips = [f'<span class="chip">predicted: {"no error" if pred < 0 else f"step {pred}"}</span>']
    if t.label is not None:
        chips.append(f'<span class="chip">gold: {"no error" if t.label < 0 else f"step {t.label}"}</span>')
        chips.append('<span class="chip ok">✓ agrees</span>' if pred == t.label else '<span class="chip bad">✗ disagrees</span>')
    if t.correct is not None:
        got = "no answer found" if t.answer is None else f"answer {_e(t.answer)}"
        chips.append(f'<span class="chip {"ok" if t.correct else "bad"}">{"✓" if t.correct else "✗"} {got} '
                     f"(gold {_e(t.gold_answer)})</span>")
    rows = "\n".join(_row(k, step, score, threshold, spread, k == pred, k == t.label) for k, (step, score)
                     in enumerate(zip(t.steps, t.scores, strict=True)))
    return (f'<article class="card"><header><h2>{_e(t.name)}</h2>{"".join(chips)}</header>'
            f'<div class="problem">{_e(t.problem)}</div>\n<div class="steps">\n{rows}\n</div></article>')


def _row(k: int, step: str, score: float, threshold: float, spread: float, pred: bool, gold: bool) -> str:
    classes = "step" + (" pred" if pred else "") + (" gold" if gold else "")
    tags = ('<span class="tag pred">predicted first error</span>' if pred else "") + \
           ('<span class="tag gold">gold first error</span>' if gold else "")
    return (f'<div class="{classes}" style="background:{_colour(score, threshold, spread)}" '
            f'title="step {k}: score {score:.4f} (threshold {threshold:.4f})"><span class="idx">{k}</span>'
            f'<span class="text">{_e(step)}</span><span class="tags">{tags}</span><span class="score">{score:.2f}</span></div>')


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b; background: #f4f5f7;
       max-width: 1100px; margin: 0 auto; padding: 16px 24px; }
h1 { font-size: 22px; margin: 4px 0 12px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 12px; }
.stat { background: #fff; border: 1px solid #d8dbe0; border-radius: 6px; padding: 6px 12px; }
.stat b { display: block; font-size: 18px; } .stat span { font-size: 12px; color: #555; }
.legend { background: #fff; border: 1px solid #d8dbe0; border-radius: 6px; padding: 10px 14px; margin-bottom: 12px; }
.legend .bar { height: 14px; border-radius: 3px; border: 1px solid #bbb; }
.legend .ticks { display: flex; justify-content: space-between; font-size: 12px; color: #444; margin-top: 2px; }
.legend p { margin: 8px 0 0; font-size: 13px; }
.red { color: #a5221b; } .blue { color: #264f86; }
.capped { background: #fff6d6; border: 1px solid #e6cf7a; border-radius: 6px; padding: 8px 12px; }
.card { background: #fff; border: 1px solid #d8dbe0; border-radius: 8px; margin: 0 0 14px; padding: 10px 14px; }
.card header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; }
.card h2 { font-size: 15px; margin: 0 8px 0 0; font-family: ui-monospace, Menlo, monospace; }
.chip { font-size: 12px; border: 1px solid #c9ccd2; border-radius: 10px; padding: 1px 8px; background: #f7f7f9; }
.chip.ok { border-color: #5b9a68; color: #1f6b30; } .chip.bad { border-color: #c0504a; color: #9b1f18; }
.problem { margin: 8px 0; padding: 6px 10px; background: #f7f7f9; border-left: 3px solid #9aa0aa; white-space: pre-wrap;
           overflow-wrap: anywhere; }
.steps { display: flex; flex-direction: column; gap: 3px; }
.step { display: grid; grid-template-columns: 2.2em 1fr auto 4.2em; align-items: baseline; gap: 8px; padding: 4px 8px;
        border-radius: 4px; border: 2px solid transparent; }
.step .idx { color: #555; font-size: 12px; text-align: right; font-family: ui-monospace, Menlo, monospace; }
.step .text { white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, Menlo, monospace; font-size: 14px; }
.step .score { font-size: 13px; color: #222; text-align: right; font-family: ui-monospace, Menlo, monospace; }
.step.pred { border-color: #7a0f0a; box-shadow: inset 5px 0 0 #7a0f0a; }
.step.gold:not(.pred) { border: 2px dashed #333; }
.tag { font-size: 11px; font-weight: 600; border-radius: 3px; padding: 1px 6px; white-space: nowrap; margin-left: 4px; }
.tag.pred { background: #7a0f0a; color: #fff; } .tag.gold { background: #fff; color: #111; border: 1.5px dashed #333; }
"""
