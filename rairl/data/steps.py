"""Step segmentation, final-answer extraction and answer comparison.

Solutions are GSM8K-like: one reasoning step per line, a final ``#### N`` line.
Answers are numbers, or option letters for multiple-choice data (MMLU-Pro's
A-J, see ``answer_kind``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

# A number as written in text: optional sign, optional "$", thousands groups or
# plain digits, optional decimals, optional "/denominator", optional "%".
# The sign must not follow a word character so "12-5" reads as 12 and 5.
_NUMBER = (
    r"(?:(?<![\w)])[-\u2212])?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?"
    r"|(?:(?<![\w)])[-\u2212])?\$?\.\d+%?"
)
NUMBER_RE = re.compile(rf"(?<![\d.,])(?:{_NUMBER})(?![\d])")

_GSM8K_MARK_RE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
# Explicit answer phrases, tried after "####"; the last occurrence wins.
_ANSWER_MARK_RES = (
    re.compile(r"\\boxed\{\s*(" + NUMBER_RE.pattern + r")\s*\}"),
    re.compile(r"the (?:final )?answer is[:\s]*(" + NUMBER_RE.pattern + r")", re.IGNORECASE),
    re.compile(r"\banswer\s*:\s*(" + NUMBER_RE.pattern + r")", re.IGNORECASE),
)
CHOICE_LETTERS = "ABCDEFGHIJ"  # option letters: MMLU-Pro has up to ten options
AnswerKind = Literal["number", "choice"]
# An option letter alone: "B", "(B)", "B.", "B)", "[b]"; any case, nothing else around it.
_LONE_CHOICE_RE = re.compile(r"\s*[(\[]?([A-Ja-j])[)\].:]?\s*")
# A capital option letter in a completion, the last occurrence of the first pattern found winning.
# Inside a phrase the letter must be a capital so that "the answer is a prime" is not read as A.
_CHOICE = r"[(\[]?([A-J])[)\]]?(?!\w)"
_CHOICE_MARK_RES = (
    re.compile(r"^[ \t]*####[ \t]*" + _CHOICE, re.MULTILINE),
    re.compile(r"\\boxed\{\s*" + _CHOICE + r"\s*\}"),
    re.compile(r"\b(?i:answer)(?:\s+(?i:is))?[\s:*]*" + _CHOICE),
)
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


def first_wrong_step(steps: Sequence[str], reference: Sequence[str]) -> int | None:
    """Index of the first of `steps` that differs from `reference`, the unique correct solution's steps.

    A step past the end of `reference` is wrong; `None` when `steps` is `reference` or a
    cut-short prefix of it (no wrong step to find).
    """
    first = next((i for i, (a, b) in enumerate(zip(steps, reference, strict=False)) if a != b), min(len(steps), len(reference)))
    return first if first < len(steps) else None


def split_steps(text: str, sep: str | re.Pattern[str] = "\n") -> list[str]:
    """Split a solution into steps.

    ``sep`` is a literal separator string (default: newline) or a compiled
    regex (``re.compile(r"\\n\\n+")``). Each step is stripped of surrounding
    whitespace and empty steps are dropped, so blank lines and trailing
    newlines never produce empty steps. Text captured by groups in a regex
    separator is dropped.
    """
    if isinstance(sep, re.Pattern):
        parts = sep.split(text)
        # With capture groups, re.split interleaves the separators: keep every other part.
        parts = parts[:: sep.groups + 1]
    else:
        if not sep:
            raise ValueError("split_steps: 'sep' must be a non-empty string or a regex")
        parts = text.split(sep)
    return [p.strip() for p in parts if p is not None and p.strip()]


STEP_DELIMITERS = ("line", "blank-line")  # or a regex that matches where a step starts, e.g. r"^Step \d+:"


def step_separator(delimiter: str) -> str | re.Pattern[str]:
    """The `split_steps` separator of a step delimiter: `line` (one step per line), `blank-line`
    (paragraphs), or a regex matching the start of each step (multiline: `^` is a line start)."""
    if delimiter == "line":
        return "\n"
    if delimiter == "blank-line":
        return re.compile(r"\n[ \t]*\n")
    try:
        return re.compile(f"(?={delimiter})", re.MULTILINE)  # zero-width: each step keeps its header
    except re.error as e:
        raise ValueError(f"step delimiter {delimiter!r}: not 'line', 'blank-line' or a valid regex ({e})") from e


def step_spans(text: str, sep: str | re.Pattern[str] = "\n") -> list[tuple[int, int]]:
    """`(start, end)` character spans in `text` of the steps `split_steps(text, sep)` returns, in order."""
    spans, pos = [], 0
    for step in split_steps(text, sep):
        start = text.index(step, pos)
        spans.append((start, start + len(step)))
        pos = start + len(step)
    return spans


def join_steps(steps: list[str], sep: str = "\n") -> str:
    """Join steps with ``sep``; ``split_steps(join_steps(s)) == s`` for stripped, non-empty
    steps that do not contain ``sep``."""
    return sep.join(steps)


def _clean_number(token: str) -> str:
    """Canonical text of a number token: no thousands commas, "$" or "%", ASCII minus."""
    return token.replace(",", "").replace("$", "").replace("%", "").replace("\u2212", "-")


def extract_answer(
    text: str, fallback_last_number: bool = False, kind: AnswerKind = "number"
) -> str | None:
    """The final answer of a solution, or None.

    ``kind="number"`` (default): tried in order, the last occurrence of each winning:

    1. GSM8K's ``#### N`` line: the first number on it (commas, "$" and "%"
       removed), or its whole stripped text when it holds no number;
    2. ``\\boxed{N}``, "The answer is N", "answer: N" (case-insensitive);
    3. only with ``fallback_last_number=True``: the last number anywhere in the text.

    ``kind="choice"``: an option letter A-J, returned as a capital: the whole
    text when it is a lone letter ("b", "(B)", "B."); else, tried in order, the
    last occurrence of each winning: ``#### B``, ``\\boxed{B}``, "The answer is
    (B)", "answer: B" ("answer" in any case, the letter a capital).
    ``fallback_last_number`` is not used. ``answer_kind(gold)`` picks the kind.
    """
    if kind == "choice":
        return _extract_choice(text)
    if kind != "number":
        raise ValueError(f"extract_answer: kind must be 'number' or 'choice', got {kind!r}")
    marks = [m for m in _GSM8K_MARK_RE.findall(text) if m]
    if marks:
        number = NUMBER_RE.search(marks[-1])
        return _clean_number(number.group(0)) if number else marks[-1].rstrip(".")
    for pattern in _ANSWER_MARK_RES:
        found = pattern.findall(text)
        if found:
            return _clean_number(found[-1])
    if fallback_last_number:
        numbers = NUMBER_RE.findall(text)
        if numbers:
            return _clean_number(numbers[-1])
    return None


def _extract_choice(text: str) -> str | None:
    lone = _LONE_CHOICE_RE.fullmatch(text)
    if lone:
        return lone.group(1).upper()
    for pattern in _CHOICE_MARK_RES:
        found = pattern.findall(text)
        if found:
            return found[-1]
    return None


def answer_kind(gold: str | None) -> AnswerKind:
    """``"choice"`` when a gold answer is a lone option letter A-J ("B", "(b)", "B."), else ``"number"``."""
    return "choice" if gold is not None and _LONE_CHOICE_RE.fullmatch(gold) else "number"


def normalise_number(s: str) -> float | None:
    """Parse a number as written in an answer, or None.

    Accepts thousands commas, "$", "%" (dropped: "50%" -> 50.0), a trailing
    period, a leading "+"/"-" (or Unicode minus) and fractions "a/b". Rejects
    inf, nan, exponents and anything with other text.
    """
    t = _clean_number(s.strip()).replace(" ", "").rstrip(".")
    if "/" in t:
        num, _, den = t.partition("/")
        a, b = _parse_plain(num), _parse_plain(den)
        if a is None or b is None or b == 0:
            return None
        return a / b
    return _parse_plain(t)


def _parse_plain(t: str) -> float | None:
    return float(t) if _PLAIN_NUMBER_RE.fullmatch(t) else None


def answers_match(
    pred: str | None,
    gold: str | None,
    rel_tol: float = 1e-6,
    options: Sequence[str] | None = None,
) -> bool:
    """Whether a predicted answer (as ``extract_answer`` returns it) equals the gold one.

    Numerically when both parse as numbers: two whole numbers must be equal
    (so 999999 never matches 1000000), otherwise they match within relative
    tolerance ``rel_tol`` (absolute 1e-9 near zero), for rounded decimals.
    Otherwise by case-, whitespace- and trailing-period-insensitive string
    comparison. None never matches.

    Multiple choice: a gold option letter (``answer_kind(gold) == "choice"``)
    matches the same letter in ``pred`` in any form ``extract_answer(...,
    kind="choice")`` reads ("B", "(B)", "B.", "The answer is (B)", "answer: B").
    With ``options`` (the option texts in letter order, A first), an answer may
    also be given as an option's text (compared as above): letter or text, pred
    and gold match when they name the same option.
    """
    if pred is None or gold is None:
        return False
    if options is not None:
        want, got = _option_index(gold, options, rel_tol), _option_index(pred, options, rel_tol)
        if want is not None and got is not None:
            return want == got
    if answer_kind(gold) == "choice":
        return _extract_choice(pred) == _extract_choice(gold)
    return _same_value(pred, gold, rel_tol)


def _option_index(answer: str, options: Sequence[str], rel_tol: float) -> int | None:
    """0-based index of the option an answer names, by letter or by text; None if none."""
    letter = _extract_choice(answer)
    if letter is not None and CHOICE_LETTERS.index(letter) < len(options):
        return CHOICE_LETTERS.index(letter)
    return next((i for i, text in enumerate(options) if _same_value(answer, text, rel_tol)), None)


def _same_value(pred: str, gold: str, rel_tol: float) -> bool:
    a, b = normalise_number(pred), normalise_number(gold)
    if a is not None and b is not None:
        if a.is_integer() and b.is_integer():
            return a == b
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)
    return _normalise_text(pred) == _normalise_text(gold)


def _normalise_text(s: str) -> str:
    return " ".join(s.lower().split()).rstrip(".")


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations: ``48/2 = <<48/2=24>>24`` -> ``48/2 = 24``."""
    return _CALCULATOR_RE.sub("", text)
