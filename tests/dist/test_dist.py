"""`Dist` in one process, and the engine a launch picks."""

from __future__ import annotations

import random

import pytest
import torch

from rairl.dist import Dist, init_dist
from rairl.train.run import RunConfig


def test_shares_cover_every_item_once_in_rank_order():
    for _ in range(50):
        n, world = random.randrange(0, 40), random.randrange(1, 9)
        shares = [Dist(rank=r, world_size=world).share(n) for r in range(world)]
        assert [i for s in shares for i in s] == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_one_process_is_a_no_op():
    d = Dist()
    x = torch.randn(3)
    assert torch.equal(d.all_sum(x), x) and d.all_sum(x) is not x
    assert d.gather([1, 2]) == [1, 2] and d.main and not d.on
    loss = torch.tensor(2.0)
    assert d.scale_loss(loss) is loss


def test_engine_choice(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert init_dist("auto", lora=True).engine == "ddp" and init_dist("auto", lora=False).engine == "fsdp2"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate config chose FSDP
    assert init_dist("auto").engine == "fsdp2"
    with pytest.raises(ValueError, match="LoRA run"):
        init_dist("fsdp2", lora=True)
    with pytest.raises(ValueError, match="--parallel 'zero3'"):
        init_dist("zero3")
    with pytest.raises(ValueError, match="parallel='fsdp2' shards full weights"):
        RunConfig(lora=True, parallel="fsdp2")
