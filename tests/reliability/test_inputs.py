"""What a user feeds rairl: pipes read whole, each bad input file its own one-line message (exit 2), a
mistyped local model path refused before any hub lookup, a tokenizer that does not fit its model
refused, and an over-long record named by its file and line.

Commands run in-process through `rairl.cli.main` (one line on stderr, the exit code), except where the
behaviour belongs to the process (a pipe on stdin). Models are the tiny ones of `tests/conftest.py`.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rairl import cli
from rairl.data import load_candidate_pools

EXAMPLES = [{"prompt": "Tom has 3 pens. Tom gets 2 more.", "completion": "3 + 2 = 5\n#### 5", "answer": "5"},
            {"prompt": "Ann has 4 cups.", "completion": "4 * 2 = 8\n#### 8"},
            {"prompt": "Bob has 1 hat.", "completion": "1 + 1 = 2\n#### 2"}]
LONG = "Tom has 3 pens and gives one to Ann. " * 20  # far over the --max_prompt_tokens 48 these tests set


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A hub lookup, should one slip through, fails at once instead of waiting on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def no_hub(monkeypatch):
    """Any `from_pretrained` of a tokenizer or model fails the test: the paths must be refused before."""
    import transformers

    def hub(*args, **kwargs):
        raise AssertionError(f"from_pretrained{args} reached: a hub lookup")

    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", hub)


def _error(capsys, argv: list[str]) -> str:
    """The one stderr line of a command that must exit 2."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    return err


# ---------------------------------------------------------------- read once, streaming


def test_a_file_piped_to_dev_stdin_is_scored_whole(reward_dir, tmp_path):
    data = _jsonl(tmp_path / "f.jsonl", EXAMPLES)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(f"cat {data} | {sys.executable} -m rairl.cli score --reward {reward_dir} --data /dev/stdin "
                          f"--out {tmp_path / 'out'} --no-progress", shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"]
    assert [r["source"] for r in rows] == ["/dev/stdin:1", "/dev/stdin:2", "/dev/stdin:3"]
    assert all(len(r["step_scores"]) == 2 for r in rows)


def test_a_json_list_from_a_slow_pipe_is_read_from_the_one_handle():
    """The reader looks past the leading whitespace for `[` without reopening the pipe, whose bytes come late."""
    pool = {"question": "Q?", "answer": "7", "candidates": [{"solution": "#### 7"}, {"solution": "#### 8"}]}
    parts = (b"\n  \n", json.dumps([pool, pool], indent=1).encode())
    text = b"".join(parts)
    starts = [text.count(b"\n", 0, m.start()) + 1 for m in re.finditer(rb"(?m)^ \{", text)]  # each pool's first line
    r, w = os.pipe()

    def write():
        with os.fdopen(w, "wb") as f:
            for part in parts:
                f.write(part)
                f.flush()
                time.sleep(0.2)

    threading.Thread(target=write, daemon=True).start()
    try:
        pools = load_candidate_pools(f"/dev/fd/{r}")
    finally:
        os.close(r)
    assert [p.is_correct for p in pools] == [[True, False]] * 2
    assert [p.source for p in pools] == [f"/dev/fd/{r}:{line}" for line in starts] and len(starts) == 2


# ---------------------------------------------------------------- bad input files


@pytest.mark.parametrize("case, message", [
    ("empty", "{f}: empty, no records"),
    ("blank_lines", "{f}: only blank lines, no records"),
    ("empty_list", "{f}: an empty JSON list, no records"),
    ("folder_of_jsonl", "{f}: a folder, not a file: give one of its JSON/JSONL files"),
    ("empty_folder", "{f}: an empty folder; expected a JSON/JSONL file"),
    ("unreadable", "{f}: permission denied (this user may not read it)"),
])
def test_each_bad_input_file_has_its_own_one_line_message(case, message, reward_dir, tmp_path, capsys, monkeypatch):
    f = tmp_path / "data.jsonl"
    if case == "empty":
        f.write_bytes(b"")
    elif case == "blank_lines":
        f.write_text("\n   \n\t\n\n")
    elif case == "empty_list":
        f.write_text(" [ ]\n")
    elif case == "folder_of_jsonl":
        f = tmp_path / "items"
        f.mkdir()
        _jsonl(f / "part-0.jsonl", EXAMPLES)
    elif case == "empty_folder":
        f = tmp_path / "items"
        f.mkdir()
    else:  # chmod 000 does not stop root, so open is made to refuse as the OS would
        _jsonl(f, EXAMPLES)
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if os.fspath(file) == str(f):
                raise PermissionError(13, "Permission denied", str(f))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    out = tmp_path / "out"
    for argv in (["score", "--data", str(f)], ["localise", "--items", str(f)]):
        err = _error(capsys, [*argv, "--reward", str(reward_dir), "--out", str(out), "--no-progress"])
        assert err.startswith(f"rairl {argv[0]}: error: " + message.format(f=f)), err
    assert not (out / "metrics.json").exists()


# ---------------------------------------------------------------- model and tokenizer paths


def test_a_mistyped_local_policy_fails_at_once_without_a_hub_lookup(reward_dir, tmp_path, capsys, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    data = _jsonl(tmp_path / "d.jsonl", EXAMPLES)
    pools = _jsonl(tmp_path / "p.jsonl", [{"question": "Q?", "answer": "7", "candidates": [{"solution": "#### 7"}]}])
    commands = [["train-reward", "--data", str(data), "--policy", "./runs/pollicy", "--out", "runs/r"],
                ["rerank", "--reward", str(reward_dir), "--pools", str(pools), "--policy", "./runs/pollicy", "--out", "runs/k"],
                ["train", "--policy", "runs/pollicy", "--demos", str(data), "--prompts", str(data), "--out", "runs/t"]]
    for argv in commands:
        t0 = time.monotonic()
        err = _error(capsys, [*argv, "--no-progress"])
        policy = argv[argv.index("--policy") + 1]
        assert err == f"rairl {argv[0]}: error: --policy {policy}: no such folder"
        assert time.monotonic() - t0 < 5
    err = _error(capsys, ["train", "--quick", "--warm", "runs/dmeo", "--out", "runs/w", "--no-progress"])
    assert err == "rairl train: error: --warm runs/dmeo: no such folder"
    err = _error(capsys, ["score", "--reward", "./runs/rewrad", "--data", str(data), "--out", "runs/s"])
    assert err == "rairl score: error: --reward ./runs/rewrad: no such folder"
    assert not any((tmp_path / "runs").iterdir())  # nothing was written


def test_a_folder_without_tokenizer_files_says_so(tiny_dir, tmp_path, no_hub):
    from rairl.models.tokenizer import load_tokenizer

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer(tmp_path / "model")
    assert str(info.value) == f"{tmp_path / 'model'}: no tokenizer files (tokenizer.json / tokenizer_config.json)"


def test_a_tokenizer_with_more_ids_than_the_model_embeds_is_refused(tiny_dir, reward_dir, tmp_path, capsys):
    from rairl.models.lm import TinyLMConfig, build_tiny_lm
    from rairl.models.tokenizer import load_tokenizer, train_bpe_tokenizer
    from rairl.score import RewardScorer

    wide = tmp_path / "wide_reward"  # the reward's own lm/ with a tokenizer grown by added tokens
    RewardScorer.from_pretrained(reward_dir, "cpu", "fp32").save_pretrained(wide)
    tokenizer = load_tokenizer(wide / "lm")
    tokenizer.add_tokens(["<extra-1>", "<extra-2>"])
    tokenizer.save_pretrained(wide / "lm")
    with pytest.raises(ValueError) as info:
        RewardScorer.from_pretrained(wide, "cpu", "fp32")
    n = len(tokenizer)
    assert str(info.value).startswith(f"the tokenizer {wide / 'lm'} has {n} token ids but the model {wide / 'lm'} embeds only {n - 2}")

    small = tmp_path / "small_policy"  # a --policy with a smaller vocabulary than the reward's tokenizer
    small_tok = train_bpe_tokenizer(["Question: 1 + 2 = 3\nAnswer:\n#### 3"] * 10, 300)
    small_tok.save_pretrained(small)
    build_tiny_lm(small_tok, TinyLMConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)).save_pretrained(small)
    assert len(small_tok) < len(load_tokenizer(tiny_dir))
    pools = _jsonl(tmp_path / "p.jsonl", [{"question": "Q?", "answer": "7", "candidates": [{"solution": "#### 7"}]}])
    err = _error(capsys, ["rerank", "--reward", str(reward_dir), "--pools", str(pools), "--policy", str(small),
                          "--out", str(tmp_path / "out"), "--no-progress"])
    assert f"the tokenizer {reward_dir / 'lm'} has" in err and f"the model {small} embeds only {len(small_tok)}" in err


# ---------------------------------------------------------------- over-long records


def test_an_over_long_prompt_is_named_by_file_and_line(reward_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [*EXAMPLES[:2], {**EXAMPLES[2], "prompt": LONG}])
    pools = _jsonl(tmp_path / "p.jsonl", [{"question": q, "answer": "5", "candidates": [{"solution": "#### 5"}, {"solution": "#### 6"}]}
                                          for q in ("Q1?", "Q2?", LONG)])
    items = _jsonl(tmp_path / "i.jsonl", [{"id": k, "problem": q, "steps": ["3 + 2 = 5", "#### 5"], "label": -1}
                                          for k, q in (("a", "Q1?"), ("b", "Q2?"), ("c", LONG))])
    limits = ["--max_prompt_tokens", "48", "--reward", str(reward_dir), "--no-progress"]
    for argv, where in ((["score", "--data", str(data)], f"{data}:3"), (["rerank", "--pools", str(pools)], f"{pools}:3 candidate 0"),
                        (["localise", "--items", str(items)], f"item c ({items}:3)"),
                        (["view", "--data", str(data)], f"{data}:3")):
        err = _error(capsys, [*argv, *limits, "--out", str(tmp_path / argv[0])])
        assert f"error: {where}: prompt of " in err and "tokens > max_prompt_tokens=48" in err, err


def test_encode_prompts_names_records_and_falls_back_to_their_index(tiny):
    from rairl.models.batch import encode_prompts

    tokenizer, _ = tiny
    with pytest.raises(ValueError, match=r"^f.jsonl:9: prompt of \d+ tokens > max_prompt_tokens=48; raise the limit$"):
        encode_prompts(tokenizer, ["Q?", LONG], 48, names=["f.jsonl:8", "f.jsonl:9"])
    with pytest.raises(ValueError, match=r"^prompt 1: prompt of \d+ tokens"):
        encode_prompts(tokenizer, ["Q?", LONG], 48, names=["f.jsonl:8", ""])
    assert encode_prompts(tokenizer, ["Q?"], 48, names=["f.jsonl:8"])[0]
