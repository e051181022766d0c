"""Loaders and writers for the data formats of DESIGN.md section 4.

Every loader reads its source through one entry point, ``_records``, which
takes a local file or folder or a Hugging Face hub dataset:

* ``data/train.jsonl`` (or any other local file but the three below): JSONL,
  or one JSON list (detected by a leading ``[``), streamed line by line;
* ``data/train.parquet``, ``.csv``, ``.arrow`` or a folder of such files (one
  format; a ``save_to_disk`` folder too): read with ``datasets``, split
  ``train`` unless ``@split`` names another (``data/mmlu@test``: a folder's
  splits come from its file names, as ``datasets`` infers them);
* anything else, ``name[:config][@split]`` (``openai/gsm8k:main@test``): the hub
  dataset, streamed, split ``train`` by default.

A ``Path``, or a string naming an existing path, is taken whole (no ``@split``).
A string that looks like a local path (absolute; starting with ``.`` or ``~``;
a data-file suffix; a first component that exists here; more than one ``/``)
and does not exist is a FileNotFoundError naming it, never a hub query.
``datasets`` is imported only for the sources that need it (extras ``[trl]``
or ``[dev]``).

Each record is validated and each problem becomes a DataError naming the
source, the 1-based line (the 1-based row for a dataset) and the field.
Nothing is skipped silently: ``on_error="raise"`` (default) raises the first
error; ``on_error="skip_with_warning"`` emits the same message as a
DataWarning for each bad record, logs how many were skipped, and goes on.
Blank lines are not records. A JSON list whose structure is broken cannot be
resynchronised, so that error is raised under either policy.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from rairl.data.records import CandidatePool, DataError, DataWarning, Example, LocaliseItem, Prompt
from rairl.data.steps import (
    answer_kind,
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
Records = Iterator[tuple["_At", Any]]

EXAMPLE_FIELDS = ("prompt", "completion", "answer")  # rairl's names, the keys of a `fields` mapping
PROMPT_FIELDS = ("prompt", "answer")
_EXAMPLE_COLUMNS = {f: f for f in EXAMPLE_FIELDS}
_DATASET_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}  # read through `datasets`
# Suffixes that mark a string as a local path, never a hub name.
_FILE_SUFFIXES = {".json", ".jsonl", ".txt", ".tsv", ".gz", ".bz2", ".xz", ".zst", ".zip", *_DATASET_BUILDERS}
_HUB_NAME_RE = re.compile(r"[\w.-]+(?:/[\w.-]+)?")  # "name" or "owner/name"


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


def _records(source: PathLike) -> Records:
    """Yield (where, parsed record or the DataError for it) for each record of ``source``.

    The one reader every loader uses; the source forms are in the module docstring.
    """
    name = os.fspath(source)
    path, split = _resolve(source)
    if path is None or path.is_dir() or path.suffix.lower() in _DATASET_BUILDERS:
        yield from _dataset_records(name, path, split)
        return
    if split is not None:
        raise ValueError(f"{name}: a JSON/JSONL file has no splits")
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    if head.startswith("["):
        yield from _array_records(path, name)
    else:
        yield from _jsonl_records(path, name)


def _resolve(source: PathLike) -> tuple[Path | None, str | None]:
    """(local path, split) of a source, the path None for a hub dataset; a missing local one raises."""
    name = os.fspath(source)
    if not isinstance(source, str) or Path(name).expanduser().exists():
        return Path(name).expanduser(), None
    base, at, split = name.rpartition("@")
    if not (at and base and split) or "/" in split:
        base, split = name, None
    path = Path(base).expanduser()
    if path.exists():
        return path, split
    hub = base.partition(":")[0]
    if (
        path.is_absolute() or base.startswith((".", "~")) or path.suffix.lower() in _FILE_SUFFIXES
        or not _HUB_NAME_RE.fullmatch(hub) or Path(Path(hub).parts[0]).exists()
    ):
        hint = " (name a split with '@': PATH@SPLIT)" if ":" in base else ""
        raise FileNotFoundError(f"{name}: no such file or folder{hint}")
    return None, split


def _dataset_records(name: str, path: Path | None, split: str | None) -> Records:
    """Rows of a Parquet/CSV/Arrow file or folder, or a hub dataset; the "line" is the 1-based row."""
    datasets = _import_datasets(name)
    try:
        for row, obj in enumerate(_open_dataset(datasets, name, path, split), start=1):
            yield _At(name, row), obj
    except ValueError as e:  # a bad split or config, an unreadable file: the library's message lacks the source
        raise ValueError(f"{name}: {e}") from e
    except OSError as e:
        if path is not None:
            raise
        raise FileNotFoundError(f"{name}: no such local file or folder, and the hub could not open it: {e}") from e


def _open_dataset(datasets: Any, name: str, path: Path | None, split: str | None) -> Iterable[Any]:
    if path is None:
        hub, _, config = (name[: -len(split) - 1] if split else name).partition(":")
        return datasets.load_dataset(hub, config or None, split=split or "train", streaming=True)
    if path.is_file():
        builder = _DATASET_BUILDERS[path.suffix.lower()]
        return datasets.load_dataset(builder, data_files=str(path), split=split or "train", streaming=True)
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():  # save_to_disk
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if (split or "train") not in data:
                raise ValueError(f"no split {split or 'train'!r}; the folder has {sorted(data)}")
            return data[split or "train"]
        if split not in (None, "train"):
            raise ValueError(f"no split {split!r}; the folder holds one dataset (split 'train')")
        return data
    found = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")}
    builders = sorted({_DATASET_BUILDERS[s] for s in found & _DATASET_BUILDERS.keys()})
    if len(builders) != 1:
        what = "files of " + " and ".join(builders) if builders else f"suffixes {sorted(found)}"
        raise ValueError(f"expected a folder of .parquet, .csv or .arrow files (one format), found {what}")
    return datasets.load_dataset(builders[0], data_dir=str(path), split=split or "train", streaming=True)


def _import_datasets(name: str) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"{name}: reading Parquet/CSV/Arrow files and hub datasets needs the `datasets` package: "
            "pip install 'rairl[trl]' (or 'rairl[dev]')"
        ) from e
    return datasets


def _jsonl_records(path: Path, name: str) -> Records:
    with open(path, "rb") as f:
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


def _array_records(path: Path, name: str) -> Records:
    """Items of a top-level JSON list, each with the line it starts on."""
    raw = path.read_bytes()
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


def _peek(source: PathLike) -> tuple[tuple[_At, set[str]] | None, Records]:
    """The first record's place and keys (None for an empty source), and all the records, the first included."""
    records = _records(source)
    first = next(records, None)
    if first is None:
        return None, records
    at, obj = first
    return (at, set(_as_object(obj, at))), itertools.chain([first], records)


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
    """Load expert demonstrations from any source (module docstring).

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
    first, records = _peek(path)
    if first is None:
        return []
    at, keys = first
    if "prompt" in keys:
        return _load(path, _expert_example, on_error, limit, records)
    if "question" in keys:
        return _load(path, partial(_gsm8k_example, strip_annotations=strip_annotations), on_error, limit, records)
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
    """Load questions without solutions from any source (module docstring).

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
        first, records = _peek(source)
        if first is None:
            return []
        at, keys = first
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
