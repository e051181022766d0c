"""Every file loader of `rairl.data` on junk: random bytes, truncated JSON, wrong types, huge numbers,
deep nesting, as JSONL or one JSON list. The only outcomes allowed are records of the promised types,
or a one-line ValueError / FileNotFoundError naming the file; never another exception, never a hang."""

from __future__ import annotations

import json
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rairl.data import (
    CandidatePool,
    Example,
    LocaliseItem,
    Prompt,
    load_candidate_pools,
    load_examples,
    load_gsm8k,
    load_localise_items,
    load_prompts,
    load_traces,
)
from rairl.data.formats import load_expert_jsonl

FIELDS = ["prompt", "completion", "answer", "question", "id", "problem", "steps", "label", "candidates", "solution",
          "is_correct"]
# Raw JSON texts json.dumps never writes: over Python's int digit limit, overflowing floats, deep nesting.
ODD_JSON = ["1" * 5000, "-" + "9" * 4301, "1e999", "-1e999", "NaN", "Infinity", "-0", "[" * 3000 + "]" * 3000,
            '{"a":' * 2000 + "1" + "}" * 2000, '"\\ud800"', '"\\u0000"', "#### 7", '"#### 1e999"', '"#### ' + "9" * 400 + '"']

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30) | st.sampled_from(
    ["#### 7", "3 + 4 = 7\n#### 7", "B", "(C)", "#### 1,200", "", " ", "12-5", "\\boxed{3}"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=5), max_leaves=12)
_records = st.dictionaries(st.sampled_from(FIELDS), _values, max_size=6)


@st.composite
def _record_texts(draw) -> str:
    """One record's JSON text: a (possibly ill-typed) object, any JSON value, an odd raw text, or a cut one."""
    kind = draw(st.sampled_from(["record", "value", "odd", "cut"]))
    if kind == "odd":
        return draw(st.sampled_from(ODD_JSON))
    text = json.dumps(draw(_records if kind in ("record", "cut") else _values), ensure_ascii=draw(st.booleans()))
    if kind == "cut":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    return text


@st.composite
def _files(draw) -> tuple[str, bytes]:
    """(suffix, content): random bytes, or records as JSONL lines or one JSON list, maybe truncated or with junk around."""
    form = draw(st.sampled_from(["bytes", "jsonl", "list"]))
    if form == "bytes":
        return draw(st.sampled_from([".jsonl", ".json"])), draw(st.binary(max_size=300))
    texts = draw(st.lists(_record_texts(), max_size=5))
    blank = draw(st.sampled_from(["", "\n", "  \n", "\r\n", "\ufeff"]))
    if form == "jsonl":
        content = blank + "\n".join(texts) + draw(st.sampled_from(["", "\n", "\n\n"]))
    else:
        content = blank + "[" + draw(st.sampled_from([",", ", ", ",\n"])).join(texts) + draw(st.sampled_from(["]", "", "]x", "],"]))
    raw = content.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return draw(st.sampled_from([".jsonl", ".json"])), raw


def _opt(value) -> bool:
    return value is None or isinstance(value, str) and bool(value.strip())


def _check_example(e) -> None:
    assert isinstance(e, Example) and isinstance(e.prompt, str) and e.prompt.strip()
    assert isinstance(e.completion, str) and e.completion.strip() and _opt(e.answer)


def _check_prompt(p) -> None:
    assert isinstance(p, Prompt) and isinstance(p.prompt, str) and p.prompt.strip() and _opt(p.answer)


def _check_item(it) -> None:
    assert isinstance(it, LocaliseItem) and isinstance(it.id, str) and isinstance(it.problem, str)
    assert it.steps and all(isinstance(s, str) and s.strip() for s in it.steps)
    assert type(it.label) is int and -1 <= it.label < len(it.steps)


def _check_pool(p) -> None:
    assert isinstance(p, CandidatePool) and isinstance(p.question, str) and _opt(p.answer)
    assert p.solutions and all(isinstance(s, str) and s.strip() for s in p.solutions)
    assert len(p.is_correct) == len(p.solutions) and all(c is None or type(c) is bool for c in p.is_correct)


def _traces(path, on_error):
    kind, records = load_traces(path, on_error=on_error)
    assert kind in ("items", "examples")
    return records


LOADERS = {  # loader(path, on_error) -> records, and the check of one record
    "load_examples": (lambda p, e: load_examples(p, on_error=e), _check_example),
    "load_gsm8k": (lambda p, e: load_gsm8k(p, on_error=e), _check_example),
    "load_expert_jsonl": (lambda p, e: load_expert_jsonl(p, on_error=e), _check_example),
    "load_prompts": (lambda p, e: load_prompts(p, on_error=e), _check_prompt),
    "load_localise_items": (lambda p, e: load_localise_items(p, on_error=e), _check_item),
    "load_candidate_pools": (lambda p, e: load_candidate_pools(p, on_error=e), _check_pool),
    "load_traces": (_traces, lambda r: (_check_item if isinstance(r, LocaliseItem) else _check_example)(r)),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_returns_typed_records_or_one_line_naming_the_file(name):
    load, check = LOADERS[name]
    folder = Path(tempfile.mkdtemp(prefix="rairl-fuzz-"))

    @settings(max_examples=120, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
    @given(file=_files(), on_error=st.sampled_from(["raise", "skip_with_warning"]))
    def run(file, on_error):
        suffix, raw = file
        path = folder / f"data{suffix}"
        path.write_bytes(raw)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                records = load(path, on_error)
        except (ValueError, FileNotFoundError) as e:
            message = str(e)
            assert message.startswith(f"{path}:") and "\n" not in message, message
            return
        assert isinstance(records, list)
        for record in records:
            check(record)
            assert record.source.startswith(f"{path}:")

    run()
