"""Padding-free decoder passes (`rairl.models.packing`) against the padded pass they replace.

Batches are drawn fresh each run; the seed is in every failure message. fp32 throughout:
packed and padded differ only by summation order inside attention, so 1e-5 relative
(to the largest magnitude) is ~100x the observed difference (~1e-7).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rairl.models.lm import TinyLMConfig, build_tiny_lm, decoder_hidden, per_token_logprobs
from rairl.models.packing import first_fit_decreasing, packed_decoder_hidden, resolve_layout

RTOL = 1e-5
SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture(params=["llama", "qwen2"])
def model(request, tiny):
    """A tiny fp32 sdpa model of each architecture (random weights)."""
    tokenizer, llama = tiny
    if request.param == "llama":
        return llama
    return build_tiny_lm(tokenizer, TinyLMConfig(arch="qwen2", **SMALL), seed=1).eval()


def make_batch(lengths: list[int], vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids (B, T), attention_mask (B, T)) with random tokens; pads hold id 0."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    mask = (torch.arange(int(lens.max()))[None] < lens[:, None]).long()  # (B, T)
    ids = torch.randint(1, vocab, mask.shape, generator=g) * mask
    return ids, mask


def random_lengths(rng: random.Random) -> list[int]:
    """2-8 mixed lengths in 1..T, one of them exactly T."""
    T = rng.randint(8, 48)
    lengths = [rng.randint(1, T) for _ in range(rng.randint(1, 7))] + [T]
    rng.shuffle(lengths)
    return lengths


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (0 for two empty tensors)."""
    if want.numel() == 0:
        return 0.0
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def check_forward(model, ids, mask, msg, **packed_kwargs) -> None:
    real = mask.bool()
    with torch.no_grad():
        want = decoder_hidden(model, ids, mask, packing=False)
        got = packed_decoder_hidden(model, ids, mask, **packed_kwargs)
        lp_want = per_token_logprobs(model, ids, mask, packing=False)
        lp_got = per_token_logprobs(model, ids, mask, packing=True)
    assert got.shape == want.shape, msg
    assert rel_err(got[real], want[real]) <= RTOL, msg
    assert not got[~real].any(), f"padding must be 0; {msg}"
    assert rel_err(lp_got, lp_want) <= RTOL, msg
    assert not lp_got[~real].any(), msg


@pytest.mark.parametrize("layout", ["rows", "varlen"])
def test_matches_padded_on_random_batches(model, layout):
    seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    for _ in range(3):
        lengths = random_lengths(rng)
        cap = max(lengths) + rng.choice([0, rng.randint(1, 60)])
        ids, mask = make_batch(lengths, model.config.vocab_size, rng.randrange(2**31))
        msg = f"seed={seed} lengths={lengths} max_row_tokens={cap} layout={layout}"
        check_forward(model, ids, mask, msg, max_row_tokens=cap, layout=layout)


@pytest.mark.parametrize(("lengths", "cap"), [
    ([13], None),  # one sequence
    ([1, 1, 1, 1], None),  # one-token sequences: T == 1, nothing to score
    ([1, 9, 1, 4], None),
    ([6, 6, 6], None),  # all the same length: the padded batch has no padding
    ([0, 5, 0], None),  # empty sequences (all-padding rows)
    ([10, 3, 7, 10], 10),  # sequences exactly max_row_tokens long fill a row alone
    ([10, 3, 7, 10], 17),
])
def test_edge_cases(model, lengths, cap):
    seed = random.SystemRandom().randrange(2**31)
    ids, mask = make_batch(lengths, model.config.vocab_size, seed)
    check_forward(model, ids, mask, f"seed={seed} lengths={lengths}", max_row_tokens=cap)


def test_eager_attention_takes_the_float_mask(tiny):
    tokenizer, _ = tiny
    model = build_tiny_lm(tokenizer, TinyLMConfig(**SMALL), seed=2).eval()
    model.set_attn_implementation("eager")
    seed = random.SystemRandom().randrange(2**31)
    ids, mask = make_batch([5, 17, 2, 11], model.config.vocab_size, seed)
    check_forward(model, ids, mask, f"seed={seed}", max_row_tokens=24)


def test_gradients_match_padded(model):
    seed = random.SystemRandom().randrange(2**31)
    lengths = random_lengths(random.Random(seed))
    ids, mask = make_batch(lengths, model.config.vocab_size, seed)
    g = torch.Generator().manual_seed(seed)
    w_lp = torch.randn(ids.shape, generator=g)  # (B, T) random cotangents
    w_h = torch.randn((*ids.shape, model.config.hidden_size), generator=g) * mask[..., None]  # (B, T, H)

    def grads(packing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        lp, hidden = per_token_logprobs(model, ids, mask, return_hidden=True, packing=packing)
        ((lp * w_lp).sum() + (hidden * w_h).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    want, got = grads(False), grads(True)
    for name, g_want in want.items():
        assert rel_err(got[name], g_want) <= RTOL, f"{name}: seed={seed} lengths={lengths}"


@pytest.mark.parametrize("packing", [False, True])
def test_score_mask_scores_only_marked_tokens(model, packing):
    """score_mask: marked tokens get the unmasked log-probs (and their gradients), others 0."""
    seed = random.SystemRandom().randrange(2**31)
    lengths = random_lengths(random.Random(seed))
    ids, mask = make_batch(lengths, model.config.vocab_size, seed)
    g = torch.Generator().manual_seed(seed)
    marked = (torch.rand(ids.shape, generator=g) < 0.5) & mask.bool()  # (B, T)
    marked[:, 0] = True  # position 0 has no log-prob whatever the mask says
    w_lp = torch.randn(ids.shape, generator=g)

    def run(score_mask):
        model.zero_grad(set_to_none=True)
        lp = per_token_logprobs(model, ids, mask, packing=packing, score_mask=score_mask)
        (lp * w_lp * marked).sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (lp_all, grads_all), (lp_got, grads_got) = run(None), run(marked)
    assert rel_err(lp_got[marked], lp_all[marked]) <= RTOL, f"seed={seed}"
    assert not lp_got[~marked].any(), f"unmarked tokens must be 0; seed={seed}"
    assert not lp_got[:, 0].any()
    for name, g_want in grads_all.items():
        assert rel_err(grads_got[name], g_want) <= RTOL, f"{name}: seed={seed}"


def first_fit_decreasing_reference(lengths: list[int], cap: int) -> tuple[list[int], list[int]]:
    """Plain-loop first-fit decreasing (ties: lower index first): the oracle."""
    fill: list[int] = []
    row, offset = [0] * len(lengths), [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, f in enumerate(fill) if f + lengths[i] <= cap), len(fill))
        fill += [0] * (r == len(fill))
        row[i], offset[i] = r, fill[r]
        fill[r] += lengths[i]
    return row, offset


def test_first_fit_decreasing_matches_reference():
    rng = np.random.default_rng(random.SystemRandom().randrange(2**31))
    for _ in range(20):
        lengths = rng.integers(1, 50, rng.integers(1, 40))
        cap = int(lengths.max()) + int(rng.integers(0, 30))
        row, offset = first_fit_decreasing(lengths, cap)
        assert (row.tolist(), offset.tolist()) == first_fit_decreasing_reference(lengths.tolist(), cap)
        assert (offset + lengths <= cap).all()


def test_rejects_bad_inputs(tiny):
    _, model = tiny
    ids, mask = make_batch([4, 6], model.config.vocab_size, 0)
    with pytest.raises(ValueError, match="max_row_tokens"):
        packed_decoder_hidden(model, ids, mask, max_row_tokens=5)
    with pytest.raises(ValueError, match="right-padded"):
        packed_decoder_hidden(model, ids, mask.flip(1))
    with pytest.raises(ValueError, match="layout"):
        packed_decoder_hidden(model, ids, mask, layout="dense")


@pytest.mark.parametrize(("impl", "layout", "want"), [
    ("sdpa", None, "rows"), ("eager", None, "rows"), ("flash_attention_2", None, "varlen"),
    ("sdpa", "varlen", "varlen"), ("flash_attention_2", "rows", ValueError), ("flex_attention", "rows", ValueError),
])
def test_resolve_layout(impl, layout, want):
    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation=impl, layer_types=["full_attention"]))
    if want is ValueError:
        with pytest.raises(ValueError, match="attn_implementation"):
            resolve_layout(model, layout)
    else:
        assert resolve_layout(model, layout) == want


def test_rows_refuses_sliding_window_layers():
    config = SimpleNamespace(_attn_implementation="sdpa", layer_types=["full_attention", "sliding_attention"])
    with pytest.raises(ValueError, match="sliding-window"):
        resolve_layout(SimpleNamespace(config=config), None)
