"""Step splitting, answer extraction and answer comparison."""

import math
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rairl.data.steps import (
    answers_match,
    extract_answer,
    first_wrong_step,
    join_steps,
    normalise_number,
    split_steps,
    strip_calculator_annotations,
)

# ---------------------------------------------------------------- split / join


def test_split_steps_strips_and_drops_blank_lines():
    text = "  12 + 5 = 17 \n\n\t17 * 2 = 34\r\n   \n#### 34\n"
    assert split_steps(text) == ["12 + 5 = 17", "17 * 2 = 34", "#### 34"]


def test_split_steps_empty_text():
    assert split_steps("") == []
    assert split_steps(" \n \n") == []


def test_split_steps_string_separator():
    assert split_steps("a = 1 || b = 2 ||  || c", sep="||") == ["a = 1", "b = 2", "c"]


def test_split_steps_regex_separator():
    text = "Step 1: add.\n\nStep 2: multiply.\n\n\n#### 4"
    assert split_steps(text, sep=re.compile(r"\n\s*\n")) == [
        "Step 1: add.",
        "Step 2: multiply.",
        "#### 4",
    ]


def test_split_steps_regex_with_groups_drops_the_separator_text():
    assert split_steps("a;b,c", sep=re.compile(r"([;,])")) == ["a", "b", "c"]
    assert split_steps("a;b,c", sep=re.compile(r"(;)|(,)")) == ["a", "b", "c"]


def test_split_steps_rejects_empty_separator():
    with pytest.raises(ValueError, match="sep"):
        split_steps("abc", sep="")


_step_text = (
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs",),
            blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
        ),
        min_size=1,
    )
    .map(str.strip)
    .filter(bool)
)


@given(st.lists(_step_text, max_size=8))
def test_split_join_round_trip(steps):
    assert split_steps(join_steps(steps)) == steps


@given(st.lists(_step_text.filter(lambda s: "||" not in s), max_size=8))
def test_split_join_round_trip_custom_separator(steps):
    assert split_steps(join_steps(steps, sep=" || "), sep="||") == steps


# ---------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("#### 1,200", "1200"),
        ("#### -3", "-3"),
        ("####42", "42"),
        ("#### $18.50", "18.50"),
        ("#### 3/4", "3/4"),
        ("#### five", "five"),
        ("Then 2 * 3 = 6.\nThe answer is 6.", "6"),
        ("The final answer is: $1,000", "1000"),
        ("answer: 12", "12"),
        ("Final Answer: 0.5", "0.5"),
        ("so \\boxed{17} apples", "17"),
        ("The answer is 3. No wait, the answer is 4.", "4"),
        ("The answer is 9\n#### 8", "8"),  # the GSM8K marker wins
        ("#### 5\n#### 6", "6"),
        ("3 + 4 = 7 apples", None),
        ("", None),
        ("#### \nanswer: 3", "3"),  # an empty marker is no answer
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_last_number_fallback_is_opt_in():
    text = "She has 3 + 4 = 7 apples, then 7 * 2 = 14 pears."
    assert extract_answer(text) is None
    assert extract_answer(text, fallback_last_number=True) == "14"
    assert extract_answer("no numbers here", fallback_last_number=True) is None


def test_extract_answer_fallback_does_not_read_a_minus_as_a_sign():
    assert extract_answer("12-5=7", fallback_last_number=True) == "7"
    assert extract_answer("then 10-3", fallback_last_number=True) == "3"


# ---------------------------------------------------------------- normalise / compare


@pytest.mark.parametrize(
    "text, expected",
    [
        ("72", 72.0),
        (" 7 ", 7.0),
        ("1,234", 1234.0),
        ("1,234,567.5", 1234567.5),
        ("$5", 5.0),
        ("$1,000.", 1000.0),
        ("50%", 50.0),
        ("12.", 12.0),
        ("3/4", 0.75),
        ("-3/4", -0.75),
        ("-3", -3.0),
        ("\u22123", -3.0),
        ("+2", 2.0),
        (".5", 0.5),
        ("-$4", -4.0),
        ("1/0", None),
        ("abc", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        ("1e5", None),
        ("3 apples", None),
        ("1/2/3", None),
    ],
)
def test_normalise_number(text, expected):
    assert normalise_number(text) == expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("72", "72", True),
        ("72", "72.0", True),
        ("1,200", "1200", True),
        ("$18", "18", True),
        ("3/4", "0.75", True),
        ("50%", "50", True),
        ("5", "6", False),
        ("-5", "5", False),
        ("0", "0.0", True),
        ("1000000", "1000001", False),  # whole numbers compare exactly
        ("0.3333333", "1/3", True),  # decimals within the default relative 1e-6
        ("Bob", "bob.", True),
        ("Bob  Smith", "bob smith", True),
        ("Bob", "Alice", False),
        ("7", "seven", False),
        (None, "1", False),
        ("1", None, False),
        (None, None, False),
    ],
)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_answers_match_tolerance():
    assert answers_match("0.1", "0.10000001", rel_tol=1e-6)
    assert not answers_match("0.1", "0.10000001", rel_tol=1e-9)
    assert not answers_match("0.33", "1/3")


@given(st.integers(min_value=0, max_value=10**12))
def test_answers_match_number_written_with_commas(n):
    assert answers_match(f"{n:,}", str(n))
    assert answers_match(f"${n:,}.", f"{n}.0")
    assert not answers_match(str(n), str(n + 1))


@given(st.integers(-(10**6), 10**6), st.integers(1, 10**4))
def test_normalise_fraction(a, b):
    assert math.isclose(normalise_number(f"{a}/{b}"), a / b)


def test_strip_calculator_annotations():
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips.\nShe earned $<<12/60=0.2>>0.2 a minute."
    assert strip_calculator_annotations(text) == (
        "Natalia sold 48/2 = 24 clips.\nShe earned $0.2 a minute."
    )
    assert strip_calculator_annotations("no annotations") == "no annotations"


def test_extract_answer_on_random_traces():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for _ in range(200):
        value = rng.randint(0, 10**7)
        lines = [f"{rng.randint(0, 99)} + {rng.randint(0, 99)} = {rng.randint(0, 200)}"] * 3
        text = join_steps([*lines, f"#### {value:,}" if rng.random() < 0.5 else f"#### {value}"])
        assert extract_answer(text) == str(value), f"seed={seed}"
        assert answers_match(extract_answer(text), f"{value}.0"), f"seed={seed}"


@pytest.mark.parametrize(("steps", "first"), [
    (["1 + 2 = 3", "3 * 2 = 6", "#### 6"], None),  # the solution itself
    (["1 + 2 = 3"], None),                          # cut short: no wrong step to find
    ([], None),
    (["1 + 2 = 4", "4 * 2 = 8", "#### 8"], 0),
    (["1 + 2 = 3", "3 * 2 = 7", "#### 6"], 1),      # a later step that happens to match still counts from 1
    (["1 + 2 = 3", "3 * 2 = 6", "#### 6", "#### 6"], 3),  # a step past the end is wrong
])
def test_first_wrong_step_against_the_unique_solution(steps, first):
    assert first_wrong_step(steps, ["1 + 2 = 3", "3 * 2 = 6", "#### 6"]) == first
