import random

import pytest

from rairl.data import TaskConfig, extract_answer, make_splits, split_steps
from rairl.data.task import sample_problem


def _check_solution(steps: list[str]) -> int:
    """Evaluate every `a op b = c` line by hand; return the final value."""
    value = None
    for line in steps[:-1]:
        lhs, rhs = line.split(" = ")
        a, op, b = lhs.split(" ")
        a, b, c = int(a), int(b), int(rhs)
        if value is not None:
            assert a == value, f"line {line!r} does not continue from {value}"
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        if op == "/":
            assert a % b == 0
        assert c == expected, line
        value = c
    assert steps[-1] == f"#### {value}"
    return value


def test_solutions_are_correct_and_bounded():
    cfg = TaskConfig()
    rng = random.Random()
    for _ in range(500):
        p = sample_problem(rng, cfg)
        assert cfg.min_steps <= len(p.steps) <= cfg.max_steps
        assert all(0 <= v <= cfg.max_value for v in p.values())
        ex = p.example()
        final = _check_solution(split_steps(ex.completion))
        assert extract_answer(ex.completion) == ex.answer == str(final)
        assert p.question().count(".") == len(p.steps) + 1  # one sentence per operation plus the start


def test_splits_are_fixed_per_seed_and_disjoint():
    cfg = TaskConfig(n_train=400, n_val=50, n_test=50)
    seed = random.randrange(10**6)
    a, b = make_splits(seed, cfg), make_splits(seed, cfg)
    assert [p.question() for p in a.test] == [p.question() for p in b.test]
    q = [set(p.question() for p in s) for s in (a.train, a.val, a.test)]
    assert not (q[0] & q[1]) and not (q[0] & q[2]) and not (q[1] & q[2])
    assert (len(a.train), len(a.val), len(a.test)) == (400, 50, 50)
    bigger = make_splits(seed, TaskConfig(n_train=800, n_val=50, n_test=50))
    assert [p.question() for p in bigger.test] == [p.question() for p in a.test]


def test_knobs():
    cfg = TaskConfig(min_steps=3, max_steps=3, ops=("+",), max_operand=2, n_train=50, n_val=5, n_test=5)
    for p in make_splits(1, cfg).train:
        assert len(p.steps) == 3 and all(op == "+" and 1 <= k <= 2 for op, k in p.steps)
    with pytest.raises(ValueError, match="ops"):
        TaskConfig(ops=("^",))
    with pytest.raises(ValueError, match="min_steps"):
        TaskConfig(min_steps=4, max_steps=2)
