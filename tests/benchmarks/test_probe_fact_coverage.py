"""benchmarks/probes/probe_fact_coverage.py: the step parser and the error kinds its table counts, on hand-worked steps."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

from rairl.data.task import TaskConfig, sample_problem

PROBES = Path(__file__).resolve().parents[2] / "benchmarks" / "probes"


def _probe():
    sys.path.insert(0, str(PROBES))  # the script imports its neighbour _seed.py
    try:
        spec = importlib.util.spec_from_file_location("probe_fact_coverage", PROBES / "probe_fact_coverage.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(PROBES))


def test_fact_reads_a_step_and_nothing_else():
    p = _probe()
    assert p.fact("15 - 1 = 14") == (15, "-", 1)
    assert p.fact("12 / 3 = 4") == (12, "/", 3)
    assert p.fact("#### 14") is None
    assert p.fact("15 - 1 = ") is None
    assert p.facts_of(["3 * 2 = 6\n6 + 4 = 10\n#### 10", "3 * 2 = 6\n#### 6"]) == {(3, "*", 2), (6, "+", 4)}


def test_error_kind_names_what_a_first_wrong_step_got_wrong():
    p = _probe()
    assert p.error_kind("15 - 1 = 13", "15 - 1 = 14") == "arithmetic"
    assert p.error_kind("15 + 1 = 16", "15 - 1 = 14") == "reading"
    assert p.error_kind("15 - 2 = 13", "15 - 1 = 14") == "reading"
    assert p.error_kind("16 - 1 = 15", "15 - 1 = 14") == "carry"
    assert p.error_kind("#### 15", "15 - 1 = 14") == "answer"  # the answer line, a step too early
    assert p.error_kind("#### 15", "#### 14") == "answer"
    assert p.error_kind("she has 14", "15 - 1 = 14") == "other"


def test_every_step_of_a_random_solution_is_a_fact_and_its_corruptions_are_classified():
    p = _probe()
    rng = random.Random(7)
    for _ in range(50):
        prob = sample_problem(rng, TaskConfig())
        steps = prob.solution_steps()
        assert [p.fact(s) for s in steps[:-1]] == [(v, op, k) for v, (op, k) in zip(prob.values(), prob.steps, strict=False)]
        j = rng.randrange(len(steps) - 1)
        x, op, k = p.fact(steps[j])
        y = int(steps[j].split(" = ")[1])
        assert p.error_kind(f"{x} {op} {k} = {y + 1}", steps[j]) == "arithmetic"
        assert p.error_kind(f"{x + 1} {op} {k} = {y}", steps[j]) == "carry"
        assert p.error_kind(f"{x} {op} {k + 1} = {y}", steps[j]) == "reading"
