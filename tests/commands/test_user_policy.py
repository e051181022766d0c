"""`rairl train --policy`: a user's checkpoint, demonstrations, unlabelled prompts and held-out file, on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from rairl.data import TaskConfig, make_splits
from rairl.models.lm import TinyLMConfig, build_tiny_lm
from rairl.models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")




@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A tiny Qwen2-architecture checkpoint saved like a user's, and the user's three files."""
    root = tmp_path_factory.mktemp("user")
    splits = make_splits(11, TaskConfig(n_train=120, n_val=1, n_test=8, max_steps=3))
    examples = [p.example() for p in splits.train]
    tokenizer = train_bpe_tokenizer([format_prompt(e.prompt) + e.completion for e in examples], 400)
    tokenizer.chat_template = CHAT  # saved with the tokenizer, as a chat model's is
    tokenizer.save_pretrained(root / "policy")
    shape = TinyLMConfig(arch="qwen2", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    build_tiny_lm(load_tokenizer(root / "policy"), shape, seed=1).save_pretrained(root / "policy")
    # Its config.json makes AutoTokenizer load Qwen2's tokenizer class, which adds <|endoftext|>: the model is
    # built again for the tokenizer as it now loads, so that it embeds every id (rairl refuses a pair that does not).
    build_tiny_lm(load_tokenizer(root / "policy"), shape, seed=1).save_pretrained(root / "policy")
    (root / "demos.jsonl").write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion, "answer": e.answer}) + "\n"
                                              for e in examples[:60]))
    (root / "prompts.jsonl").write_text("".join(json.dumps({"question": e.prompt}) + "\n" for e in examples[60:]))  # no answers
    (root / "eval.jsonl").write_text("".join(json.dumps({"question": p.question(), "answer": str(p.values()[-1])}) + "\n"
                                             for p in splits.test))
    return root


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_train_posts_trains_the_users_policy_on_its_files(rairl, user_files, tmp_path, dtype):
    root, out = user_files, tmp_path / "run"
    rairl("train", "--quick", "--policy", str(root / "policy"), "--demos", str(root / "demos.jsonl"),
          "--prompts", str(root / "prompts.jsonl"), "--eval_data", str(root / "eval.jsonl"), "--train.iterations", "2",
          "--device", "cpu", "--dtype", dtype, "--out", str(out), "--no-progress")
    m = json.loads((out / "metrics.json").read_text())
    assert m["device"] == "cpu" and m["dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[dtype]
    assert m["tokens_trained"] > 0 and 0.0 <= m["pass1"] <= 1.0 and m["k"] == 2 and len(m["per_problem_pass1"]) == 8
    warm = json.loads((out / "warm" / "warm.json").read_text())
    assert warm["provenance"]["policy"] == str(root / "policy") and warm["provenance"]["demos"] == str(root / "demos.jsonl")
    from rairl.models.lm import load_causal_lm

    trained = load_causal_lm(out / "policy")
    assert trained.config.model_type == "qwen2"
    assert {p.dtype for p in load_causal_lm(out / "policy", dtype=torch.float32).parameters()} == {torch.float32}
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and all(r["disc_loss"] > 0 for r in rows)


def test_train_without_eval_data_skips_evaluation_and_given_reward_is_used(rairl, user_files, tmp_path):
    root = user_files
    first = tmp_path / "first"
    rairl("train", "--quick", "--policy", str(root / "policy"), "--demos", str(root / "demos.jsonl"),
          "--prompts", str(root / "prompts.jsonl"), "--train.iterations", "1", "--train.method", "frozen",
          "--warm.sft.steps", "0", "--device", "cpu", "--out", str(first), "--no-progress")
    m = json.loads((first / "metrics.json").read_text())
    assert m["evaluated"] is False and "pass1" not in m
    second = tmp_path / "second"  # the first run's warm reward, given: loaded, not trained
    rairl("train", "--quick", "--policy", str(root / "policy"), "--demos", str(root / "demos.jsonl"),
          "--prompts", str(root / "prompts.jsonl"), "--reward", str(first / "warm" / "reward"), "--train.iterations", "1",
          "--train.method", "frozen", "--warm.sft.steps", "0", "--device", "cpu", "--out", str(second), "--no-progress")
    warm = json.loads((second / "warm" / "warm.json").read_text())
    assert warm["reward_best"]["given"] == str(first / "warm" / "reward") and not (second / "warm" / "reward_log.jsonl").exists()


def test_bad_options_are_refused_before_anything_is_written(rairl, user_files, tmp_path):
    root, out = user_files, tmp_path / "never"
    common = ["--policy", str(root / "policy"), "--demos", str(root / "demos.jsonl"), "--prompts", str(root / "prompts.jsonl"),
              "--out", str(out)]
    if not torch.cuda.is_available():
        proc = rairl("train", *common, "--device", "cuda", check=False)
        assert proc.returncode == 2 and "no CUDA device here" in proc.stderr
    proc = rairl("train", "--demos", str(root / "demos.jsonl"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "need --policy" in proc.stderr
    proc = rairl("train", "--policy", str(root / "policy"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "--demos" in proc.stderr
    proc = rairl("train", *common[:-2], "--policy", str(tmp_path / "polcy"), "--out", str(out), check=False)
    assert proc.returncode == 2 and f"--policy {tmp_path / 'polcy'}: no such folder" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_whole_chain_on_a_chat_checkpoint(rairl, user_files, tmp_path, dtype):
    """train-reward -> score -> rerank -> localise (paragraph steps) -> train --policy --reward, chat template on."""
    root = user_files
    on = ["--device", "cpu", "--dtype", dtype]
    rairl("train-reward", "--data", str(root / "demos.jsonl"), "--policy", str(root / "policy"), "--warm.template", "chat",
          "--warm.sft.steps", "4", "--warm.sft.batch_size", "8", "--warm.reward_train.steps", "4", "--warm.reward_train.batch_size", "8",
          "--warm.reward_train.eval_every", "2", "--warm.negative_samples", "1", "--warm.max_new_tokens", "24", *on,
          "--out", str(tmp_path / "r"), "--no-progress")
    reward = tmp_path / "r" / "reward"
    assert json.loads((reward / "scorer.json").read_text())["template"] == "chat"
    rairl("score", "--reward", str(reward), "--data", str(root / "demos.jsonl"), *on, "--out", str(tmp_path / "s"), "--no-progress")
    scored = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert scored["dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[dtype] and scored["device"] == "cpu"
    rows = scored["rows"]
    assert len(rows) == 60 and all(len(r["step_scores"]) == len(r["steps"]) for r in rows)
    pools = tmp_path / "pools.jsonl"
    pools.write_text("".join(json.dumps({"question": e["question"], "answer": e["answer"], "candidates": [
        {"solution": f"#### {e['answer']}"}, {"solution": "#### 0"}, {"solution": f"#### {e['answer']}"}]}) + "\n"
        for e in map(json.loads, (root / "eval.jsonl").read_text().splitlines())))
    rairl("rerank", "--reward", str(reward), "--pools", str(pools), "--policy", str(root / "policy"), *on, "--out", str(tmp_path / "rr"))
    rr = json.loads((tmp_path / "rr" / "metrics.json").read_text())["rerank"]
    assert rr["problems"] == 8 and rr["oracle"] == 1.0 and 0.0 <= rr["reward_best_of_n"] <= 1.0
    items = tmp_path / "items.jsonl"
    steps = ["Tom has 3 pens.\nHe gets 2 more: 3 + 2 = 5.", "Then 5 * 2 = 11,\nso he has 11.", "#### 11"]
    items.write_text(json.dumps({"id": "x", "problem": "Tom has 3 pens. He gets 2 more. The number doubles.", "steps": steps, "label": 1}) + "\n")
    rairl("localise", "--reward", str(reward), "--items", str(items), "--threshold=1e9", *on, "--out", str(tmp_path / "loc"))
    loc = json.loads((tmp_path / "loc" / "metrics.json").read_text())
    assert loc["predictions"] == [{"id": "x", "label": 1, "predicted": 0}]  # every step below 1e9: the first one
    rairl("train", "--quick", "--policy", str(tmp_path / "r" / "policy"), "--demos", str(root / "demos.jsonl"),
          "--prompts", str(root / "prompts.jsonl"), "--reward", str(reward), "--warm.template", "chat", "--warm.sft.steps", "0",
          "--train.iterations", "2", *on, "--out", str(tmp_path / "t"), "--no-progress")
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["tokens_trained"] > 0


def test_chat_template_is_refused_where_there_is_none(rairl, user_files, tmp_path):
    proc = rairl("demo", "--quick", "--warm.template", "chat", "--out", str(tmp_path / "d"), check=False)
    assert proc.returncode == 2 and "chat template" in proc.stderr and not (tmp_path / "d").exists()
    proc = rairl("train-reward", "--data", str(user_files / "demos.jsonl"), "--warm.template", "chat", "--out", str(tmp_path / "r"),
                 check=False)
    assert proc.returncode == 2 and "chat template" in proc.stderr and not (tmp_path / "r").exists()


def test_other_schemas_through_a_field_mapping(rairl, user_files, tmp_path):
    root = user_files
    demos = [json.loads(line) for line in (root / "demos.jsonl").read_text().splitlines()]
    (tmp_path / "demos.jsonl").write_text("".join(json.dumps({"problem": d["prompt"], "solution": d["completion"], "final": d["answer"]})
                                                  + "\n" for d in demos))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"problem": d["prompt"]}) + "\n" for d in demos[:20]))
    common = ["--policy", str(root / "policy"), "--demos", str(tmp_path / "demos.jsonl"), "--prompts", str(tmp_path / "prompts.jsonl")]
    rairl("train", "--quick", *common, "--fields", "prompt=problem,completion=solution,answer=final", "--train.iterations", "1",
          "--train.method", "frozen", "--warm.sft.steps", "0", "--device", "cpu", "--out", str(tmp_path / "t"), "--no-progress")
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["tokens_trained"] > 0
    proc = rairl("train", "--quick", *common, "--out", str(tmp_path / "u"), check=False)  # no mapping: the column is missing
    assert proc.returncode == 2 and "prompts.jsonl:1:" in proc.stderr and not (tmp_path / "u").exists()  # file:line:field
    proc = rairl("train", "--quick", *common, "--fields", "question=problem", "--out", str(tmp_path / "v"), check=False)
    assert proc.returncode == 2 and "unknown field(s) ['question']" in proc.stderr
