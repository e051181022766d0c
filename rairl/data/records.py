"""Plain records the data layer hands to the rest of rairl, and its error type.

Every record carries ``source`` ("file:line" it came from, "source:row" for a
dataset, "" when built in code) so that a problem found later can still point
at the offending line; it is provenance, not content, so equality ignores it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class DataError(ValueError):
    """A data file is malformed; the message names the file, the 1-based line and the field.

    For a dataset source (Parquet/CSV/Arrow, hub) ``path`` is the source as given
    and ``line`` the 1-based row.

    ``str(err)`` reads ``"<path>:<line>: field '<field>': <message>"``, e.g.
    ``gsm8k/train.jsonl:17: field 'answer': missing '#### <number>' final line``.
    Whole-record problems (malformed JSON, a line that is not an object) use the
    field name ``'<record>'``.
    """

    def __init__(self, path: str | os.PathLike[str], line: int, field: str, message: str):
        self.path = os.fspath(path)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(f"{self.path}:{line}: field '{field}': {message}")


class NoRecordsError(ValueError):
    """A source that holds no record at all; ``str(err)`` reads ``"<path>: <why>, no records"``, e.g.
    ``train.jsonl: only blank lines, no records`` (``why``: empty, only blank lines, an empty JSON list, no rows)."""

    def __init__(self, path: str | os.PathLike[str], why: str):
        self.path = os.fspath(path)
        self.why = why
        super().__init__(f"{self.path}: {why}, no records")


class DataWarning(UserWarning):
    """A malformed record skipped under ``on_error="skip_with_warning"``."""


@dataclass(frozen=True)
class Example:
    """One expert demonstration.

    ``completion`` is the whole solution text (steps one per line, GSM8K's final
    ``#### N`` line included); ``answer`` the gold final answer when known.
    """

    prompt: str
    completion: str
    answer: str | None = None
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class Prompt:
    """A question to answer, without a solution (for sampling and evaluation).

    ``answer`` is the gold final answer when known (a number as text, an option
    letter, ...), for evaluation only.
    """

    prompt: str
    answer: str | None = None
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class LocaliseItem:
    """A ProcessBench-style item: ``label`` is the 0-based first wrong step, -1 if none."""

    id: str
    problem: str
    steps: list[str]
    label: int
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"LocaliseItem {self.id!r}: 'steps' is empty")
        if not -1 <= self.label < len(self.steps):
            raise ValueError(
                f"LocaliseItem {self.id!r}: 'label' {self.label} outside "
                f"[-1, {len(self.steps) - 1}] for {len(self.steps)} steps"
            )


@dataclass(frozen=True)
class CandidatePool:
    """N sampled solutions to one question, for reranking.

    ``is_correct[i]`` is None when it is unknown (no label and no gold answer).
    """

    question: str
    answer: str | None
    solutions: list[str]
    is_correct: list[bool | None]
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.solutions) != len(self.is_correct):
            raise ValueError(
                f"CandidatePool: {len(self.solutions)} solutions but "
                f"{len(self.is_correct)} 'is_correct' entries"
            )
