"""`ActionLayout.rows(first, stop)` is the layout `action_layout` builds for `batch.rows(first, stop)`."""

from __future__ import annotations

import random

import pytest
import torch

from rairl.airl.layout import ActionLayout, action_layout, step_rule
from rairl.models.batch import collate
from rairl.models.reward import RewardConfig
from rairl.models.tokenizer import load_tokenizer, newline_token_ids

FIELDS = ("start", "end", "terminal", "seq", "cu_actions", "end_mask")
GRANULARITIES = ("sparse", "step", "interval", "dense")
BATCHES = 15  # random batches per granularity


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return load_tokenizer(tiny_dir)


def _random_batch(tokenizer, rng: random.Random):
    """2..9 rows; prompts of 1..6 tokens; completions of lines (some empty, some lone newlines), some unterminated, some empty."""
    newlines = newline_token_ids(tokenizer)
    specials = set(tokenizer.all_special_ids)
    words = [i for i in range(len(tokenizer)) if i not in newlines and i not in specials]
    prompts, completions = [], []
    for _ in range(rng.randint(2, 9)):
        prompts.append([rng.choice(words) for _ in range(rng.randint(1, 6))])
        c: list[int] = []
        if rng.random() < 0.8:  # else: an empty completion (zero actions)
            for _ in range(rng.randint(0, 4)):
                c += [rng.choice(words) for _ in range(rng.randint(0, 4))] + [rng.choice(newlines)]
            if rng.random() < 0.5 or not c:
                c += [rng.choice(words) for _ in range(rng.randint(1, 4))]
        completions.append(c)
    if all(completions):  # at least one empty completion in every batch
        completions[rng.randrange(len(completions))] = []
    return collate(prompts, completions, tokenizer.pad_token_id), completions


def _ranges(B: int, rng: random.Random) -> list[tuple[int, int]]:
    first = rng.randrange(B)
    stop = rng.randint(first, B)
    pairs = {(0, 1), (0, B), (0, rng.randint(1, B)), (B - 1, B), (B - rng.randint(1, B), B),  # first rows, all, last rows
             (first, first + 1), (first, stop),  # a single row, a random range
             (first, first), (0, 0), (B, B)}  # empty ranges
    return sorted(pairs)


def _assert_same_layout(got: ActionLayout, want: ActionLayout, where: str) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, f"{where}: {name} dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{where}: {name} shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.equal(a, b), f"{where}: {name}\n{a}\n!=\n{b}"


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_rows_equals_the_layout_of_the_sliced_batch(tokenizer, granularity):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    boundary_rows = 0
    for i in range(BATCHES):
        cfg = RewardConfig(granularity=granularity, interval=rng.randint(1, 5))
        rule = step_rule(cfg, tokenizer)
        batch, completions = _random_batch(tokenizer, rng)
        layout = action_layout(batch, rule)
        B, T = batch.input_ids.shape
        # the full layout is what it should be: actions inside the completions, ordered by row
        assert layout.cu_actions.shape == (B + 1,) and layout.end_mask.shape == (B, T)
        assert int(layout.cu_actions[-1]) == len(layout.start) == int(layout.end_mask.sum())
        counts = (layout.cu_actions[1:] - layout.cu_actions[:-1]).tolist()
        assert [n == 0 for n in counts] == [not c for c in completions]
        if granularity == "step":
            boundary_rows += sum(n > 1 for n in counts)
        for first, stop in _ranges(B, rng):
            where = f"seed {seed}, batch {i}, {granularity} (interval {cfg.interval}), rows {first}:{stop} of {B}"
            want = action_layout(batch.rows(first, stop), rule)
            _assert_same_layout(layout.rows(first, stop), want, where)
    if granularity == "step":  # the batches did split completions into several lines
        assert boundary_rows > 0, f"seed {seed}: no completion had a step boundary"


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_rows_of_rows_and_per_sequence_agree(tokenizer, granularity):
    """Slicing twice is slicing once, and a slice's per-sequence split is the full layout's."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(BATCHES):
        rule = step_rule(RewardConfig(granularity=granularity, interval=rng.randint(1, 5)), tokenizer)
        batch, _ = _random_batch(tokenizer, rng)
        layout = action_layout(batch, rule)
        B = batch.input_ids.shape[0]
        a = rng.randrange(B)
        b = rng.randint(a + 1, B)
        c = rng.randrange(b - a)
        d = rng.randint(c, b - a)
        _assert_same_layout(layout.rows(a, b).rows(c, d), layout.rows(a + c, a + d), f"seed {seed}: rows {a}:{b} then {c}:{d}")
        values = torch.randn(len(layout.start))
        part = layout.rows(a, b)
        lo, hi = int(layout.cu_actions[a]), int(layout.cu_actions[b])
        got = part.per_sequence(values[lo:hi])
        want = layout.per_sequence(values)[a:b]
        assert len(got) == len(want) == b - a
        for x, y in zip(got, want, strict=True):
            assert torch.equal(x, y), f"seed {seed}"
