"""The user chain on one device: train-reward -> score -> rerank -> localise -> train --policy, each stage timed.

A random-initialised checkpoint of Qwen2.5-0.5B's shape (`rairl.plan.qwen25_0p5b_config`, no
download; `--tiny`: a 1-layer model of the same architecture, for a CPU smoke run) with a BPE
tokenizer that carries a chat template, saved like a user's checkpoint; the embedded task's problems
as the user's files. Every stage runs as `rairl <verb> --device DEVICE --dtype DTYPE`; the script
fails unless every stage reports its models on the asked device. Writes seconds per stage as JSON.

    python benchmarks/gpu/user_chain.py --device cuda --json benchmarks/out/user_chain.json
    python benchmarks/gpu/user_chain.py --device cpu --tiny        # CPU smoke run, about a minute
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rairl.data import TaskConfig, make_splits
from rairl.models.tokenizer import format_prompt, train_bpe_tokenizer
from rairl.plan import qwen25_0p5b_config

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_user_files(root: Path, tiny: bool) -> None:
    """policy/ (checkpoint + tokenizer), demos.jsonl, prompts.jsonl, eval.jsonl, pools.jsonl, items.jsonl under `root`."""
    splits = make_splits(0, TaskConfig(n_train=400, n_val=1, n_test=16, max_steps=3))
    examples = [p.example() for p in splits.train]
    tokenizer = train_bpe_tokenizer([format_prompt(e.prompt) + e.completion for e in examples], 512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(root / "policy")
    shape = qwen25_0p5b_config()
    if tiny:
        shape |= {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    shape |= {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id}
    config = AutoConfig.for_model(**{k: v for k, v in shape.items() if k != "architectures"})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(root / "policy")
    rows = lambda items: "".join(json.dumps(r) + "\n" for r in items)  # noqa: E731
    (root / "demos.jsonl").write_text(rows({"prompt": e.prompt, "completion": e.completion, "answer": e.answer} for e in examples[:200]))
    (root / "prompts.jsonl").write_text(rows({"question": e.prompt} for e in examples[200:]))
    (root / "eval.jsonl").write_text(rows({"question": p.question(), "answer": str(p.values()[-1])} for p in splits.test))
    (root / "pools.jsonl").write_text(rows({"question": p.question(), "answer": str(p.values()[-1]), "candidates": [
        {"solution": "\n".join(p.solution_steps())}, {"solution": "#### 0"}]} for p in splits.test))
    (root / "items.jsonl").write_text(rows({"id": str(i), "problem": p.question(), "label": -1,
                                            "steps": ["\n".join(p.solution_steps()[:-1]), p.solution_steps()[-1]]}
                                           for i, p in enumerate(splits.test) if len(p.solution_steps()) > 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the device every stage runs on (cuda, cuda:N, cpu)")
    ap.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    ap.add_argument("--tiny", action="store_true", help="a 1-layer model of the same architecture (CPU smoke run)")
    ap.add_argument("--json", help="write the stage timings and placements here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rairl-chain-"))
    t0 = time.time()
    write_user_files(root, args.tiny)
    stages = {"checkpoint": {"seconds": time.time() - t0}}
    on = ["--device", args.device, "--dtype", args.dtype]
    small = ["--warm.sft.steps", "4", "--warm.reward_train.steps", "4", "--warm.reward_train.batch_size", "8",
             "--warm.reward_train.eval_every", "2", "--warm.negative_samples", "1", "--warm.max_new_tokens", "32"]
    reward = root / "r" / "reward"
    commands = {
        "train-reward": ["train-reward", "--data", str(root / "demos.jsonl"), "--policy", str(root / "policy"), "--warm.template",
                         "chat", *small, "--out", str(root / "r")],
        "score": ["score", "--reward", str(reward), "--data", str(root / "demos.jsonl"), "--out", str(root / "s")],
        "rerank": ["rerank", "--reward", str(reward), "--pools", str(root / "pools.jsonl"), "--out", str(root / "rr")],
        "localise": ["localise", "--reward", str(reward), "--items", str(root / "items.jsonl"), "--out", str(root / "l")],
        "train": ["train", "--quick", "--policy", str(root / "r" / "policy"), "--demos", str(root / "demos.jsonl"), "--prompts",
                  str(root / "prompts.jsonl"), "--eval_data", str(root / "eval.jsonl"), "--reward", str(reward), "--warm.template",
                  "chat", "--warm.sft.steps", "0", "--train.iterations", "2", "--out", str(root / "t")],
    }
    want = torch.device(args.device if args.device != "cuda" else "cuda:0").type
    failed = []
    for name, cmd in commands.items():
        t = time.time()
        proc = subprocess.run([sys.executable, "-m", "rairl.cli", *cmd, *on, "--no-progress"], capture_output=True, text=True)
        out = Path(cmd[cmd.index("--out") + 1])
        metrics = json.loads((out / "metrics.json").read_text()) if proc.returncode == 0 else {}
        stages[name] = {"seconds": time.time() - t, "rc": proc.returncode, "device": metrics.get("device"), "dtype": metrics.get("dtype")}
        if proc.returncode != 0 or not str(metrics.get("device", "")).startswith(want):
            failed.append(name)
            print(f"!! {name}: rc={proc.returncode} device={metrics.get('device')}\n{proc.stderr[-2000:]}", flush=True)
        print(f"{name:<13}{stages[name]['seconds']:8.1f} s  {stages[name]['device']}  {stages[name]['dtype']}", flush=True)
    result = {"bench": "user_chain", "device": args.device, "tiny": args.tiny, "torch": torch.__version__, "stages": stages,
              "failed": failed, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
