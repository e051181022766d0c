"""`rairl view`: the per-step HTML page, read back with `html.parser`, and the command in a subprocess."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from rairl.data import Example
from rairl.metrics import first_below, localisation_metrics
from rairl.view import Trace, example_traces, render_view, view_summary

EVIL = '<script>alert("x")</script>'
VOID = {"meta", "br", "hr", "img", "input", "link"}


class Page(HTMLParser):
    """Every start tag, and per card its header texts and per step row its classes, title, background and texts."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.cards: list[dict] = []
        self.capped = ""
        self.stats: list[str] = []
        self._stack: list[tuple[str, list[str]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        self.tags.append(tag)
        if tag == "article" and "card" in classes:
            self.cards.append({"name": "", "chips": [], "problem": "", "rows": []})
        if tag == "div" and "step" in classes:
            self.cards[-1]["rows"].append({"classes": set(classes), "title": a["title"], "style": a["style"],
                                           "text": "", "tags": "", "score": ""})
        if tag == "span" and "chip" in classes:
            self.cards[-1]["chips"].append("")
        if tag not in VOID:
            self._stack.append((tag, classes))

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for tag, classes in reversed(self._stack):
            if tag == "h2" and self.cards:
                self.cards[-1]["name"] += data
            elif "chip" in classes:
                self.cards[-1]["chips"][-1] += data
            elif "problem" in classes:
                self.cards[-1]["problem"] += data
            elif classes and classes[0] in ("text", "tags", "score") and self.cards and self.cards[-1]["rows"]:
                self.cards[-1]["rows"][-1][classes[0]] += data
            elif "capped" in classes:
                self.capped += data
            elif "stat" in classes:
                self.stats.append(data)
            else:
                continue
            return


THRESHOLD = -1.0
TRACES = [
    Trace("a", "Tom has 3 pens. He gets 2 more, then doubles them.", ["3 + 2 = 5", "5 * 2 = 11", "#### 11"], [0.5, -2.0, -3.0], label=1),
    Trace("b", "Ann has 2 pens.", ["2 + 2 = 4", "#### 4"], [0.2, THRESHOLD], label=-1),  # at the threshold is not below it
    Trace(f'bad {EVIL} & "q"', f'{EVIL} & "quoted" \'single\'', [f"{EVIL} 3 + 2 = 5", 'a & b "c" <i>d</i>', "#### 5"],
          [-5.0, 1.0, 2.0], label=2),
]


def test_one_card_per_trace_one_row_per_step_predicted_and_gold_marked():
    page = Page(render_view(TRACES, THRESHOLD))
    assert [c["name"] for c in page.cards] == [t.name for t in TRACES]
    for card, t in zip(page.cards, TRACES, strict=True):
        assert [r["text"] for r in card["rows"]] == t.steps and card["problem"] == t.problem
        pred = first_below(t.scores, THRESHOLD)
        assert [k for k, r in enumerate(card["rows"]) if "pred" in r["classes"]] == ([pred] if pred >= 0 else [])
        assert [k for k, r in enumerate(card["rows"]) if "gold" in r["classes"]] == ([t.label] if t.label >= 0 else [])
        assert [k for k, r in enumerate(card["rows"]) if "predicted first error" in r["tags"]] == ([pred] if pred >= 0 else [])
        assert f"predicted: {'no error' if pred < 0 else f'step {pred}'}" in card["chips"]
        assert f"gold: {'no error' if t.label < 0 else f'step {t.label}'}" in card["chips"]
        assert any(("agrees" if pred == t.label else "disagrees") in c for c in card["chips"])
        for r, s in zip(card["rows"], t.scores, strict=True):
            assert f"score {s:.4f}" in r["title"] and r["score"] == f"{s:.2f}"


def test_step_colours_diverge_at_the_threshold():
    page = Page(render_view(TRACES, THRESHOLD))
    for card, t in zip(page.cards, TRACES, strict=True):
        for r, s in zip(card["rows"], t.scores, strict=True):
            red, _, blue = map(int, re.search(r"rgb\((\d+),(\d+),(\d+)\)", r["style"]).groups())
            if s < THRESHOLD:
                assert red > blue, (s, r["style"])
            elif s > THRESHOLD:
                assert blue > red, (s, r["style"])
            else:
                assert red == blue == 255, (s, r["style"])


def test_data_and_model_text_is_escaped():
    text = render_view(TRACES, THRESHOLD, title=f"view of {EVIL}")
    page = Page(text)
    assert "script" not in page.tags and "i" not in page.tags and "<script" not in text.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text and "a &amp; b &quot;c&quot;" in text
    evil = page.cards[2]
    assert evil["name"] == TRACES[2].name and evil["problem"] == TRACES[2].problem  # read back exactly as given
    assert [r["text"] for r in evil["rows"]] == TRACES[2].steps


def test_cards_are_capped_and_the_summary_covers_all():
    many = [Trace(f"t{k}", "p", ["1 + 1 = 2", "#### 2"], [float(k % 3) - 2, 0.5], label=-1 if k % 2 else 0) for k in range(7)]
    page = Page(render_view(many, THRESHOLD, max_traces=3))
    assert [c["name"] for c in page.cards] == ["t0", "t1", "t2"]
    assert "first 3 of 7" in page.capped and "4 left out" in page.capped
    assert "7" in page.stats and "traces" in page.stats
    m = localisation_metrics([first_below(t.scores, THRESHOLD) for t in many], [t.label for t in many])
    assert f"{100 * m['f1']:.1f}%" in page.stats
    assert len(Page(render_view(many, THRESHOLD, max_traces=0)).cards) == 7 and not Page(render_view(many, THRESHOLD)).capped


def test_answers_are_checked_and_summarised():
    examples = [Example("Tom has 3 pens.", "3 + 2 = 5\n#### 5", "5"), Example("Ann has 2.", "2 + 2 = 5\n#### 5", "4"),
                Example("No gold.", "1 + 1 = 2\n#### 2")]
    traces = example_traces(examples, [e.completion.split("\n") for e in examples], [[0.0, 0.0], [-3.0, 0.0], [0.0, 0.0]])
    assert [t.correct for t in traces] == [True, False, None] and traces[1].answer == "5" and traces[1].gold_answer == "4"
    s = view_summary(traces, THRESHOLD)
    assert "localise" not in s and s["answers"] == {"n": 2, "correct": 0.5, "flagged_if_correct": 0.0, "flagged_if_wrong": 1.0}
    page = Page(render_view(traces, THRESHOLD))
    assert any("✓ answer 5 (gold 5)" in c for c in page.cards[0]["chips"])
    assert any("✗ answer 5 (gold 4)" in c for c in page.cards[1]["chips"])
    assert not any("answer" in c for c in page.cards[2]["chips"]) and not any("gold" in c for c in page.cards[2]["chips"])
    assert "50.0%" in page.stats and "answers correct (of 2)" in page.stats


def test_view_command_reads_items_or_examples_and_localise_writes_the_same_view(rairl, reward_dir, tmp_path):
    items, examples = tmp_path / "items.jsonl", tmp_path / "examples.jsonl"
    rows = [{"id": "a", "problem": "Tom has 3 pens. Tom gets 2 more.", "steps": ["3 + 2 = 6", "#### 6"], "label": 0},
            {"id": "b", "problem": f"Tom has 3 pens. {EVIL}", "steps": ["3 + 2 = 5", "#### 5"], "label": -1}]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples.write_text(json.dumps({"prompt": "Tom has 3 pens. Tom gets 2 more.", "completion": "3 + 2 = 5\n#### 5", "answer": "5"}) + "\n")
    thr = "--threshold=-30"
    rairl("view", "--reward", str(reward_dir), "--data", str(items), thr, "--out", str(tmp_path / "v.html"), "--no-progress")
    rairl("localise", "--reward", str(reward_dir), "--items", str(items), thr, "--html", str(tmp_path / "l.html"),
          "--out", str(tmp_path / "loc"), "--no-progress")
    predicted = [p["predicted"] for p in json.loads((tmp_path / "loc" / "metrics.json").read_text())["predictions"]]
    assert any(p >= 0 for p in predicted)  # some step is marked, so the marks below are checked
    for html_file in ("v.html", "l.html"):
        page = Page((tmp_path / html_file).read_text())
        assert [c["name"] for c in page.cards] == ["a", "b"] and "script" not in page.tags
        assert [[k for k, r in enumerate(c["rows"]) if "pred" in r["classes"]] for c in page.cards] == [[p] if p >= 0 else [] for p in predicted]
        assert [[k for k, r in enumerate(c["rows"]) if "gold" in r["classes"]] for c in page.cards] == [[0], []]
    rairl("score", "--reward", str(reward_dir), "--data", str(examples), "--html", str(tmp_path / "s.html"), "--out", str(tmp_path / "s"))
    rairl("view", "--reward", str(reward_dir), "--data", str(examples), "--out", str(tmp_path / "e.html"))
    for html_file in ("s.html", "e.html"):
        card = Page((tmp_path / html_file).read_text()).cards[0]
        assert len(card["rows"]) == 2 and any("✓ answer 5 (gold 5)" in c for c in card["chips"])
    neither = tmp_path / "neither.jsonl"
    neither.write_text(json.dumps({"text": "hello"}) + "\n")
    proc = rairl("view", "--reward", str(reward_dir), "--data", str(neither), "--out", str(tmp_path / "n.html"), check=False)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and f"{neither}:1:" in err and "steps" in err and "prompt" in err
    assert not (tmp_path / "n.html").exists()
