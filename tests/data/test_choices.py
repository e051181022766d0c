"""Multiple-choice answers (MMLU-Pro's option letters A-J): extraction and matching."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rairl.data.formats import load_candidate_pools
from rairl.data.steps import CHOICE_LETTERS, answer_kind, answers_match, extract_answer

# ---------------------------------------------------------------- extract_answer(kind="choice")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        (" b ", "B"),  # a lone letter may be lower case
        ("[J]", "J"),
        ("The answer is (B)", "B"),
        ("the answer is C.", "C"),
        ("answer: D", "D"),
        ("**Answer:** (E)", "E"),
        ("Let's think.\nSo the answer is (A).\nWait, no: the answer is (F).", "F"),  # last wins
        ("so \\boxed{G}", "G"),
        ("Options look close.\n#### H", "H"),
        ("#### I\nThe answer is (A)", "I"),  # the GSM8K marker wins
        ("The answer is a prime number", None),  # lower case in a phrase is a word, not A
        ("The answer is Bob", None),
        ("The answer is (K)", None),  # past J
        ("K", None),
        ("AB", None),
        ("3 + 4 = 7", None),
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_answer(text, kind="choice") == expected


def test_extract_answer_default_kind_is_unchanged():
    assert extract_answer("The answer is (B)") is None
    assert extract_answer("#### 1,200") == "1200"
    assert extract_answer("#### B") == "B"  # a marker without a number: its text, as before
    with pytest.raises(ValueError, match="kind must be 'number' or 'choice'"):
        extract_answer("B", kind="letter")


@pytest.mark.parametrize(
    "gold, kind",
    [("B", "choice"), ("(c)", "choice"), ("J.", "choice"), ("K", "number"), ("72", "number"),
     ("Bob", "number"), ("AB", "number"), (None, "number")],
)
def test_answer_kind(gold, kind):
    assert answer_kind(gold) == kind


# ---------------------------------------------------------------- answers_match


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("B", "B", True),
        ("(B)", "B", True),
        ("B.", "B", True),
        ("b", "B", True),
        ("The answer is (B)", "B", True),
        ("answer: B", "B", True),
        ("B", "(B)", True),
        ("C", "B", False),
        ("The answer is (C)", "B", False),
        ("Bob", "B", False),
        ("2", "B", False),  # no options: a number is not a letter
        (None, "B", False),
        ("B", None, False),
    ],
)
def test_answers_match_letters(pred, gold, expected):
    assert answers_match(pred, gold) is expected


OPTIONS = ["Paris", "Lyon", "1/2", "Marseille"]


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("Lyon", "B", True),  # option text against a gold letter
        ("lyon.", "B", True),
        ("0.5", "C", True),  # option text compared as a number
        ("B", "Lyon", True),  # a letter against a gold option text
        ("The answer is (B)", "Lyon", True),
        ("Paris", "Lyon", False),
        ("A", "B", False),
        ("Paris", "B", False),
        ("Nice", "B", False),  # not an option
        ("E", "E", True),  # a letter past the options still equals itself
        ("Nice", "Nice", True),  # neither is an option: compared as before
    ],
)
def test_answers_match_with_options(pred, gold, expected):
    assert answers_match(pred, gold, options=OPTIONS) is expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [("72", "72.0", True), ("1,200", "1200", True), ("5", "6", False), ("Bob", "bob.", True),
     ("0.3333333", "1/3", True), ("1000000", "1000001", False)],
)
def test_numeric_answers_unchanged_with_and_without_options(pred, gold, expected):
    assert answers_match(pred, gold) is expected
    assert answers_match(pred, gold, options=["1", "2"]) is expected


LONE_FORMS = ["{}", "({})", "{}.", "{})", "[{}]"]
PHRASE_FORMS = ["The answer is ({}).", "the answer is {}", "Answer: {}", "#### {}", "\\boxed{{{}}}"]


@given(st.sampled_from(CHOICE_LETTERS), st.sampled_from(CHOICE_LETTERS), st.sampled_from(LONE_FORMS + PHRASE_FORMS))
def test_every_letter_in_every_form(letter, other, form):
    answer = form.format(letter)
    assert extract_answer(answer, kind="choice") == letter
    if form in PHRASE_FORMS:  # a phrase is found inside a completion too; a lone letter only alone
        assert extract_answer(f"Step one: 3 + 4 = 7.\n{answer}\n", kind="choice") == letter
    assert answers_match(answer, letter)
    assert answers_match(answer, other) is (letter == other)


def test_a_lone_letter_inside_a_completion_is_not_an_answer():
    assert extract_answer("Option A is wrong.\nB\n", kind="choice") is None


# ---------------------------------------------------------------- candidate pools with letter answers


def test_candidate_pool_labels_letter_answers(tmp_path):
    path = tmp_path / "pools.jsonl"
    row = {"question": "Q?", "answer": "B", "candidates": [
        {"solution": "Because ... the answer is (B)."},
        {"solution": "Because ... the answer is (D)."},
        {"solution": "No letter at all."},
    ]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert load_candidate_pools(path)[0].is_correct == [True, False, False]
