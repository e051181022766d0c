"""The AIRL discriminator on a real tiny reward model, against a hand computation with full logits."""

import math
import random

import pytest
import torch

from rairl.airl.discriminator import discriminator_loss, discriminator_terms
from rairl.airl.layout import action_layout, step_rule
from rairl.models.batch import collate
from rairl.models.reward import RewardConfig, RewardModel
from rairl.models.tokenizer import newline_token_ids


def _random_batch(tokenizer, rng: random.Random):
    nl = newline_token_ids(tokenizer)[0]
    vocab = [i for i in range(3, len(tokenizer)) if i not in newline_token_ids(tokenizer)]
    prompts, completions = [], []
    for _ in range(rng.randint(2, 5)):
        prompts.append([rng.choice(vocab) for _ in range(rng.randint(1, 6))])
        c = []
        for _ in range(rng.randint(0, 4)):  # steps, some empty (a lone newline), the last maybe unterminated
            c += [rng.choice(vocab) for _ in range(rng.randint(0, 3))] + [nl]
        if rng.random() < 0.5:
            c += [rng.choice(vocab) for _ in range(rng.randint(1, 3))]
        completions.append(c)
    return prompts, completions, nl


def _hand_terms(rm: RewardModel, prompts, completions, nl, policy_lp, granularity, gamma, beta):
    """Per-sequence lists of (g, f, ell), computed token by token from full logits."""
    out = []
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            hidden = rm.lm.get_decoder()(input_ids=ids).last_hidden_state[0]
            logp = torch.log_softmax(rm.lm(input_ids=ids).logits[0].double(), -1)
        lp_tok = [0.0] + [logp[t - 1, ids[0, t]].item() for t in range(1, ids.shape[1])]
        if granularity == "step":
            actions, cur = [], []
            for t in range(len(p), len(p) + len(c)):
                cur.append(t)
                if ids[0, t].item() == nl:
                    actions.append(cur)
                    cur = []
            if cur:
                actions.append(cur)
        elif granularity == "dense":
            actions = [[t] for t in range(len(p), len(p) + len(c))]
        else:
            actions = [list(range(len(p), len(p) + len(c)))] if c else []
        h = [rm.h_head(hidden[t]).item() for t in range(ids.shape[1])]
        rows = []
        for k, a in enumerate(actions):
            g = beta * sum(lp_tok[t] for t in a) + rm.g_head(hidden[a[-1]]).item()
            h_next = 0.0 if k == len(actions) - 1 else h[a[-1]]
            f = g + gamma * h_next - h[a[0] - 1]
            rows.append((g, f, f - sum(policy_lp[b][t] for t in a)))
        out.append(rows)
    return out


@pytest.mark.parametrize("granularity", ["step", "dense", "sparse"])
def test_discriminator_terms_match_hand_computation(tiny, granularity):
    tokenizer, lm = tiny
    rng = random.Random()
    gamma, beta = rng.uniform(0.5, 1.0), rng.uniform(0.5, 2.0)
    rm = RewardModel(lm, RewardConfig(granularity=granularity, gamma=gamma, beta=beta)).eval()
    with torch.no_grad():  # non-zero heads so both terms are exercised
        for head in (rm.g_head, rm.h_head):
            head.weight.normal_()
            head.bias.normal_()
    prompts, completions, nl = _random_batch(tokenizer, rng)
    batch = collate(prompts, completions, tokenizer.pad_token_id)
    policy_lp = torch.randn(batch.input_ids.shape).clamp(max=0) * batch.attention_mask
    layout = action_layout(batch, step_rule(rm.cfg, tokenizer))
    with torch.no_grad():
        terms = discriminator_terms(rm, batch, layout, policy_lp)
    expected = _hand_terms(rm, prompts, completions, nl, policy_lp.tolist(), granularity, gamma, beta)
    for b, rows in enumerate(expected):
        got = [(g.item(), f.item(), e.item()) for g, f, e in zip(*(layout.per_sequence(x)[b] for x in terms), strict=True)]
        assert len(got) == len(rows)
        for (g1, f1, e1), (g2, f2, e2) in zip(got, rows, strict=True):
            assert g1 == pytest.approx(g2, rel=1e-4, abs=1e-4)
            assert f1 == pytest.approx(f2, rel=1e-4, abs=1e-4)
            assert e1 == pytest.approx(e2, rel=1e-4, abs=1e-4)


def test_fresh_reward_model_has_zero_logit_against_its_own_policy(tiny):
    """Zero-initialised heads and g = log π_φ with φ = the policy: ℓ = 0 exactly (D = 1/2)."""
    tokenizer, lm = tiny
    from rairl.models.lm import per_token_logprobs

    rm = RewardModel(lm, RewardConfig(granularity="step")).eval()
    prompts, completions, _ = _random_batch(tokenizer, random.Random())
    batch = collate(prompts, completions, tokenizer.pad_token_id)
    layout = action_layout(batch, step_rule(rm.cfg, tokenizer))
    with torch.no_grad():
        ell = discriminator_terms(rm, batch, layout, per_token_logprobs(lm, batch.input_ids, batch.attention_mask)).ell
    assert torch.allclose(ell, torch.zeros_like(ell), atol=1e-5)


def test_loss_is_class_balanced_bce_by_hand(tiny):
    tokenizer, lm = tiny
    rm = RewardModel(lm, RewardConfig(granularity="step"))
    with torch.no_grad():
        rm.h_head.weight.normal_()
    rng = random.Random()
    prompts, completions, _ = _random_batch(tokenizer, rng)
    completions = [c or [5] for c in completions]
    batch = collate(prompts, completions, tokenizer.pad_token_id)
    layout = action_layout(batch, step_rule(rm.cfg, tokenizer))
    policy_lp = torch.randn(batch.input_ids.shape).clamp(max=0)
    labels = torch.tensor([float(i % 2) for i in range(len(layout.start))])
    valid = torch.tensor([rng.random() < 0.8 for _ in range(len(layout.start))])
    valid[0] = valid[1] = True
    loss, ell_read = discriminator_loss(rm, batch, layout, policy_lp, labels, valid)
    ell = discriminator_terms(rm, batch, layout, policy_lp).ell.detach()
    torch.testing.assert_close(ell_read, ell)  # the loss returns the ℓ it was computed from
    ell = ell.tolist()
    pos = [math.log1p(math.exp(-e)) for e, y, v in zip(ell, labels, valid, strict=True) if v and y == 1]
    neg = [math.log1p(math.exp(e)) for e, y, v in zip(ell, labels, valid, strict=True) if v and y == 0]
    assert loss.item() == pytest.approx(0.5 * sum(pos) / len(pos) + 0.5 * sum(neg) / len(neg), rel=1e-5)
    loss.backward()
    assert rm.g_head.weight.grad is not None and rm.h_head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rm.lm.parameters())
