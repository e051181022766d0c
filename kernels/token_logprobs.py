"""Per-token log-probs of chosen tokens, fused with the LM head: the N x V logits never exist.

    logp[i] = log_softmax(hidden @ weight.T / T)[i, targets[i]]
    ent[i]  = -sum_j p[i, j] log p[i, j]            (optional)

Backends (see `_dispatch.resolve_backend`); both share one backward:

* triton: forward tiles (token block x vocab split), an online log-sum-exp per token over
  the split's vocab blocks, partials combined per token; it saves only lse (and the entropy).
* torch: forward over token chunks of (C, V) fp32 logits from BLAS GEMMs (16-bit operands
  on CUDA with fp32 output, so tensor cores do the work), in-place log-sum-exp and gather.
* backward (both): over vocab chunks, recompute (N, Vc) logits with a GEMM, form the dense
  dlogits -p (g + g_ent (z - E z)) / T (one Triton pass on the triton backend, four torch
  passes on the torch one), write dW_c = d^T x once and add d W_c into dx; the
  onehot part g / T at the targets is an (N, H) gather / scatter-add. Measured on an H100
  (benchmarks/RESULTS.md), a backward of tiled Triton dots with fp32 atomics (the
  cut-cross-entropy scheme) was 2.7-5.5x slower than unfused PyTorch; GEMMs win here.
* reference: full fp32 logits, log_softmax, gather.

All accumulate in fp32 (float64 inputs stay float64 on torch/reference, for gradcheck).
"""
from __future__ import annotations

import torch

from ._dispatch import _warn_once, check_launchable, resolve_backend, tl, triton, triton_interpret

# ---------------------------------------------------------------------------------------------
# Tuned constants
# ---------------------------------------------------------------------------------------------
# GPU forward tiles (token x vocab x hidden step), chosen as the largest that spill nothing,
# from an AOT compile for sm_90 with triton 3.9's ptxas (cuobjdump resource usage):
#   16-bit 64x128x32, 8 warps: 188 regs, 0 B stack; fp32 (ieee FMA dots) 32x64x16, 4 warps.
# `benchmarks/bench_token_logprobs.py --sweep` (run by benchmarks/gpu/run.sh) times the 16-bit ones.
_GPU_TILES = {
    "16bit": dict(BLOCK_N=64, BLOCK_V=128, BLOCK_H=32, num_warps=8, num_stages=3),
    "fp32": dict(BLOCK_N=32, BLOCK_V=64, BLOCK_H=16, num_warps=4, num_stages=2),
}
# Under TRITON_INTERPRET every op is a numpy call per program: smallest legal tl.dot tiles.
_INTERPRET_TILES = dict(BLOCK_N=16, BLOCK_V=32, BLOCK_H=16)
# Forward programs per SM: vocab splits are added until the grid reaches this many per SM.
_FWD_PROGRAMS_PER_SM = 4
# torch forward: token rows per chunk from a byte budget for one fp32 (C, V) logits chunk;
# the backward's vocab chunks hold as many logits.
# CPU sweep, N=4096 H=256 V=32000 fp32 fwd+bwd, medians of 3 interleaved rounds on the 2-core
# dev box (loaded by other jobs): 1 thread: naive 5.6 s; 128/256/512/1024/2048 rows
# 3.8/3.5/3.6/3.6/3.7 s. 2 threads: naive 4.1 s; 256/512/1024 rows 5.0/4.1/3.8 s (every
# parallel op waits for a time slice, so fewer, larger chunks win). 64 MiB = 524 rows here.
# CUDA: not swept; 512 MiB keeps GEMMs >= ~900 rows at V=152k.
_TORCH_CHUNK_BYTES = {"cpu": 64 << 20, "cuda": 512 << 20}
# Row strides and vocab-chunk widths of the GEMM buffers are multiples of this many elements.
# H100 profile, N=16384 H=3584 V=151936 bf16: with vocab chunks of 8189 columns (fp32 output
# rows misaligned for 16-byte vector access) cuBLAS ran every backward GEMM on an sm75 CUTLASS
# fallback at 6-9 ms each, against 1.3 ms for the aligned forward GEMMs (nvjet sm90 kernels).
_GEMM_ALIGN = {"cpu": 8, "cuda": 128}
# 16-bit GEMMs with fp32 output (torch.mm(..., out_dtype=)) exist from torch 2.8 on.
_HAS_MM_OUT_DTYPE = "dtype_out" in torch.ops.aten.mm.overloads()
# Backward epilogue kernel: vocab columns per program (one row per program); not yet timed.
_DLOGITS_BLOCK_V = 1024


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _token_logprobs_fwd_kernel(
    x_ptr, w_ptr, tgt_ptr,                      # (N, H), (V, H), (N,) int64
    m_ptr, l_ptr, s_ptr, zt_ptr,                # (S, N) fp32 partials of vocab split S
    N, V, H, stride_xn, stride_wv, blocks_per_split, inv_temp,
    WITH_ENTROPY: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=-1)
    offs_h = tl.arange(0, BLOCK_H)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xn

    m = tl.full([BLOCK_N], float("-inf"), tl.float32)   # running max of z
    l_sum = tl.zeros([BLOCK_N], tl.float32)              # sum exp(z - m)
    s = tl.zeros([BLOCK_N], tl.float32)                  # sum exp(z - m) * (z - m)
    zt = tl.full([BLOCK_N], float("-inf"), tl.float32)   # z at the target, if in this split
    n_vblocks = tl.cdiv(V, BLOCK_V)
    vb_lo = pid_s * blocks_per_split
    vb_hi = tl.minimum(vb_lo + blocks_per_split, n_vblocks)  # launcher: every split non-empty
    for vb in range(vb_lo, vb_hi):
        cols = vb * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_wv
        acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for h0 in range(0, H, BLOCK_H):
            hh = h0 + offs_h
            h_ok = hh < H
            x = tl.load(x_rows + hh[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
            w = tl.load(w_rows + hh[None, :], mask=col_ok[:, None] & h_ok[None, :], other=0.0)
            if DOT_F32:
                x, w = x.to(tl.float32), w.to(tl.float32)
            acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)
        z = tl.where(col_ok[None, :], acc * inv_temp, float("-inf"))  # (BLOCK_N, BLOCK_V)
        m_new = tl.maximum(m, tl.max(z, axis=1))  # finite: each block has a valid column
        alpha = tl.exp(m - m_new)
        p = tl.exp(z - m_new[:, None])
        if WITH_ENTROPY:  # shifted by the running max: ent = log l - s / l stays accurate
            rebase = l_sum * tl.where(l_sum > 0, m - m_new, 0.0)  # 0 while m = -inf
            zs = tl.where(col_ok[None, :], z - m_new[:, None], 0.0)
            s = alpha * (s + rebase) + tl.sum(p * zs, axis=1)
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        hit = cols[None, :] == tgt[:, None]
        zt = tl.maximum(zt, tl.max(tl.where(hit, z, float("-inf")), axis=1))
        m = m_new
    out = pid_s * N + rows
    tl.store(m_ptr + out, m, mask=row_ok)
    tl.store(l_ptr + out, l_sum, mask=row_ok)
    tl.store(zt_ptr + out, zt, mask=row_ok)
    if WITH_ENTROPY:
        tl.store(s_ptr + out, s, mask=row_ok)


@triton.jit
def _dlogits_kernel(
    z_ptr, d_ptr,                                # (N, Vc) fp32 logits chunk, (N, Vc) dlogits
    lse_ptr, a_ptr, b_ptr,                       # (N,) fp32: lse, -g_ent / T, the constant
    Vc, stride_z, stride_d, inv_temp,
    WITH_ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr,
):
    # The backward's elementwise epilogue in one pass: d = exp(y) * (a y + b), y = z / T - lse
    # (a = 0 without entropy); the torch backend spends four passes on it.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    ok = cols < Vc
    z = tl.load(z_ptr + row * stride_z + cols, mask=ok, other=0.0)
    y = z * inv_temp - tl.load(lse_ptr + row)
    coef = tl.load(b_ptr + row)
    if WITH_ENTROPY:
        coef = y * tl.load(a_ptr + row) + coef
    d = tl.exp(y) * coef
    tl.store(d_ptr + row * stride_d + cols, d.to(d_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------
def _dot_args(dtype: torch.dtype) -> dict:
    # fp32 inputs: exact fp32 products (tf32 would cost ~1e-3 relative); 16-bit: tensor cores.
    # The interpreter's 16-bit tl.dot is wrong (bf16 off by 1e10 in triton 3.9): it gets fp32
    # operands holding the same 16-bit values instead.
    return dict(DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
                DOT_F32=triton_interpret() and dtype != torch.float32)


def _tiles(dtype: torch.dtype) -> dict:
    if triton_interpret():
        return dict(_INTERPRET_TILES)
    return dict(_GPU_TILES["fp32" if dtype == torch.float32 else "16bit"])


def _check_triton_inputs(x: torch.Tensor, w: torch.Tensor) -> None:
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"token_logprobs(backend='triton'): hidden dtype {x.dtype} unsupported; "
                        "use fp32/bf16/fp16 or backend='torch'")
    check_launchable(_token_logprobs_fwd_kernel, x.device)


def _token_logprobs_fwd_triton(x, w, tgt, inv_temp: float, with_entropy: bool):
    """x (N, H), w (V, H) unit-stride rows, tgt (N,) int64 -> lse, zt, ent | None (N,) fp32."""
    _check_triton_inputs(x, w)
    N, H = x.shape
    V = w.shape[0]
    cfg = _tiles(x.dtype)
    n_nb = triton.cdiv(N, cfg["BLOCK_N"])
    n_vb = triton.cdiv(V, cfg["BLOCK_V"])
    if x.is_cuda:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    else:
        sms = 1  # interpreter: still two+ splits on tiny inputs, so the combine is tested
    splits = max(1, min(n_vb, triton.cdiv(_FWD_PROGRAMS_PER_SM * sms, n_nb)))
    per_split = triton.cdiv(n_vb, splits)
    splits = triton.cdiv(n_vb, per_split)  # no empty split
    part = torch.empty((4, splits, N), device=x.device, dtype=torch.float32)  # m, l, s, zt
    m, l_sum, s, zt = part.unbind(0)
    _token_logprobs_fwd_kernel[(n_nb, splits)](
        x, w, tgt, m, l_sum, s, zt,
        N, V, H, x.stride(0), w.stride(0), per_split, inv_temp,
        WITH_ENTROPY=with_entropy, **_dot_args(x.dtype), **cfg,
    )
    m_max = m.amax(0)                                   # (N,)
    scale = torch.exp(m - m_max)                        # (S, N)
    l_tot = (l_sum * scale).sum(0)
    lse = m_max + torch.log(l_tot)
    ent = None
    if with_entropy:
        s_tot = (scale * (s + l_sum * (m - m_max))).sum(0)         # rebased to m_max
        ent = torch.log(l_tot) - s_tot / l_tot
    return lse, zt.amax(0), ent


def _dlogits_triton(z, d, lse, a, b, inv_temp: float) -> torch.Tensor:
    """d (N, Vc) <- exp(z / T - lse) * (a (z / T - lse) + b) in d's dtype; a None: no a term."""
    check_launchable(_dlogits_kernel, z.device)
    N, Vc = z.shape
    block = 128 if triton_interpret() else _DLOGITS_BLOCK_V
    _dlogits_kernel[(N, triton.cdiv(Vc, block))](
        z, d, lse, b if a is None else a, b, Vc, z.stride(0), d.stride(0), inv_temp,
        WITH_ENTROPY=a is not None, BLOCK_V=block,
    )
    return d


# ---------------------------------------------------------------------------------------------
# PyTorch path (chunked GEMMs; the backward is shared with the Triton path)
# ---------------------------------------------------------------------------------------------
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_rows(V: int, chunk_size: int | None, device: torch.device) -> int:
    budget = _TORCH_CHUNK_BYTES.get(device.type, _TORCH_CHUNK_BYTES["cpu"])
    return chunk_size if chunk_size else max(1, budget // (4 * V))


def _gemm_aligned(n: int, device: torch.device) -> int:
    """n rounded up to a multiple of the device's GEMM alignment (elements)."""
    align = _GEMM_ALIGN.get(device.type, _GEMM_ALIGN["cpu"])
    return triton.cdiv(n, align) * align


def _gemm_buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised (rows, cols) view of a buffer whose row stride is GEMM-aligned."""
    return torch.empty((rows, _gemm_aligned(cols, device)), device=device, dtype=dtype)[:, :cols]


def _gemm_operands(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, w) as the chunk GEMMs take them: 16-bit on CUDA (tensor cores, fp32 output), else
    upcast once to the compute dtype (a CPU has no 16-bit GEMM with fp32 output; the products
    of 16-bit values are exact in fp32, so both give the same fp32-accumulated result)."""
    if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16):
        if _HAS_MM_OUT_DTYPE:
            return x, w
        _warn_once("rairl.kernels.token_logprobs: this torch has no torch.mm(..., out_dtype=) "
                   "(added in 2.8); 16-bit GEMMs fall back to fp32 ones, several times slower")
    cdt = _compute_dtype(x.dtype)
    return x.to(cdt), w.to(cdt)


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a @ b, accumulated and written in out's dtype (fp32/fp64) whatever a's dtype."""
    if a.dtype == out.dtype:
        return torch.mm(a, b, out=out)
    return torch.mm(a, b, out_dtype=out.dtype, out=out)


def _token_logprobs_fwd_torch(x, w, tgt, inv_temp: float, with_entropy: bool, chunk: int):
    """Token-chunked forward: per chunk (C, V) logits in fp32, in-place log-sum-exp, gather."""
    N = x.shape[0]
    cdt = _compute_dtype(x.dtype)
    xg, wg = _gemm_operands(x, w)
    lse = torch.empty(N, device=x.device, dtype=cdt)
    zt = torch.empty(N, device=x.device, dtype=cdt)
    ent = torch.empty(N, device=x.device, dtype=cdt) if with_entropy else None
    buf = _gemm_buffer(min(chunk, N), w.shape[0], cdt, x.device)
    ebuf = torch.empty_like(buf) if with_entropy else None
    for i0 in range(0, N, chunk):
        i1 = min(N, i0 + chunk)
        z = _mm(xg[i0:i1], wg.t(), out=buf[: i1 - i0])     # (C, V) logits
        if inv_temp != 1.0:
            z.mul_(inv_temp)
        zt[i0:i1] = z.gather(1, tgt[i0:i1, None]).squeeze(1)
        zmax = z.amax(1, keepdim=True)                      # (C, 1)
        y = z.sub_(zmax)                                    # z - max, in place
        if with_entropy:
            e = torch.exp(y, out=ebuf[: i1 - i0])
            sumexp = e.sum(1)
            ey = e.mul_(y).sum(1)                           # sum e * (z - max)
            lse[i0:i1] = zmax.squeeze(1) + sumexp.log()
            ent[i0:i1] = sumexp.log() - ey / sumexp
        else:
            lse[i0:i1] = zmax.squeeze(1) + y.exp_().sum(1).log_()
    return lse, zt, ent


def _token_logprobs_bwd(x, w, tgt, lse, ent, g, ge, inv_temp, need_dx, need_dw, chunk, backend):
    """Vocab-chunked backward, shared by both backends: dx (N, H), dw (V, H) in input dtype.

    Per vocab chunk c of Vc columns (as many logits as a forward chunk of `chunk` rows):
    recompute z = x W_c^T / T (N, Vc) and the dense part of dlogits, d = -p (g + ge (z - E z))
    / T with p = exp(z - lse) and E z = lse - ent (one Triton pass on the triton backend, torch
    ops otherwise); then dW_c = d^T x is written once (no accumulation across chunks) and
    dx += d W_c. The onehot part g / T at the targets is an (N, H) gather / scatter-add in
    fp32. 16-bit inputs: d is rounded once to the input dtype before the two GEMMs (as
    autograd through 16-bit logits does), everything else is fp32.
    """
    N, H = x.shape
    V = w.shape[0]
    cdt = _compute_dtype(x.dtype)
    xg, wg = _gemm_operands(x, w)
    cols = min(V, _gemm_aligned(triton.cdiv(chunk * V, N), x.device))  # the forward's budget
    dx = torch.zeros((N, H), device=x.device, dtype=cdt) if need_dx else None
    dx_part = torch.empty_like(dx) if need_dx else None
    dw = torch.empty((V, H), device=x.device, dtype=cdt) if need_dw else None
    buf = _gemm_buffer(N, cols, cdt, x.device)
    fused = backend == "triton"
    ebuf = torch.empty_like(buf) if ge is not None and not fused else None
    dbuf = _gemm_buffer(N, cols, x.dtype, x.device) if fused or x.dtype != cdt else None
    # d = p * (a log p + b) with a = -ge / T, b = -(g + ge ent) / T, as z - E z = log p + ent
    b = (g if ge is None else g + ge * ent) * -inv_temp
    a = None if ge is None else ge * -inv_temp
    for v0 in range(0, V, cols):
        v1 = min(V, v0 + cols)
        z = _mm(xg, wg[v0:v1].t(), out=buf[:, : v1 - v0])   # (N, Vc) logits * T
        if fused:
            d = _dlogits_triton(z, dbuf[:, : v1 - v0], lse, a, b, inv_temp)
        else:
            if inv_temp != 1.0:
                z.mul_(inv_temp)
            y = z.sub_(lse[:, None])                        # log p
            coef = b[:, None] if a is None else torch.mul(y, a[:, None], out=ebuf[:, : v1 - v0]).add_(b[:, None])
            d = y.exp_().mul_(coef)
            if dbuf is not None:                            # 16-bit inputs: one rounding
                d = dbuf[:, : v1 - v0].copy_(d)
        if d.dtype != xg.dtype:                             # CPU: 16-bit GEMMs emulated in fp32
            d = d.to(xg.dtype)
        if need_dx:
            dx.add_(_mm(d, wg[v0:v1], out=dx_part))
        if need_dw:
            _mm(d.t(), xg, out=dw[v0:v1])
    g_t = (g * inv_temp)[:, None]                           # (N, 1)
    if need_dx:
        dx.add_(w.index_select(0, tgt).to(cdt) * g_t)
    if need_dw:
        dw.index_add_(0, tgt, x.to(cdt) * g_t)
    return (dx.to(x.dtype) if need_dx else None), (dw.to(w.dtype) if need_dw else None)


# ---------------------------------------------------------------------------------------------
# PyTorch reference
# ---------------------------------------------------------------------------------------------
def token_logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    return_entropy: bool = False,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Naive oracle: full (N, V) logits in fp32 (fp64 for fp64 inputs), log_softmax, gather.

    Same signature as `token_logprobs`; `backend` and `chunk_size` are ignored.
    """
    cdt = _compute_dtype(hidden.dtype)
    H = hidden.shape[-1]
    x = hidden.reshape(-1, H).to(cdt)
    tgt = targets.reshape(-1)
    m = None if mask is None else mask.reshape(-1)
    if m is not None:
        tgt = tgt.masked_fill(~m, 0)
    logp_all = torch.log_softmax(x @ weight.to(cdt).t() / temperature, dim=-1)  # (N, V)
    logp = logp_all.gather(1, tgt[:, None]).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    if m is not None:
        zero = logp.new_zeros(())
        logp, ent = torch.where(m, logp, zero), torch.where(m, ent, zero)
    logp, ent = logp.reshape(targets.shape), ent.reshape(targets.shape)
    return (logp, ent) if return_entropy else logp


# ---------------------------------------------------------------------------------------------
# Autograd Function
# ---------------------------------------------------------------------------------------------
class TokenLogprobsFunction(torch.autograd.Function):
    """(x (N, H), w (V, H), tgt (N,), mask (N,) | None) -> logp (N,), ent (N,) or (0,)."""

    @staticmethod
    def forward(ctx, x, w, tgt, mask, temperature, with_entropy, backend, chunk):
        inv_temp = 1.0 / temperature
        if backend == "triton":
            lse, zt, ent = _token_logprobs_fwd_triton(x, w, tgt, inv_temp, with_entropy)
        else:
            lse, zt, ent = _token_logprobs_fwd_torch(x, w, tgt, inv_temp, with_entropy, chunk)
        logp = zt - lse
        ctx.save_for_backward(x, w, tgt, mask, lse, ent)  # unmasked; ent None unless asked
        if not with_entropy:
            ent = logp.new_empty(0)
        if mask is not None:
            logp.masked_fill_(~mask, 0.0)
            ent = ent.masked_fill(~mask, 0.0) if with_entropy else ent
        ctx.inv_temp, ctx.backend, ctx.chunk = inv_temp, backend, chunk
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        x, w, tgt, mask, lse, ent = ctx.saved_tensors
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (g_logp is None and g_ent is None) or not (need_dx or need_dw):
            return None, None, None, None, None, None, None, None
        g = torch.zeros_like(lse) if g_logp is None else g_logp.to(lse.dtype)
        ge = None if (g_ent is None or ent is None) else g_ent.to(lse.dtype)
        if mask is not None:
            g = g.masked_fill(~mask, 0.0)
            ge = None if ge is None else ge.masked_fill(~mask, 0.0)
        g, ge = g.contiguous(), (None if ge is None else ge.contiguous())
        dx, dw = _token_logprobs_bwd(x, w, tgt, lse, ent, g, ge, ctx.inv_temp,
                                     need_dx, need_dw, ctx.chunk, ctx.backend)
        return dx, dw, None, None, None, None, None, None


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------
def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    return_entropy: bool = False,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token under softmax(hidden @ weight.T / temperature).

    Args:
        hidden: (..., H) fp32/bf16/fp16 final hidden states (fp64 on torch/reference only).
        weight: (V, H) LM-head weight, same dtype as `hidden`.
        targets: (...) int64 token ids in [0, V) (any value where `mask` is False).
        temperature: softmax temperature T > 0 (logits are divided by it).
        mask: optional (...) bool; False tokens output 0 and get zero gradient.
        return_entropy: also return the entropy (nats) of each token's distribution.
        backend: "triton" | "torch" | "reference" | None (auto, see `_dispatch`).
        chunk_size: token rows per forward logits chunk of the torch backend; the backward
            (both backends) takes vocab chunks of as many logits (default: 64 MiB of fp32
            logits on CPU, 512 MiB on CUDA).

    Returns:
        logp (...) fp32 log-probs (nats, <= 0), and entropy (...) fp32 if `return_entropy`.
        fp64 inputs give fp64 outputs. Differentiable w.r.t. `hidden` and `weight`, through
        both outputs. The (N, V) logits are never materialised (except backend="reference").
    """
    if hidden.shape[-1] != weight.shape[-1] or weight.dim() != 2:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}: "
                         "expected (..., H) and (V, H)")
    if hidden.dtype != weight.dtype:
        raise TypeError(f"hidden is {hidden.dtype} but weight is {weight.dtype}; cast one")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match hidden's leading dims "
                         f"{tuple(hidden.shape[:-1])}")
    if targets.dtype != torch.int64:
        raise TypeError(f"targets must be int64, got {targets.dtype}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != targets.shape):
        raise ValueError(f"mask must be bool with shape {tuple(targets.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    backend = resolve_backend(backend, hidden.device)
    if backend == "reference" or targets.numel() == 0:
        return token_logprobs_reference(hidden, weight, targets, temperature=temperature,
                                        mask=mask, return_entropy=return_entropy)
    H = hidden.shape[-1]
    x = hidden.reshape(-1, H)
    x = x if x.stride(-1) == 1 else x.contiguous()
    w = weight if weight.stride(-1) == 1 else weight.contiguous()
    tgt = targets.reshape(-1)
    m = None if mask is None else mask.reshape(-1).contiguous()
    tgt = (tgt if m is None else tgt.masked_fill(~m, 0)).contiguous()
    chunk = _chunk_rows(w.shape[0], chunk_size, x.device)
    logp, ent = TokenLogprobsFunction.apply(x, w, tgt, m, float(temperature),
                                            bool(return_entropy), backend, chunk)
    logp = logp.reshape(targets.shape)
    return (logp, ent.reshape(targets.shape)) if return_entropy else logp
