"""SFT with its checkpoint chosen on validation: the best checked weights are kept, patience and wall-clock stop it."""

from __future__ import annotations

import pytest
import torch

from rairl.models.lm import TinyLMConfig, build_tiny_lm
from rairl.models.tokenizer import train_bpe_tokenizer
from rairl.train.sft import SFTConfig, train_sft_es


@pytest.fixture()
def setup():
    tok = train_bpe_tokenizer(["Question: a b\nAnswer:\n1 + 2 = 3\n#### 3"] * 4, 300)
    model = build_tiny_lm(tok, TinyLMConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), seed=0)
    p = [tok("Question: a b\nAnswer:\n")["input_ids"]] * 4
    c = [tok("1 + 2 = 3\n#### 3")["input_ids"] + [tok.eos_token_id]] * 4
    return tok, model, p, c


def _recording_validate(model, scores):
    """validate() returning the scripted scores in turn, remembering the weights it saw each time."""
    seen, it = [], iter(scores)

    def validate():
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(it)
    return validate, seen


def test_keeps_the_best_checked_weights_and_stops_after_patience(setup):
    tok, model, p, c = setup
    validate, seen = _recording_validate(model, [0.2, 0.5, 0.4, 0.3, 0.9])  # checks at steps 2, 4, 6, 8 (10 never comes)
    cfg = SFTConfig(steps=20, batch_size=2, lr=1e-2, warmup=1, log_every=2, check_every=2)
    res = train_sft_es(model, p, c, tok.pad_token_id, cfg, validate, patience=2, start_score=0.1, progress=False)
    assert res["best_step"] == 4 and res["best_val"] == 0.5
    assert [s for s, _ in res["checks"]] == [0, 2, 4, 6, 8] and res["steps"] == 8
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[1][k])  # the weights validated at step 4


def test_patience_zero_runs_the_whole_schedule_and_keeps_the_best_check(setup):
    tok, model, p, c = setup
    validate, seen = _recording_validate(model, [0.3, 0.2, 0.1, 0.1, 0.1, 0.4, 0.2])  # a long dip, then the best
    cfg = SFTConfig(steps=7, batch_size=2, lr=1e-2, warmup=1, log_every=7, check_every=1)
    res = train_sft_es(model, p, c, tok.pad_token_id, cfg, validate, patience=0, start_score=0.0, progress=False)
    assert res["steps"] == 7 and [s for s, _ in res["checks"]] == list(range(8))
    assert res["best_step"] == 6 and res["best_val"] == 0.4
    assert all(torch.equal(v, seen[5][k]) for k, v in model.state_dict().items())


def test_the_start_counts_and_wall_clock_stops_it(setup):
    tok, model, p, c = setup
    start = {k: v.clone() for k, v in model.state_dict().items()}
    validate, _ = _recording_validate(model, [0.1] * 50)
    cfg = SFTConfig(steps=100, batch_size=2, lr=1e-2, warmup=1, log_every=5, check_every=1)
    res = train_sft_es(model, p, c, tok.pad_token_id, cfg, validate, patience=0, seconds=1e-9, start_score=0.5, progress=False)
    assert res["best_step"] == 0 and res["steps"] == 1  # the first check is past the time limit
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="check_every"):
        train_sft_es(model, p, c, tok.pad_token_id, SFTConfig(steps=2), validate, patience=1)
    with pytest.raises(ValueError, match="patience"):
        train_sft_es(model, p, c, tok.pad_token_id, SFTConfig(steps=2, check_every=1), validate, patience=-1)
