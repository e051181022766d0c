"""Shared fixtures: a tiny tokenizer and policy built offline, saved and reloaded by path.

On a machine without CUDA, Triton kernels run in Triton's interpreter. `triton.jit` reads
TRITON_INTERPRET when a kernel module is imported, so it is set here, before any test module
imports rairl (tests of every folder do, and the kernel tests force the Triton backend).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# Property tests draw the same examples on every run, so the suite passes or fails the same way each time;
# HYPOTHESIS_PROFILE=explore draws fresh ones (run it to look for new failures, then pin what it finds).
settings.register_profile("rairl", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "rairl"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A directory holding a tiny Llama policy and its BPE tokenizer (save_pretrained format)."""
    from rairl.data import TaskConfig, make_splits
    from rairl.models.lm import TinyLMConfig, build_tiny_lm
    from rairl.models.tokenizer import format_prompt, load_tokenizer, train_bpe_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    splits = make_splits(0, TaskConfig(n_train=300, n_val=10, n_test=10))
    corpus = [format_prompt(p.question()) + "\n".join(p.solution_steps()) for p in splits.train]
    train_bpe_tokenizer(corpus, 512).save_pretrained(path)
    build_tiny_lm(load_tokenizer(path), TinyLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)).save_pretrained(path)
    return path


@pytest.fixture()
def tiny(tiny_dir):
    """(tokenizer, policy) loaded fresh from `tiny_dir`."""
    from rairl.models.lm import load_causal_lm
    from rairl.models.tokenizer import load_tokenizer

    return load_tokenizer(tiny_dir), load_causal_lm(tiny_dir).eval()


@pytest.fixture(scope="session")
def reward_dir(tiny_dir, tmp_path_factory):
    """A reward model on the tiny policy with random heads (its step scores differ), saved with its tokenizer
    as `rairl score` / `rerank` / `localise` / `view` read it. Tests must not write into it."""
    from rairl.models.lm import load_causal_lm
    from rairl.models.reward import RewardConfig, RewardModel
    from rairl.models.tokenizer import load_tokenizer
    from rairl.score import RewardScorer, ScorerSettings

    path = tmp_path_factory.mktemp("reward")
    reward = RewardModel(load_causal_lm(tiny_dir), RewardConfig())
    torch.manual_seed(0)
    for head in (reward.g_head, reward.h_head):
        torch.nn.init.normal_(head.weight, std=0.5)
    RewardScorer(reward, load_tokenizer(tiny_dir), ScorerSettings()).save_pretrained(path)
    return path
