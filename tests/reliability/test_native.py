"""The C++ packer at the edges of int64: every extreme size is a clean Python error, never a crash.

A crash cannot be caught in-process, so each extreme input runs in a child interpreter whose exit
must be a Python error (1, or 2 from the CLI) with a message naming the argument, not a signal
(-11: SIGSEGV). `benchmarks/sanitize_segments.sh` runs this file against an ASan/UBSan build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from rairl.kernels.segments import (
    MAX_INTERVAL,
    PackedBatch,
    StepRule,
    flatten_sequences,
    pack_segments_flat,
    pack_segments_numpy,
    pack_segments_reference,
)

from rairl import _segments
from rairl.models.reward import RewardConfig

BIG = 2**63 - 1
RAW = ("import numpy as np; from rairl import _segments as s; a = lambda x: np.array(x, np.int64); "
       "s.pack(a([1, 2, 3, 4]), a({offsets}), a({prompt_lens}), '{kind}', a({boundary_ids}), {interval})")
CHILD_CASES = {  # name: (python source, text the error must hold)
    # a one-token completion: before the fix, s + interval wrapped negative and std::fill ran off the array (SIGSEGV)
    "interval_int64_max": (RAW.format(offsets=[0, 4], prompt_lens=[3], kind="interval", boundary_ids=[], interval=BIG), "interval"),
    "interval_int64_max_two_sequences": (RAW.format(offsets=[0, 2, 4], prompt_lens=[1, 0], kind="interval", boundary_ids=[],
                                                    interval=BIG), "interval"),
    "interval_int32_max_plus_1": (RAW.format(offsets=[0, 4], prompt_lens=[1], kind="interval", boundary_ids=[], interval=2**31),
                                  "interval"),
    "interval_int64_min": (RAW.format(offsets=[0, 4], prompt_lens=[1], kind="interval", boundary_ids=[], interval=-(2**63)),
                           "interval"),
    "interval_past_int64": (RAW.format(offsets=[0, 4], prompt_lens=[1], kind="interval", boundary_ids=[], interval=2**64),
                            "incompatible function arguments"),
    "offset_int64_max": (RAW.format(offsets=[0, BIG, 4], prompt_lens=[0, 0], kind="token", boundary_ids=[], interval=0), "offsets"),
    "prompt_len_int64_max": (RAW.format(offsets=[0, 4], prompt_lens=[BIG], kind="whole", boundary_ids=[], interval=0),
                             "prompt_lens"),
    "prompt_len_int64_min": (RAW.format(offsets=[0, 4], prompt_lens=[-(2**63)], kind="whole", boundary_ids=[], interval=0),
                             "prompt_lens"),
    "step_rule_int64_max": ("from rairl.kernels.segments import StepRule, pack_segments; "
                            f"pack_segments([[1, 2, 3, 4]], [1], StepRule('interval', interval={BIG}))", "StepRule.interval"),
    "reward_config_int64_max": ("from rairl.models.reward import RewardConfig; "
                                f"RewardConfig(granularity='interval', interval={BIG})", "RewardConfig.interval"),
}


def run_child(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("case", CHILD_CASES, ids=str)
def test_extreme_sizes_are_a_clean_error_in_a_child(case: str) -> None:
    source, message = CHILD_CASES[case]
    done = run_child(["-c", source])
    assert done.returncode == 1, f"exit {done.returncode} (a negative one is a signal):\n{done.stderr[-2000:]}"
    assert "Traceback" in done.stderr and message in done.stderr, done.stderr[-2000:]


def test_score_refuses_a_saved_huge_interval(tiny_dir, tmp_path: Path) -> None:
    """A reward_config.json holding interval 2**63 - 1: `rairl score` exits 2 with one line naming the field."""
    from rairl.models.lm import load_causal_lm
    from rairl.models.reward import RewardModel
    from rairl.models.tokenizer import load_tokenizer

    reward = tmp_path / "reward"
    RewardModel(load_causal_lm(tiny_dir), RewardConfig(granularity="interval", interval=4)).save_pretrained(reward)
    load_tokenizer(tiny_dir).save_pretrained(reward / "lm")
    meta = json.loads((reward / "reward_config.json").read_text())
    meta["reward"]["interval"] = BIG
    (reward / "reward_config.json").write_text(json.dumps(meta))
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5\nThe answer is 5"}) + "\n")
    done = run_child(["-m", "rairl.cli", "score", "--reward", str(reward), "--data", str(data), "--out", str(tmp_path / "out"),
                      "--device", "cpu", "--no-progress"])
    assert done.returncode == 2, f"exit {done.returncode} (a negative one is a signal):\n{done.stderr[-2000:]}"
    assert "RewardConfig.interval" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


def test_interval_bound_is_the_same_at_every_layer() -> None:
    flat, offsets, prompt_lens = np.arange(4, dtype=np.int64), np.array([0, 4], np.int64), np.array([1], np.int64)
    got = _segments.pack(flat, offsets, prompt_lens, "interval", np.zeros(0, np.int64), MAX_INTERVAL)
    np.testing.assert_array_equal(got[5], [1])  # action_start: the whole completion is one window
    with pytest.raises(ValueError, match="interval"):
        _segments.pack(flat, offsets, prompt_lens, "interval", np.zeros(0, np.int64), MAX_INTERVAL + 1)
    with pytest.raises(ValueError, match="StepRule.interval"):
        StepRule("interval", interval=MAX_INTERVAL + 1)
    with pytest.raises(ValueError, match="RewardConfig.interval"):
        RewardConfig(granularity="interval", interval=MAX_INTERVAL + 1)
    assert StepRule("interval", interval=MAX_INTERVAL).interval == RewardConfig(interval=MAX_INTERVAL).interval


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh each run
    print(f"seed={seed}")  # pytest shows it on failure
    return np.random.default_rng(seed)


def test_huge_intervals_agree_with_the_reference(rng: np.random.Generator) -> None:
    """Windows around and far past each completion's length, up to the largest allowed, on fresh random batches."""
    for _ in range(20):
        lengths = rng.integers(0, 60, rng.integers(1, 12))
        prompt_lens = rng.integers(0, lengths + 1)
        flat, offsets = flatten_sequences([rng.integers(0, 50, n) for n in lengths])
        longest = int((lengths - prompt_lens).max())
        for interval in {1, max(longest - 1, 1), max(longest, 1), longest + 1, int(rng.integers(1, MAX_INTERVAL)), MAX_INTERVAL}:
            rule = StepRule("interval", interval=interval)
            got = pack_segments_flat(flat, offsets, prompt_lens, rule)
            for twin in (pack_segments_reference, pack_segments_numpy):
                want = twin(flat, offsets, prompt_lens, rule)
                for f in fields(PackedBatch):
                    np.testing.assert_array_equal(getattr(got, f.name), getattr(want, f.name), err_msg=f"{f.name} {interval} {twin}")
