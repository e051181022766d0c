"""The embedded task: seeded multi-step arithmetic word problems in GSM8K form.

A problem is a start value and a chain of operations, each told by one
sentence of the question and solved by one line of the solution:

    Question: Mia has 8 apples. Mia gets 6 more. Mia gives away 3. The number
              of apples doubles. How many apples does Mia have now?
    Solution: 8 + 6 = 14
              14 - 3 = 11
              11 * 2 = 22
              #### 22

Every problem has exactly one correct solution text, so the first wrong line
of any sampled solution is the first line that differs from it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..configs import check_at_least
from .records import Example

NAMES = ("Mia", "Tom", "Ana", "Ben", "Eva", "Sam", "Lily", "Omar", "Zoe", "Max")
ITEMS = ("apples", "coins", "cards", "books", "shells", "stamps", "marbles", "pens")


@dataclass(frozen=True)
class TaskConfig:
    """Knobs of the embedded task; every value in a chain stays in [0, max_value]."""

    min_steps: int = 2  # operations per problem
    max_steps: int = 5  # most operations per problem
    max_start: int = 20  # start value drawn from [2, max_start]
    max_operand: int = 9  # added / subtracted amounts drawn from [1, max_operand]
    max_value: int = 60  # bound on every intermediate result
    ops: tuple[str, ...] = ("+", "-", "*", "/")  # operators drawn from
    n_train: int = 20000  # training problems (expert demonstrations and prompts)
    n_val: int = 300  # validation problems (model selection, calibration)
    n_test: int = 300  # held-out test problems

    def __post_init__(self) -> None:
        check_at_least(self, 1, "n_train", "n_val", "n_test")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"TaskConfig: need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.max_start < 2 or self.max_operand < 1 or self.max_value < self.max_start:
            raise ValueError("TaskConfig: need max_start >= 2, max_operand >= 1, max_value >= max_start")
        unknown = set(self.ops) - {"+", "-", "*", "/"}
        if unknown or not self.ops:
            raise ValueError(f"TaskConfig.ops: unknown operators {sorted(unknown)}; use a subset of + - * /")


@dataclass(frozen=True)
class Problem:
    name: str
    item: str
    start: int
    steps: tuple[tuple[str, int], ...]  # (operator, operand) in order

    def values(self) -> list[int]:
        """Running value after each operation, `[start, v1, ..., vK]`."""
        out = [self.start]
        for op, k in self.steps:
            out.append(_apply(op, out[-1], k))
        return out

    def question(self) -> str:
        parts = [f"{self.name} has {self.start} {self.item}."]
        parts += [_sentence(self.name, self.item, op, k) for op, k in self.steps]
        parts.append(f"How many {self.item} does {self.name} have now?")
        return " ".join(parts)

    def solution_steps(self) -> list[str]:
        vals = self.values()
        lines = [f"{vals[i]} {op} {k} = {vals[i + 1]}" for i, (op, k) in enumerate(self.steps)]
        return lines + [f"#### {vals[-1]}"]

    def example(self) -> Example:
        return Example(
            prompt=self.question(),
            completion="\n".join(self.solution_steps()),
            answer=str(self.values()[-1]),
            source="embedded",
        )


def _apply(op: str, x: int, k: int) -> int:
    if op == "+":
        return x + k
    if op == "-":
        return x - k
    if op == "*":
        return x * k
    return x // k


def _sentence(name: str, item: str, op: str, k: int) -> str:
    if op == "+":
        return f"{name} gets {k} more."
    if op == "-":
        return f"{name} gives away {k}."
    if op == "*":
        return f"The number of {item} {'doubles' if k == 2 else 'triples'}."
    return f"{name} splits them into {k} equal groups and keeps one group."


def _legal_moves(x: int, cfg: TaskConfig) -> list[tuple[str, int]]:
    moves: list[tuple[str, int]] = []
    for k in range(1, cfg.max_operand + 1):
        if "+" in cfg.ops and x + k <= cfg.max_value:
            moves.append(("+", k))
        if "-" in cfg.ops and x - k >= 0:
            moves.append(("-", k))
    for k in (2, 3):
        if "*" in cfg.ops and x * k <= cfg.max_value:
            moves += [("*", k)] * 3  # weight so * and / are not drowned by 2*max_operand +/- moves
        if "/" in cfg.ops and x > 0 and x % k == 0:
            moves += [("/", k)] * 3
    return moves


def sample_problem(rng: random.Random, cfg: TaskConfig) -> Problem:
    """One random problem; every intermediate value stays in [0, cfg.max_value]."""
    n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
    x = start = rng.randint(2, cfg.max_start)
    steps = []
    for _ in range(n_steps):
        op, k = rng.choice(_legal_moves(x, cfg))
        steps.append((op, k))
        x = _apply(op, x, k)
    return Problem(rng.choice(NAMES), rng.choice(ITEMS), start, tuple(steps))


@dataclass(frozen=True)
class TaskSplits:
    train: list[Problem]
    val: list[Problem]
    test: list[Problem]


def make_splits(seed: int, cfg: TaskConfig = TaskConfig()) -> TaskSplits:
    """Disjoint train/val/test problems (no question repeats across splits), fixed per seed.

    Test is drawn first, then validation, then train, so growing `n_train`
    never changes the held-out problems of a seed.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    splits = []
    for n in (cfg.n_test, cfg.n_val, cfg.n_train):
        split: list[Problem] = []
        attempts = 0
        while len(split) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise ValueError(f"TaskConfig too small to draw {n} distinct problems; raise max_value or max_steps")
            p = sample_problem(rng, cfg)
            q = p.question()
            if q not in seen:
                seen.add(q)
                split.append(p)
        splits.append(split)
    test, val, train = splits
    return TaskSplits(train=train, val=val, test=test)


def quick_task_config() -> TaskConfig:
    """The small task of the seconds-long presets (tests use them)."""
    return TaskConfig(n_train=200, n_val=12, n_test=12, max_steps=3)
