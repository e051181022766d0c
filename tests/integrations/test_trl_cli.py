"""TRL's own command line finds the R-AIRL reward by module path (`--reward_funcs`), its directory from the environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the trl integration needs: pip install 'rairl[trl]'")

from rairl.integrations.trl import RAIRLReward, reward  # noqa: E402
from rairl.models.tokenizer import format_prompt  # noqa: E402
from rairl.score import RewardScorer  # noqa: E402

QUESTIONS = ["Tom has 3 pens. Tom gets 2 more.", "Mia has 8 coins. Mia gives away 5.",
             "Ben has 4 cards. The number of cards doubles.", "Zoe has 9 books. Zoe gets 1 more."]


def test_module_reward_reads_its_directory_from_the_environment(reward_dir, monkeypatch):
    prompts = [format_prompt(q) for q in QUESTIONS[:2]]
    completions = ["3 + 2 = 5\n#### 5", "8 - 5 = 3\n#### 3"]
    monkeypatch.setattr(reward, "_reward", None)
    monkeypatch.delenv("RAIRL_REWARD", raising=False)
    with pytest.raises(ValueError, match="set RAIRL_REWARD"):
        reward(prompts, completions)
    monkeypatch.setenv("RAIRL_REWARD", str(reward_dir / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        reward(prompts, completions)
    monkeypatch.setenv("RAIRL_REWARD", str(reward_dir))
    monkeypatch.setenv("RAIRL_REWARD_SELECTOR", "last")
    got = reward(prompts, completions)
    want = RAIRLReward(RewardScorer.from_pretrained(reward_dir, "cpu"), "last")(prompts, completions)
    assert got == pytest.approx(want) and got[0] != got[1]
    assert reward.__name__ == "rairl"


def test_trl_grpo_command_line_trains_with_the_reward(tiny_dir, reward_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": format_prompt(q)}) + "\n" for q in QUESTIONS))
    out = tmp_path / "grpo"
    trl_command = Path(sys.executable).parent / "trl"  # the console script a user runs
    if not trl_command.exists():
        pytest.skip(f"no trl command beside {sys.executable}")
    cmd = [str(trl_command), "grpo", "--model_name_or_path", str(tiny_dir), "--dataset_name", str(data),
           "--reward_funcs", "rairl.integrations.trl.reward", "--output_dir", str(out), "--per_device_train_batch_size", "4",
           "--num_generations", "2", "--max_completion_length", "8", "--max_steps", "1", "--logging_steps", "1",
           "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--bf16", "false", "--disable_tqdm", "true"]
    env = {**os.environ, "RAIRL_REWARD": str(reward_dir), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'rewards/rairl/mean'" in proc.stdout + proc.stderr or "rewards/rairl/mean" in proc.stdout + proc.stderr
