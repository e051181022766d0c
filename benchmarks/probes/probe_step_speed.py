"""Milliseconds per SFT step and samples per second of the default tiny policy on the embedded task.

    python benchmarks/probes/probe_step_speed.py [--steps 30] [--threads 2]

To compare two versions of the code on one machine, run it from each checkout in turn, e.g.
`git worktree add /tmp/old REV && PYTHONPATH=/tmp/old python benchmarks/probes/probe_step_speed.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import rairl
from rairl.data import TaskConfig, make_splits
from rairl.models.batch import encode_completions, encode_prompts
from rairl.models.lm import TinyLMConfig, build_tiny_lm
from rairl.models.sampling import sample_completions
from rairl.models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer
from rairl.train.sft import SFTConfig, train_sft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    examples = [p.example() for p in make_splits(0, TaskConfig()).train]
    folder = tempfile.mkdtemp()
    train_bpe_tokenizer([format_prompt(e.prompt) + e.completion for e in examples], 512).save_pretrained(folder)
    tok = load_tokenizer(folder)
    lm = build_tiny_lm(tok, TinyLMConfig())
    p = encode_prompts(tok, [e.prompt for e in examples], 512)
    c = encode_completions(tok, [e.completion for e in examples], 512)
    t0 = time.time()
    train_sft(lm, p, c, tok.pad_token_id, SFTConfig(steps=args.steps, batch_size=64, log_every=10), progress=False)
    t1 = time.time()
    sample_completions(lm, p[:64], n_samples=4, max_new_tokens=64, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, progress=False)
    t2 = time.time()
    print(f"{rairl.__file__}: SFT {(t1 - t0) / args.steps * 1e3:.0f} ms/step (batch 64), sampling {256 / (t2 - t1):.0f} samples/s (64 tokens)")


if __name__ == "__main__":
    main()
