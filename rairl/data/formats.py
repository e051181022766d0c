"""Loaders and writers for the data formats of DESIGN.md section 4.

Every loader reads its source through one entry point, ``_records`` of
``rairl.data.sources``, which takes a local JSON/JSONL file, a
Parquet/CSV/Arrow file or folder, a ``save_to_disk`` folder or a Hugging Face
hub dataset; the source syntax is documented there.

Each record is validated and each problem becomes a DataError naming the
source, the 1-based line (the 1-based row for a dataset) and the field.
Nothing is skipped silently: ``on_error="raise"`` (default) raises the first
error; ``on_error="skip_with_warning"`` emits the same message as a
DataWarning for each bad record, logs how many were skipped, and goes on.
Blank lines are not records. A JSON list whose structure is broken cannot be
resynchronised, so that error is raised under either policy, as is a source
with no record at all (a NoRecordsError: an empty file, only blank lines, ``[]``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from rairl.data.records import CandidatePool, DataError, DataWarning, Example, LocaliseItem, Prompt
from rairl.data.sources import _RECORD, PathLike, Records, _At, _records
from rairl.data.steps import (
    answer_kind,
    answers_match,
    extract_answer,
    normalise_number,
    strip_calculator_annotations,
)

log = logging.getLogger(__name__)
OnError = Literal["raise", "skip_with_warning"]
T = TypeVar("T")

EXAMPLE_FIELDS = ("prompt", "completion", "answer")  # rairl's names, the keys of a `fields` mapping
PROMPT_FIELDS = ("prompt", "answer")
_EXAMPLE_COLUMNS = {f: f for f in EXAMPLE_FIELDS}


# ---------------------------------------------------------------- loading records


def _load(
    source: PathLike,
    parse: Callable[[Mapping[str, Any], _At], T],
    on_error: OnError,
    limit: int | None,
    records: Records | None = None,
) -> list[T]:
    """Parse every record of ``source`` (or of ``records`` read from it) with ``parse`` under ``on_error``."""
    if on_error not in ("raise", "skip_with_warning"):
        raise ValueError(f"on_error must be 'raise' or 'skip_with_warning', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    out: list[T] = []
    skipped = 0
    records = _records(source) if records is None else records
    while limit is None or len(out) < limit:
        try:
            at, obj = next(records)
        except StopIteration:
            break
        try:
            out.append(parse(_as_object(obj, at), at))
        except DataError as err:
            if on_error == "raise":
                raise
            warnings.warn(str(err), DataWarning, stacklevel=3)
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d invalid record(s)", os.fspath(source), skipped)
    return out


def _peek(source: PathLike) -> tuple[_At, set[str], Records]:
    """The first record's place and keys, and all the records, the first included (read once: a pipe works).
    A source with no record is a NoRecordsError."""
    records = _records(source)
    first = next(records)
    at, obj = first
    return at, set(_as_object(obj, at)), itertools.chain([first], records)


def parse_fields(text: str) -> dict[str, str]:
    """A field mapping from its command-line form `prompt=problem,completion=solution,answer=final`
    (rairl's name = the source's column); "" is no mapping. Unknown rairl names are refused."""
    fields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, column = part.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ValueError(f"fields: {part!r} is not NAME=COLUMN (e.g. prompt=problem,completion=solution)")
        fields[key.strip()] = column.strip()
    _columns(fields, EXAMPLE_FIELDS)
    return fields


def _columns(fields: Mapping[str, str] | None, valid: tuple[str, ...]) -> dict[str, str]:
    """rairl field -> source column: ``fields`` over the identity; unknown rairl names are refused."""
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise ValueError(f"fields: unknown field(s) {unknown}; valid: {list(valid)}")
    for key, column in fields.items():
        if not isinstance(column, str) or not column:
            raise ValueError(f"fields[{key!r}]: expected a column name, got {column!r}")
    return {**{f: f for f in valid}, **fields}


def _as_object(obj: Any, at: _At) -> Mapping[str, Any]:
    if isinstance(obj, DataError):
        raise obj
    if not isinstance(obj, dict):
        raise at.error(_RECORD, f"expected a JSON object, got {_kind(obj)}")
    return obj


# ---------------------------------------------------------------- field checks


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _text(obj: Mapping[str, Any], key: str, at: _At, field: str | None = None) -> str:
    """A required, non-empty string field."""
    field = field or key
    if key not in obj:
        raise at.error(field, "missing")
    value = obj[key]
    if not isinstance(value, str):
        raise at.error(field, f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise at.error(field, "empty string")
    return value


def _optional_answer(obj: Mapping[str, Any], key: str, at: _At) -> str | None:
    """An optional answer: a non-empty string or a number (kept as its text); null = absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _text(obj, key, at)


def _int(obj: Mapping[str, Any], key: str, at: _At) -> int:
    if key not in obj:
        raise at.error(key, "missing")
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise at.error(key, f"expected an integer, got {_kind(value)}")
    return value


def _list(obj: Mapping[str, Any], key: str, at: _At) -> list[Any]:
    """A required, non-empty list field."""
    if key not in obj:
        raise at.error(key, "missing")
    value = obj[key]
    if not isinstance(value, list):
        raise at.error(key, f"expected a list, got {_kind(value)}")
    if not value:
        raise at.error(key, "empty list")
    return value


# ---------------------------------------------------------------- expert demonstrations


def _gsm8k_example(obj: Mapping[str, Any], at: _At, strip_annotations: bool) -> Example:
    question = _text(obj, "question", at)
    solution = _text(obj, "answer", at).strip()
    if strip_annotations:
        solution = strip_calculator_annotations(solution)
    last = solution.splitlines()[-1].strip()
    answer = extract_answer(last) if last.startswith("####") else None
    if answer is None or normalise_number(answer) is None:
        raise at.error("answer", "missing '#### <number>' final line")
    return Example(question, solution, answer, at.source)


def load_gsm8k(
    path: PathLike,
    limit: int | None = None,
    strip_annotations: bool = True,
    on_error: OnError = "raise",
) -> list[Example]:
    """Load GSM8K JSONL ``{"question", "answer"}``.

    ``prompt`` is the question, ``completion`` the whole solution text with its
    final ``#### N`` line (calculator annotations ``<<a*b=c>>`` removed unless
    ``strip_annotations=False``), ``answer`` is N without thousands commas.
    ``limit`` caps the number of examples returned.
    """
    return _load(path, lambda o, at: _gsm8k_example(o, at, strip_annotations), on_error, limit)


def _expert_example(obj: Mapping[str, Any], at: _At, columns: Mapping[str, str] | None = None) -> Example:
    c = columns or _EXAMPLE_COLUMNS
    prompt = _text(obj, c["prompt"], at)
    completion = _text(obj, c["completion"], at)
    return Example(prompt, completion, _optional_answer(obj, c["answer"], at), at.source)


def load_expert_jsonl(
    path: PathLike, limit: int | None = None, on_error: OnError = "raise"
) -> list[Example]:
    """Load expert JSONL ``{"prompt", "completion", "answer"?}``; a numeric answer is kept as text."""
    return _load(path, _expert_example, on_error, limit)


def load_examples(
    path: PathLike,
    limit: int | None = None,
    strip_annotations: bool = True,
    on_error: OnError = "raise",
    fields: Mapping[str, str] | None = None,
) -> list[Example]:
    """Load expert demonstrations from any source (``rairl.data.sources``).

    Without ``fields`` the form follows the first record's keys: ``{"prompt",
    "completion", "answer"?}`` or GSM8K ``{"question", "answer"}``. ``fields``
    maps rairl's names (``EXAMPLE_FIELDS``) to the source's columns, e.g.
    ``{"prompt": "problem", "completion": "solution", "answer": "final"}``;
    unmapped names keep their own, and the records are read in the first form
    under those columns (errors name the source's column).
    """
    if fields:
        columns = _columns(fields, EXAMPLE_FIELDS)
        return _load(path, lambda o, at: _expert_example(o, at, columns), on_error, limit)
    at, keys, records = _peek(path)
    return _load(path, _example_parser(at, keys, strip_annotations), on_error, limit, records)


def _example_parser(at: _At, keys: set[str], strip_annotations: bool) -> Callable[[Mapping[str, Any], _At], Example]:
    """How ``load_examples`` reads a source whose first record (at ``at``) has ``keys``."""
    if "prompt" in keys:
        return _expert_example
    if "question" in keys:
        return partial(_gsm8k_example, strip_annotations=strip_annotations)
    raise at.error(
        _RECORD,
        f"unknown format with keys {sorted(keys)}: expected 'prompt'/'completion' "
        "or GSM8K 'question'/'answer'",
    )


# ---------------------------------------------------------------- questions without solutions


def _prompt(obj: Mapping[str, Any], at: _At, columns: Mapping[str, str]) -> Prompt:
    prompt = _text(obj, columns["prompt"], at)
    answer = _optional_answer(obj, columns["answer"], at)
    if answer is not None and "####" in answer:  # a GSM8K solution: its final "#### N" is the answer
        answer = extract_answer(answer)
        if answer is None:
            raise at.error(columns["answer"], "'####' final line holds no answer")
    return Prompt(prompt, answer, at.source)


def load_prompts(
    source: PathLike,
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
    on_error: OnError = "raise",
) -> list[Prompt]:
    """Load questions without solutions from any source (``rairl.data.sources``).

    Records are ``{"prompt", "answer"?}`` or ``{"question", "answer"?}`` (by the
    first record's keys unless ``fields`` maps ``"prompt"``); ``answer`` is the
    gold final answer, for evaluation only: a number (kept as its text), a
    string, or a GSM8K solution whose ``#### N`` line gives N. ``fields`` maps
    rairl's names (``PROMPT_FIELDS``) to the source's columns, e.g.
    ``{"prompt": "problem", "answer": "final"}``.
    """
    columns = _columns(fields, PROMPT_FIELDS)
    records = None
    if "prompt" not in (fields or {}):
        at, keys, records = _peek(source)
        if "prompt" not in keys and "question" not in keys:
            raise at.error(_RECORD, f"unknown format with keys {sorted(keys)}: expected 'prompt' or 'question'")
        columns["prompt"] = "prompt" if "prompt" in keys else "question"
    return _load(source, lambda o, at: _prompt(o, at, columns), on_error, limit, records)


# ---------------------------------------------------------------- localisation items


def _localise_item(obj: Mapping[str, Any], at: _At) -> LocaliseItem:
    item_id = obj.get("id")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    else:
        item_id = _text(obj, "id", at)
    problem = _text(obj, "problem", at)
    steps = _list(obj, "steps", at)
    for i, step in enumerate(steps):
        _text({"step": step}, "step", at, field=f"steps[{i}]")
    label = _int(obj, "label", at)
    if not -1 <= label < len(steps):
        raise at.error("label", f"{label} outside [-1, {len(steps) - 1}] for {len(steps)} steps")
    return LocaliseItem(item_id, problem, list(steps), label, at.source)


def load_localise_items(
    path: PathLike, limit: int | None = None, on_error: OnError = "raise"
) -> list[LocaliseItem]:
    """Load ProcessBench-style items ``{"id", "problem", "steps": [str], "label": int}``.

    JSON list or JSONL. ``label`` is the 0-based first wrong step, -1 if none;
    an integer ``id`` is read as its text; extra keys are ignored.
    """
    return _load(path, _localise_item, on_error, limit)


def load_traces(
    source: PathLike, fields: Mapping[str, str] | None = None, on_error: OnError = "raise"
) -> tuple[Literal["items"], list[LocaliseItem]] | tuple[Literal["examples"], list[Example]]:
    """ProcessBench-style items or examples from any source, which by its first record's keys, the source
    read once (a pipe works): ``("items", load_localise_items(...))`` for a ``steps`` key,
    ``("examples", load_examples(...))`` for ``prompt`` or GSM8K ``question`` (or any record with ``fields``).

    Anything else is a DataError naming both forms.
    """
    if fields:
        return "examples", load_examples(source, on_error=on_error, fields=fields)
    at, keys, records = _peek(source)
    if "steps" in keys:
        return "items", _load(source, _localise_item, on_error, None, records)
    if "prompt" in keys or "question" in keys:
        return "examples", _load(source, _example_parser(at, keys, True), on_error, None, records)
    raise at.error(_RECORD, f"keys {sorted(keys)} fit neither ProcessBench-style items {{id, problem, steps, label}} "
                            "nor examples {prompt, completion[, answer]} / GSM8K {question, answer}")


def save_localise_items(path: PathLike, items: Iterable[LocaliseItem]) -> int:
    """Write items as a JSON list when ``path`` ends in ``.json``, else as JSONL; returns the count."""
    rows = [
        {"id": it.id, "problem": it.problem, "steps": list(it.steps), "label": it.label}
        for it in items
    ]
    if Path(path).suffix == ".json":
        _write_atomic(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
        return len(rows)
    return write_jsonl(path, rows)


# ---------------------------------------------------------------- candidate pools


def _candidate_pool(obj: Mapping[str, Any], at: _At) -> CandidatePool:
    question = _text(obj, "question", at)
    answer = _optional_answer(obj, "answer", at)
    solutions: list[str] = []
    is_correct: list[bool | None] = []
    for i, cand in enumerate(_list(obj, "candidates", at)):
        field = f"candidates[{i}]"
        if not isinstance(cand, dict):
            raise at.error(field, f"expected an object, got {_kind(cand)}")
        solution = _text(cand, "solution", at, field=f"{field}.solution")
        label = cand.get("is_correct")
        if label is None and answer is not None:
            label = answers_match(extract_answer(solution, kind=answer_kind(answer)), answer)
        elif label is not None and not isinstance(label, bool):
            raise at.error(f"{field}.is_correct", f"expected a boolean, got {_kind(label)}")
        solutions.append(solution)
        is_correct.append(label)
    return CandidatePool(question, answer, solutions, is_correct, at.source)


def load_candidate_pools(
    path: PathLike, limit: int | None = None, on_error: OnError = "raise"
) -> list[CandidatePool]:
    """Load reranking pools ``{"question", "answer"?, "candidates": [{"solution", "is_correct"?}]}``.

    A missing ``is_correct`` is computed as ``answers_match(extract_answer(solution,
    kind=answer_kind(answer)), answer)`` when the pool has an answer (a letter answer
    "B" reads the solution's option letter), and left None otherwise.
    """
    return _load(path, _candidate_pool, on_error, limit)


def save_candidate_pools(path: PathLike, pools: Iterable[CandidatePool]) -> int:
    """Write pools as JSONL (None answers and labels omitted); returns the count."""
    rows = []
    for pool in pools:
        row: dict[str, Any] = {"question": pool.question}
        if pool.answer is not None:
            row["answer"] = pool.answer
        row["candidates"] = [
            {"solution": s} if c is None else {"solution": s, "is_correct": c}
            for s, c in zip(pool.solutions, pool.is_correct, strict=True)
        ]
        rows.append(row)
    return write_jsonl(path, rows)


# ---------------------------------------------------------------- writing


def write_jsonl(path: PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write one JSON object a line (UTF-8, parent folders created); returns the row count."""
    lines = [json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows]
    _write_atomic(path, "".join(lines))
    return len(lines)


def _write_atomic(path: PathLike, text: str) -> None:
    # Write then rename, so an interrupted run never leaves a truncated file behind.
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
