"""The data of `rairl compare`'s scarce-demonstration protocols, drawn from the embedded task.

    scarce   D: `n_demos` solved problems; V: `n_val` labelled validation problems;
             U: `n_unlabelled` questions with no solution and no answer; T: test problems
    length   the same, but D holds short problems (`short_steps`) and V, U, T long ones (`long_steps`)

Every question occurs in one set only. U's questions are plain strings; their gold answers are
kept apart in a `GoldKey`, handed only to the arms that say they read gold (the `rft_gold`
upper reference). V is for early stopping and checkpoint choice; T for the final numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .records import Example
from .task import Problem, TaskConfig, make_splits

PROTOCOLS = ("scarce", "length")


@dataclass(frozen=True)
class SplitConfig:
    """Sizes of the sets, in problems; step counts of the length protocol's short and long problems."""

    # D: worked solutions (every arm trains on the same D). 500: on tuning seed 0 SFT-ES stops on its plateau (0.11)
    # and the reward judges steps better than the policy (AUROC 0.94 vs 0.84); at 550 it is over the cliff (0.76)
    n_demos: int = 500
    n_val: int = 100  # V: labelled, for early stopping and checkpoint choice only (T's size: eval.problems)
    n_unlabelled: int = 4000  # U: questions with no solution and no answer
    short_steps: tuple[int, int] = (2, 4)  # protocol length: operations per demonstration (min, max)
    long_steps: tuple[int, int] = (5, 6)  # protocol length: operations per V, U and T problem (min, max)

    def __post_init__(self) -> None:
        object.__setattr__(self, "short_steps", tuple(int(s) for s in self.short_steps))
        object.__setattr__(self, "long_steps", tuple(int(s) for s in self.long_steps))
        for name in ("n_demos", "n_val", "n_unlabelled"):
            if getattr(self, name) < 1:
                raise ValueError(f"SplitConfig.{name}={getattr(self, name)}; must be >= 1")
        for name in ("short_steps", "long_steps"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"SplitConfig.{name}={getattr(self, name)}; give two numbers, min and max")
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"SplitConfig.{name}={getattr(self, name)}; need 1 <= min <= max")


@dataclass(frozen=True)
class ProtocolData:
    """What the training arms may read: D with solutions, V and T with answers, U as bare questions."""

    demos: tuple[Example, ...]
    val: tuple[Example, ...]
    unlabelled: tuple[str, ...]
    test: tuple[Example, ...]


@dataclass(frozen=True)
class GoldKey:
    """The gold answers of U's questions: read only by arms that say they read gold."""

    answers: dict[str, str]  # U question -> its gold answer

    def answer(self, question: str) -> str:
        return self.answers[question]


def protocol_problems(protocol: str, seed: int, cfg: SplitConfig, task: TaskConfig | None = None, n_test: int = 200
                      ) -> tuple[list[Problem], list[Problem], list[Problem], list[Problem]]:
    """D, U, V and T of `protocol` for `seed` as whole problems (`n_test` in T; `task` gives the value ranges and
    operators; its sizes, and with protocol length its step counts, are replaced). Solutions and answers included:
    what a training arm may read is `protocol_data`'s."""
    task = task or TaskConfig()
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol == "scarce":
        splits = make_splits(seed, replace(task, n_train=cfg.n_demos + cfg.n_unlabelled, n_val=cfg.n_val, n_test=n_test))
        return splits.train[: cfg.n_demos], splits.train[cfg.n_demos :], splits.val, splits.test
    # short and long problems differ in their number of sentences: no question can be in both
    (s_lo, s_hi), (l_lo, l_hi) = cfg.short_steps, cfg.long_steps
    if s_hi >= l_lo:
        raise ValueError(f"SplitConfig: short_steps {cfg.short_steps} must end below long_steps {cfg.long_steps}")
    short = make_splits(seed, replace(task, min_steps=s_lo, max_steps=s_hi, n_train=cfg.n_demos, n_val=1, n_test=1))
    long = make_splits(seed + 1, replace(task, min_steps=l_lo, max_steps=l_hi, n_train=cfg.n_unlabelled, n_val=cfg.n_val,
                                         n_test=n_test))
    return short.train, long.train, long.val, long.test


def protocol_data(protocol: str, seed: int, cfg: SplitConfig, task: TaskConfig | None = None, n_test: int = 200
                  ) -> tuple[ProtocolData, GoldKey]:
    """The sets of `protocol_problems`, as the arms read them, and U's gold answers apart."""
    demos, unlabelled, val, test = protocol_problems(protocol, seed, cfg, task, n_test)
    data = ProtocolData(tuple(p.example() for p in demos), tuple(p.example() for p in val),
                        tuple(p.question() for p in unlabelled), tuple(p.example() for p in test))
    return data, GoldKey({p.question(): _answer(p) for p in unlabelled})


def _answer(p: Problem) -> str:
    return str(p.values()[-1])
