"""`--device` / `--dtype`: resolved once, honoured by the loaders and the scorer, absent devices refused."""

from __future__ import annotations

import pytest
import torch

from rairl.models.device import OnDevice, resolve_device, resolve_dtype
from rairl.models.reward import RewardModel
from rairl.score import RewardScorer


def test_auto_is_cuda_when_present_else_cpu_fp32():
    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        assert resolve_dtype("auto", device) == torch.float32
    assert resolve_dtype("bf16", device) == torch.bfloat16 and resolve_dtype("fp16", device) == torch.float16


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "CPU", "cuda:"])
def test_unknown_device_or_dtype_is_refused(spec):
    with pytest.raises(ValueError, match="device"):
        resolve_device(spec)
    with pytest.raises(ValueError, match="dtype 'fp64'"):
        OnDevice(device="cpu", dtype="fp64")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_absent_cuda_is_an_error_not_a_cpu_run():
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ValueError, match="no CUDA device here"):
            OnDevice(device=spec)


def test_scorer_loads_in_the_asked_dtype(tiny, tmp_path):
    tokenizer, lm = tiny
    RewardScorer(RewardModel(lm), tokenizer).save_pretrained(tmp_path / "r")
    fp32 = RewardScorer.from_pretrained(tmp_path / "r", device="cpu", dtype="fp32")
    bf16 = RewardScorer.from_pretrained(tmp_path / "r", device="cpu", dtype="bf16")
    assert {p.dtype for p in fp32.reward_model.lm.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.reward_model.lm.parameters()} == {torch.bfloat16}
    assert bf16.reward_model.g_head.weight.dtype == torch.float32  # heads stay fp32
    steps = ["1 + 2 = 3", "3 * 2 = 6", "#### 6"]
    a, b = fp32.score_steps(["Tom has 1 pen."], [steps])[0], bf16.score_steps(["Tom has 1 pen."], [steps])[0]
    assert len(a) == len(b) == 3 and all(torch.isfinite(torch.tensor(b)))
    assert a != b  # bf16 weights: not the fp32 numbers bit for bit, so the dtype was honoured


def test_a_mistyped_local_path_is_never_looked_up_on_a_hub(tmp_path):
    from rairl.models.lm import load_causal_lm, looks_local

    for path in (tmp_path / "policyy", "./runs/nope", "runs/demo/policyy"):
        assert looks_local(path)
        with pytest.raises(FileNotFoundError, match="no such folder"):
            load_causal_lm(path)
    assert not looks_local("Qwen/Qwen2.5-0.5B")  # a hub id stays one
