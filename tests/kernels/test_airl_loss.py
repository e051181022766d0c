"""AIRL terms and loss: every backend against the per-action reference, forward and backward."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from rairl.kernels import _dispatch
from rairl.kernels.airl_loss import (
    airl_loss,
    airl_loss_reference,
    airl_terms,
    airl_terms_reference,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_OK = _dispatch.HAS_TRITON and (DEVICE == "cuda" or _dispatch.triton_interpret())
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    not TRITON_OK, reason="triton missing, or CPU without TRITON_INTERPRET=1"))]
GAMMA = 0.9


def make_batch(seed, n_seq=5, max_actions=5, max_len=7, one_token=False, empty=False,
               labels="mixed", dtype=torch.float32):
    """Flat tokens of n_seq sequences: prompt, actions, padding. -> dict of tensors."""
    rng = random.Random(seed)
    starts, ends, terms, off = [], [], [], 0
    for _ in range(n_seq):
        off += rng.randint(1, 4)                                    # prompt
        n_act = rng.randint(1, max_actions)
        for k in range(n_act):
            length = 1 if one_token else rng.randint(0 if empty and k else 1, max_len)
            starts.append(off)
            ends.append(off + length - 1)
            terms.append(k == n_act - 1)
            off += length
        off += rng.randint(0, 2)                                    # padding
    gen = torch.Generator().manual_seed(seed)
    n, a = off, len(starts)
    y = {"mixed": (torch.rand(a, generator=gen) > 0.5).float(), "pos": torch.ones(a),
         "neg": torch.zeros(a)}[labels]
    return {
        "g_tok": torch.randn(n, generator=gen).to(DEVICE, dtype),
        "h_tok": torch.randn(n, generator=gen).to(DEVICE, dtype),
        "logp_tok": (-3 * torch.rand(n, generator=gen)).to(DEVICE, dtype),
        "action_start": torch.tensor(starts, device=DEVICE),
        "action_end": torch.tensor(ends, device=DEVICE),
        "action_terminal": torch.tensor(terms, device=DEVICE),
        "labels": y.to(DEVICE),
        "valid": (torch.rand(a, generator=gen) > 0.2).to(DEVICE),
    }


def rel_err(actual, expected) -> float:
    a, e = actual.double(), expected.double()
    return ((a - e).norm() / e.norm().clamp_min(1e-30)).item()


def assert_close(actual, expected, what):
    """fp32 results: 1e-5 (2-norm relative) against the fp32 reference on the upcast inputs.

    16-bit gradients: 5e-4 against that reference rounded to their dtype. Their error
    against the unrounded reference is the final rounding itself, 1.3-2.6e-3 here (measured
    over 5 seeds, identical for the reference rounded to bf16): d g_tok repeats one value per
    action, so few distinct values carry it and a flat 2e-3 would test the seed.
    """
    assert actual.shape == expected.shape, what
    if actual.dtype in (torch.float32, torch.float64):
        assert rel_err(actual, expected) <= 1e-5, f"{what}: {rel_err(actual, expected):.2e}"
    else:
        rounded = expected.to(actual.dtype)
        assert rel_err(actual, rounded) <= 5e-4, f"{what}: {rel_err(actual, rounded):.2e}"


def grads(fn, batch, *, upcast=False, **kw):
    """-> (outputs, dg, dh): forward of fn, backward of its scalarised outputs."""
    b = {k: v.clone() for k, v in batch.items()}
    if upcast:
        for k in ("g_tok", "h_tok", "logp_tok"):
            b[k] = b[k].float()
    b["g_tok"].requires_grad_(True)
    b["h_tok"].requires_grad_(True)
    out = fn(**b, **kw)
    if isinstance(out, tuple):                                      # AirlTerms
        a = out.ell.numel()
        wts = torch.arange(1, a + 1, device=DEVICE, dtype=torch.float32)
        scalar = (out.ell * wts).sum() + 0.3 * out.f.sum() - 0.7 * (out.g_sum * wts.flip(0)).sum()
    else:
        scalar = 1.7 * out
    scalar.backward()
    return out, b["g_tok"].grad, b["h_tok"].grad


def _terms(backend):
    def fn(labels, valid, **b):
        return airl_terms(**b, gamma=GAMMA, backend=backend)
    return fn


def _terms_ref(labels, valid, **b):
    return airl_terms_reference(**b, gamma=GAMMA)


def _loss(backend, use_valid=True):
    def fn(valid, **b):
        return airl_loss(**b, gamma=GAMMA, valid=valid if use_valid else None, backend=backend)
    return fn


def _loss_ref(use_valid=True):
    def fn(valid, **b):
        return airl_loss_reference(**b, gamma=GAMMA, valid=valid if use_valid else None)
    return fn


LAYOUTS = {
    "steps": dict(),
    "one-token": dict(one_token=True, max_actions=9),
    "with-empty": dict(empty=True),
    "long": dict(n_seq=2, max_actions=3, max_len=40),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_terms_match_reference(backend, layout):
    batch = make_batch(seed=len(layout), **LAYOUTS[layout])
    (got, dg, dh), (ref, dg_r, dh_r) = grads(_terms(backend), batch), grads(_terms_ref, batch)
    for name, a, e in zip(("g_sum", "f", "ell"), got, ref, strict=True):
        assert a.dtype == torch.float32
        assert_close(a, e, name)
    assert_close(dg, dg_r, "d g_tok")
    assert_close(dh, dh_r, "d h_tok")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("labels", ["mixed", "pos", "neg"])
@pytest.mark.parametrize("use_valid", [True, False])
def test_loss_matches_reference(backend, labels, use_valid):
    batch = make_batch(seed=11, labels=labels, empty=True)
    got, dg, dh = grads(_loss(backend, use_valid), batch)
    ref, dg_r, dh_r = grads(_loss_ref(use_valid), batch)
    assert got.shape == () and got.dtype == torch.float32
    assert_close(got, ref, "loss")
    assert_close(dg, dg_r, "d g_tok")
    assert_close(dh, dh_r, "d h_tok")


@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_loss_returns_the_logits_it_read(backend, layout):
    """`return_logits=True`: the same loss, and ℓ equal to the reference's, detached (no second forward needed).

    CUDA segment sums use atomics, so two calls agree to rounding, not bit for bit (seen on an H100).
    """
    batch = make_batch(seed=7 + len(layout), **LAYOUTS[layout])
    g = batch["g_tok"].clone().requires_grad_(True)
    kw = {**batch, "g_tok": g}
    loss, ell = airl_loss(**kw, gamma=GAMMA, return_logits=True, backend=backend)
    assert not ell.requires_grad and ell.dtype == torch.float32
    assert_close(loss, airl_loss(**kw, gamma=GAMMA, backend=backend), "loss")
    terms = {k: v for k, v in batch.items() if k not in ("labels", "valid")}
    assert_close(ell, airl_terms_reference(**terms, gamma=GAMMA).ell, "ell")
    loss.backward()  # the loss keeps its graph
    assert g.grad is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_inputs(backend):
    """bf16 g / h / logp: fp32 results equal the fp32 reference on the upcast inputs."""
    batch = make_batch(seed=4, n_seq=20, dtype=torch.bfloat16)
    got, dg, dh = grads(_loss(backend), batch)
    ref, dg_r, dh_r = grads(_loss_ref(), batch, upcast=True)
    assert_close(got, ref, "loss")
    assert dg.dtype == torch.bfloat16 and dh.dtype == torch.bfloat16
    assert_close(dg, dg_r, "d g_tok")
    assert_close(dh, dh_r, "d h_tok")
    terms = airl_terms(**{k: v for k, v in batch.items() if k not in ("labels", "valid")},
                       gamma=GAMMA, backend=backend)
    ref_terms = _terms_ref(**{k: (v.float() if v.is_floating_point() else v)
                              for k, v in batch.items()})
    assert_close(terms.ell, ref_terms.ell, "ell")


@pytest.mark.parametrize("backend", BACKENDS)
def test_terminal_and_shaping(backend):
    """Hand-built: the terminal action ignores h at its end; h before an action is shared."""
    g = torch.tensor([9.0, 1.0, 2.0, 3.0, 4.0], device=DEVICE)     # token 0 is the prompt
    h = torch.tensor([0.5, 0.25, 7.0, 8.0, 100.0], device=DEVICE)
    lp = torch.tensor([-9.0, -0.5, -1.0, -1.5, -2.0], device=DEVICE)
    start, end = torch.tensor([1, 3], device=DEVICE), torch.tensor([2, 4], device=DEVICE)
    term = torch.tensor([False, True], device=DEVICE)
    t = airl_terms(g, h, lp, start, end, term, gamma=0.5, backend=backend)
    # action 0: g 1+2, +0.5 h[2], -h[0]; action 1 (terminal): g 3+4, no h[4], -h[2]
    torch.testing.assert_close(t.g_sum, torch.tensor([3.0, 7.0], device=DEVICE))
    torch.testing.assert_close(t.f, torch.tensor([3.0 + 3.5 - 0.5, 7.0 - 7.0], device=DEVICE))
    torch.testing.assert_close(t.ell, t.f + torch.tensor([1.5, 3.5], device=DEVICE))
    hg = h.clone().requires_grad_(True)
    airl_terms(g, hg, lp, start, end, term, gamma=0.5, backend=backend).ell.sum().backward()
    torch.testing.assert_close(hg.grad, torch.tensor([-1.0, 0.0, 0.5 - 1.0, 0.0, 0.0],
                                                     device=DEVICE))


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_edge_cases(backend):
    batch = make_batch(seed=2)
    kw = {k: v for k, v in batch.items() if k not in ("labels", "valid")}
    ell = airl_terms_reference(**kw, gamma=GAMMA).ell
    # all positive: plain mean of softplus(-ell), weight 1
    loss = airl_loss(**kw, labels=torch.ones_like(ell), gamma=GAMMA, backend=backend)
    torch.testing.assert_close(loss, F.softplus(-ell).mean())
    # nothing valid: 0 and zero gradients
    g = kw["g_tok"].clone().requires_grad_(True)
    loss = airl_loss(**{**kw, "g_tok": g}, labels=batch["labels"], gamma=GAMMA,
                     valid=torch.zeros_like(batch["valid"]), backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and (g.grad == 0).all()
    # no actions at all
    none = torch.zeros(0, dtype=torch.int64, device=DEVICE)
    loss = airl_loss(kw["g_tok"], kw["h_tok"], kw["logp_tok"], none, none,
                     torch.zeros(0, dtype=torch.bool, device=DEVICE),
                     torch.zeros(0, device=DEVICE), gamma=GAMMA, backend=backend)
    assert loss.item() == 0.0


def test_gradcheck_float64_torch():
    batch = make_batch(seed=3, n_seq=3, empty=True, dtype=torch.float64)
    kw = {k: v for k, v in batch.items() if k not in ("g_tok", "h_tok", "labels", "valid")}
    g = batch["g_tok"].requires_grad_(True)
    h = batch["h_tok"].requires_grad_(True)

    def f(g, h):
        t = airl_terms(g, h, **kw, gamma=GAMMA, backend="torch")
        loss = airl_loss(g, h, **kw, labels=batch["labels"], gamma=GAMMA,
                         valid=batch["valid"], backend="torch")
        return t.g_sum, t.f, t.ell, loss

    assert torch.autograd.gradcheck(f, (g, h))


def test_validation_errors():
    batch = make_batch(seed=0)
    kw = {k: v for k, v in batch.items() if k not in ("labels", "valid")}
    if DEVICE == "cpu":  # value checks need a host sync: CPU only
        bad = dict(kw, action_start=kw["action_start"].clone())
        bad["action_start"][0] = 0
        with pytest.raises(ValueError, match=">= 1"):
            airl_terms(**bad, gamma=GAMMA, backend="torch")
        overlap = dict(kw, action_end=kw["action_end"].clone())
        overlap["action_end"][0] = kw["action_start"][1]
        with pytest.raises(ValueError, match="overlap"):
            airl_terms(**overlap, gamma=GAMMA, backend="torch")
    with pytest.raises(ValueError, match="action_terminal"):
        airl_terms(**dict(kw, action_terminal=kw["action_terminal"].long()), gamma=GAMMA)
    with pytest.raises(ValueError, match="labels"):
        airl_loss(**kw, labels=batch["labels"][:-1], gamma=GAMMA)



@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
@pytest.mark.parametrize("labels", ["mixed", "pos"])
def test_loss_shares_with_global_counts_add_up_to_the_whole(backend, labels):
    """Two ranks' shares of the actions, each divided by the global class counts, sum to the loss of all of them."""
    batch = make_batch(seed=random.randrange(10_000), n_seq=6, labels=labels)
    cut = random.randrange(1, batch["action_start"].numel())
    pos, valid = batch["labels"] > 0.5, batch["valid"]
    counts = torch.stack([(valid & pos).sum(), (valid & ~pos).sum()]).double()

    def share(part: slice, class_counts):
        def fn(**b):
            act = {k: b[k][part] for k in ("action_start", "action_end", "action_terminal", "labels", "valid")}
            return airl_loss(**{**b, **act}, gamma=GAMMA, class_counts=class_counts, backend=backend)
        return fn

    whole, dg, dh = grads(share(slice(None), None), batch)
    first, dg1, dh1 = grads(share(slice(0, cut), counts), batch)
    second, dg2, dh2 = grads(share(slice(cut, None), counts), batch)
    assert_close(first + second, whole, "loss")
    assert_close(dg1 + dg2, dg, "d g_tok")
    assert_close(dh1 + dh2, dh, "d h_tok")
