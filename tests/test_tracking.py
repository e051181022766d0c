"""Experiment tracking: rows go to their JSONL file and, with a tracker open, the same numbers to it."""

from __future__ import annotations

import importlib.util
import json
import math
import random

import pytest

from rairl import tracking

pytest.importorskip("tensorboard", reason="--report_to tensorboard needs: pip install 'rairl[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar in the event files under `folder`."""
    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def read_texts(folder) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            out.setdefault(tag, []).extend(e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag))
    return out


def test_rows_reach_the_jsonl_file_and_the_tensorboard_events(tmp_path):
    rng = random.Random()
    train = [{"iteration": i, "mean_reward": rng.uniform(-1, 1), "tokens": rng.randint(1, 999), "flag": True}
             for i in range(1, 5)]
    sft = [{"step": 10 * i, "loss": rng.uniform(0, 3)} for i in range(1, 4)]
    train[2]["mean_reward"] = math.nan  # kept in the record, never sent to the tracker
    (tmp_path / "seed1" / "airl").mkdir(parents=True)
    (tmp_path / "warm").mkdir()
    tracking.start_tracking("tensorboard", tmp_path, {"seed": 3, "train": {"lr": 1e-4, "ops": ("+", "-")}})
    try:
        for row in sft:
            tracking.log_row(tmp_path / "warm" / "sft_log.jsonl", row)
        for row in train:
            tracking.log_row(tmp_path / "seed1" / "airl" / "train_log.jsonl", row)
        tracking.log_table(tmp_path / "samples.jsonl", [{"prompt": "a|b", "completion": "x\ny", "step_rewards": [0.5, -1.0]}], step=4)
    finally:
        tracking.end_tracking()
    lines = [json.loads(x) for x in (tmp_path / "seed1" / "airl" / "train_log.jsonl").read_text().splitlines()]
    assert lines[:2] + lines[3:] == train[:2] + train[3:] and math.isnan(lines[2]["mean_reward"])
    events = read_events(tmp_path / "tensorboard")
    got = events["seed1/airl/train/mean_reward"]
    assert [s for s, _ in got] == [1, 2, 4]  # the NaN row's value is left out
    assert [v for _, v in got] == pytest.approx([train[i]["mean_reward"] for i in (0, 1, 3)])
    assert [v for _, v in events["seed1/airl/train/tokens"]] == [r["tokens"] for r in train]
    assert "seed1/airl/train/flag" not in events  # booleans are not scalars
    assert events["warm/sft/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in sft]
    table = read_texts(tmp_path / "tensorboard")["samples/text_summary"][0]
    assert "a\\|b" in table and "x ⏎ y" in table and "[0.5, -1.0]" in table
    assert json.loads((tmp_path / "samples.jsonl").read_text())["completion"] == "x\ny"


def test_without_a_tracker_rows_only_go_to_the_file(tmp_path):
    tracking.end_tracking()
    tracking.log_row(tmp_path / "train_log.jsonl", {"iteration": 1, "loss": 0.5})
    assert json.loads((tmp_path / "train_log.jsonl").read_text()) == {"iteration": 1, "loss": 0.5}
    assert not (tmp_path / "tensorboard").exists()


def test_unknown_or_missing_tracker_names_the_option_and_the_extra(monkeypatch):
    with pytest.raises(ValueError, match="--report_to 'mlflow'"):
        tracking.check_report_to("mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ImportError, match=r"--report_to wandb needs wandb: pip install 'rairl\[wandb\]'"):
        tracking.check_report_to("wandb")
    tracking.check_report_to("tensorboard")
    tracking.check_report_to("none")


def test_train_with_report_to_tensorboard_logs_the_train_log_and_samples(tmp_path, capsys):
    from rairl.cli import main

    out = tmp_path / "run"
    assert main(["train", "--quick", "--out", str(out), "--no-progress", "--report_to", "tensorboard",
                 "--train.log_samples", "3", "--train.eval_every", "2"]) == 0
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    events = read_events(out / "tensorboard")
    for key in ("mean_reward", "disc_loss", "pg_loss", "grad_norm"):
        assert events[f"train/{key}"] == [(r["iteration"], pytest.approx(r[key])) for r in rows]
    assert "warm/sft/loss" in events and "warm/reward/val_auroc" in events
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    evaluations = [r["iteration"] for r in rows if r["iteration"] % 2 == 0]
    assert [s["iteration"] for s in samples] == [i for i in evaluations for _ in range(3)]
    for s in samples:
        assert len(s["step_texts"]) == len(s["step_rewards"]) == len(s["step_advantages"]) >= 1
        assert s["reward"] == pytest.approx(sum(s["step_rewards"]))
    assert len(read_texts(out / "tensorboard")["samples/text_summary"]) == len(evaluations)


def test_report_to_a_missing_package_stops_before_any_work(tmp_path, capsys, monkeypatch):
    from rairl.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    assert main(["train", "--quick", "--out", str(tmp_path / "run"), "--report_to", "trackio"]) == 2
    assert "pip install 'rairl[trackio]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_log_samples_needs_the_ppo_loop_and_evaluations():
    from rairl.train.trainer import TrainConfig

    assert TrainConfig(log_samples=4).log_samples == 4
    for bad in ({"eval_every": 0}, {"method": "sft"}, {"operator": "rft"}):
        with pytest.raises(ValueError, match="log_samples"):
            TrainConfig(log_samples=4, **bad)
    with pytest.raises(ValueError, match="log_samples"):
        TrainConfig(log_samples=-1)


@pytest.mark.parametrize("report_to", ["wandb", "trackio"])
def test_wandb_and_trackio_get_one_growing_step_and_the_rows_own_step_as_a_value(report_to, tmp_path, monkeypatch):
    pytest.importorskip(report_to, reason=f"--report_to {report_to} needs: pip install 'rairl[{report_to}]'")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, here or in CI
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "warm").mkdir()
    rng = random.Random()
    sft = [{"step": 10 * i, "loss": rng.uniform(0, 3)} for i in range(1, 4)]
    train = [{"iteration": i, "mean_reward": rng.uniform(-1, 1)} for i in (1, 2)]
    tracking.start_tracking(report_to, tmp_path, {"seed": 3, "train": {"lr": 1e-4}})
    sent = []
    try:
        tracking.log_row(tmp_path / "warm" / "sft_log.jsonl", sft[0])  # opens the tracker
        real = tracking._session.tracker.log
        monkeypatch.setattr(tracking._session.tracker, "log", lambda values, step=None, **kw: (sent.append((values, step)), real(values, step=step, **kw)))
        for row in sft[1:]:
            tracking.log_row(tmp_path / "warm" / "sft_log.jsonl", row)
        for row in train:
            tracking.log_row(tmp_path / "train_log.jsonl", row)
        tracking.log_table(tmp_path / "samples.jsonl", [{"prompt": "p", "completion": "c", "step_rewards": [0.5]}], step=2)
        if report_to == "wandb":
            summary = dict(tracking._session.tracker.run.summary)
            assert summary["train/mean_reward"] == pytest.approx(train[-1]["mean_reward"]) and summary["warm/sft/step"] == 30
    finally:
        tracking.end_tracking()
    scalars = [(v, s) for v, s in sent if not any(k == "samples" for k in v)]
    assert [s for _, s in scalars] == sorted({s for _, s in scalars}) and len(scalars) == 4  # one step, growing across keys
    assert [v for v, _ in scalars] == [{f"warm/sft/{k}": r[k] for k in r} for r in sft[1:]] + [{f"train/{k}": r[k] for k in r} for r in train]
