"""Sources beyond JSONL: Parquet/CSV/Arrow files and folders, hub names, field mapping, prompts.

Datasets are written in `tmp_path` with `datasets` itself; the hub is never reached (a fake
`load_dataset` stands in for it), and the `datasets` cache is redirected into `tmp_path`.
"""

import json
import re
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from rairl.data import formats  # noqa: E402
from rairl.data.formats import (  # noqa: E402
    load_candidate_pools,
    load_examples,
    load_localise_items,
    load_prompts,
)
from rairl.data.records import DataError, DataWarning, Example, LocaliseItem, NoRecordsError, Prompt  # noqa: E402

EXPERT_ROWS = [
    {"prompt": "P1", "completion": "1 + 1 = 2\n#### 2", "answer": "2"},
    {"prompt": "P2 ünicode", "completion": "3 * 4 = 12\n#### 12", "answer": "12"},
    {"prompt": "P3", "completion": "C3", "answer": "seven"},
]
GSM8K_ROWS = [
    {"question": "Q1?", "answer": "Sold 48/2 = <<48/2=24>>24.\n#### 24"},
    {"question": "Q2?", "answer": "It costs $1,200.\n#### 1,200"},
]
ITEM_ROWS = [
    {"id": "a-0", "problem": "What is 3 + 4?", "steps": ["3 + 4 = 8", "#### 8"], "label": 0},
    {"id": "a-1", "problem": "What is 2 * 5?", "steps": ["2 * 5 = 10", "#### 10"], "label": -1},
]
POOL_ROWS = [
    {"question": "Q?", "answer": "7", "candidates": [
        {"solution": "3 + 4 = 7\n#### 7", "is_correct": None},
        {"solution": "3 + 4 = 8\n#### 8", "is_correct": True},  # a given label wins
    ]},
]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep the `datasets` cache (lock files) out of the home folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _arrow(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table)
    return path


WRITERS = {
    "parquet": lambda path, rows: datasets.Dataset.from_list(rows).to_parquet(str(path)),
    "csv": lambda path, rows: datasets.Dataset.from_list(rows).to_csv(str(path), index=False),
    "arrow": _arrow,
}


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    WRITERS[path.suffix[1:]](path, rows)
    return path


# ---------------------------------------------------------------- files and folders read like JSONL


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("rows", [EXPERT_ROWS, GSM8K_ROWS], ids=["expert", "gsm8k"])
def test_dataset_files_read_like_jsonl(tmp_path, fmt, rows):
    expected = load_examples(_jsonl(tmp_path / "e.jsonl", rows))
    path = _write(tmp_path / f"e.{fmt}", rows)
    got = load_examples(path)
    assert got == expected and len(got) == len(rows)
    assert [e.source for e in got] == [f"{path}:{i}" for i in range(1, len(rows) + 1)]
    assert load_examples(str(path), limit=1) == expected[:1]


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])  # CSV has no list columns
def test_nested_records_read_like_jsonl(tmp_path, fmt):
    items = load_localise_items(_write(tmp_path / f"items.{fmt}", ITEM_ROWS))
    assert items == load_localise_items(_jsonl(tmp_path / "items.jsonl", ITEM_ROWS))
    assert items[0] == LocaliseItem("a-0", "What is 3 + 4?", ["3 + 4 = 8", "#### 8"], 0)
    pools = load_candidate_pools(_write(tmp_path / f"pools.{fmt}", POOL_ROWS))
    assert pools == load_candidate_pools(_jsonl(tmp_path / "pools.jsonl", POOL_ROWS))
    assert pools[0].is_correct == [True, True]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_folder_splits_by_file_name(tmp_path, fmt):
    folder = tmp_path / "data"
    _write(folder / f"train.{fmt}", EXPERT_ROWS[:2])
    _write(folder / f"test.{fmt}", EXPERT_ROWS[2:])
    assert load_examples(folder) == load_examples(_jsonl(tmp_path / "a.jsonl", EXPERT_ROWS[:2]))
    test = load_examples(f"{folder}@test")
    assert test == [Example("P3", "C3", "seven")] and test[0].source == f"{folder}@test:1"
    with pytest.raises(ValueError, match=re.escape(f"{folder}@validation: ") + ".*validation"):
        load_examples(f"{folder}@validation")


def test_folder_of_one_split_and_save_to_disk_folders(tmp_path):
    expected = load_examples(_jsonl(tmp_path / "e.jsonl", EXPERT_ROWS))
    _write(tmp_path / "shards" / "part-0.parquet", EXPERT_ROWS[:1])
    _write(tmp_path / "shards" / "part-1.parquet", EXPERT_ROWS[1:])
    assert load_examples(tmp_path / "shards") == expected
    ds = datasets.Dataset.from_list(EXPERT_ROWS)
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_examples(tmp_path / "saved") == expected
    datasets.DatasetDict({"train": ds.select([0]), "test": ds.select([1, 2])}).save_to_disk(str(tmp_path / "dd"))
    assert load_examples(tmp_path / "dd") == expected[:1]
    assert load_examples(f"{tmp_path / 'dd'}@test") == expected[1:]
    with pytest.raises(ValueError, match=r"no split 'dev'.*\['test', 'train'\]"):
        load_examples(f"{tmp_path / 'dd'}@dev")


def test_folder_without_one_data_format_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("nothing here")
    with pytest.raises(ValueError, match=r"empty: expected a folder of .*found suffixes \['.md'\]"):
        load_examples(tmp_path / "empty")
    _write(tmp_path / "mixed" / "a.parquet", EXPERT_ROWS)
    _write(tmp_path / "mixed" / "b.csv", EXPERT_ROWS)
    with pytest.raises(ValueError, match="found files of csv and parquet"):
        load_examples(tmp_path / "mixed")


def test_a_json_file_has_no_splits(tmp_path):
    path = _jsonl(tmp_path / "e.jsonl", EXPERT_ROWS)
    with pytest.raises(ValueError, match="has no splits"):
        load_examples(f"{path}@test")


# ---------------------------------------------------------------- errors name the row and field


def test_bad_row_in_parquet_names_the_row_and_field(tmp_path):
    rows = [*EXPERT_ROWS[:2], {"prompt": "P", "completion": "", "answer": "1"}, EXPERT_ROWS[2]]
    path = _write(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError) as info:
        load_examples(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, "completion")
    assert str(info.value) == f"{path}:3: field 'completion': empty string"
    with pytest.warns(DataWarning, match=re.escape(f"{path}:3: field 'completion'")):
        kept = load_examples(path, on_error="skip_with_warning")
    assert [e.prompt for e in kept] == ["P1", "P2 ünicode", "P3"]


def test_bad_row_in_a_split_names_the_source_as_given(tmp_path):
    folder = tmp_path / "d"
    _write(folder / "train.parquet", ITEM_ROWS)
    _write(folder / "test.parquet", [ITEM_ROWS[0], {**ITEM_ROWS[1], "label": 5}])
    with pytest.raises(DataError, match=re.escape(f"{folder}@test:2: field 'label': 5 outside [-1, 1]")):
        load_localise_items(f"{folder}@test")


def test_csv_type_problems_name_the_row(tmp_path):
    path = _write(tmp_path / "n.csv", [{"prompt": "P", "completion": 5}, {"prompt": "P", "completion": 6}])
    with pytest.raises(DataError, match=re.escape(f"{path}:1: field 'completion': expected a string, got int")):
        load_examples(path)


# ---------------------------------------------------------------- field mapping


MATH_ROWS = [
    {"problem": "What is 1 + 1?", "solution": "1 + 1 = 2", "final": "2", "level": 1},
    {"problem": "What is 2 * 3?", "solution": "2 * 3 = 6", "final": "6", "level": 2},
]
MATH_FIELDS = {"prompt": "problem", "completion": "solution", "answer": "final"}


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_field_mapping(tmp_path, suffix):
    path = _jsonl(tmp_path / "m.jsonl", MATH_ROWS) if suffix == "jsonl" else _write(tmp_path / "m.parquet", MATH_ROWS)
    got = load_examples(path, fields=MATH_FIELDS)
    assert got == [Example(r["problem"], r["solution"], r["final"]) for r in MATH_ROWS]
    assert got[1].source == f"{path}:2"
    no_answer = load_examples(path, fields={"prompt": "problem", "completion": "solution"})
    assert [e.answer for e in no_answer] == [None, None]  # no "answer" column: unmapped names keep their own
    with pytest.raises(DataError) as info:
        load_examples(path, fields={**MATH_FIELDS, "completion": "worked_solution"})
    assert (info.value.line, info.value.field, info.value.message) == (1, "worked_solution", "missing")


def test_field_mapping_refuses_unknown_names(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", MATH_ROWS)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['solution'\]; valid: \['prompt', 'completion', 'answer'\]"):
        load_examples(path, fields={"prompt": "problem", "solution": "solution"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['completion'\]; valid: \['prompt', 'answer'\]"):
        load_prompts(path, fields={"completion": "solution"})
    with pytest.raises(ValueError, match=r"fields\['prompt'\]: expected a column name"):
        load_examples(path, fields={"prompt": ""})
    gsm = _jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    assert load_examples(gsm, fields={}) == load_examples(gsm)  # an empty mapping maps nothing
    assert load_examples(gsm)[0].answer == "24"


# ---------------------------------------------------------------- prompts


def test_load_prompts_reads_both_schemas(tmp_path):
    plain = _jsonl(tmp_path / "p.jsonl", [{"prompt": "P1"}, {"prompt": "P2", "answer": 12}, {"prompt": "P3", "answer": "B"}])
    assert load_prompts(plain) == [Prompt("P1"), Prompt("P2", "12"), Prompt("P3", "B")]
    gsm = _jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    got = load_prompts(gsm)
    assert got == [Prompt("Q1?", "24"), Prompt("Q2?", "1200")] and got[1].source == f"{gsm}:2"
    assert load_prompts(_write(tmp_path / "g.parquet", GSM8K_ROWS)) == got
    assert load_prompts(_jsonl(tmp_path / "q.jsonl", [{"question": "Q"}])) == [Prompt("Q")]
    assert load_prompts(gsm, limit=1) == got[:1]
    with pytest.raises(NoRecordsError, match="empty.jsonl: empty, no records"):
        load_prompts(_jsonl(tmp_path / "empty.jsonl", []))


def test_load_prompts_field_mapping_and_errors(tmp_path):
    path = _write(tmp_path / "m.parquet", MATH_ROWS)
    assert load_prompts(path, fields={"prompt": "problem", "answer": "final"}) == [
        Prompt("What is 1 + 1?", "2"), Prompt("What is 2 * 3?", "6")]
    with pytest.raises(DataError, match=re.escape(f"{path}:1: field '<record>': unknown format")):
        load_prompts(path)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": "Q", "answer": "#### 3"}, {"question": "Q", "answer": "x\n####"}])
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: field 'answer': '####' final line holds no answer")):
        load_prompts(bad)
    with pytest.raises(DataError, match=re.escape(f"{bad}:1: field 'text': missing")):
        load_prompts(bad, fields={"prompt": "text"})


# ---------------------------------------------------------------- local paths never reach the hub


@pytest.fixture
def hub(monkeypatch):
    """A fake `datasets.load_dataset` that records its calls and serves rows."""
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return iter(hub.rows)

    hub.rows = [{"question": "Q", "answer": "4 + 4 = 8\n#### 8"}]
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    hub.calls = calls
    return hub


@pytest.mark.parametrize("source", [
    "missing.jsonl", "missing.parquet", "data/missing.parquet", "./missing", "~/surely-missing-rairl-data",
    "/surely/missing", "a/b/c", "data/typo", "data/typo@test", "data/typo.parquet:test", "data\\typo",
])
def test_a_mistyped_local_path_never_reaches_the_hub(tmp_path, monkeypatch, hub, source):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # "data/typo": the first component exists here
    with pytest.raises(FileNotFoundError, match=re.escape(f"{source}: no such file or folder")):
        load_examples(source)
    with pytest.raises(FileNotFoundError):
        load_prompts(source)
    assert hub.calls == []


def test_a_colon_in_a_missing_local_path_hints_at_the_split_syntax(tmp_path, monkeypatch, hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape("PATH@SPLIT")):
        load_examples("data/x.parquet:test")


@pytest.mark.parametrize("source, call", [
    ("openai/gsm8k", ("openai/gsm8k", None, "train")),
    ("gsm8k", ("gsm8k", None, "train")),
    ("openai/gsm8k:main", ("openai/gsm8k", "main", "train")),
    ("openai/gsm8k@test", ("openai/gsm8k", None, "test")),
    ("openai/gsm8k:main@test", ("openai/gsm8k", "main", "test")),
])
def test_hub_names_pass_name_config_and_split(tmp_path, monkeypatch, hub, source, call):
    monkeypatch.chdir(tmp_path)
    got = load_examples(source)
    assert got == [Example("Q", "4 + 4 = 8\n#### 8", "8")] and got[0].source == f"{source}:1"
    assert [(p, n, kw["split"], kw["streaming"]) for p, n, kw in hub.calls] == [(*call, True)]


def test_hub_rows_are_validated_and_errors_say_where(tmp_path, monkeypatch, hub):
    monkeypatch.chdir(tmp_path)
    hub.rows = [{"question": "Q", "answer": "#### 1"}, {"question": "Q", "answer": "no marker"}]
    with pytest.raises(DataError, match=re.escape("owner/set@test:2: field 'answer': missing '#### <number>'")):
        load_examples("owner/set@test")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'owner/set' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(FileNotFoundError, match="owner/set: no such local file or folder, and the hub could not open it"):
        load_examples("owner/set")


def test_missing_datasets_names_the_extra(tmp_path, monkeypatch):
    path = _write(tmp_path / "e.parquet", EXPERT_ROWS)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match=re.escape("pip install 'rairl[trl]'")):
        load_examples(path)
    assert load_examples(_jsonl(tmp_path / "e.jsonl", EXPERT_ROWS))[0].prompt == "P1"  # JSONL needs no datasets


def test_every_loader_reads_through_the_one_entry_point(monkeypatch):
    seen = []

    def records(source):
        seen.append(source)
        return iter([(formats._At("fake", 1), row) for row in rows])

    monkeypatch.setattr(formats, "_records", records)
    for loader, rows in [(load_examples, EXPERT_ROWS), (load_prompts, GSM8K_ROWS),
                         (load_localise_items, ITEM_ROWS), (load_candidate_pools, POOL_ROWS)]:
        got = loader(loader.__name__)
        assert len(got) == len(rows) and got[0].source == "fake:1"
    assert seen == ["load_examples", "load_prompts", "load_localise_items", "load_candidate_pools"]
