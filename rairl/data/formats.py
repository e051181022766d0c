"""Loaders and writers for the data formats of DESIGN.md section 4.

Every loader streams its file, validates each record and turns each problem
into a DataError naming the file, the 1-based line and the field. Nothing is
skipped silently: ``on_error="raise"`` (default) raises the first error;
``on_error="skip_with_warning"`` emits the same message as a DataWarning for
each bad record, logs how many were skipped, and goes on. Blank lines are not
records. Files are JSONL, or one JSON list (detected by a leading ``[``); a
list whose structure is broken cannot be resynchronised, so that error is
raised under either policy.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from rairl.data.records import CandidatePool, DataError, DataWarning, Example, LocaliseItem
from rairl.data.steps import (
    answers_match,
    extract_answer,
    normalise_number,
    strip_calculator_annotations,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
OnError = Literal["raise", "skip_with_warning"]
T = TypeVar("T")
_RECORD = "<record>"


@dataclass(frozen=True)
class _At:
    """Where a record came from; builds errors and ``source`` strings."""

    path: str
    line: int

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"

    def error(self, field: str, message: str) -> DataError:
        return DataError(self.path, self.line, field, message)


# ---------------------------------------------------------------- reading records


def _records(path: PathLike) -> Iterator[tuple[_At, Any]]:
    """Yield (where, parsed JSON or the DataError for that line) for each record."""
    name = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    if head.startswith("["):
        yield from _array_records(name)
    else:
        yield from _jsonl_records(name)


def _jsonl_records(name: str) -> Iterator[tuple[_At, Any]]:
    with open(name, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            at = _At(name, lineno)
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield at, at.error(_RECORD, f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not text.strip():
                continue
            try:
                yield at, json.loads(text)
            except json.JSONDecodeError as e:
                yield at, at.error(_RECORD, f"malformed JSON: {e.msg} (column {e.colno})")


def _array_records(name: str) -> Iterator[tuple[_At, Any]]:
    """Items of a top-level JSON list, each with the line it starts on."""
    raw = Path(name).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _At(name, raw.count(b"\n", 0, e.start) + 1).error(_RECORD, "not valid UTF-8") from e
    decoder = json.JSONDecoder()
    i = _skip_ws(text, text.index("[") + 1)
    if text.startswith("]", i):
        _check_end(name, text, i + 1)
        return
    while True:
        at = _At(name, text.count("\n", 0, i) + 1)
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise _At(name, e.lineno).error(
                _RECORD, f"malformed JSON: {e.msg} (column {e.colno})"
            ) from e
        yield at, item
        i = _skip_ws(text, i)
        if text.startswith(",", i):
            i = _skip_ws(text, i + 1)
        elif text.startswith("]", i):
            _check_end(name, text, i + 1)
            return
        else:
            line = text.count("\n", 0, i) + 1
            raise _At(name, line).error(_RECORD, "malformed JSON list: expected ',' or ']'")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _check_end(name: str, text: str, i: int) -> None:
    i = _skip_ws(text, i)
    if i < len(text):
        line = text.count("\n", 0, i) + 1
        raise _At(name, line).error(_RECORD, "extra data after the JSON list")


def _load(
    path: PathLike,
    parse: Callable[[Mapping[str, Any], _At], T],
    on_error: OnError,
    limit: int | None,
) -> list[T]:
    """Parse every record of ``path`` with ``parse`` under the ``on_error`` policy."""
    if on_error not in ("raise", "skip_with_warning"):
        raise ValueError(f"on_error must be 'raise' or 'skip_with_warning', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    out: list[T] = []
    skipped = 0
    records = _records(path)
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
        log.warning("%s: skipped %d invalid record(s)", os.fspath(path), skipped)
    return out


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


def _expert_example(obj: Mapping[str, Any], at: _At) -> Example:
    prompt = _text(obj, "prompt", at)
    completion = _text(obj, "completion", at)
    return Example(prompt, completion, _optional_answer(obj, "answer", at), at.source)


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
) -> list[Example]:
    """Load expert demonstrations, GSM8K or ``{"prompt", "completion"}`` form by the first record's keys."""
    with closing(_records(path)) as records:
        first = next(records, None)
    if first is None:
        return []
    at, obj = first
    keys = set(_as_object(obj, at))
    if "prompt" in keys:
        return load_expert_jsonl(path, limit, on_error)
    if "question" in keys:
        return load_gsm8k(path, limit, strip_annotations, on_error)
    raise at.error(
        _RECORD,
        f"unknown format with keys {sorted(keys)}: expected 'prompt'/'completion' "
        "or GSM8K 'question'/'answer'",
    )


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
            label = answers_match(extract_answer(solution), answer)
        elif label is not None and not isinstance(label, bool):
            raise at.error(f"{field}.is_correct", f"expected a boolean, got {_kind(label)}")
        solutions.append(solution)
        is_correct.append(label)
    return CandidatePool(question, answer, solutions, is_correct, at.source)


def load_candidate_pools(
    path: PathLike, limit: int | None = None, on_error: OnError = "raise"
) -> list[CandidatePool]:
    """Load reranking pools ``{"question", "answer"?, "candidates": [{"solution", "is_correct"?}]}``.

    A missing ``is_correct`` is computed as ``answers_match(extract_answer(solution),
    answer)`` when the pool has an answer, and left None otherwise.
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
