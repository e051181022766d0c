"""Every long stage resumes bit-exact: SFT, reward training and the warm start of `rairl demo`.

A run stopped between two checkpoints (an exception from a wrapped loss function, or SIGKILL of the
command) and then resumed must end with the weights, log rows and metrics of a run never stopped.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rairl.train.reward as reward_module
import rairl.train.sft as sft_module
from rairl.airl.discriminator import DiscRecord
from rairl.airl.layout import step_rule
from rairl.cli import main
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.reward import RewardConfig, RewardModel
from rairl.train.checkpoint import latest_checkpoint, read_meta
from rairl.train.reward import RewardTrainConfig, train_reward
from rairl.train.sft import SFTConfig, train_sft


class Killed(Exception):
    """What the wrapped loss function raises in place of a SIGKILL."""


def wrapped(real, nan: set[int] = frozenset(), kill: int = 0):
    """`real` (returning a loss, or (loss, extra)) with the loss times NaN on the `nan` calls (1-based) and
    `Killed` raised on call `kill`."""
    count = [0]

    def loss_fn(*args, **kwargs):
        count[0] += 1
        if count[0] == kill:
            raise Killed
        out = real(*args, **kwargs)
        if count[0] not in nan:
            return out
        return out * float("nan") if isinstance(out, torch.Tensor) else (out[0] * float("nan"), out[1])
    return loss_fn


def _pairs(tokenizer, n: int = 24):
    problems = make_splits(11, TaskConfig(n_train=n, n_val=1, n_test=1)).train
    p = encode_prompts(tokenizer, [x.question() for x in problems], 512)
    c = encode_completions(tokenizer, ["\n".join(x.solution_steps()) for x in problems], 512)
    return p, c


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- SFT


def test_sft_stopped_between_checkpoints_resumes_to_the_straight_run(tiny, monkeypatch, tmp_path: Path) -> None:
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer)
    # step 2's loss is NaN (a skipped step the guard counts before the checkpoint at 3); stopped in step 5;
    # the warm-up (4 steps) is still running at the checkpoint
    cfg = SFTConfig(steps=7, batch_size=8, lr=3e-3, warmup=4, log_every=2, checkpoint_every=3)
    real = sft_module.completion_nll

    def run(out: Path, model, resume: bool = False) -> list[dict]:
        out.mkdir(exist_ok=True)
        return train_sft(model, p, c, tokenizer.pad_token_id, cfg, metrics_path=out / "sft_log.jsonl", progress=False,
                         checkpoint_dir=out / "ckpt", resume=resume)

    monkeypatch.setattr(sft_module, "completion_nll", wrapped(real, nan={2}))
    straight = copy.deepcopy(lm)
    rows = run(tmp_path / "a", straight)
    monkeypatch.setattr(sft_module, "completion_nll", wrapped(real, nan={2}, kill=5))
    with pytest.raises(Killed):
        run(tmp_path / "b", copy.deepcopy(lm))
    assert read_meta(latest_checkpoint(tmp_path / "b" / "ckpt"))["step"] == 3
    monkeypatch.setattr(sft_module, "completion_nll", real)
    resumed = copy.deepcopy(lm)  # the weights it started from: the checkpoint must hold the trained ones
    assert run(tmp_path / "b", resumed, resume=True) == rows
    assert _same_weights(straight, resumed)
    assert _rows(tmp_path / "b" / "sft_log.jsonl") == _rows(tmp_path / "a" / "sft_log.jsonl") == rows
    assert [r["skipped_steps"] for r in rows] == [1, 1, 1, 1]
    finished = copy.deepcopy(lm)  # a finished run resumed trains nothing and returns the same
    assert run(tmp_path / "b", finished, resume=True) == rows and _same_weights(straight, finished)


def test_sft_stopped_before_its_first_checkpoint_starts_again_with_a_clean_log(tiny, monkeypatch, tmp_path: Path) -> None:
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer)
    cfg = SFTConfig(steps=4, batch_size=8, lr=1e-3, warmup=1, log_every=1)  # checkpoint_every 100: none before the end
    log = tmp_path / "sft_log.jsonl"
    straight = copy.deepcopy(lm)
    rows = train_sft(straight, p, c, tokenizer.pad_token_id, cfg, metrics_path=tmp_path / "straight.jsonl", progress=False)
    monkeypatch.setattr(sft_module, "completion_nll", wrapped(sft_module.completion_nll, kill=3))
    with pytest.raises(Killed):
        train_sft(copy.deepcopy(lm), p, c, tokenizer.pad_token_id, cfg, metrics_path=log, progress=False, checkpoint_dir=tmp_path / "ckpt")
    assert len(_rows(log)) == 2 and latest_checkpoint(tmp_path / "ckpt") is None
    monkeypatch.undo()
    resumed = copy.deepcopy(lm)
    assert train_sft(resumed, p, c, tokenizer.pad_token_id, cfg, metrics_path=log, progress=False, checkpoint_dir=tmp_path / "ckpt",
                     resume=True) == rows == _rows(log)
    assert _same_weights(straight, resumed)


def test_sft_resume_refuses_another_config(tiny, tmp_path: Path) -> None:
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer)
    cfg = SFTConfig(steps=2, batch_size=8, lr=1e-3, warmup=1, checkpoint_every=1)
    train_sft(copy.deepcopy(lm), p, c, tokenizer.pad_token_id, cfg, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"iter_000002: written with another SFTConfig \(fields \['lr'\] differ\)"):
        train_sft(copy.deepcopy(lm), p, c, tokenizer.pad_token_id, replace(cfg, lr=2e-3), progress=False, checkpoint_dir=tmp_path,
                  resume=True)
    train_sft(copy.deepcopy(lm), p, c, tokenizer.pad_token_id, replace(cfg, checkpoint_every=5), progress=False,
              checkpoint_dir=tmp_path, resume=True)  # how often it checkpoints may change


# ---------------------------------------------------------------- reward training


def test_reward_training_stopped_between_checkpoints_resumes_to_the_straight_run(tiny, monkeypatch, tmp_path: Path) -> None:
    tokenizer, lm = tiny
    p, c = _pairs(tokenizer, 32)
    rng = random.Random(5)
    vocab = list(range(3, len(tokenizer)))
    experts = [DiscRecord(pi, ci, 1) for pi, ci in zip(p, c, strict=True)]
    negatives = [DiscRecord(pi, [rng.choice(vocab) for _ in ci] + [tokenizer.eos_token_id], 0) for pi, ci in zip(p, c, strict=True)]
    train, val = experts[:-6] + negatives[:-6], negatives[-6:] + experts[-6:]
    cfg = RewardTrainConfig(steps=7, batch_size=8, lr=1e-3, warmup=4, eval_every=2, checkpoint_every=3)
    rule = step_rule(RewardConfig(granularity="step"), tokenizer)
    # validation AUROC by step: the best is step 2's, before the checkpoint at 3, so the weights the run
    # ends with come from the checkpoint alone
    step = [0]
    real_schedule, real_eval = reward_module.lr_schedule, reward_module.evaluate_discriminator

    def schedule(s: int, *args) -> float:  # called once per step, before its validation pass
        step[0] = s + 1
        return real_schedule(s, *args)
    monkeypatch.setattr(reward_module, "lr_schedule", schedule)
    monkeypatch.setattr(reward_module, "evaluate_discriminator",
                        lambda *a: {**real_eval(*a), "auroc": {2: 0.9, 4: 0.5, 6: 0.6, 7: 0.7}[step[0]]})
    torch.manual_seed(0)
    heads = RewardModel(copy.deepcopy(lm), RewardConfig(granularity="step")).state_dict()

    def run(out: Path, resume: bool = False) -> tuple[RewardModel, dict]:
        out.mkdir(exist_ok=True)
        rm = RewardModel(copy.deepcopy(lm), RewardConfig(granularity="step"))
        rm.load_state_dict(heads)
        best = train_reward(rm, lm, train, val, tokenizer.pad_token_id, rule, cfg, metrics_path=out / "reward_log.jsonl",
                            progress=False, checkpoint_dir=out / "ckpt", resume=resume)
        return rm, best

    real_loss = reward_module.discriminator_loss
    monkeypatch.setattr(reward_module, "discriminator_loss", wrapped(real_loss, nan={1}))  # step 1 skipped
    straight, best = run(tmp_path / "a")
    assert best["step"] == 2
    monkeypatch.setattr(reward_module, "discriminator_loss", wrapped(real_loss, nan={1}, kill=6))
    with pytest.raises(Killed):
        run(tmp_path / "b")
    monkeypatch.setattr(reward_module, "discriminator_loss", real_loss)
    resumed, best_resumed = run(tmp_path / "b", resume=True)
    assert best_resumed == best and _same_weights(straight, resumed)
    rows_b = _rows(tmp_path / "b" / "reward_log.jsonl")
    assert rows_b == _rows(tmp_path / "a" / "reward_log.jsonl")
    assert [(r["step"], r["skipped_steps"]) for r in rows_b] == [(2, 1), (4, 1), (6, 1), (7, 1)]


# ---------------------------------------------------------------- the command, killed


def _rairl(*args: str) -> list[str]:
    return [sys.executable, "-m", "rairl.cli", *args]


# Each stage long enough to be caught running (the quick preset's SFT stop check never reaches its
# target), with a checkpoint every 4 steps
_STAGES = ("--warm.sft.steps", "60", "--warm.sft.checkpoint_every", "4", "--warm.reward_train.steps", "30",
           "--warm.reward_train.checkpoint_every", "4")
_TINY_FILE_RUN = ("--warm.vocab_size", "512", "--warm.model.hidden_size", "32", "--warm.model.num_layers", "1",
                  "--warm.model.num_heads", "2", "--warm.model.intermediate_size", "64", "--warm.sft.batch_size", "16",
                  "--warm.reward_train.batch_size", "8", "--warm.reward_train.eval_every", "10", "--warm.negative_samples", "1",
                  "--warm.val_samples", "2", "--warm.max_new_tokens", "40")


def _command(command: str, tmp_path: Path) -> tuple[str, ...]:
    """The arguments of a seconds-long `command` run (train-reward on 160 embedded problems written to a file)."""
    if command == "demo":
        return ("demo", "--quick", "--no-progress", *_STAGES)
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion, "answer": e.answer}) + "\n"
                             for e in (p.example() for p in make_splits(3, TaskConfig(n_train=160, n_val=2, n_test=2)).train)))
    return ("train-reward", "--data", str(demos), "--no-progress", *_TINY_FILE_RUN, *_STAGES)


def _results(out: Path) -> dict:
    """metrics.json but for its timing and its config (the resumed run checkpointed at another interval)."""
    return {k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k not in ("seconds", "config")}


@pytest.mark.parametrize(("command", "stage"), [("demo", "sft"), pytest.param("demo", "reward", marks=pytest.mark.slow),
                                                pytest.param("train-reward", "sft", marks=pytest.mark.slow)])
def test_killed_run_resumes_to_the_same_result(command: str, stage: str, tmp_path: Path, capsys) -> None:
    """SIGKILL `rairl {command}` once its `stage` has a committed checkpoint, `--resume` it: the metrics, logs
    and reward weights of a run never killed."""
    env, args = {**os.environ, "OMP_NUM_THREADS": "1"}, _command(command, tmp_path)
    full, killed, errors = tmp_path / "full", tmp_path / "killed", tmp_path / "full.err"
    straight = subprocess.Popen(_rairl(*args, "--out", str(full)), env=env, stdout=subprocess.DEVNULL, stderr=errors.open("w"))
    proc = subprocess.Popen(_rairl(*args, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints, deadline = killed / f"{stage}_checkpoints", time.time() + 120
    while latest_checkpoint(checkpoints) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = latest_checkpoint(checkpoints)
    assert newest is not None and read_meta(newest)["step"] < {"sft": 60, "reward": 30}[stage], "killed too late; lengthen the stage"
    assert not (killed / "metrics.json").exists()
    assert main([command, "--resume", str(killed), "--warm.sft.lr", "1e-2"]) == 2  # a resume keeps the run's config
    assert "warm.sft.lr differ" in capsys.readouterr().err
    assert straight.wait() == 0, errors.read_text()
    subprocess.run(_rairl(command, "--resume", str(killed), "--no-progress", "--warm.sft.checkpoint_every", "8"),
                   check=True, env=env, capture_output=True)
    assert _results(killed) == _results(full)
    for log in ("sft_log.jsonl", "reward_log.jsonl"):
        assert _rows(killed / log) == _rows(full / log)
    weights = sorted(p.relative_to(full) for p in (full / "reward").rglob("*.safetensors"))  # heads and the reward's LM
    assert weights == sorted(p.relative_to(killed) for p in (killed / "reward").rglob("*.safetensors")) and len(weights) == 2
    for name in weights:
        a, b = load_file(full / name), load_file(killed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
