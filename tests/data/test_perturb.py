"""Perturbations: hand-written cases and invariants on random GSM8K-style traces.

Random traces use a fresh seed every run; failures print it (``seed=...``).
"""

import random
import re

import pytest

from rairl.data import perturb as P
from rairl.data.perturb import (
    ALL_KINDS,
    Perturbation,
    change_number,
    final_answer_changed,
    operand_changed,
    operator_flipped,
    perturb,
    result_changed,
    step_dropped,
)
from rairl.data.steps import extract_answer, join_steps

SEED = random.randrange(2**32)
N_TRACES = 300
_EQ = re.compile(r"(?P<a>[\d.]+) (?P<op>[-+*/x]) (?P<b>[\d.]+) = \$?(?P<c>[\d.]+)")
_PREFIXES = ["", "So ", "Then she has ", "In total: ", "He pays $"]
_SUFFIXES = ["", " apples", ".", " in all."]


def _step(a: int, rng: random.Random) -> tuple[str, int]:
    """One ``a op b = c`` step continuing a chain from value ``a``, with non-negative ints."""
    op = rng.choice("+-*/x")
    if op in "*x":
        b = rng.randint(2, 9)
        c = a * b
    elif op == "/":
        divisors = [d for d in range(2, 10) if a % d == 0] or [1]
        b = rng.choice(divisors)
        c = a // b
    elif op == "-":
        b = rng.randint(0, a)
        c = a - b
    else:
        b = rng.randint(1, 99)
        c = a + b
    text = f"{rng.choice(_PREFIXES)}{a} {op} {b} = {c}{rng.choice(_SUFFIXES)}"
    return text, c


def random_trace(rng: random.Random, n_steps: int | None = None) -> list[str]:
    """A GSM8K-style chain: each step uses the previous result, then ``#### c``."""
    n_steps = n_steps or rng.randint(1, 6)
    value = rng.randint(1, 99)
    steps = []
    for _ in range(n_steps):
        text, value = _step(value, rng)
        steps.append(text)
    return [*steps, f"#### {value}"]


def _traces(offset: int):
    """(rng, trace, context message) for N_TRACES fresh traces."""
    rng = random.Random(SEED + offset)
    for i in range(N_TRACES):
        yield rng, random_trace(rng), f"seed={SEED + offset} trace={i}"


def _equation(step: str) -> tuple[float, str, float, float]:
    m = _EQ.search(step)
    assert m is not None, step
    return float(m["a"]), m["op"], float(m["b"]), float(m["c"])


def _holds(step: str) -> bool:
    a, op, b, c = _equation(step)
    if op == "/" and b == 0:
        return False
    value = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a / b if b else 0}[op]
    return abs(value - c) < 1e-9


def _check_common(p: Perturbation, steps: list[str], kind: str, ctx: str) -> int:
    assert p.kind == kind, ctx
    k = p.first_wrong
    assert 0 <= k < len(p.steps), ctx
    assert p.steps[:k] == steps[:k], f"{ctx}: steps before {k} changed"
    assert p.steps[k] != steps[k], f"{ctx}: step {k} unchanged"
    assert all(s.strip() for s in p.steps), ctx
    return k


def _call(kind: str, steps: list[str], rng: random.Random, propagate: bool):
    fn = getattr(P, kind)
    return fn(steps, rng, propagate=propagate) if kind in P.PROPAGATING_KINDS else fn(steps, rng)


# ---------------------------------------------------------------- invariants for every kind


@pytest.mark.parametrize("propagate", [False, True])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_keeps_prefix_and_changes_first_wrong_step(kind, propagate):
    applied = 0
    for rng, steps, ctx in _traces(ALL_KINDS.index(kind) * 2 + propagate):
        original = list(steps)
        p = _call(kind, steps, rng, propagate)
        assert steps == original, f"{ctx}: input mutated"
        if p is not None:
            applied += 1
            _check_common(p, steps, kind, ctx)
    assert applied > N_TRACES // 2, f"seed={SEED}: {kind} applied to only {applied} traces"


@pytest.mark.parametrize("propagate", [False, True])
def test_result_changed(propagate):
    for rng, steps, ctx in _traces(100 + propagate):
        p = result_changed(steps, rng, propagate=propagate)
        k = _check_common(p, steps, "result_changed", ctx)
        assert not _holds(p.steps[k]), ctx
        old_c, new_c = _equation(steps[k])[3], _equation(p.steps[k])[3]
        assert new_c != old_c and new_c >= 0 and new_c == int(new_c), ctx
        assert len(p.steps) == len(steps), ctx
        if not propagate:
            assert p.steps[k + 1 :] == steps[k + 1 :], ctx
        else:
            _check_propagated(p.steps, steps, k, int(new_c), ctx)


def _check_propagated(new: list[str], old: list[str], k: int, value: int, ctx: str) -> None:
    """The next step uses the new value; later steps keep their own stated results."""
    nxt = new[k + 1]
    if nxt.startswith("####"):
        assert nxt == f"#### {value}", ctx
    else:
        assert _equation(nxt)[0] == value, ctx
    for j in range(k + 1, len(new) - 1):
        assert _equation(new[j])[3] == _equation(old[j])[3], f"{ctx}: step {j} recomputed"


@pytest.mark.parametrize("propagate", [False, True])
def test_operand_changed(propagate):
    for rng, steps, ctx in _traces(200 + propagate):
        p = operand_changed(steps, rng, propagate=propagate)
        if p is None:
            continue  # possible with propagate: no recomputed result is a whole number
        k = _check_common(p, steps, "operand_changed", ctx)
        (a0, op0, b0, c0), (a1, op1, b1, c1) = _equation(steps[k]), _equation(p.steps[k])
        assert op1 == op0 and (a1, b1) != (a0, b0), ctx
        assert (a1 == a0) != (b1 == b0), f"{ctx}: exactly one operand changes"
        assert min(a1, b1) >= 0, ctx
        if not propagate:
            assert c1 == c0 and not _holds(p.steps[k]), ctx
            assert p.steps[k + 1 :] == steps[k + 1 :], ctx
        else:
            assert _holds(p.steps[k]) and c1 != c0, ctx
            _check_propagated(p.steps, steps, k, int(c1), ctx)


def test_operator_flipped():
    flips = {"+": "-", "-": "+", "*": "/", "x": "/", "/": "*"}
    for rng, steps, ctx in _traces(300):
        p = operator_flipped(steps, rng)
        if p is None:
            continue  # every step is like a + 0 or a * 1
        k = _check_common(p, steps, "operator_flipped", ctx)
        (a0, op0, b0, c0), (a1, op1, b1, c1) = _equation(steps[k]), _equation(p.steps[k])
        assert (a1, b1, c1) == (a0, b0, c0) and op1 == flips[op0], ctx
        assert not _holds(p.steps[k]), ctx
        assert p.steps[k + 1 :] == steps[k + 1 :], ctx


def test_step_dropped():
    for rng, steps, ctx in _traces(400):
        p = step_dropped(steps, rng)
        if p is None:
            continue  # the dropped value also appears earlier in the chain
        k = _check_common(p, steps, "step_dropped", ctx)
        assert p.steps == steps[:k] + steps[k + 1 :], ctx
        assert k < len(steps) - 1, f"{ctx}: the final line was dropped"
        dropped_result = str(int(_equation(steps[k])[3]))
        assert re.search(rf"(?<![\d.]){dropped_result}(?![\d])", p.steps[k]), ctx


def test_final_answer_changed():
    for rng, steps, ctx in _traces(500):
        p = final_answer_changed(steps, rng)
        k = _check_common(p, steps, "final_answer_changed", ctx)
        assert k == len(steps) - 1 and p.steps[:-1] == steps[:-1], ctx
        new, old = extract_answer(join_steps(p.steps)), extract_answer(join_steps(steps))
        assert new != old and int(new) >= 0, ctx


def test_perturb_uses_each_requested_kind():
    seen = set()
    for rng, steps, ctx in _traces(600):
        kinds = rng.sample(ALL_KINDS, rng.randint(1, len(ALL_KINDS)))
        try:
            p = perturb(steps, rng, kinds=kinds, propagate=rng.random() < 0.5)
        except ValueError as err:
            # These two apply to every random trace; the others can miss (e.g. "a / 1 = a").
            assert not {"result_changed", "final_answer_changed"} & set(kinds), f"{ctx}: {err}"
            assert "none of" in str(err), ctx
            continue
        assert p.kind in kinds, ctx
        _check_common(p, steps, p.kind, ctx)
        seen.add(p.kind)
    assert seen == set(ALL_KINDS), f"seed={SEED}"


# ---------------------------------------------------------------- hand-written cases


def test_change_number_properties():
    rng = random.Random(SEED)
    for _ in range(2000):
        original = rng.choice(
            [
                str(rng.randint(0, 10**6)),
                f"{rng.randint(0, 999)}.{rng.randint(0, 99):02d}",
                f"{rng.randint(1000, 10**7):,}",
                "0",
                "0.0",
                "9",
            ]
        )
        new = change_number(original, rng)
        assert new != original, f"seed={SEED}"
        assert float(new.replace(",", "")) >= 0, f"seed={SEED}"
        assert len(new.partition(".")[2]) == len(original.partition(".")[2]), f"seed={SEED}"
        assert not (len(new) > 1 and new[0] == "0" and new[1] != "."), f"seed={SEED}: {new}"


def test_result_changed_hand_written():
    steps = ["2 + 3 = 5", "#### 5"]
    p = result_changed(steps, random.Random(SEED))
    assert p.first_wrong == 0 and p.steps[1] == "#### 5"
    assert re.fullmatch(r"2 \+ 3 = \d+", p.steps[0]) and p.steps[0] != steps[0]
    q = result_changed(steps, random.Random(SEED), propagate=True)
    assert q.steps[1] == "#### " + q.steps[0].split("= ")[1]


def test_propagation_replaces_uses_but_not_results():
    steps = ["Tom has 3 + 4 = 7 apples.", "Then 7 * 7 = 49 apples.", "And 49 - 42 = 7.", "#### 7"]
    hits = 0
    for seed in range(SEED, SEED + 40):
        p = result_changed(steps, random.Random(seed), propagate=True)
        if p.first_wrong != 0:
            continue
        hits += 1
        new = re.search(r"= (\d+)", p.steps[0])[1]
        assert p.steps[1] == f"Then {new} * {new} = 49 apples."
        # Step 2 computes 7 afresh (a result, not a use): it and what follows stay.
        assert p.steps[2:] == steps[2:]
    assert hits > 0


def test_operand_changed_skips_changes_that_keep_the_step_right():
    # 0 * 5 = 0 stays right whatever replaces 5: only the 0 may change.
    for seed in range(SEED, SEED + 50):
        p = operand_changed(["0 * 5 = 0", "#### 0"], random.Random(seed))
        assert re.fullmatch(r"[1-9]\d* \* 5 = 0", p.steps[0]), p.steps[0]


def test_operator_flipped_hand_written():
    p = operator_flipped(["3 + 4 = 7", "#### 7"], random.Random(SEED))
    assert p == Perturbation(["3 - 4 = 7", "#### 7"], 0, "operator_flipped")
    p = operator_flipped(["She pays 0.2 x 50 = $10.", "#### 10"], random.Random(SEED))
    assert p.steps[0] == "She pays 0.2 / 50 = $10."
    assert operator_flipped(["7 + 0 = 7", "7 * 1 = 7", "#### 7"], random.Random(SEED)) is None


def test_step_dropped_needs_the_next_step_to_use_the_value():
    # Step 0's result 7 is used by step 2, not by step 1: dropping it is not allowed.
    steps = ["3 + 4 = 7", "5 * 2 = 10", "7 + 10 = 17", "#### 17"]
    ks = {step_dropped(steps, random.Random(seed)).first_wrong for seed in range(SEED, SEED + 40)}
    assert ks == {1, 2}
    p = step_dropped(["3 + 4 = 7", "#### 7"], random.Random(SEED))
    assert p == Perturbation(["#### 7"], 0, "step_dropped")
    assert step_dropped(["#### 7"], random.Random(SEED)) is None


def test_final_answer_changed_hand_written():
    p = final_answer_changed(["3 + 4 = 7", "#### 1,200"], random.Random(SEED))
    assert p.first_wrong == 1 and p.steps[0] == "3 + 4 = 7"
    assert re.fullmatch(r"#### \d{1,3}(,\d{3})*", p.steps[1]) and p.steps[1] != "#### 1,200"
    assert final_answer_changed(["3 + 4 = 7"], random.Random(SEED)) is None


def test_gsm8k_style_steps_with_units_and_words():
    steps = [
        "First find the snakes eaten: 5 snakes/jaguar * 6 jaguars = 30 snakes",
        "It must have driven 23 meters \u2013 13 meters = 10 meters.",
        "So 100 - 50 - 30 - 15 = $5 more.",
        "#### 5",
    ]
    for kind in ("result_changed", "operand_changed", "operator_flipped"):
        hit = set()
        for seed in range(SEED, SEED + 40):
            p = _call(kind, steps, random.Random(seed), propagate=False)
            hit.add(_check_common(p, steps, kind, f"seed={seed}"))
        assert hit == {0, 1, 2}, (kind, hit)


def test_not_applicable_returns_none_and_perturb_explains():
    steps = ["Read the problem.", "Think about it."]
    for kind in ALL_KINDS:
        assert _call(kind, steps, random.Random(SEED), propagate=False) is None
    with pytest.raises(ValueError, match="none of .* applies"):
        perturb(steps, random.Random(SEED))
    only_answer = perturb(["#### 4"], random.Random(SEED))
    assert only_answer.kind == "final_answer_changed"


def test_perturb_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind"):
        perturb(["3 + 4 = 7", "#### 7"], random.Random(SEED), kinds=["typo"])
