"""The scarce protocols' sets: disjoint, the right sizes and step counts, U without answers or solutions."""

from __future__ import annotations

import dataclasses

import pytest

from rairl.data.protocols import SplitConfig, protocol_data, protocol_problems
from rairl.data.task import TaskConfig


@pytest.mark.parametrize("protocol", ["scarce", "length"])
def test_sets_are_disjoint_sized_and_unlabelled_questions_carry_nothing_else(protocol):
    cfg = SplitConfig(n_demos=30, n_val=10, n_unlabelled=50)
    data, gold = protocol_data(protocol, 3, cfg, TaskConfig(), n_test=20)
    assert (len(data.demos), len(data.val), len(data.unlabelled), len(data.test)) == (30, 10, 50, 20)
    sets = [{e.prompt for e in data.demos}, {e.prompt for e in data.val}, set(data.unlabelled), {e.prompt for e in data.test}]
    assert sum(map(len, sets)) == len(set().union(*sets))  # no question in two sets
    assert all(isinstance(q, str) for q in data.unlabelled)
    assert set(gold.answers) == set(data.unlabelled)
    for f in dataclasses.fields(data):  # U's answers live in the GoldKey only
        assert not any(isinstance(v, dict) for v in getattr(data, f.name))


def test_length_protocol_demonstrates_short_problems_and_asks_long_ones():
    data, _ = protocol_data("length", 0, SplitConfig(n_demos=40, n_val=10, n_unlabelled=40), TaskConfig(), n_test=10)
    n_lines = lambda e: len(e.completion.splitlines()) - 1  # noqa: E731  (operations; the last line is "#### N")
    assert {n_lines(e) for e in data.demos} <= {2, 3, 4}
    assert {n_lines(e) for e in data.val + data.test} <= {5, 6}
    assert all(q.count(".") - 1 >= 5 for q in data.unlabelled)  # one sentence per operation after the first


def test_same_seed_same_sets_and_bad_configs_are_refused():
    cfg = SplitConfig(n_demos=5, n_val=5, n_unlabelled=5)
    assert protocol_data("scarce", 1, cfg, n_test=5) == protocol_data("scarce", 1, cfg, n_test=5)
    with pytest.raises(ValueError, match="protocol"):
        protocol_data("plenty", 1, cfg)
    with pytest.raises(ValueError, match="short_steps"):
        protocol_data("length", 1, SplitConfig(short_steps=(2, 5), long_steps=(5, 6)))
    with pytest.raises(ValueError, match="n_demos"):
        SplitConfig(n_demos=0)


@pytest.mark.parametrize("protocol", ["scarce", "length"])
def test_protocol_data_is_protocol_problems_less_what_u_must_not_show(protocol):
    cfg = SplitConfig(n_demos=12, n_val=6, n_unlabelled=15)
    demos, unlabelled, val, test = protocol_problems(protocol, 4, cfg, TaskConfig(), n_test=8)
    data, gold = protocol_data(protocol, 4, cfg, TaskConfig(), n_test=8)
    assert data.demos == tuple(p.example() for p in demos) and data.val == tuple(p.example() for p in val)
    assert data.test == tuple(p.example() for p in test)
    assert data.unlabelled == tuple(p.question() for p in unlabelled)
    assert gold.answers == {p.question(): str(p.values()[-1]) for p in unlabelled}
