"""Step-segment packer: C++ vs NumPy twin vs Python reference, invariants, edge cases, errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rairl.kernels.segments import (
    PackedBatch,
    StepRule,
    flatten_sequences,
    pack_segments,
    pack_segments_flat,
    pack_segments_numpy,
    pack_segments_reference,
    split_actions,
    unpack_tokens,
)

from rairl import _segments

BOUNDARY = 3
IMPLS = {"cpp": pack_segments_flat, "numpy": pack_segments_numpy,
         "reference": pack_segments_reference}
RULES = [
    StepRule("boundary", (BOUNDARY,)),
    StepRule("boundary", (BOUNDARY, 5)),
    StepRule("interval", interval=1),
    StepRule("interval", interval=4),
    StepRule("token"),
    StepRule("whole"),
]
DTYPES = {  # PackedBatch array fields
    "input_ids": np.int64, "cu_seqlens": np.int32, "position_ids": np.int64,
    "seq_id": np.int32, "action_id": np.int32, "action_start": np.int64,
    "action_end": np.int64, "action_seq": np.int32, "cu_actions": np.int32,
}


def assert_same(got: PackedBatch, want: PackedBatch, msg: str = "") -> None:
    assert got.max_seqlen == want.max_seqlen and isinstance(got.max_seqlen, int), msg
    assert {f.name for f in fields(PackedBatch)} == {*DTYPES, "max_seqlen"}
    for name, dtype in DTYPES.items():
        x, y = getattr(got, name), getattr(want, name)
        assert x.dtype == y.dtype == dtype, f"{name}: {x.dtype} vs {y.dtype} {msg}"
        np.testing.assert_array_equal(x, y, err_msg=f"{name} {msg}")


def check_invariants(p: PackedBatch, prompt_lens: np.ndarray, rule: StepRule) -> None:
    """Properties of a correct packing, independent of the reference."""
    lengths = np.diff(p.cu_seqlens)
    assert p.max_seqlen == (lengths.max() if len(lengths) else 0)
    for b in range(p.num_seqs):
        s, e = p.cu_seqlens[b], p.cu_seqlens[b + 1]
        np.testing.assert_array_equal(p.position_ids[s:e], np.arange(e - s))
        assert (p.seq_id[s:e] == b).all()
        assert (p.action_id[s:s + prompt_lens[b]] == -1).all()
        acts = range(p.cu_actions[b], p.cu_actions[b + 1])
        assert (p.action_seq[acts.start:acts.stop] == b).all()
        covered = [t for a in acts for t in range(p.action_start[a], p.action_end[a] + 1)]
        assert covered == list(range(s + prompt_lens[b], e))  # actions tile the completion
    for a in range(p.num_actions):
        s, e = p.action_start[a], p.action_end[a]
        assert s <= e and (p.action_id[s:e + 1] == a).all()
        ids = p.input_ids[s:e + 1]
        seq_end = p.cu_seqlens[p.action_seq[a] + 1] - 1
        if rule.kind == "boundary":
            assert not np.isin(ids[:-1], rule.boundary_ids).any()
            assert np.isin(ids[-1], rule.boundary_ids) or e == seq_end
        elif rule.kind == "interval":
            assert len(ids) == rule.interval or (len(ids) < rule.interval and e == seq_end)
        elif rule.kind == "token":
            assert s == e
        else:
            assert e == seq_end


def pack_all(sequences, prompt_lens, rule) -> PackedBatch:
    """Packs with all three implementations, asserts they agree, returns the C++ result."""
    flat, offsets = flatten_sequences(sequences)
    got = pack_segments(sequences, prompt_lens, rule)
    for name in ("numpy", "reference"):
        assert_same(got, IMPLS[name](flat, offsets, prompt_lens, rule), f"cpp vs {name} {rule}")
    check_invariants(got, np.asarray(prompt_lens), rule)
    return got


def random_batch(rng: np.random.Generator, n_seqs: int, max_len: int, vocab: int):
    lengths = rng.integers(0, max_len + 1, n_seqs)
    prompt_lens = rng.integers(0, lengths + 1)
    return [rng.integers(0, vocab, n) for n in lengths], prompt_lens


# ---------------------------------------------------------------- agreement


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh each run
    print(f"seed={seed}")  # pytest shows it on failure
    return np.random.default_rng(seed)


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_random_batches_agree(rule: StepRule, rng: np.random.Generator) -> None:
    for n_seqs, max_len, vocab in [(1, 5, 6), (7, 12, 6), (50, 40, 8), (200, 300, 40)]:
        pack_all(*random_batch(rng, n_seqs, max_len, vocab), rule)


rules = st.one_of(
    st.builds(StepRule, st.just("boundary"),
              st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple)),
    st.builds(StepRule, st.just("interval"), interval=st.integers(1, 6)),
    st.sampled_from([StepRule("token"), StepRule("whole")]),
)


@st.composite
def batches(draw):
    sequences = draw(st.lists(st.lists(st.integers(0, 6), max_size=25), max_size=8))
    prompt_lens = [draw(st.integers(0, len(s))) for s in sequences]
    return sequences, prompt_lens


@settings(max_examples=300, deadline=None)
@given(batches(), rules)
def test_property_agree(batch, rule: StepRule) -> None:
    pack_all(*batch, rule)


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_long_sequence(rule: StepRule, rng: np.random.Generator) -> None:
    seq = rng.integers(4, 1000, 100_000)
    seq[rng.random(seq.size) < 0.01] = BOUNDARY
    got = pack_all([seq, seq[:7]], [1234, 0], rule)
    assert got.max_seqlen == 100_000


def test_inputs_numpy_torch_lists_agree() -> None:
    seqs = [[1, 3, 2, 3, 4], [0, 0], [3]]
    rule = StepRule("boundary", (3,))
    want = pack_segments(seqs, [1, 2, 0], rule)
    assert_same(pack_segments([torch.tensor(s) for s in seqs], torch.tensor([1, 2, 0]), rule), want)
    assert_same(pack_segments([np.array(s, np.int32) for s in seqs], np.array([1, 2, 0]), rule),
                want)
    assert_same(pack_segments_flat(torch.tensor(sum(seqs, [])), torch.tensor([0, 5, 7, 8]),
                                   [1, 2, 0], rule), want)


def test_threads_share_the_packer(rng: np.random.Generator) -> None:
    # The GIL is released during the work: concurrent calls must not interfere.
    batch = random_batch(rng, 300, 400, 8)
    want = pack_segments(*batch, RULES[0])
    with ThreadPoolExecutor(2) as pool:
        for got in pool.map(lambda _: pack_segments(*batch, RULES[0]), range(4)):
            assert_same(got, want)


# ---------------------------------------------------------------- exact edge cases

# (sequences, prompt_lens, rule, action_id, [(start, end)...], cu_actions)
EDGE_CASES = {
    "empty_batch": ([], [], StepRule("whole"), [], [], [0]),
    "empty_completion": ([[1, 2, 3]], [3], StepRule("token"), [-1, -1, -1], [], [0, 0]),
    "empty_sequence": ([[], [4]], [0, 0], StepRule("whole"), [0], [(0, 0)], [0, 0, 1]),
    "prompt_only_in_middle": ([[1, 3], [2, 3], [4]], [0, 2, 0], StepRule("boundary", (3,)),
                              [0, 0, -1, -1, 1], [(0, 1), (4, 4)], [0, 1, 1, 2]),
    "one_token_boundary": ([[3]], [0], StepRule("boundary", (3,)), [0], [(0, 0)], [0, 1]),
    "one_token_plain": ([[4]], [0], StepRule("boundary", (3,)), [0], [(0, 0)], [0, 1]),
    "one_token_prompt": ([[4]], [1], StepRule("boundary", (3,)), [-1], [], [0, 0]),
    "boundary_at_last_token": ([[9, 1, 3]], [1], StepRule("boundary", (3,)),
                               [-1, 0, 0], [(1, 2)], [0, 1]),
    "consecutive_boundaries": ([[1, 3, 3, 3, 2]], [0], StepRule("boundary", (3,)),
                               [0, 0, 1, 2, 3], [(0, 1), (2, 2), (3, 3), (4, 4)], [0, 4]),
    "no_boundary": ([[1, 2, 4, 5]], [1], StepRule("boundary", (3,)),
                    [-1, 0, 0, 0], [(1, 3)], [0, 1]),
    "boundary_in_prompt_ignored": ([[3, 3, 1, 2]], [2], StepRule("boundary", (3,)),
                                   [-1, -1, 0, 0], [(2, 3)], [0, 1]),
    "two_boundary_ids": ([[1, 3, 2, 5, 6]], [0], StepRule("boundary", (3, 5)),
                         [0, 0, 1, 1, 2], [(0, 1), (2, 3), (4, 4)], [0, 3]),
    "interval": ([[0, 1, 2, 3, 4, 5, 6]], [2], StepRule("interval", interval=2),
                 [-1, -1, 0, 0, 1, 1, 2], [(2, 3), (4, 5), (6, 6)], [0, 3]),
    "token": ([[7, 8, 9], [5, 6]], [1, 0], StepRule("token"),
              [-1, 0, 1, 2, 3], [(1, 1), (2, 2), (3, 3), (4, 4)], [0, 2, 4]),
    "whole": ([[7, 8, 9], [5, 6]], [1, 0], StepRule("whole"),
              [-1, 0, 0, 1, 1], [(1, 2), (3, 4)], [0, 1, 2]),
}


@pytest.mark.parametrize("case", EDGE_CASES, ids=str)
def test_edge_cases(case: str) -> None:
    sequences, prompt_lens, rule, action_id, spans, cu_actions = EDGE_CASES[case]
    p = pack_all(sequences, prompt_lens, rule)
    np.testing.assert_array_equal(p.action_id, action_id)
    assert list(zip(p.action_start.tolist(), p.action_end.tolist(), strict=True)) == spans
    np.testing.assert_array_equal(p.cu_actions, cu_actions)
    np.testing.assert_array_equal(p.cu_seqlens, np.cumsum([0] + [len(s) for s in sequences]))


def test_huge_boundary_id_uses_sorted_lookup() -> None:
    big = 2**40  # past the C++ byte table: takes the binary-search path
    p = pack_all([[1, big, 2, 5, 3]], [0], StepRule("boundary", (big, 3)))
    np.testing.assert_array_equal(p.action_end, [1, 4])


# ---------------------------------------------------------------- errors

GOOD = dict(flat_ids=[1, 2, 3, 4], offsets=[0, 3, 4], prompt_lens=[1, 0])
BAD_INPUTS = [
    ("flat_ids", dict(flat_ids=[1, -2, 3, 4])),
    ("flat_ids", dict(flat_ids=[1.0, 2.0, 3.0, 4.0])),
    ("flat_ids", dict(flat_ids=[[1, 2], [3, 4]])),
    ("prompt_lens", dict(prompt_lens=[4, 0])),
    ("prompt_lens", dict(prompt_lens=[-1, 0])),
    ("prompt_lens", dict(prompt_lens=[1])),
    ("offsets", dict(offsets=[0, 3, 5])),
    ("offsets", dict(offsets=[1, 3, 4])),
    ("offsets", dict(offsets=[0, 4, 3, 4], prompt_lens=[0, 0, 0])),
    ("offsets", dict(offsets=[], prompt_lens=[])),
    ("offsets", dict(offsets=[0, 2**63 - 1, -2, 4], prompt_lens=[0, 0, 0])),  # wraps to sum 4
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name,bad", BAD_INPUTS, ids=lambda x: str(x)[:40])
def test_invalid_inputs_name_the_argument(impl: str, name: str, bad: dict) -> None:
    with pytest.raises(ValueError, match=name):
        IMPLS[impl](**{**GOOD, **bad}, rule=StepRule("whole"))


def test_invalid_sequences_name_the_index() -> None:
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pack_segments([[1, 2], [[3]]], [0, 0], StepRule("whole"))
    with pytest.raises(ValueError, match=r"sequences\[0\]"):
        pack_segments([[0.5]], [0], StepRule("whole"))


@pytest.mark.parametrize("kwargs,field", [
    (dict(kind="step"), "StepRule.kind"),
    (dict(kind="boundary"), "StepRule.boundary_ids"),
    (dict(kind="boundary", boundary_ids=(3, -1)), "StepRule.boundary_ids"),
    (dict(kind="boundary", boundary_ids=(1.5,)), "StepRule.boundary_ids"),
    (dict(kind="whole", boundary_ids=(3,)), "StepRule.boundary_ids"),
    (dict(kind="interval"), "StepRule.interval"),
    (dict(kind="interval", interval=-2), "StepRule.interval"),
    (dict(kind="token", interval=4), "StepRule.interval"),
])
def test_invalid_rule_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        StepRule(**kwargs)


def test_rule_must_be_a_steprule() -> None:
    with pytest.raises(TypeError, match="rule"):
        pack_segments([[1]], [0], "boundary")


@pytest.mark.parametrize("name,kwargs", [
    ("kind", dict(kind="step")),
    ("interval", dict(kind="interval", interval=0)),
    ("boundary_ids", dict(kind="boundary", boundary_ids=np.array([-3]))),
    ("boundary_ids", dict(kind="boundary", boundary_ids=np.zeros(0, np.int64))),
    ("flat_ids", dict(flat_ids=np.array([1, 2], np.int32))),
    ("offsets", dict(offsets=np.zeros((1, 3), np.int64))),
])
def test_extension_checks_its_arguments(name: str, kwargs: dict) -> None:
    args = dict(flat_ids=np.array([1, 2], np.int64), offsets=np.array([0, 2], np.int64),
                prompt_lens=np.array([1], np.int64), kind="whole",
                boundary_ids=np.zeros(0, np.int64), interval=0)
    with pytest.raises(ValueError, match=name):
        _segments.pack(**{**args, **kwargs})


# ---------------------------------------------------------------- inverse helpers


def test_unpack_tokens_round_trip_numpy(rng: np.random.Generator) -> None:
    sequences, prompt_lens = random_batch(rng, 20, 30, 50)
    p = pack_segments(sequences, prompt_lens, RULES[0])
    padded = unpack_tokens(p.input_ids, p, pad_value=-7)
    assert padded.shape == (20, p.max_seqlen) and padded.dtype == np.int64
    for b, seq in enumerate(sequences):
        np.testing.assert_array_equal(padded[b, :len(seq)], seq)
        assert (padded[b, len(seq):] == -7).all()
    np.testing.assert_array_equal(padded[p.seq_id, p.position_ids], p.input_ids)
    feats = rng.random((p.num_tokens, 3))
    assert unpack_tokens(feats, p).shape == (20, p.max_seqlen, 3)


def test_unpack_tokens_torch_keeps_grad() -> None:
    p = pack_segments([[1, 2, 3], [4], []], [1, 0, 0], StepRule("token"))
    values = torch.arange(4, dtype=torch.float32, requires_grad=True)
    for packed in (p, p.to_torch()):
        padded = unpack_tokens(values, packed, pad_value=float("nan"))
        assert isinstance(padded, torch.Tensor) and padded.shape == (3, 3)
        torch.testing.assert_close(padded[0], torch.tensor([0.0, 1.0, 2.0]))
        assert padded[1, 1:].isnan().all() and padded[2].isnan().all()
        (grad,) = torch.autograd.grad(padded.nan_to_num().sum(), values)
        torch.testing.assert_close(grad, torch.ones(4))


def test_split_actions_numpy_and_torch(rng: np.random.Generator) -> None:
    sequences, prompt_lens = random_batch(rng, 30, 40, 6)
    p = pack_segments(sequences, prompt_lens, RULES[0])
    sizes = p.action_end - p.action_start + 1
    per_seq = split_actions(sizes, p)
    assert len(per_seq) == 30
    assert [s.sum() for s in per_seq] == [len(s) - n for s, n in zip(sequences, prompt_lens, strict=True)]
    torch_parts = split_actions(torch.from_numpy(sizes), p.to_torch())
    assert all(isinstance(t, torch.Tensor) for t in torch_parts)
    for a, t in zip(per_seq, torch_parts, strict=True):
        np.testing.assert_array_equal(a, t.numpy())
    assert split_actions(np.zeros(0), pack_segments([], [], StepRule("whole"))) == []


def test_to_torch_keeps_dtypes() -> None:
    p = pack_segments([[1, 3, 2]], [1], StepRule("boundary", (3,)))
    t = p.to_torch("cpu")
    assert t.max_seqlen == 3 and t.num_actions == 2
    for name, dtype in DTYPES.items():
        assert getattr(t, name).dtype == torch.from_numpy(np.zeros(0, dtype)).dtype, name


def test_inverse_helpers_check_lengths() -> None:
    p = pack_segments([[1, 3, 2]], [1], StepRule("boundary", (3,)))
    with pytest.raises(ValueError, match="tokens"):
        unpack_tokens(np.zeros(2), p)
    with pytest.raises(ValueError, match="actions"):
        split_actions(np.zeros(3), p)
