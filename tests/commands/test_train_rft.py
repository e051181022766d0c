"""`rairl train --train.operator rft`: reward-ranked fine-tuning from the command line."""

import json


def test_rairl_train_runs_the_rft_operator(rairl, tmp_path):
    out = tmp_path / "rft"
    rairl("train", "--quick", "--train.operator", "rft", "--train.method", "frozen", "--rft.rounds", "2", "--rft.prompts_per_round", "4",
          "--rft.samples", "2", "--rft.steps_per_round", "2", "--rft.batch_size", "4", "--out", str(out), "--no-progress")
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and all(r["questions"] == 4 for r in rows)
    m = json.loads((out / "metrics.json").read_text())
    assert m["tokens_trained"] == rows[-1]["tokens_trained"] > 0 and "pass1" in m
    assert (out / "policy" / "config.json").exists()
    bad = rairl("train", "--quick", "--train.operator", "rft", "--lora", "true", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode != 0 and "operator='rft'" in bad.stderr


def test_rairl_train_rft_cut_steps_trains_on_prefixes_the_reward_accepts(rairl, tmp_path):
    out = tmp_path / "cut"
    args = ["train", "--quick", "--train.operator", "rft", "--rft.rounds", "1", "--rft.prompts_per_round", "4", "--rft.samples", "2",
            "--rft.steps_per_round", "2", "--rft.batch_size", "4", "--rft.cut_steps", "true", "--rft.step_quantile", "0.3"]
    proc = rairl(*args, "--train.method", "frozen", "--out", str(out))
    assert "samples cut at the first step the reward scores below" in proc.stdout
    row, = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert row["questions"] == 4 and 0 <= row["kept"] <= 4
    bad = rairl(*args, "--train.method", "outcome", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode != 0 and "cut_steps" in bad.stderr
