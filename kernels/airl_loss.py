"""AIRL discriminator terms and class-balanced loss from per-token g, h and policy log-probs.

For action k covering flat tokens [s_k, e_k] (contiguous, actions disjoint):

    g_k   = sum_{t=s_k..e_k} g_tok[t]                         (reward term)
    f_k   = g_k + gamma * h_tok[e_k] * (1 - terminal_k) - h_tok[s_k - 1]
    ell_k = f_k - sum_{t=s_k..e_k} logp_tok[t]                (discriminator logit)
    loss  = 0.5 * mean_{k: y_k = 1} softplus(-ell_k) + 0.5 * mean_{k: y_k = 0} softplus(ell_k)

h(s_k) is read at the token before the action (the last prompt token for the first action),
so s_k >= 1; h(s_{k+1}) at the action's last token, 0 after a terminal action. An empty
action (e_k = s_k - 1) has g_k = logp_k = 0. Means run over valid actions; if one class is
empty its term is 0 and the other class gets weight 1 (no valid action at all: loss 0).
Gradients flow to g_tok and h_tok; logp_tok is treated as detached.

Backends: triton (one forward kernel: segment sums, f, ell and per-program loss partials,
reduced in a fixed order by a [P, 4] torch sum; one backward kernel: d ell scattered to the
action's g tokens and, with atomics, to the two shared h positions), torch (vectorised
segment sums with index_add_, plain autograd), reference (a Python loop over actions).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._dispatch import check_launchable, resolve_backend, tl, triton, triton_interpret

# ---------------------------------------------------------------------------------------------
# Tuned constants
# ---------------------------------------------------------------------------------------------
# Actions per program x tokens per inner step. The op moves ~20 bytes per token, so any tile
# that keeps the loads coalesced is memory-bound; not yet swept on a GPU (no GPU on the dev
# machine: benchmarks/bench_airl_loss.py reports GB/s against a device copy).
_BLOCK_A, _BLOCK_T, _NUM_WARPS = 64, 16, 4
_INTERPRET_BLOCK_A, _INTERPRET_BLOCK_T = 8, 4  # several programs and token steps on tiny tests


class AirlTerms(NamedTuple):
    """Per-action terms, each (A,) fp32 (fp64 for fp64 inputs on torch/reference)."""

    g_sum: torch.Tensor  # sum of g_tok over the action's tokens
    f: torch.Tensor      # g_sum + gamma * h(s_{k+1}) - h(s_k): AIRL reward with shaping
    ell: torch.Tensor    # f - sum of logp_tok: the discriminator logit


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _airl_loss_fwd_kernel(
    g_ptr, h_ptr, lp_ptr,                       # (N,) per-token g, h, policy log-prob
    start_ptr, end_ptr, term_ptr,               # (A,) int64, int64, uint8
    label_ptr, valid_ptr,                       # (A,) float, uint8 (loss only)
    gsum_ptr, f_ptr, ell_ptr,                   # (A,) fp32 out
    part_ptr,                                   # (P, 4) fp32 out: S_pos, S_neg, n_pos, n_neg
    A, N, gamma,
    COMPUTE_LOSS: tl.constexpr, HAS_VALID: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid = tl.program_id(0)
    k = pid * BLOCK_A + tl.arange(0, BLOCK_A)
    ok = k < A
    s = tl.load(start_ptr + k, mask=ok, other=1)
    e = tl.load(end_ptr + k, mask=ok, other=0)
    terminal = tl.load(term_ptr + k, mask=ok, other=1) != 0
    ok = ok & (s >= 1) & (e < N)  # memory safety only: the public function validates
    n_tok = tl.where(ok, e - s + 1, 0)
    g_sum = tl.zeros([BLOCK_A], tl.float32)
    lp_sum = tl.zeros([BLOCK_A], tl.float32)
    for t0 in range(0, tl.max(n_tok, axis=0), BLOCK_T):
        offs = s[:, None] + t0 + tl.arange(0, BLOCK_T)[None, :]          # (BLOCK_A, BLOCK_T)
        m = ok[:, None] & (offs <= e[:, None])
        g_sum += tl.sum(tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32), axis=1)
        lp_sum += tl.sum(tl.load(lp_ptr + offs, mask=m, other=0.0).to(tl.float32), axis=1)
    h_prev = tl.load(h_ptr + (s - 1), mask=ok, other=0.0).to(tl.float32)
    h_next = tl.load(h_ptr + e, mask=ok & ~terminal, other=0.0).to(tl.float32)
    f = g_sum + gamma * h_next - h_prev
    ell = f - lp_sum
    tl.store(gsum_ptr + k, g_sum, mask=k < A)
    tl.store(f_ptr + k, f, mask=k < A)
    tl.store(ell_ptr + k, ell, mask=k < A)
    if COMPUTE_LOSS:
        pos = tl.load(label_ptr + k, mask=ok, other=0.0).to(tl.float32) > 0.5
        use = ok
        if HAS_VALID:
            use = use & (tl.load(valid_ptr + k, mask=ok, other=0) != 0)
        # softplus(x) = max(x, 0) + log(1 + exp(-|x|)), evaluated at -ell (pos) or ell (neg)
        x = tl.where(pos, -ell, ell)
        sp = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
        tl.store(part_ptr + pid * 4 + 0, tl.sum(tl.where(use & pos, sp, 0.0), axis=0))
        tl.store(part_ptr + pid * 4 + 1, tl.sum(tl.where(use & ~pos, sp, 0.0), axis=0))
        tl.store(part_ptr + pid * 4 + 2, tl.sum((use & pos).to(tl.float32), axis=0))
        tl.store(part_ptr + pid * 4 + 3, tl.sum((use & ~pos).to(tl.float32), axis=0))


@triton.jit
def _airl_loss_bwd_kernel(
    ell_ptr, label_ptr, valid_ptr, cw_ptr, gout_ptr,   # loss mode: (A,) x 3, (2,) weights, (1,)
    a_ptr, b_ptr,                                      # terms mode: (A,) d/d g_sum, d/d (f - g)
    start_ptr, end_ptr, term_ptr,                      # (A,)
    dg_ptr, dh_ptr,                                    # (N,) fp32, zeroed
    A, N, gamma,
    FROM_LOSS: tl.constexpr, HAS_VALID: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_T: tl.constexpr,
):
    k = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    ok = k < A
    s = tl.load(start_ptr + k, mask=ok, other=1)
    e = tl.load(end_ptr + k, mask=ok, other=0)
    terminal = tl.load(term_ptr + k, mask=ok, other=1) != 0
    ok = ok & (s >= 1) & (e < N)
    if FROM_LOSS:
        ell = tl.load(ell_ptr + k, mask=ok, other=0.0)
        pos = tl.load(label_ptr + k, mask=ok, other=0.0).to(tl.float32) > 0.5
        use = ok
        if HAS_VALID:
            use = use & (tl.load(valid_ptr + k, mask=ok, other=0) != 0)
        w_pos = tl.load(cw_ptr)
        w_neg = tl.load(cw_ptr + 1)
        gout = tl.load(gout_ptr)
        sig = 1.0 / (1.0 + tl.exp(-ell))
        # d/d ell: softplus(-ell) -> -(1 - sigmoid(ell)); softplus(ell) -> sigmoid(ell)
        d = tl.where(pos, -w_pos * (1.0 - sig), w_neg * sig) * gout
        a = tl.where(use, d, 0.0)
        b = a
    else:
        a = tl.load(a_ptr + k, mask=ok, other=0.0)
        b = tl.load(b_ptr + k, mask=ok, other=0.0)
    n_tok = tl.where(ok, e - s + 1, 0)
    for t0 in range(0, tl.max(n_tok, axis=0), BLOCK_T):
        offs = s[:, None] + t0 + tl.arange(0, BLOCK_T)[None, :]
        m = ok[:, None] & (offs <= e[:, None])
        tl.store(dg_ptr + offs, tl.broadcast_to(a[:, None], (BLOCK_A, BLOCK_T)), mask=m)
    # h positions are shared: s_k - 1 is e_{k-1} for adjacent actions
    tl.atomic_add(dh_ptr + (s - 1), -b, mask=ok, sem="relaxed")
    tl.atomic_add(dh_ptr + e, gamma * b, mask=ok & ~terminal, sem="relaxed")


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------
def _blocks() -> tuple[int, int]:
    return (_INTERPRET_BLOCK_A, _INTERPRET_BLOCK_T) if triton_interpret() else (_BLOCK_A, _BLOCK_T)


def _airl_loss_fwd_triton(g, h, lp, start, end, term, labels, valid, gamma: float, loss: bool):
    """-> g_sum, f, ell (A,) fp32 and, if `loss`, partials (P, 4) fp32."""
    check_launchable(_airl_loss_fwd_kernel, g.device)
    A, N = start.numel(), g.numel()
    block_a, block_t = _blocks()
    grid = (max(1, triton.cdiv(A, block_a)),)
    out = torch.empty((3, A), device=g.device, dtype=torch.float32)
    part = torch.empty((grid[0], 4), device=g.device, dtype=torch.float32) if loss else out
    _airl_loss_fwd_kernel[grid](
        g, h, lp, start, end, term,
        labels if loss else out, valid if valid is not None else term,
        out[0], out[1], out[2], part, A, N, gamma,
        COMPUTE_LOSS=loss, HAS_VALID=valid is not None, BLOCK_A=block_a, BLOCK_T=block_t,
        **({} if triton_interpret() else {"num_warps": _NUM_WARPS}),
    )
    return out[0], out[1], out[2], (part if loss else None)


def _airl_loss_bwd_triton(start, end, term, N, gamma, dtype_g, dtype_h, *, ell=None, labels=None,
                     valid=None, cw=None, gout=None, a=None, b=None):
    """Loss mode (ell, labels, valid, cw, gout) or terms mode (a, b) -> dg, dh (N,)."""
    A = start.numel()
    block_a, block_t = _blocks()
    dgh = torch.zeros((2, N), device=start.device, dtype=torch.float32)
    from_loss = ell is not None
    dummy = dgh[0]
    _airl_loss_bwd_kernel[(max(1, triton.cdiv(A, block_a)),)](
        ell if from_loss else dummy, labels if from_loss else dummy,
        valid if valid is not None else term, cw if from_loss else dummy,
        gout if from_loss else dummy, a if not from_loss else dummy,
        b if not from_loss else dummy, start, end, term, dgh[0], dgh[1], A, N, gamma,
        FROM_LOSS=from_loss, HAS_VALID=valid is not None, BLOCK_A=block_a, BLOCK_T=block_t,
        **({} if triton_interpret() else {"num_warps": _NUM_WARPS}),
    )
    return dgh[0].to(dtype_g), dgh[1].to(dtype_h)


def _class_weights(n_pos: torch.Tensor, n_neg: torch.Tensor) -> torch.Tensor:
    """(2,) per-action weights (w_pos, w_neg): 0.5 / n per class, 1 / n if the other is empty."""
    w_pos = torch.where(n_neg > 0, 0.5, 1.0) / n_pos.clamp(min=1)
    w_neg = torch.where(n_pos > 0, 0.5, 1.0) / n_neg.clamp(min=1)
    return torch.stack([w_pos, w_neg])


# ---------------------------------------------------------------------------------------------
# PyTorch path
# ---------------------------------------------------------------------------------------------
def _segments(start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token index and action id of every token inside an action, both (T,) int64."""
    lengths = end - start + 1                                       # (A,), >= 0
    seg = torch.repeat_interleave(torch.arange(start.numel(), device=start.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths                      # (A,) exclusive offsets
    tok = start[seg] + torch.arange(seg.numel(), device=start.device) - first[seg]
    return tok, seg


def _airl_terms_torch(g, h, lp, start, end, term, gamma: float) -> AirlTerms:
    cdt = torch.float64 if g.dtype == torch.float64 else torch.float32
    g, h, lp = g.to(cdt), h.to(cdt), lp.detach().to(cdt)  # gradients accumulate in fp32 too
    tok, seg = _segments(start, end)
    A = start.numel()
    g_sum = g.new_zeros(A).index_add(0, seg, g[tok])
    lp_sum = g.new_zeros(A).index_add(0, seg, lp[tok])
    h_next = torch.where(term, 0.0, h[end])
    f = g_sum + gamma * h_next - h[start - 1]
    return AirlTerms(g_sum, f, f - lp_sum)


def _balanced_bce(ell, labels, valid, class_counts=None) -> torch.Tensor:
    pos = labels > 0.5
    use = torch.ones_like(pos) if valid is None else valid
    n_pos, n_neg = ((use & pos).sum(), (use & ~pos).sum()) if class_counts is None else class_counts.to(ell.device).unbind()
    cw = _class_weights(n_pos, n_neg).to(ell.dtype)
    sp = torch.where(pos, F.softplus(-ell), F.softplus(ell))
    return (torch.where(use, sp, 0.0) * torch.where(pos, cw[0], cw[1])).sum()


# ---------------------------------------------------------------------------------------------
# PyTorch reference
# ---------------------------------------------------------------------------------------------
def airl_terms_reference(g_tok, h_tok, logp_tok, action_start, action_end, action_terminal, *,
                         gamma: float, backend: str | None = None) -> AirlTerms:
    """Oracle: one action at a time, straight from the formula (same signature as airl_terms)."""
    cdt = torch.float64 if g_tok.dtype == torch.float64 else torch.float32
    g_sums, fs, ells = [], [], []
    for s, e, term in zip(action_start.tolist(), action_end.tolist(), action_terminal.tolist(),
                          strict=True):
        g_k = g_tok[s:e + 1].to(cdt).sum()
        h_next = torch.zeros((), dtype=cdt, device=h_tok.device) if term else h_tok[e].to(cdt)
        f_k = g_k + gamma * h_next - h_tok[s - 1].to(cdt)
        g_sums.append(g_k)
        fs.append(f_k)
        ells.append(f_k - logp_tok[s:e + 1].detach().to(cdt).sum())
    if not ells:
        empty = g_tok.new_zeros(0, dtype=cdt) + 0 * g_tok.sum() + 0 * h_tok.sum()
        return AirlTerms(empty, empty, empty)
    return AirlTerms(torch.stack(g_sums), torch.stack(fs), torch.stack(ells))


def airl_loss_reference(g_tok, h_tok, logp_tok, action_start, action_end, action_terminal,
                        labels, *, gamma: float, valid=None, return_logits: bool = False,
                        class_counts=None, backend=None):
    """Oracle: per-class Python means of softplus (same signature as airl_loss)."""
    loss, ell = _airl_loss_reference(g_tok, h_tok, logp_tok, action_start, action_end,
                                     action_terminal, labels, gamma, valid, class_counts)
    return (loss, ell.detach()) if return_logits else loss


def _airl_loss_reference(g_tok, h_tok, logp_tok, action_start, action_end, action_terminal,
                         labels, gamma, valid, class_counts=None):
    ell = airl_terms_reference(g_tok, h_tok, logp_tok, action_start, action_end,
                               action_terminal, gamma=gamma).ell
    pos_terms, neg_terms = [], []
    for k in range(ell.numel()):
        if valid is not None and not bool(valid[k]):
            continue
        if float(labels[k]) > 0.5:
            pos_terms.append(F.softplus(-ell[k]))
        else:
            neg_terms.append(F.softplus(ell[k]))
    zero = 0 * g_tok.sum() + 0 * h_tok.sum() + ell.sum() * 0  # keeps the graph connected
    if class_counts is not None:  # sums over this batch, each class divided by its given count
        n_pos, n_neg = (float(c) for c in class_counts)
        loss = zero.to(ell.dtype)
        if pos_terms:
            loss = loss + (0.5 if n_neg > 0 else 1.0) / max(n_pos, 1.0) * torch.stack(pos_terms).sum()
        if neg_terms:
            loss = loss + (0.5 if n_pos > 0 else 1.0) / max(n_neg, 1.0) * torch.stack(neg_terms).sum()
        return loss, ell
    if not pos_terms and not neg_terms:
        return zero.to(ell.dtype), ell
    w = 0.5 if (pos_terms and neg_terms) else 1.0
    loss = zero.to(ell.dtype)
    if pos_terms:
        loss = loss + w * torch.stack(pos_terms).mean()
    if neg_terms:
        loss = loss + w * torch.stack(neg_terms).mean()
    return loss, ell


# ---------------------------------------------------------------------------------------------
# Autograd Functions
# ---------------------------------------------------------------------------------------------
class AirlTermsFunction(torch.autograd.Function):
    """Triton: (g, h, lp (N,), start, end, term (A,)) -> g_sum, f, ell (A,) fp32."""

    @staticmethod
    def forward(ctx, g, h, lp, start, end, term, gamma):
        g_sum, f, ell, _ = _airl_loss_fwd_triton(g, h, lp, start, end, term, None, None, gamma, False)
        ctx.save_for_backward(start, end, term)
        ctx.gamma, ctx.N, ctx.dtypes = gamma, g.numel(), (g.dtype, h.dtype)
        ctx.set_materialize_grads(False)
        return g_sum, f, ell

    @staticmethod
    def backward(ctx, d_gsum, d_f, d_ell):
        start, end, term = ctx.saved_tensors
        zero = torch.zeros(start.numel(), device=start.device, dtype=torch.float32)
        d_f = zero if d_f is None else d_f.float()
        b = d_f if d_ell is None else d_f + d_ell.float()          # reaches h through f
        a = b if d_gsum is None else b + d_gsum.float()            # reaches g through all three
        dg, dh = _airl_loss_bwd_triton(start, end, term, ctx.N, ctx.gamma, *ctx.dtypes,
                                  a=a.contiguous(), b=b.contiguous())
        return dg, dh, None, None, None, None, None


class AirlLossFunction(torch.autograd.Function):
    """Triton: (g, h, lp (N,), start, end, term, labels, valid (A,)) -> loss () fp32, ell (A,) fp32.

    ell is returned for monitoring (accuracy, AUROC) and carries no gradient."""

    @staticmethod
    def forward(ctx, g, h, lp, start, end, term, labels, valid, gamma, class_counts):
        _, _, ell, part = _airl_loss_fwd_triton(g, h, lp, start, end, term, labels, valid, gamma, True)
        tot = part.sum(0)                                           # (4,) fixed-order reduce
        counts = tot[2:] if class_counts is None else class_counts.to(tot)
        cw = _class_weights(counts[0], counts[1])                   # (2,)
        loss = cw[0] * tot[0] + cw[1] * tot[1]
        ctx.save_for_backward(ell, labels, valid, cw, start, end, term)
        ctx.gamma, ctx.N, ctx.dtypes = gamma, g.numel(), (g.dtype, h.dtype)
        ctx.mark_non_differentiable(ell)
        return loss, ell

    @staticmethod
    def backward(ctx, gout, _d_ell):
        ell, labels, valid, cw, start, end, term = ctx.saved_tensors
        dg, dh = _airl_loss_bwd_triton(start, end, term, ctx.N, ctx.gamma, *ctx.dtypes, ell=ell,
                                  labels=labels, valid=valid, cw=cw,
                                  gout=gout.float().reshape(1).contiguous())
        return dg, dh, None, None, None, None, None, None, None, None


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------
def _check_triton(g_tok: torch.Tensor, h_tok: torch.Tensor) -> None:
    for name, t in (("g_tok", g_tok), ("h_tok", h_tok)):
        if t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(f"{name} is {t.dtype}: backend='triton' takes fp32/bf16/fp16 "
                            "(use backend='torch' for fp64)")


def _check(g_tok, h_tok, logp_tok, start, end, terminal, labels=None, valid=None) -> None:
    N = g_tok.numel()
    for name, t in (("g_tok", g_tok), ("h_tok", h_tok), ("logp_tok", logp_tok)):
        if t.dim() != 1 or t.numel() != N or not t.is_floating_point():
            raise ValueError(f"{name} must be a float (N,) tensor with N={N}, got "
                             f"{t.dtype} {tuple(t.shape)}")
    A = start.numel()
    for name, t, dt in (("action_start", start, torch.int64), ("action_end", end, torch.int64),
                        ("action_terminal", terminal, torch.bool), ("valid", valid, torch.bool)):
        if t is not None and (t.dtype != dt or t.shape != (A,)):
            raise ValueError(f"{name} must be {dt} of shape ({A},), got {t.dtype} {tuple(t.shape)}")
    if labels is not None and (labels.shape != (A,) or not labels.is_floating_point()):
        raise ValueError(f"labels must be float of shape ({A},) (1 expert, 0 policy)")
    if start.device.type == "cuda" or A == 0 or torch.compiler.is_compiling():
        return  # no host sync on CUDA (the kernels mask out-of-range reads) or in a graph
    if bool((start < 1).any()):
        raise ValueError("action_start must be >= 1: h(s_k) is read at token start - 1")
    if bool((end < start - 1).any()) or bool((end >= N).any()):
        raise ValueError(f"action_end must be in [start - 1, N - 1] with N={N}")
    covered = end >= start                                   # empty actions cover no token
    s_sorted, order = torch.sort(start[covered])
    if bool((s_sorted[1:] <= end[covered][order][:-1]).any()):
        raise ValueError("actions overlap: each token belongs to at most one action")


def airl_terms(g_tok: torch.Tensor, h_tok: torch.Tensor, logp_tok: torch.Tensor,
               action_start: torch.Tensor, action_end: torch.Tensor,
               action_terminal: torch.Tensor, *, gamma: float,
               backend: str | None = None) -> AirlTerms:
    """Per-action AIRL terms (g_sum, f, ell) from per-token quantities.

    Args:
        g_tok: (N,) float reward term per flat token (nats); g_k is its sum over action k.
        h_tok: (N,) float shaping potential read at each token (nats).
        logp_tok: (N,) float policy log-prob per token (nats), treated as detached.
        action_start, action_end: (A,) int64 flat token index of each action's first and
            last token (inclusive); start >= 1, actions contiguous and disjoint, an empty
            action has end = start - 1.
        action_terminal: (A,) bool, last action of its sequence (next potential is 0).
        gamma: discount in [0, 1].
        backend: "triton" | "torch" | "reference" | None (auto, see `_dispatch`).

    Returns:
        AirlTerms(g_sum, f, ell), each (A,) fp32 (fp64 for fp64 inputs off Triton);
        differentiable w.r.t. g_tok and h_tok.
    """
    _check(g_tok, h_tok, logp_tok, action_start, action_end, action_terminal)
    backend = resolve_backend(backend, g_tok.device)
    if backend == "reference":
        return airl_terms_reference(g_tok, h_tok, logp_tok, action_start, action_end,
                                    action_terminal, gamma=gamma)
    if backend == "torch":
        return _airl_terms_torch(g_tok, h_tok, logp_tok, action_start, action_end,
                                 action_terminal, float(gamma))
    _check_triton(g_tok, h_tok)
    return AirlTerms(*AirlTermsFunction.apply(
        g_tok.contiguous(), h_tok.contiguous(), logp_tok.detach().contiguous(),
        action_start.contiguous(), action_end.contiguous(),
        action_terminal.contiguous().view(torch.uint8), float(gamma)))


def airl_loss(g_tok: torch.Tensor, h_tok: torch.Tensor, logp_tok: torch.Tensor,
              action_start: torch.Tensor, action_end: torch.Tensor,
              action_terminal: torch.Tensor, labels: torch.Tensor, *, gamma: float,
              valid: torch.Tensor | None = None, return_logits: bool = False,
              class_counts: torch.Tensor | None = None,
              backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced BCE of the AIRL discriminator, a () fp32 scalar (nats).

    0.5 * mean over valid expert actions (labels > 0.5) of softplus(-ell) + 0.5 * mean over
    valid policy / perturbed actions of softplus(ell). An empty class contributes 0 and the
    other gets weight 1; no valid action gives 0. Arguments as `airl_terms`, plus
    labels (A,) float (1 expert, 0 policy) and valid (A,) bool (False: ignored).
    With `return_logits`, returns `(loss, ell)`: the logits (A,) the loss was computed from,
    detached (for accuracy and AUROC without a second forward). `class_counts` (2,): the
    (expert, policy) action counts each class's sum is divided by instead of this batch's own;
    several processes pass the global counts, so their losses add up to the global one.
    """
    _check(g_tok, h_tok, logp_tok, action_start, action_end, action_terminal, labels, valid)
    backend = resolve_backend(backend, g_tok.device)
    if backend == "reference":
        return airl_loss_reference(g_tok, h_tok, logp_tok, action_start, action_end,
                                   action_terminal, labels, gamma=gamma, valid=valid,
                                   return_logits=return_logits, class_counts=class_counts)
    if backend == "torch":
        ell = _airl_terms_torch(g_tok, h_tok, logp_tok, action_start, action_end,
                                action_terminal, float(gamma)).ell
        loss = _balanced_bce(ell, labels, valid, class_counts)
    else:
        _check_triton(g_tok, h_tok)
        loss, ell = AirlLossFunction.apply(
            g_tok.contiguous(), h_tok.contiguous(), logp_tok.detach().contiguous(),
            action_start.contiguous(), action_end.contiguous(),
            action_terminal.contiguous().view(torch.uint8), labels.contiguous(),
            None if valid is None else valid.contiguous().view(torch.uint8), float(gamma),
            None if class_counts is None else class_counts.float())
    return (loss, ell.detach()) if return_logits else loss
