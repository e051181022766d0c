"""Perturbed expert traces with a known first wrong step.

Each perturbation takes an expert solution as a list of step strings (GSM8K
style: ``12 + 5 = 17`` equations, possibly with words around them, and a final
``#### 17`` line; strip calculator annotations first) and returns the perturbed
steps with the 0-based index of the first wrong step, or None when it does not
apply. Guarantees, for every kind: the steps before ``first_wrong`` are the
original ones, and the step at ``first_wrong`` differs from the original step
at that index.

Numbers are found by regex. A changed number always differs from the original,
keeps its number of decimals and thousands commas, and stays non-negative.

``propagate=True`` (result_changed, operand_changed) carries the error forward
like a natural mistake: in later steps every number token (a whole token, never
part of a longer number) equal to the old result, other than an equation's own result, is replaced by the new value
(the ``#### N`` line included), up to and including a step that computes the
old value again as its result. Later steps' own results are NOT recomputed,
so a later equation that used the value becomes inconsistent too.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUM_RE = re.compile(rf"(?<![\w.,]){_NUM}(?![\w]|[.,]\d)")
_OP = r"[-+*/x\u00d7\u00f7\u2013]"
# One optional unit word after a number, as GSM8K writes "5 snakes/jaguar * 6 jaguars";
# a lone "x" is the multiplication sign, never a unit.
_UNIT = r"(?:\s+(?!x\b)[A-Za-z]+(?:/[A-Za-z]+)?)"
_OPERAND = rf"\(*\$?{_NUM}{_UNIT}?\)*"
# An arithmetic equation: operands joined by operators, "=", then the result. In a chain
# "a + b = c - d = e" only "c - d = e" is one: "c" would be the start of an expression.
EQUATION_RE = re.compile(
    rf"(?<![\w.,])(?P<lhs>{_OPERAND}(?:\s*{_OP}\s*{_OPERAND})+)"
    rf"\s*=\s*\$?(?P<result>{_NUM})(?![\w]|[.,]\d)(?!{_UNIT}?\)*\s*{_OP}\s*[($]*\d)"
)
_OPERAND_RE = re.compile(rf"(?P<open>\(*)\$?(?P<num>{_NUM}){_UNIT}?(?P<close>\)*)")
_OPERATOR_RE = re.compile(rf"\s*(?P<op>{_OP})\s*")
_PYTHON_OP = {"x": "*", "\u00d7": "*", "\u00f7": "/", "\u2013": "-"}
_FINAL_RE = re.compile(r"^\s*####\s*\$?(?P<n>" + _NUM + r")")
_FLIP = {
    "+": "-", "-": "+", "\u2013": "+",
    "*": "/", "/": "*", "x": "/", "\u00d7": "\u00f7", "\u00f7": "\u00d7",
}  # fmt: skip

ALL_KINDS = (
    "result_changed",
    "operand_changed",
    "operator_flipped",
    "step_dropped",
    "final_answer_changed",
)


@dataclass(frozen=True)
class Perturbation:
    """Perturbed steps, the 0-based index of their first wrong step, and the kind."""

    steps: list[str]
    first_wrong: int
    kind: str


@dataclass(frozen=True)
class _Equation:
    """One equation found in a step: spans are offsets into that step."""

    lhs: tuple[int, int]
    result: tuple[int, int]
    operands: list[tuple[int, int]]
    operators: list[tuple[int, int]]


# ---------------------------------------------------------------- parsing


def _equations(step: str) -> list[_Equation]:
    found = []
    for m in EQUATION_RE.finditer(step):
        operands, operators, _ = _tokens(m.group("lhs"))
        start = m.start("lhs")
        found.append(
            _Equation(
                m.span("lhs"),
                m.span("result"),
                [(start + a, start + b) for a, b in operands],
                [(start + a, start + b) for a, b in operators],
            )
        )
    return found


def _tokens(lhs: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str]:
    """Operand spans, operator spans and the Python expression of an equation's left side."""
    operands, operators, expr = [], [], []
    pos = 0
    while (operand := _OPERAND_RE.match(lhs, pos)) is not None:
        operands.append(operand.span("num"))
        expr += [operand["open"], _value(operand["num"]), operand["close"]]
        op = _OPERATOR_RE.match(lhs, operand.end())
        if op is None:
            break
        operators.append(op.span("op"))
        expr.append(_PYTHON_OP.get(op["op"], op["op"]))
        pos = op.end()
    return operands, operators, "".join(expr)


def _value(token: str) -> str:
    return token.replace(",", "")


def _uses(step: str, value: str) -> bool:
    """Whether ``value`` appears in ``step`` as a number other than an equation's result."""
    results = {eq.result for eq in _equations(step)}
    return any(
        _value(m.group(0)) == value and m.span() not in results for m in NUM_RE.finditer(step)
    )


_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(lhs: str) -> float | None:
    """Value of an equation's left side as written in a step, or None if it cannot be had."""
    try:
        return _eval_node(ast.parse(_tokens(lhs)[2], mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_node(node.left), _eval_node(node.right))
    raise ValueError(f"unsupported expression node {type(node).__name__}")


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# ---------------------------------------------------------------- editing


def change_number(token: str, rng: random.Random) -> str:
    """A different non-negative number written like ``token`` (decimals, commas).

    Either an offset of 1..9 units of the last digit, or one digit replaced.
    """
    digits = token.replace(",", "")
    decimals = len(digits.partition(".")[2])
    scaled = int(digits.replace(".", ""))
    new = scaled
    while new == scaled:
        if rng.random() < 0.5:
            new = scaled + rng.choice([-1, 1]) * rng.randint(1, 9)
        else:
            new = _replace_digit(scaled, rng)
        if new < 0:
            new = scaled
    return _format_scaled(new, decimals, commas="," in token)


def _replace_digit(n: int, rng: random.Random) -> int:
    text = str(n)
    i = rng.randrange(len(text))
    lowest = 1 if i == 0 and len(text) > 1 else 0
    choices = [d for d in "0123456789"[lowest:] if d != text[i]]
    return int(text[:i] + rng.choice(choices) + text[i + 1 :])


def _format_scaled(n: int, decimals: int, commas: bool) -> str:
    whole, frac = divmod(n, 10**decimals)
    text = f"{whole:,}" if commas else str(whole)
    return f"{text}.{frac:0{decimals}d}" if decimals else text


def _splice(step: str, span: tuple[int, int], text: str) -> str:
    return step[: span[0]] + text + step[span[1] :]


def _propagate(steps: list[str], after: int, old: str, new: str) -> list[str]:
    """Replace uses of the value ``old`` by ``new`` in the steps after ``after``.

    Equation results are not uses; a step that states ``old`` as a result
    computes that value afresh, so propagation stops after it.
    """
    out = list(steps)
    for j in range(after + 1, len(out)):
        results = {eq.result for eq in _equations(out[j])}
        spans = [
            m.span()
            for m in NUM_RE.finditer(out[j])
            if _value(m.group(0)) == old and m.span() not in results
        ]
        for span in reversed(spans):
            out[j] = _splice(out[j], span, new)
        if any(_value(out[j][slice(*r)]) == old for r in results):
            break
    return out


def _equation_sites(steps: Sequence[str], rng: random.Random) -> list[tuple[int, _Equation]]:
    """Every (step index, equation) in random order."""
    sites = [(k, eq) for k, step in enumerate(steps) for eq in _equations(step)]
    rng.shuffle(sites)
    return sites


# ---------------------------------------------------------------- perturbations


def result_changed(
    steps: list[str], rng: random.Random, propagate: bool = False
) -> Perturbation | None:
    """Change the stated result of one equation; that step is the first wrong one."""
    for k, eq in _equation_sites(steps, rng):
        old = steps[k][slice(*eq.result)]
        new = change_number(old, rng)
        out = list(steps)
        out[k] = _splice(steps[k], eq.result, new)
        if propagate:
            out = _propagate(out, k, _value(old), _value(new))
        return Perturbation(out, k, "result_changed")
    return None


def operand_changed(
    steps: list[str], rng: random.Random, propagate: bool = False
) -> Perturbation | None:
    """Change one operand of one equation; that step is the first wrong one.

    Without ``propagate`` the stated result is kept and no longer follows from
    the operands. With it, the step's result is recomputed from the wrong
    operand (the step is arithmetically consistent, its input is not) and the
    new result is carried into later steps; sites whose recomputed result is
    not a clean number written like the old one are skipped.
    """
    for k, eq in _equation_sites(steps, rng):
        for operand in rng.sample(eq.operands, len(eq.operands)):
            out = _change_operand(steps, k, eq, operand, rng, propagate)
            if out is not None:
                return Perturbation(out, k, "operand_changed")
    return None


def _change_operand(
    steps: list[str],
    k: int,
    eq: _Equation,
    operand: tuple[int, int],
    rng: random.Random,
    propagate: bool,
) -> list[str] | None:
    step = steps[k]
    old_result = step[slice(*eq.result)]
    stated = float(_value(old_result))
    new_operand = change_number(step[slice(*operand)], rng)
    edited = _splice(step, operand, new_operand)
    shift = len(new_operand) - (operand[1] - operand[0])
    lhs_value = _evaluate(edited[eq.lhs[0] : eq.lhs[1] + shift])
    if _same(lhs_value, stated):
        return None  # e.g. 0 * 5 -> 0 * 7: the step would still be right
    out = list(steps)
    if not propagate:
        out[k] = edited
        return out
    new_result = _written_like(lhs_value, old_result)
    if new_result is None or _value(new_result) == _value(old_result):
        return None
    result_span = (eq.result[0] + shift, eq.result[1] + shift)
    out[k] = _splice(edited, result_span, new_result)
    return _propagate(out, k, _value(old_result), _value(new_result))


def _written_like(value: float | None, token: str) -> str | None:
    """``value`` with the decimals and commas of ``token``, or None if it does not fit."""
    if value is None or value < 0:
        return None
    decimals = len(_value(token).partition(".")[2])
    scaled = value * 10**decimals
    if not math.isclose(scaled, round(scaled), abs_tol=1e-6):
        return None
    return _format_scaled(round(scaled), decimals, commas="," in token)


def operator_flipped(steps: list[str], rng: random.Random) -> Perturbation | None:
    """Flip one operator (+ <-> -, * <-> /) keeping the stated result, which is now wrong.

    Sites where the flip leaves the value unchanged (``a + 0``, ``a * 1``) are skipped.
    """
    for k, eq in _equation_sites(steps, rng):
        step = steps[k]
        stated = float(_value(step[slice(*eq.result)]))
        for op in rng.sample(eq.operators, len(eq.operators)):
            edited = _splice(step, op, _FLIP[step[slice(*op)]])
            if _same(_evaluate(edited[slice(*eq.lhs)]), stated):
                continue
            out = list(steps)
            out[k] = edited
            return Perturbation(out, k, "operator_flipped")
    return None


def step_dropped(steps: list[str], rng: random.Random) -> Perturbation | None:
    """Drop a non-final computational step k whose result the next step uses.

    The step now at index k (the next equation, or the ``#### N`` line when k
    was the last computation) uses a value never computed, so it is the first
    wrong step. Steps are only dropped when that holds: the next step uses the
    dropped result, no earlier step states that value, and the next step
    differs from the dropped one. (The problem statement is not seen, so a
    value that also appears there can still make the drop harmless.)
    """
    candidates = [k for k in range(len(steps) - 1) if _equations(steps[k])]
    rng.shuffle(candidates)
    for k in candidates:
        value = _value(steps[k][slice(*_equations(steps[k])[-1].result)])
        earlier = any(_value(m.group(0)) == value for s in steps[:k] for m in NUM_RE.finditer(s))
        if _uses(steps[k + 1], value) and not earlier and steps[k + 1] != steps[k]:
            return Perturbation(steps[:k] + steps[k + 1 :], k, "step_dropped")
    return None


def final_answer_changed(steps: list[str], rng: random.Random) -> Perturbation | None:
    """Change the number on the last ``#### N`` line; that line is the first wrong step."""
    for k in range(len(steps) - 1, -1, -1):
        m = _FINAL_RE.match(steps[k])
        if m:
            out = list(steps)
            out[k] = _splice(steps[k], m.span("n"), change_number(m.group("n"), rng))
            return Perturbation(out, k, "final_answer_changed")
    return None


_KINDS: dict[str, Callable[..., Perturbation | None]] = {
    "result_changed": result_changed,
    "operand_changed": operand_changed,
    "operator_flipped": operator_flipped,
    "step_dropped": step_dropped,
    "final_answer_changed": final_answer_changed,
}
PROPAGATING_KINDS = {"result_changed", "operand_changed"}


def perturb(
    steps: list[str],
    rng: random.Random,
    kinds: Sequence[str] = ALL_KINDS,
    propagate: bool = False,
) -> Perturbation:
    """Apply one perturbation, its kind drawn at random among those in ``kinds`` that apply.

    ``propagate`` is passed to the kinds that take it. Raises ValueError for an
    unknown kind, or when no kind applies to ``steps``.
    """
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown:
        raise ValueError(f"perturb: unknown kind(s) {unknown}; choose from {list(ALL_KINDS)}")
    order = list(dict.fromkeys(kinds))
    rng.shuffle(order)
    for kind in order:
        extra = {"propagate": propagate} if kind in PROPAGATING_KINDS else {}
        result = _KINDS[kind](steps, rng, **extra)
        if result is not None:
            return result
    raise ValueError(
        f"perturb: none of {order} applies to these steps: {steps!r}. Result, operand and "
        "operator changes need an equation like '12 + 5 = 17' that the change makes wrong; "
        "step_dropped needs a step whose result the next step uses; final_answer_changed "
        "needs a '#### N' line"
    )
