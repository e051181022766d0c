"""Loaders and writers: hand-written files, every error path, and a GSM8K smoke test."""

import json
import logging
import random
import re
from pathlib import Path

import pytest

from rairl.data.formats import (
    load_candidate_pools,
    load_examples,
    load_expert_jsonl,
    load_gsm8k,
    load_localise_items,
    save_candidate_pools,
    save_localise_items,
    write_jsonl,
)
from rairl.data.perturb import perturb
from rairl.data.records import (
    CandidatePool,
    DataError,
    DataWarning,
    Example,
    LocaliseItem,
    NoRecordsError,
)
from rairl.data.steps import answers_match, extract_answer, normalise_number, split_steps

GSM8K_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"


def _write_lines(path: Path, lines: list) -> Path:
    """Write raw lines: dicts as JSON, strings verbatim."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def _expect_error(loader, path: Path, line: int, field: str, match: str = "") -> DataError:
    with pytest.raises(DataError) as info:
        loader(path)
    err = info.value
    assert str(path) in str(err) and f":{line}:" in str(err) and f"field '{field}'" in str(err)
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert re.search(match, str(err)), str(err)
    return err


GSM8K_ROWS = [
    {
        "question": "Q1?",
        "answer": "Sold 48/2 = <<48/2=24>>24.\nThen 48+24 = <<48+24=72>>72.\n#### 72",
    },
    {"question": "Q2?", "answer": "It costs 1,000 + 200 = $1,200.\n#### 1,200"},
]

# ---------------------------------------------------------------- GSM8K


def test_load_gsm8k(tmp_path):
    path = _write_lines(tmp_path / "train.jsonl", GSM8K_ROWS)
    ex = load_gsm8k(path)
    assert ex == [
        Example("Q1?", "Sold 48/2 = 24.\nThen 48+24 = 72.\n#### 72", "72"),
        Example("Q2?", "It costs 1,000 + 200 = $1,200.\n#### 1,200", "1200"),
    ]
    assert ex[1].source == f"{path}:2"
    raw = load_gsm8k(path, strip_annotations=False)
    assert raw[0].completion == GSM8K_ROWS[0]["answer"]
    assert load_gsm8k(path, limit=1) == ex[:1]
    assert load_gsm8k(path, limit=0) == []


def test_load_gsm8k_blank_lines_are_not_records_and_lines_stay_exact(tmp_path):
    path = _write_lines(
        tmp_path / "g.jsonl", ["", GSM8K_ROWS[0], "   ", {"question": "Q", "answer": "no marker"}]
    )
    _expect_error(load_gsm8k, path, 4, "answer", r"missing '#### <number>' final line")


@pytest.mark.parametrize(
    "row, field, match",
    [
        ({"question": "Q", "answer": "3 + 4 = 7"}, "answer", "missing '#### <number>'"),
        ({"question": "Q", "answer": "#### 7\nThen more text"}, "answer", "missing '####"),
        ({"question": "Q", "answer": "#### seven"}, "answer", "missing '####"),
        ({"question": "Q", "answer": ""}, "answer", "empty string"),
        ({"question": "Q", "answer": 7}, "answer", "expected a string, got int"),
        ({"question": "  ", "answer": "#### 7"}, "question", "empty string"),
        ({"question": None, "answer": "#### 7"}, "question", "expected a string, got null"),
        ({"answer": "#### 7"}, "question", "missing"),
        ({"question": "Q"}, "answer", "missing"),
    ],
)
def test_load_gsm8k_errors(tmp_path, row, field, match):
    path = _write_lines(tmp_path / "g.jsonl", [GSM8K_ROWS[0], GSM8K_ROWS[1], row])
    _expect_error(load_gsm8k, path, 3, field, match)


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"question": "Q", "answer": "#### 1"', "malformed JSON: Expecting"),
        ("not json", "malformed JSON"),
        ('["question", "answer"]', "expected a JSON object, got list"),
        ("42", "expected a JSON object, got int"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path, line, match):
    valid = {
        load_gsm8k: GSM8K_ROWS[0],
        load_expert_jsonl: {"prompt": "P", "completion": "C"},
        load_localise_items: {"id": "a", "problem": "P", "steps": ["s"], "label": -1},
        load_candidate_pools: {"question": "Q", "candidates": [{"solution": "s"}]},
    }
    for loader, row in valid.items():
        path = _write_lines(tmp_path / "bad.jsonl", [row, line, row])
        _expect_error(loader, path, 2, "<record>", match)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(GSM8K_ROWS[0]).encode() + b'\n{"question": "\xff"}\n')
    _expect_error(load_gsm8k, path, 2, "<record>", "not valid UTF-8")


def test_skip_with_warning_warns_each_bad_line_and_logs_the_count(tmp_path, caplog):
    path = _write_lines(
        tmp_path / "g.jsonl",
        [GSM8K_ROWS[0], "{broken", {"question": "Q", "answer": "x"}, GSM8K_ROWS[1]],
    )
    with caplog.at_level(logging.WARNING), pytest.warns(DataWarning) as record:
        ex = load_gsm8k(path, on_error="skip_with_warning")
    assert [e.answer for e in ex] == ["72", "1200"]
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert messages[0].startswith(f"{path}:2: field '<record>': malformed JSON")
    assert messages[1] == f"{path}:3: field 'answer': missing '#### <number>' final line"
    assert "skipped 2 invalid record(s)" in caplog.text


def test_bad_options_are_rejected(tmp_path):
    path = _write_lines(tmp_path / "g.jsonl", GSM8K_ROWS)
    with pytest.raises(ValueError, match="on_error"):
        load_gsm8k(path, on_error="ignore")
    with pytest.raises(ValueError, match="limit"):
        load_gsm8k(path, limit=-1)


# ---------------------------------------------------------------- expert JSONL and dispatch


def test_load_expert_jsonl(tmp_path):
    path = _write_lines(
        tmp_path / "e.jsonl",
        [
            {"prompt": "P1", "completion": "1 + 1 = 2\n#### 2", "answer": "2"},
            {"prompt": "P2", "completion": "C2", "answer": 72},
            {"prompt": "P3", "completion": "C3", "answer": None},
            {"prompt": "P4", "completion": "C4", "extra": [1]},
        ],
    )
    ex = load_expert_jsonl(path)
    assert [e.answer for e in ex] == ["2", "72", None, None]
    assert ex[0] == Example("P1", "1 + 1 = 2\n#### 2", "2", source="ignored in ==")
    assert ex[3].source == f"{path}:4"


@pytest.mark.parametrize(
    "row, field, match",
    [
        ({"prompt": "P", "completion": ""}, "completion", "empty string"),
        ({"prompt": "", "completion": "C"}, "prompt", "empty string"),
        ({"completion": "C"}, "prompt", "missing"),
        ({"prompt": "P", "completion": ["C"]}, "completion", "expected a string, got list"),
        ({"prompt": "P", "completion": "C", "answer": ""}, "answer", "empty string"),
        ({"prompt": "P", "completion": "C", "answer": True}, "answer", "got boolean"),
    ],
)
def test_load_expert_jsonl_errors(tmp_path, row, field, match):
    path = _write_lines(tmp_path / "e.jsonl", [{"prompt": "P", "completion": "C"}, row])
    _expect_error(load_expert_jsonl, path, 2, field, match)


def test_load_examples_dispatches_on_first_record(tmp_path):
    gsm = _write_lines(tmp_path / "g.jsonl", ["", *GSM8K_ROWS])
    assert load_examples(gsm) == load_gsm8k(gsm)
    expert = _write_lines(tmp_path / "e.jsonl", [{"prompt": "P", "completion": "C"}])
    assert load_examples(expert) == [Example("P", "C")]
    empty = _write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(NoRecordsError, match=f"^{re.escape(str(empty))}: empty, no records$"):
        load_examples(empty)
    unknown = _write_lines(tmp_path / "u.jsonl", [{"text": "T"}])
    _expect_error(load_examples, unknown, 1, "<record>", r"unknown format with keys \['text'\]")
    broken = _write_lines(tmp_path / "b.jsonl", ["", "{oops"])
    _expect_error(load_examples, broken, 2, "<record>", "malformed JSON")


# ---------------------------------------------------------------- localisation items

ITEMS = [
    LocaliseItem("a-0", "What is 3 + 4?", ["3 + 4 = 8", "#### 8"], 0),
    LocaliseItem("a-1", "What is 2 * 5?", ["2 * 5 = 10", "#### 10"], -1),
    LocaliseItem("a-2", "Problème ünicode", ["1 + 1 = 2", "2 + 2 = 5", "#### 5"], 1),
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_localise_items_round_trip(tmp_path, suffix):
    path = tmp_path / "sub" / f"items{suffix}"
    assert save_localise_items(path, ITEMS) == len(ITEMS)
    first = path.read_text(encoding="utf-8").lstrip()[0]
    assert first == ("[" if suffix == ".json" else "{")
    assert load_localise_items(path) == ITEMS
    assert not list(path.parent.glob("*.tmp"))


def test_localise_items_json_list_errors_name_the_item_line(tmp_path):
    rows = [
        {"id": it.id, "problem": it.problem, "steps": it.steps, "label": it.label} for it in ITEMS
    ]
    rows[2]["label"] = 3
    path = tmp_path / "items.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    text = path.read_text()
    line = (
        text[: text.index('"a-2"')].count("\n") + 1 - 1
    )  # the item's "{" is one line above its id
    _expect_error(load_localise_items, path, line, "label", r"3 outside \[-1, 2\] for 3 steps")


def test_localise_items_broken_json_list(tmp_path):
    path = tmp_path / "items.json"
    path.write_text(
        '[\n {"id": "a", "problem": "p", "steps": ["s"], "label": 0},\n {"id": \n]',
        encoding="utf-8",
    )
    _expect_error(load_localise_items, path, 4, "<record>", "malformed JSON")
    path.write_text(
        '[\n {"id": "a", "problem": "p", "steps": ["s"], "label": 0}\n {}]', encoding="utf-8"
    )
    _expect_error(load_localise_items, path, 3, "<record>", "expected ',' or ']'")
    path.write_text(
        '[{"id": "a", "problem": "p", "steps": ["s"], "label": 0}]\n[]', encoding="utf-8"
    )
    _expect_error(load_localise_items, path, 2, "<record>", "extra data")
    path.write_text("[ ]", encoding="utf-8")
    with pytest.raises(NoRecordsError, match="an empty JSON list, no records"):
        load_localise_items(path)


@pytest.mark.parametrize(
    "change, field, match",
    [
        ({"label": 2}, "label", r"2 outside \[-1, 1\]"),
        ({"label": -2}, "label", "outside"),
        ({"label": "0"}, "label", "expected an integer, got string"),
        ({"label": True}, "label", "expected an integer, got boolean"),
        ({"label": None}, "label", "expected an integer, got null"),
        ({"steps": "3 + 4 = 7"}, "steps", "expected a list, got string"),
        ({"steps": []}, "steps", "empty list"),
        ({"steps": ["3 + 4 = 7", " "]}, "steps[1]", "empty string"),
        ({"steps": ["3 + 4 = 7", 7]}, "steps[1]", "expected a string, got int"),
        ({"problem": ""}, "problem", "empty string"),
        ({"id": ""}, "id", "empty string"),
        ({"id": [1]}, "id", "expected a string, got list"),
    ],
)
def test_localise_items_errors(tmp_path, change, field, match):
    row = {"id": "x", "problem": "P", "steps": ["3 + 4 = 7", "#### 7"], "label": -1, **change}
    path = _write_lines(
        tmp_path / "items.jsonl", [{"id": "ok", "problem": "P", "steps": ["s"], "label": 0}, row]
    )
    _expect_error(load_localise_items, path, 2, field, match)


def test_localise_items_missing_field(tmp_path):
    for key in ("id", "problem", "steps", "label"):
        row = {"id": "x", "problem": "P", "steps": ["s"], "label": 0}
        del row[key]
        path = _write_lines(tmp_path / "items.jsonl", [row])
        _expect_error(load_localise_items, path, 1, key, "missing")


def test_localise_items_int_id_and_extra_keys(tmp_path):
    path = _write_lines(
        tmp_path / "pb.jsonl",
        [
            {
                "id": 7,
                "generator": "m",
                "problem": "P",
                "steps": ["a", "b"],
                "final_answer_correct": False,
                "label": 1,
            }
        ],
    )
    assert load_localise_items(path) == [LocaliseItem("7", "P", ["a", "b"], 1)]


def test_localise_item_validates_itself():
    with pytest.raises(ValueError, match="'label'"):
        LocaliseItem("x", "P", ["a"], 1)
    with pytest.raises(ValueError, match="'steps'"):
        LocaliseItem("x", "P", [], -1)


def test_perturbations_round_trip_as_localise_items(tmp_path):
    rng = random.Random()
    items = []
    for i in range(30):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        steps = [f"{a} + {b} = {a + b}", f"{a + b} * 2 = {2 * (a + b)}", f"#### {2 * (a + b)}"]
        p = perturb(steps, rng)
        items.append(LocaliseItem(str(i), f"What is ({a} + {b}) * 2?", p.steps, p.first_wrong))
    path = tmp_path / "perturbed.jsonl"
    save_localise_items(path, items)
    assert load_localise_items(path) == items


# ---------------------------------------------------------------- candidate pools


def test_candidate_pools_round_trip_and_computed_labels(tmp_path):
    path = _write_lines(
        tmp_path / "pools.jsonl",
        [
            {
                "question": "Q1",
                "answer": "1,200",
                "candidates": [
                    {"solution": "600 * 2 = 1200\n#### 1200"},
                    {"solution": "600 * 3 = 1800\n#### 1800"},
                    {"solution": "no final answer"},
                    {"solution": "#### 5", "is_correct": True},  # a given label wins
                ],
            },
            {
                "question": "Q2",
                "candidates": [{"solution": "#### 3"}, {"solution": "#### 4", "is_correct": False}],
            },
        ],
    )
    pools = load_candidate_pools(path)
    assert pools == [
        CandidatePool(
            "Q1",
            "1,200",
            [c["solution"] for c in json.loads(path.read_text().splitlines()[0])["candidates"]],
            [True, False, False, True],
        ),
        CandidatePool("Q2", None, ["#### 3", "#### 4"], [None, False]),
    ]
    assert pools[1].source == f"{path}:2"
    out = tmp_path / "out" / "pools.jsonl"
    assert save_candidate_pools(out, pools) == 2
    assert load_candidate_pools(out) == pools
    row = json.loads(out.read_text().splitlines()[1])
    assert row == {
        "question": "Q2",
        "candidates": [{"solution": "#### 3"}, {"solution": "#### 4", "is_correct": False}],
    }


@pytest.mark.parametrize(
    "change, field, match",
    [
        ({"candidates": []}, "candidates", "empty list"),
        ({"candidates": {"solution": "s"}}, "candidates", "expected a list, got object"),
        ({"candidates": ["#### 1"]}, "candidates[0]", "expected an object, got string"),
        (
            {"candidates": [{"solution": "a"}, {"solution": ""}]},
            "candidates[1].solution",
            "empty string",
        ),
        ({"candidates": [{"text": "a"}]}, "candidates[0].solution", "missing"),
        (
            {"candidates": [{"solution": "a", "is_correct": "yes"}]},
            "candidates[0].is_correct",
            "expected a boolean",
        ),
        (
            {"candidates": [{"solution": "a", "is_correct": 1}]},
            "candidates[0].is_correct",
            "expected a boolean",
        ),
        ({"question": ""}, "question", "empty string"),
        ({"answer": ["1"]}, "answer", "expected a string, got list"),
    ],
)
def test_candidate_pool_errors(tmp_path, change, field, match):
    row = {"question": "Q", "answer": "1", "candidates": [{"solution": "#### 1"}], **change}
    path = _write_lines(
        tmp_path / "pools.jsonl", [{"question": "Q", "candidates": [{"solution": "s"}]}, row]
    )
    _expect_error(load_candidate_pools, path, 2, field, match)


def test_candidate_pool_validates_lengths():
    with pytest.raises(ValueError, match="is_correct"):
        CandidatePool("Q", None, ["a", "b"], [None])


def test_write_jsonl(tmp_path):
    path = tmp_path / "a" / "b" / "rows.jsonl"
    assert write_jsonl(path, ({"i": i, "s": "é"} for i in range(3))) == 3
    assert [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] == [
        {"i": i, "s": "é"} for i in range(3)
    ]
    assert write_jsonl(path, []) == 0 and path.read_text() == ""


# ---------------------------------------------------------------- the real GSM8K


@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}")
def test_real_gsm8k_first_50_lines():
    examples = load_gsm8k(GSM8K_TRAIN, limit=50)
    assert len(examples) == 50
    assert examples[0].source == f"{GSM8K_TRAIN}:1"
    rng = random.Random()
    for ex in examples:
        assert normalise_number(ex.answer) is not None, ex.source
        assert answers_match(extract_answer(ex.completion), ex.answer), ex.source
        assert "<<" not in ex.completion, ex.source
        steps = split_steps(ex.completion)
        assert steps[-1].startswith("####"), ex.source
        p = perturb(steps, rng)
        assert p.steps[: p.first_wrong] == steps[: p.first_wrong], ex.source
        assert p.steps[p.first_wrong] != steps[p.first_wrong], ex.source
    assert load_examples(GSM8K_TRAIN, limit=50) == examples
