"""A NaN or infinite float knob is refused where its config is built, naming the field, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rairl.models.adapters import AdapterConfig
from rairl.models.reward import RewardConfig
from rairl.models.rollout import RolloutConfig
from rairl.score import ScorerSettings
from rairl.train.protocol import ProtocolConfig
from rairl.train.reward import RewardTrainConfig
from rairl.train.rft import RFTConfig
from rairl.train.sft import SFTConfig
from rairl.train.trainer import TrainConfig
from rairl.train.warm_start import WarmStartConfig

NAN, INF = float("nan"), float("inf")
CASES = [  # (config class, keyword arguments, the field the error names)
    (RewardTrainConfig, dict(lr=INF), "RewardTrainConfig.lr"),
    (RewardTrainConfig, dict(lr=NAN), "RewardTrainConfig.lr"),
    (RewardTrainConfig, dict(grad_clip=NAN), "RewardTrainConfig.grad_clip"),
    (RewardConfig, dict(beta=NAN), "RewardConfig.beta"),
    (RewardConfig, dict(beta=-INF), "RewardConfig.beta"),
    (RewardConfig, dict(gamma=NAN), "RewardConfig.gamma"),
    (SFTConfig, dict(lr=NAN), "SFTConfig.lr"),
    (SFTConfig, dict(weight_decay=INF), "SFTConfig.weight_decay"),
    (TrainConfig, dict(lr=NAN), "TrainConfig.lr"),
    (TrainConfig, dict(disc_lr=INF), "TrainConfig.disc_lr"),
    (TrainConfig, dict(kl_coef=INF), "TrainConfig.kl_coef"),
    (TrainConfig, dict(clip_eps=NAN), "TrainConfig.clip_eps"),
    (RFTConfig, dict(lr=NAN), "RFTConfig.lr"),
    (RFTConfig, dict(min_score=NAN), "RFTConfig.min_score"),
    (WarmStartConfig, dict(sft_target_accuracy=NAN), "WarmStartConfig.sft_target_accuracy"),
    (ScorerSettings, dict(threshold=NAN), "ScorerSettings.threshold"),
    (RolloutConfig, dict(is_cap=INF), "RolloutConfig.is_cap"),
    (AdapterConfig, dict(lora_alpha=INF), "AdapterConfig.lora_alpha"),
    (ProtocolConfig, dict(temperatures=(1.0, INF)), "ProtocolConfig.temperatures"),
]


@pytest.mark.parametrize("cls,kwargs,field", CASES, ids=lambda x: str(x)[:30])
def test_non_finite_floats_are_refused_naming_the_field(cls, kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_train_reward_with_an_infinite_lr_is_refused_before_any_work(tmp_path: Path) -> None:
    """The option a user types: one line naming the knob, exit 2, nothing written."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "rairl.cli", "train-reward", "--data", str(tmp_path / "none.jsonl"),
                           "--warm.reward_train.lr", "inf", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "reward_train.lr" in lines[0] and "finite" in lines[0], done.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("file, edit, words", [
    ("reward_config.json", lambda m: m["reward"].update(beta="high"), "field 'reward.beta' must be float"),
    ("reward_config.json", lambda m: m["reward"].update(gama=0.9), "unknown field 'reward.gama'"),
    ("reward_config.json", lambda m: m.pop("reward"), "field 'reward' missing"),
    ("scorer.json", lambda m: m.update(threshold=[1]), "field 'threshold' must be float"),
])
def test_a_damaged_saved_config_names_its_file_and_field(reward_dir, tmp_path, capsys, file, edit, words):
    import json
    import shutil

    from rairl.cli import main

    damaged = tmp_path / "reward"
    shutil.copytree(reward_dir, damaged)
    meta = json.loads((damaged / file).read_text())
    edit(meta)
    (damaged / file).write_text(json.dumps(meta))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Tom has 3 pens.", "completion": "3 + 2 = 5\n#### 5"}) + "\n")
    assert main(["score", "--reward", str(damaged), "--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{damaged / file}: {words}" in err, err
    (damaged / file).write_text('{"reward": ')  # cut short
    assert main(["score", "--reward", str(damaged), "--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{damaged / file}:1: not valid JSON" in capsys.readouterr().err
