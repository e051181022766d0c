"""Reading records from a source: a local file or folder, or a Hugging Face hub dataset.

``_records`` is the one reader every loader of ``rairl.data.formats`` uses. A
source is one of:

* ``data/train.jsonl`` (or any other local file but the three below, a pipe such
  as ``/dev/stdin`` too): JSONL, or one JSON list (detected by a leading ``[``),
  opened once and streamed line by line;
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

Each record comes with its place, an ``_At`` (the source and the 1-based line,
the 1-based row for a dataset); a record that cannot be parsed comes as the
DataError for it, for the loader to raise or skip. Blank lines are not
records. A JSON list whose structure is broken cannot be resynchronised, so
that error is raised here. A source with no record at all (an empty file, only
blank lines, ``[]``, no rows) is a NoRecordsError naming it; a folder that holds
no dataset, and a file this user may not read, have their own one-line errors.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rairl.data.records import DataError, NoRecordsError

PathLike = str | os.PathLike[str]
_RECORD = "<record>"
Records = Iterator[tuple["_At", Any]]

_DATASET_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}  # read through `datasets`
# Suffixes that mark a string as a local path, never a hub name.
_FILE_SUFFIXES = {".json", ".jsonl", ".txt", ".tsv", ".gz", ".bz2", ".xz", ".zst", ".zip", *_DATASET_BUILDERS}
_HUB_NAME_RE = re.compile(r"[\w.-]+(?:/[\w.-]+)?")  # "name" or "owner/name"
_BOM, _JSON_WS = b"\xef\xbb\xbf", b" \t\r\n"
_TOO_DEEP = "JSON nested too deeply to read"


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


def _records(source: PathLike) -> Records:
    """Yield (where, parsed record or the DataError for it) for each record of ``source``.

    The one reader every loader uses; the source forms are in the module docstring. A local
    file is opened once and streamed (a pipe or ``/dev/stdin`` works); a source with no record
    at all is a NoRecordsError naming it, raised when the records run out.
    """
    name = os.fspath(source)
    path, split = _resolve(source)
    if path is None or path.is_dir() or path.suffix.lower() in _DATASET_BUILDERS:
        yield from _some(_dataset_records(name, path, split), name, "no rows")
        return
    if split is not None:
        raise ValueError(f"{name}: a JSON/JSONL file has no splits")
    with _open(path, name) as f:
        head = _head(f)
        if _first_byte(head) == b"[":
            yield from _some(_array_records(head + f.read(), name), name, "an empty JSON list")
        else:
            why = "only blank lines" if head.removeprefix(_BOM) else "empty"
            yield from _some(_jsonl_records(_lines(head, f), name), name, why)


def _open(path: Path, name: str) -> io.BufferedReader:
    """``path`` opened for reading; a file this user may not read is a one-line PermissionError naming it."""
    try:
        return open(path, "rb")  # noqa: SIM115 (closed by the caller's `with`)
    except PermissionError as e:
        raise PermissionError(f"{name}: permission denied (this user may not read it)") from e


def _head(f: io.BufferedReader) -> bytes:
    """The first bytes of ``f``, read until one is not JSON whitespace (all of them when none is).

    Read, not peeked: a pipe cannot seek back, so the caller goes on from these bytes."""
    head = b""
    while not _first_byte(head) and (chunk := f.read1(1 << 16)):
        head += chunk
    return head


def _first_byte(head: bytes) -> bytes:
    """The first byte after a UTF-8 BOM and JSON whitespace; b"" when there is none."""
    return head.removeprefix(_BOM).lstrip(_JSON_WS)[:1]


def _lines(head: bytes, f: io.BufferedReader) -> Iterator[bytes]:
    """The lines of ``head`` followed by the rest of ``f``, as iterating the whole file would give them."""
    for line in io.BytesIO(head):
        yield line if line.endswith(b"\n") else line + f.readline()
    yield from f


def _some(records: Records, name: str, why: str) -> Records:
    """``records``, or when there is none, a NoRecordsError naming ``name`` and ``why``."""
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        raise NoRecordsError(name, why)


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
    builder = _folder_builder(path, name) if path is not None and path.is_dir() else None
    datasets = _import_datasets(name)
    try:
        for row, obj in enumerate(_open_dataset(datasets, name, path, split, builder), start=1):
            yield _At(name, row), obj
    except ValueError as e:  # a bad split or config, an unreadable file: the library's message lacks the source
        raise ValueError(f"{name}: {e}") from e
    except OSError as e:
        if path is not None:
            raise
        raise FileNotFoundError(f"{name}: no such local file or folder, and the hub could not open it: {e}") from e


def _open_dataset(datasets: Any, name: str, path: Path | None, split: str | None, builder: str | None) -> Iterable[Any]:
    """The rows of a hub dataset (``path`` None), a data file, or a folder (read by ``builder``; None: ``save_to_disk``)."""
    if path is None:
        hub, _, config = (name[: -len(split) - 1] if split else name).partition(":")
        return datasets.load_dataset(hub, config or None, split=split or "train", streaming=True)
    if path.is_file():
        return datasets.load_dataset(_DATASET_BUILDERS[path.suffix.lower()], data_files=str(path), split=split or "train",
                                     streaming=True)
    if builder is None:  # save_to_disk
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if (split or "train") not in data:
                raise ValueError(f"no split {split or 'train'!r}; the folder has {sorted(data)}")
            return data[split or "train"]
        if split not in (None, "train"):
            raise ValueError(f"no split {split!r}; the folder holds one dataset (split 'train')")
        return data
    return datasets.load_dataset(builder, data_dir=str(path), split=split or "train", streaming=True)


def _folder_builder(path: Path, name: str) -> str | None:
    """The ``datasets`` builder that reads the folder ``path`` (None: a ``save_to_disk`` folder); a folder
    holding no dataset, e.g. JSONL files where one file is expected, is a ValueError naming it."""
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return None
    found = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")}
    builders = sorted({_DATASET_BUILDERS[s] for s in found & _DATASET_BUILDERS.keys()})
    if len(builders) == 1:
        return builders[0]
    if not found:
        raise ValueError(f"{name}: an empty folder; expected a JSON/JSONL file (or a folder of .parquet, .csv or .arrow files)")
    if not builders and found & {".json", ".jsonl"}:
        raise ValueError(f"{name}: a folder, not a file: give one of its JSON/JSONL files "
                         "(a folder is read only when it holds .parquet, .csv or .arrow files)")
    what = "files of " + " and ".join(builders) if builders else f"suffixes {sorted(found)}"
    raise ValueError(f"{name}: expected a folder of .parquet, .csv or .arrow files (one format), found {what}")


def _import_datasets(name: str) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"{name}: reading Parquet/CSV/Arrow files and hub datasets needs the `datasets` package: "
            "pip install 'rairl[trl]' (or 'rairl[dev]')"
        ) from e
    return datasets


def _jsonl_records(lines: Iterable[bytes], name: str) -> Records:
    """One record per non-blank line of ``lines``, each with its 1-based line (a bad one as its DataError)."""
    for lineno, raw in enumerate(lines, start=1):
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
        except ValueError as e:  # JSONDecodeError, or an integer over Python's digit limit
            yield at, at.error(_RECORD, _json_problem(e))
        except RecursionError:
            yield at, at.error(_RECORD, _TOO_DEEP)


def _json_problem(e: ValueError) -> str:
    """What ``json`` could not read, for a DataError's message."""
    if isinstance(e, json.JSONDecodeError):
        return f"malformed JSON: {e.msg} (column {e.colno})"
    return f"unreadable JSON: {e}"


def _array_records(raw: bytes, name: str) -> Records:
    """Items of a top-level JSON list (the whole file, ``raw``), each with the line it starts on."""
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
            raise _At(name, e.lineno).error(_RECORD, _json_problem(e)) from e
        except ValueError as e:  # an integer over Python's digit limit
            raise at.error(_RECORD, _json_problem(e)) from e
        except RecursionError as e:
            raise at.error(_RECORD, _TOO_DEEP) from e
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
