"""Advantages and the PPO loss: hand-computed cases, loop references, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rairl.rl.advantages import (
    broadcast_to_tokens,
    masked_mean,
    sequence_advantages,
    step_advantages,
)
from rairl.rl.ppo import kl_k3, policy_loss, ppo_clip_loss


def _rng() -> torch.Generator:
    seed = torch.seed() % 2**31  # fresh randomness each run; the seed is printed on failure
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- references (plain Python)


def _group_norm_ref(values: list[list[float]], eps: float, scale: bool) -> list[list[float]]:
    """Normalise every value by the mean / population std of the flat list of lists."""
    flat = [v for vs in values for v in vs]
    if not flat:
        return [[] for _ in values]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((v - mean) ** 2 for v in flat) / len(flat))
    return [[(v - mean) / (std + eps) if scale else v - mean for v in vs] for vs in values]


def _step_ref(rewards: list[list[float]], G: int, gamma: float, eps: float, scale: bool):
    rtg = []
    for rs in rewards:
        out = [0.0] * len(rs)
        for k in range(len(rs)):
            out[k] = sum(gamma ** (j - k) * rs[j] for j in range(k, len(rs)))
        rtg.append(out)
    result = []
    for g in range(0, len(rtg), G):
        result += _group_norm_ref(rtg[g : g + G], eps, scale)
    return result


# ---------------------------------------------------------------- masked_mean


def test_masked_mean_ignores_padding_and_handles_empty() -> None:
    v = torch.tensor([[1.0, 3.0, float("nan")], [2.0, float("-inf"), 4.0]])
    m = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_mean(v, m).item() == pytest.approx(2.0)
    torch.testing.assert_close(masked_mean(v, m, dim=1), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(masked_mean(v, m, dim=0), torch.tensor([1.5, 3.0, 0.0]))
    assert masked_mean(v, torch.zeros_like(m)).item() == 0.0


# ---------------------------------------------------------------- sequence advantages


def test_sequence_advantages_by_hand() -> None:
    r = torch.tensor([1.0, 3.0, 2.0, 2.0])  # groups (1, 3): mean 2, std 1; (2, 2): std 0
    torch.testing.assert_close(sequence_advantages(r, 2, eps=0.0)[:2], torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(
        sequence_advantages(r, 2), torch.tensor([-1.0, 1.0, 0.0, 0.0]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        sequence_advantages(r, 2, scale=False), torch.tensor([-1.0, 1.0, 0.0, 0.0])
    )
    torch.testing.assert_close(sequence_advantages(r, 1), torch.zeros(4))


@pytest.mark.parametrize("scale", [True, False])
def test_sequence_advantages_vs_loop(scale: bool) -> None:
    gen = _rng()
    for G, n_groups in [(1, 3), (3, 5), (8, 2)]:
        r = torch.randn(G * n_groups, generator=gen, dtype=torch.float64)
        ref = [
            v
            for g in range(n_groups)
            for v in _group_norm_ref([r[g * G : (g + 1) * G].tolist()], 1e-6, scale)[0]
        ]
        torch.testing.assert_close(
            sequence_advantages(r, G, scale=scale), torch.tensor(ref, dtype=torch.float64)
        )


@pytest.mark.parametrize("G", [0, -1, 3])
def test_sequence_advantages_bad_group_size(G: int) -> None:
    with pytest.raises(ValueError, match="group_size"):
        sequence_advantages(torch.zeros(4), G)


# ---------------------------------------------------------------- step advantages


def test_step_advantages_by_hand() -> None:
    # gamma = 0.5: seq0 r = (1, 2) -> R = (1 + 0.5*2, 2) = (2, 2)
    #              seq1 r = (2, 0, 4) -> R = (2 + 0.5*2, 0 + 0.5*4, 4) = (3, 2, 4)
    # group pool (2, 2, 3, 2, 4): mean 2.6, population var 3.2/5 = 0.64, std 0.8
    rewards = [torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.0, 4.0])]
    adv = step_advantages(rewards, group_size=2, gamma=0.5, eps=0.0)
    torch.testing.assert_close(adv[0], torch.tensor([-0.75, -0.75]))
    torch.testing.assert_close(adv[1], torch.tensor([0.5, -0.75, 1.75]))
    centred = step_advantages(rewards, group_size=2, gamma=0.5, scale=False)
    torch.testing.assert_close(centred[0], torch.tensor([-0.6, -0.6]))
    torch.testing.assert_close(centred[1], torch.tensor([0.4, -0.6, 1.4]))


def test_step_advantages_gamma_edges() -> None:
    rewards = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0])]
    no_disc = step_advantages(rewards, group_size=1, gamma=1.0, scale=False)
    torch.testing.assert_close(no_disc[0], torch.tensor([6.0, 5.0, 3.0]) - 14.0 / 3)
    myopic = step_advantages(rewards, group_size=2, gamma=0.0, scale=False)  # R_k = r_k
    torch.testing.assert_close(torch.cat(myopic), torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5)


@pytest.mark.parametrize("scale", [True, False])
def test_step_advantages_vs_loop(scale: bool) -> None:
    gen = _rng()
    for G, n_groups, gamma in [(1, 4, 0.9), (4, 3, 1.0), (3, 2, 0.37)]:
        lens = torch.randint(0, 7, (G * n_groups,), generator=gen).tolist()
        rewards = [torch.randn(k, generator=gen, dtype=torch.float64) for k in lens]
        got = step_advantages(rewards, G, gamma, scale=scale)
        ref = _step_ref([r.tolist() for r in rewards], G, gamma, 1e-6, scale)
        assert [len(a) for a in got] == lens
        for a, e in zip(got, ref, strict=True):
            torch.testing.assert_close(a, torch.tensor(e, dtype=torch.float64))


def test_step_advantages_empty_actions() -> None:
    out = step_advantages([torch.zeros(0), torch.zeros(0)], group_size=2, gamma=0.9)
    assert [a.shape for a in out] == [torch.Size([0]), torch.Size([0])]
    assert step_advantages([], group_size=2, gamma=0.9) == []


def test_step_advantages_bad_group_size() -> None:
    with pytest.raises(ValueError, match="group_size=2"):
        step_advantages([torch.ones(2)] * 3, group_size=2, gamma=1.0)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        step_advantages([torch.ones(2)] * 2, group_size=0, gamma=1.0)


# ---------------------------------------------------------------- broadcast_to_tokens


def test_broadcast_to_tokens_by_hand() -> None:
    # B=2, T=4 flat: seq0 actions [1..1], [2..3]; seq1 action [5..6]
    start, end = torch.tensor([1, 2, 5]), torch.tensor([1, 3, 6])
    out = broadcast_to_tokens(torch.tensor([10.0, 20.0, 30.0]), start, end, num_tokens=8)
    torch.testing.assert_close(out, torch.tensor([0.0, 10.0, 20.0, 20.0, 0.0, 30.0, 30.0, 0.0]))


def test_broadcast_to_tokens_vs_loop_and_grad() -> None:
    gen = _rng()
    N = 57
    cuts = torch.randperm(N, generator=gen)[:20].sort().values  # disjoint actions between cuts
    start, end = cuts[:-1][::2], cuts[1:][::2] - 1
    keep = end >= start
    start, end = start[keep], end[keep]
    vals = torch.randn(len(start), generator=gen, requires_grad=True)
    out = broadcast_to_tokens(vals, start, end, N)
    ref = torch.zeros(N)
    for v, s, e in zip(vals.tolist(), start.tolist(), end.tolist(), strict=True):
        ref[s : e + 1] = v
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    torch.testing.assert_close(vals.grad, (end - start + 1).float())


def test_broadcast_to_tokens_rejects_reversed_action() -> None:
    with pytest.raises(ValueError, match="action_end >= action_start"):
        broadcast_to_tokens(torch.ones(1), torch.tensor([3]), torch.tensor([2]), 5)


# ---------------------------------------------------------------- PPO


def _ppo_hand_case():
    # ratios 1.5, 0.5, 1.1, 1.5, 0.5 (valid) and 2.0 (masked); eps = 0.2
    ratio = torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 2.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    logp_old = torch.full_like(ratio, -1.0)
    logp_new = (logp_old + ratio.log()).requires_grad_()
    return logp_new, logp_old, adv, mask


def test_ppo_clip_loss_by_hand() -> None:
    logp_new, logp_old, adv, mask = _ppo_hand_case()
    loss, stats = ppo_clip_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    # per-token min terms: 1.2 (clipped), 0.5, -1.1, -1.5, -0.8 (clipped) -> loss = 1.7 / 5
    assert loss.item() == pytest.approx(0.34)
    assert stats["clipfrac"].item() == pytest.approx(2 / 5)
    ratios = [1.5, 0.5, 1.1, 1.5, 0.5]
    assert stats["approx_kl"].item() == pytest.approx(sum(r - 1 - math.log(r) for r in ratios) / 5)


def test_ppo_grad_zero_exactly_on_clipped_tokens() -> None:
    logp_new, logp_old, adv, mask = _ppo_hand_case()
    loss, _ = ppo_clip_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    loss.backward()
    clipped = torch.tensor([[True, False, False], [False, True, True]])  # last: masked
    assert (logp_new.grad[clipped] == 0).all()
    # unclipped: d/dlogp of -ratio*A / n_valid = -ratio*A / 5
    torch.testing.assert_close(
        logp_new.grad[~clipped], torch.tensor([-0.5, 1.1, 1.5], dtype=torch.float64) / 5
    )


def test_ppo_clip_loss_vs_loop() -> None:
    gen = _rng()
    B, T, eps = 3, 7, 0.2
    logp_old = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
    logp_new = logp_old + 0.4 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    adv = torch.randn(B, T, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, T, generator=gen) < 0.7
    mask[0, 0] = True
    loss, stats = ppo_clip_loss(logp_new, logp_old, adv, mask, clip_eps=eps)
    terms, n_clip, kls = [], 0, []
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            lr = logp_new[b, t].item() - logp_old[b, t].item()
            r, a = math.exp(lr), adv[b, t].item()
            unclipped, clipped = r * a, min(max(r, 1 - eps), 1 + eps) * a
            terms.append(-min(unclipped, clipped))
            n_clip += clipped < unclipped
            kls.append(r - 1 - lr)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    assert stats["clipfrac"].item() == pytest.approx(n_clip / len(terms))
    assert stats["approx_kl"].item() == pytest.approx(sum(kls) / len(kls), rel=1e-12)


def test_kl_k3() -> None:
    gen = _rng()
    logp = -torch.rand(4, 6, generator=gen, dtype=torch.float64) * 4
    ref = -torch.rand(4, 6, generator=gen, dtype=torch.float64) * 4
    mask = torch.rand(4, 6, generator=gen) < 0.6
    mask[0, 0] = True
    kl = kl_k3(logp, ref, mask)
    d = (ref - logp)[mask]
    assert kl.item() == pytest.approx((d.exp() - d - 1).mean().item(), rel=1e-12)
    assert kl.item() >= 0
    assert ((ref - logp).exp() - (ref - logp) - 1 >= 0).all()
    assert kl_k3(logp, logp.clone(), mask).item() == 0.0


def test_policy_loss_combines_terms() -> None:
    logp_new, logp_old, adv, mask = _ppo_hand_case()
    ref = logp_old - 0.3
    ent = torch.rand(2, 3, dtype=torch.float64)
    loss, stats = policy_loss(
        logp_new,
        logp_old,
        adv,
        mask,
        clip_eps=0.2,
        kl_coef=0.1,
        logp_ref=ref,
        entropy=ent,
        entropy_coef=0.01,
    )
    pg, _ = ppo_clip_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    expect = pg + 0.1 * kl_k3(logp_new, ref, mask) - 0.01 * masked_mean(ent, mask)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-12)
    assert set(stats) == {"loss", "pg_loss", "clipfrac", "approx_kl", "kl", "entropy"}
    plain, plain_stats = policy_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    assert plain.item() == pytest.approx(pg.item())
    assert "kl" not in plain_stats and "entropy" not in plain_stats


def test_policy_loss_missing_inputs() -> None:
    logp_new, logp_old, adv, mask = _ppo_hand_case()
    with pytest.raises(ValueError, match="logp_ref"):
        policy_loss(logp_new, logp_old, adv, mask, clip_eps=0.2, kl_coef=0.1)
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp_new, logp_old, adv, mask, clip_eps=0.2, entropy_coef=0.1)


def test_masked_mean_with_a_global_count_sums_shares_to_the_global_mean():
    v, m = torch.randn(6, 5), torch.rand(6, 5) > 0.4
    count = m.sum()
    shares = masked_mean(v[:2], m[:2], count=count) + masked_mean(v[2:], m[2:], count=count)
    torch.testing.assert_close(shares, masked_mean(v, m))
    with pytest.raises(ValueError, match="dim=None"):
        masked_mean(v, m, dim=0, count=count)
