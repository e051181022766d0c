"""Padding-free decoder passes: right-padded (B, T) batches in, the same (B, T, H) hidden states out.

The B real sequences are laid out without padding, run through the decoder once,
and scattered back, so every caller keeps the padded layout. Two layouts, picked in
one place (`resolve_layout`):

* ``"varlen"``: all N real tokens in one row `(1, N)` with position ids restarting at
  0 per sequence; transformers' flash-attention path calls `flash_attn_varlen_func`
  with the `cu_seq_lens_*` / `max_length_*` we pass, so attention never sees a pad.
  The default for flash_attention_2 models. On sdpa/eager it also works (transformers
  >= 5 builds the block-causal mask from the position ids) but that mask is (N, N):
  only for tests.
* ``"rows"``: sequences bin-packed first-fit decreasing into R rows of at most
  `max_row_tokens` tokens, with a `(R, 1, L, L)` block-diagonal causal mask built
  from per-token sequence ids (bool for sdpa, additive float for eager), which
  transformers passes to attention unchanged. The default for sdpa and eager.

`rairl.kernels.segments.pack_segments` is not used here: it needs the token ids on the host
and computes step actions; only the (B,) lengths go to the host here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

LAYOUTS = ("rows", "varlen")
MASK_IMPLEMENTATIONS = ("sdpa", "eager")  # take a custom 4-D mask as is


def resolve_layout(model: PreTrainedModel, layout: str | None = None) -> str:
    """The packed layout for `model`: `layout` if given (and possible), else by attention backend."""
    impl = model.config._attn_implementation
    flash = "flash" in impl  # flash_attention_2/3 and hub flash kernels share the varlen path
    if layout is None:
        layout = "varlen" if flash else "rows"
    if layout not in LAYOUTS:
        raise ValueError(f"packing layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "rows":
        if impl not in MASK_IMPLEMENTATIONS:
            raise ValueError(f"packing layout 'rows' needs attn_implementation in {MASK_IMPLEMENTATIONS}, "
                             f"the model uses {impl!r}; use layout 'varlen' with flash attention")
        if "sliding_attention" in (getattr(model.config, "layer_types", None) or ()):
            raise ValueError("packing layout 'rows' does not build sliding-window masks; "
                             "load the model with flash_attention_2 (layout 'varlen') or turn packing off")
    return layout


def sequence_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) int64 real tokens per sequence of a right-padded `(B, T)` mask (1 real, 0 pad)."""
    real = attention_mask.bool()
    lengths = real.sum(1)
    t = torch.arange(real.shape[1], device=real.device)
    if not torch.equal(real, t[None] < lengths[:, None]):
        raise ValueError("attention_mask must be right-padded (each row: ones, then zeros) for packing")
    return lengths


def first_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin-pack items into rows of `capacity`: (row (B,), offset (B,)) int64 of each item.

    Longest first, each into the first row with room; rows used are 0..R-1.
    """
    if lengths.size and lengths.max() > capacity:
        raise ValueError(f"max_row_tokens={capacity} is shorter than the longest sequence ({lengths.max()})")
    space = np.full(len(lengths), capacity, dtype=np.int64)  # at most B rows
    row = np.zeros(len(lengths), dtype=np.int64)
    offset = np.zeros(len(lengths), dtype=np.int64)
    for i in np.argsort(-lengths, kind="stable"):
        r = int(np.argmax(space >= lengths[i]))  # an unused row always has room
        row[i], offset[i] = r, capacity - space[r]
        space[r] -= lengths[i]
    return row, offset


@dataclass(frozen=True)
class TokenMap:
    """Where each of the N real tokens sits, in sequence order (b, then t). All (N,) int64.

    seq: owning sequence; pos: position in it, from 0;
    src: flat index into the padded (B * T) layout; dst: flat index into the packed layout.
    """

    seq: torch.Tensor
    pos: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor


def token_map(lengths: torch.Tensor, starts: torch.Tensor, T: int, n_tokens: int) -> TokenMap:
    """Index map for sequences of `lengths` (B,) whose first packed token is at `starts` (B,)."""
    B = len(lengths)
    seq = torch.repeat_interleave(torch.arange(B, device=lengths.device), lengths, output_size=n_tokens)  # (N,)
    seq_begin = torch.cumsum(lengths, 0) - lengths  # (B,) index of each sequence's first token in (N,)
    pos = torch.arange(n_tokens, device=lengths.device) - seq_begin[seq]  # (N,)
    return TokenMap(seq, pos, seq * T + pos, starts[seq] + pos)


def _scatter_rows(values: torch.Tensor, tm: TokenMap, shape: tuple[int, int], fill: int) -> torch.Tensor:
    """(N,) per-token values -> (R, L) rows, `fill` on row padding."""
    out = values.new_full((shape[0] * shape[1],), fill)
    return out.index_copy_(0, tm.dst, values).view(shape)


def block_causal_mask(seq_ids: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """(R, 1, L, L) mask from per-token sequence ids `(R, L)`: attend to earlier tokens of the same id.

    dtype None gives bool (True = attend, for sdpa); a float dtype gives the additive
    0 / finfo.min mask eager attention adds to its scores. Row padding (id -1) attends
    to itself, so no query row is fully masked (sdpa would return NaN there).
    """
    L = seq_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seq_ids.device).tril()
    allowed = (seq_ids[:, :, None] == seq_ids[:, None, :]) & causal  # (R, L, L)
    if dtype is None:
        return allowed[:, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, torch.finfo(dtype).min)[:, None]


def _rows_hidden(model: PreTrainedModel, input_ids: torch.Tensor, lengths: torch.Tensor,
                 host_lengths: np.ndarray, max_row_tokens: int) -> tuple[torch.Tensor, TokenMap]:
    """Run the decoder on bin-packed rows: ((R * L, H) hidden, token map)."""
    row, offset = first_fit_decreasing(host_lengths, max_row_tokens)
    shape = (int(row.max()) + 1, int((offset + host_lengths).max()))  # (R, L): L is the fullest row
    starts = torch.from_numpy(row * shape[1] + offset).to(input_ids.device)  # (B,)
    tm = token_map(lengths, starts, input_ids.shape[1], int(host_lengths.sum()))
    ids = _scatter_rows(input_ids.reshape(-1)[tm.src], tm, shape, 0)  # (R, L); the pad id is masked anyway
    positions = _scatter_rows(tm.pos, tm, shape, 0)  # (R, L)
    seq_ids = _scatter_rows(tm.seq, tm, shape, -1)  # (R, L)
    eager = model.config._attn_implementation == "eager"
    mask = block_causal_mask(seq_ids, model.dtype if eager else None)  # (R, 1, L, L)
    out = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return out.last_hidden_state.reshape(shape[0] * shape[1], -1), tm


def _varlen_hidden(model: PreTrainedModel, input_ids: torch.Tensor, lengths: torch.Tensor,
                   host_lengths: np.ndarray) -> tuple[torch.Tensor, TokenMap]:
    """Run the decoder on all N real tokens as one row (1, N): ((N, H) hidden, token map)."""
    ends = torch.cumsum(lengths, 0)  # (B,)
    tm = token_map(lengths, ends - lengths, input_ids.shape[1], int(host_lengths.sum()))
    cu = torch.nn.functional.pad(ends, (1, 0)).to(torch.int32)  # (B+1,) cu_seqlens
    max_len = int(host_lengths.max())
    out = model.get_decoder()(
        input_ids=input_ids.reshape(-1)[tm.src][None], position_ids=tm.pos[None], use_cache=False,
        cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max_len, max_length_k=max_len)
    return out.last_hidden_state[0], tm


def packed_decoder_hidden(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_row_tokens: int | None = None,
    layout: str | None = None,
) -> torch.Tensor:
    """Final hidden states `(B, T, H)` of a right-padded batch, computed without padding.

    Args:
        input_ids: (B, T) int64 token ids, right-padded.
        attention_mask: (B, T) 1 on real tokens, 0 on padding (right padding only).
        max_row_tokens: layout "rows" only: tokens per packed row (default: the longest
            sequence, so no row is longer than the padded batch).
        layout: "rows" | "varlen" | None (by attention backend, see `resolve_layout`).

    Returns:
        (B, T, H) in the model's dtype, equal to `decoder_hidden` on every real token
        and 0 on padding; differentiable w.r.t. the model's parameters.
    """
    layout = resolve_layout(model, layout)
    lengths = sequence_lengths(attention_mask)  # (B,)
    host_lengths = lengths.cpu().numpy()  # (B,) ints: the layout is planned on the host
    B, T = input_ids.shape
    if host_lengths.sum() == 0:
        return model.get_input_embeddings().weight.new_zeros(B, T, model.config.hidden_size)
    if layout == "varlen":
        hidden, tm = _varlen_hidden(model, input_ids, lengths, host_lengths)
    else:
        cap = int(host_lengths.max()) if max_row_tokens is None else max_row_tokens
        hidden, tm = _rows_hidden(model, input_ids, lengths, host_lengths, cap)
    out = hidden.new_zeros(B * T, hidden.shape[-1]).index_copy(0, tm.src, hidden.index_select(0, tm.dst))
    return out.view(B, T, -1)
