"""The `rairl` command in a subprocess, as a user runs it."""

import json
from pathlib import Path

import pytest
from matplotlib.image import imread

GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"




@pytest.fixture(scope="module")
def quick_demo(rairl, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = rairl("demo", "--quick", "--seed", "3", "--out", str(out), "--no-progress")
    return out, proc


def test_demo_writes_every_metric_and_prints_the_table(quick_demo):
    out, proc = quick_demo
    m = json.loads((out / "metrics.json").read_text())
    for key in ("n", "reward_best_of_n", "random_expected", "majority_vote", "logprob_best_of_n", "oracle"):
        assert 0.0 <= m["rerank"][key] <= (16 if key == "n" else 1.0), key
    for key in ("first_error_accuracy", "no_error_accuracy", "f1", "logprob_first_error_accuracy",
                "logprob_no_error_accuracy", "logprob_f1", "natural_first_error_accuracy"):
        assert key in m["localise"], key
    assert {"sft_pass1"} <= set(m["policy"]) and "val_auroc" in m["reward"] and m["seconds"] > 0
    assert m["seed"] == 3 and m["config"]["seed"] == 3
    assert "R-AIRL reward" in proc.stdout and "majority vote" in proc.stdout and "policy mean log-prob" in proc.stdout
    r = m["rerank"]
    curve = r["curve"]  # best-of-N against N: the table's numbers at N = n, the sampled accuracy at N = 1
    assert curve["n"] == list(range(1, r["n"] + 1))
    for key, at_n in (("reward", "reward_best_of_n"), ("logprob", "logprob_best_of_n"), ("majority_vote", "majority_vote"),
                      ("random", "random_expected"), ("oracle", "oracle")):
        assert curve[key][0] == pytest.approx(r["random_expected"]) and curve[key][-1] == pytest.approx(r[at_n]), key
    assert 0.0 <= m["localise"]["step_auroc"] <= 1.0 and 0.0 <= m["localise"]["logprob_step_auroc"] <= 1.0
    for name in ("best_of_n.png", "localise_roc.png"):
        image = imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0, name


def test_localise_and_rerank_commands_on_files(rairl, quick_demo, tmp_path):
    out, _ = quick_demo
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"id": "a", "problem": "Tom has 3 pens. Tom gets 2 more.", "steps": ["3 + 2 = 6", "#### 6"], "label": 0}) + "\n"
        + json.dumps({"id": "b", "problem": "Tom has 3 pens. Tom gets 2 more.", "steps": ["3 + 2 = 5", "#### 5"], "label": -1}) + "\n"
    )
    rairl("localise", "--reward", str(out / "reward"), "--items", str(items), "--out", str(tmp_path / "loc"))
    m = json.loads((tmp_path / "loc" / "metrics.json").read_text())
    assert {"first_error_accuracy", "no_error_accuracy", "f1"} <= set(m["localise"]) and len(m["predictions"]) == 2

    pools = tmp_path / "pools.jsonl"
    pools.write_text(json.dumps({"question": "Tom has 3 pens. Tom gets 2 more.", "answer": "5",
                                 "candidates": [{"solution": "3 + 2 = 5\n#### 5"}, {"solution": "3 + 2 = 6\n#### 6"}]}) + "\n")
    rairl("rerank", "--reward", str(out / "reward"), "--pools", str(pools), "--policy", str(out / "policy"), "--out", str(tmp_path / "rr"))
    m = json.loads((tmp_path / "rr" / "metrics.json").read_text())["rerank"]
    assert m["oracle"] == 1.0 and m["random_expected"] == 0.5 and "logprob_best_of_n" in m


def test_bad_input_names_file_line_and_field(rairl, quick_demo, tmp_path):
    out, _ = quick_demo
    items = tmp_path / "bad.jsonl"
    items.write_text(json.dumps({"id": "a", "problem": "p", "steps": ["s"], "label": -1}) + "\n{not json\n")
    proc = rairl("localise", "--reward", str(out / "reward"), "--items", str(items), check=False)
    assert proc.returncode == 2 and f"{items}:2:" in proc.stderr
    items.write_text(json.dumps({"id": "a", "problem": "p", "steps": "s", "label": -1}) + "\n")
    proc = rairl("localise", "--reward", str(out / "reward"), "--items", str(items), check=False)
    assert proc.returncode == 2 and ":1:" in proc.stderr and "steps" in proc.stderr
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"warm": {"sft": {"stepz": 3}}}))
    proc = rairl("demo", "--quick", "--config", str(cfg), "--out", str(tmp_path / "d"), check=False)
    assert proc.returncode != 0 and "warm.sft.stepz" in proc.stderr


@pytest.mark.parametrize("cmd", ["demo", "train", "compare", "train-reward", "score", "rerank", "localise", "plan"])
def test_help_for_every_command(cmd, capsys):
    from rairl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([cmd, "--help"])
    assert exit_info.value.code == 0 and "--out" in capsys.readouterr().out


@pytest.mark.skipif(not GSM8K.exists(), reason="GSM8K not present at ../shared/data/gsm8k")
def test_train_reward_on_a_gsm8k_subset(rairl, tmp_path):
    rairl("train-reward", "--data", str(GSM8K), "--limit", "40", "--out", str(tmp_path / "r"), "--no-progress",
          "--warm.model.hidden_size", "32", "--warm.model.num_layers", "1", "--warm.model.num_heads", "2",
          "--warm.model.intermediate_size", "64", "--warm.sft.steps", "4", "--warm.sft.batch_size", "4",
          "--warm.reward_train.steps", "4", "--warm.reward_train.batch_size", "4", "--warm.reward_train.eval_every", "2",
          "--warm.negative_samples", "1", "--warm.max_new_tokens", "24", "--warm.vocab_size", "600")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert 0.0 <= m["reward"]["val_auroc"] <= 1.0 and m["data"]["read"] == 40 and 0 < m["data"]["train"] <= 36
    assert 0.0 <= m["data"]["negatives_copying_experts"] <= 1.0
    assert (tmp_path / "r" / "reward" / "heads.safetensors").exists()


def test_file_commands_take_a_config_file(rairl, quick_demo, tmp_path):
    out, _ = quick_demo
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "a", "problem": "Tom has 3 pens.", "steps": ["3 + 2 = 6", "#### 6"], "label": 0}) + "\n")
    cfg = tmp_path / "loc.json"
    cfg.write_text(json.dumps({"reward": str(out / "reward"), "items": str(items), "threshold": -1e9}))
    rairl("localise", "--config", str(cfg), "--out", str(tmp_path / "loc"))
    m = json.loads((tmp_path / "loc" / "metrics.json").read_text())
    assert m["localise"]["threshold"] == -1e9 and m["predictions"][0]["predicted"] == -1
    cfg.write_text(json.dumps({"reward": str(out / "reward"), "itemz": "x"}))
    proc = rairl("localise", "--config", str(cfg), check=False)
    assert proc.returncode == 2 and "unknown field 'itemz'" in proc.stderr
    proc = rairl("rerank", "--reward", str(out / "reward"), check=False)
    assert proc.returncode == 2 and "--pools" in proc.stderr


def test_missing_flash_attn_names_the_extra(tiny_dir):
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    from rairl.models.lm import load_causal_lm

    with pytest.raises(ImportError, match=r"rairl\[gpu\]"):
        load_causal_lm(tiny_dir, attn_implementation="flash_attention_2")


def test_plan_command_reads_a_config_and_says_whether_it_fits(tmp_path, capsys):
    from rairl.cli import main
    from rairl.plan import qwen25_1p5b_config, write_config

    model = write_config(qwen25_1p5b_config(), tmp_path / "m")
    assert main(["plan", "--model", str(model), "--gpu-gb", "24", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("fits in 24 GB")
    total = json.loads((tmp_path / "o" / "metrics.json").read_text())["plan"]["total"]
    assert main(["plan", "--model", "qwen2.5-1.5b", "--gpu_gb", str(total / 2)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"does not fit in {total / 2:g} GB")
    assert main(["plan", "--model", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_localise_and_score_take_paragraph_steps(rairl, quick_demo, tmp_path):
    """Real step-labelled data: steps hold newlines; predictions and scores are by the given step index."""
    out, _ = quick_demo
    items = tmp_path / "para.jsonl"
    rows = [{"id": f"p{i}", "problem": "Tom has 3 pens.", "label": label,
             "steps": ["First, 3 + 2 = 5\nso he has 5.", "Then 5 * 2 = 10\nwhich doubles it.\n\nStill step two.", "#### 10"]}
            for i, label in enumerate((-1, 1, 2))]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rairl("localise", "--reward", str(out / "reward"), "--items", str(items), "--threshold=-1e9", "--out", str(tmp_path / "loc"))
    m = json.loads((tmp_path / "loc" / "metrics.json").read_text())
    assert [p["predicted"] for p in m["predictions"]] == [-1, -1, -1]  # nothing below -1e9: "no error" for every item
    assert m["localise"]["no_error_accuracy"] == 1.0 and m["localise"]["first_error_accuracy"] == 0.0 and "f1" in m["localise"]
    data = tmp_path / "para_experts.jsonl"
    data.write_text(json.dumps({"prompt": "Tom has 3 pens.", "completion": "Step 1: 3 + 2 = 5\nso 5.\nStep 2: 5 * 2 = 10\n#### 10"}) + "\n")
    rairl("score", "--reward", str(out / "reward"), "--data", str(data), "--step_delimiter", r"^Step \d+:", "--out", str(tmp_path / "s"))
    row = json.loads((tmp_path / "s" / "metrics.json").read_text())["rows"][0]
    assert row["steps"] == ["Step 1: 3 + 2 = 5\nso 5.", "Step 2: 5 * 2 = 10\n#### 10"] and len(row["step_scores"]) == 2
    proc = rairl("score", "--reward", str(out / "reward"), "--data", str(data), "--step_delimiter", "(", check=False)
    assert proc.returncode == 2 and "step delimiter" in proc.stderr
    # a trace longer than the scorer's limit: an error naming the item and the option, then scored once raised
    rairl("localise", "--reward", str(out / "reward"), "--items", str(items), "--out", str(tmp_path / "loc2"), "--batch_size", "2")
    proc = rairl("localise", "--reward", str(out / "reward"), "--items", str(items), "--max_completion_tokens", "8",
                 "--out", str(tmp_path / "loc3"), check=False)
    assert proc.returncode != 0 and "p0" in proc.stderr and "--max_completion_tokens" in proc.stderr
    assert not (tmp_path / "loc3" / "metrics.json").exists()
