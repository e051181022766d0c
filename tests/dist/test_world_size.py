"""Two processes (gloo on loopback) train exactly like one on the same global batch (DESIGN.md §7)."""

from __future__ import annotations

from pathlib import Path

import torch

HERE = Path(__file__).parent


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_processes_match_one_under_ddp_and_fsdp2_and_not_with_a_rule_broken(tiny_dir, tmp_path, launch):
    out = tmp_path / "params.pt"
    proc = launch(str(HERE / "steps_worker.py"), str(tiny_dir), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(out, weights_only=True)
    single = res["single"]
    assert max_diff(res["ddp"], single) < 1e-4
    assert max_diff(res["fsdp2"], single) < 1e-4
    assert max_diff(res["ddp_wrapper_broken"], single) > 1e-3  # the test can fail: each rule matters
    assert max_diff(res["ddp_counts_broken"], single) > 1e-3
