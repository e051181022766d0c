"""Step-segment packing for padding-free batches: the checked boundary of csrc/segments.cpp.

B (prompt, completion) token sequences are concatenated into one row of T tokens.
Each completion is split into actions (the A "a_k" of DESIGN.md section 1) by a
`StepRule`; `pack_segments` returns, per token, its position / sequence / global
action id and, per action, its first and last flat token index, ready for
varlen attention (`cu_seqlens`, `max_seqlen`, `position_ids`) and per-action
reductions (`action_id`, `action_end`).

Three implementations with identical output: the C++ extension (`pack_segments`,
`pack_segments_flat`), a vectorised NumPy twin (`pack_segments_numpy`, the
benchmark baseline) and plain Python loops (`pack_segments_reference`, the test
oracle). The two twins take the flat form, like `pack_segments_flat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import pairwise

import numpy as np
import torch

try:
    from rairl import _segments
except ImportError as e:
    raise ImportError(
        "rairl._segments, the C++ step-segment packer, is not built. Build it from the project "
        "root with `pip install -e .` (or `python setup.py build_ext --inplace`)."
    ) from e

Array = np.ndarray | torch.Tensor
IntVector = np.ndarray | torch.Tensor | Sequence[int]
KINDS = ("boundary", "interval", "token", "whole")
# Longest interval window: a packed batch holds at most 2**31 - 1 tokens (int32 cu_seqlens), so a
# longer window never fits, and the C++ packer refuses one (its sums stay far from int64 overflow).
MAX_INTERVAL = 2**31 - 1


@dataclass(frozen=True)
class StepRule:
    """How a completion is split into actions. An empty completion has zero actions.

    kind: "boundary" (reasoning steps), "interval" (fixed windows), "token" (one
        action per token) or "whole" (the whole completion is one action).
    boundary_ids: kind "boundary" only: token ids that END the current action, the
        boundary token included; tokens after the last boundary form a final action.
    interval: kind "interval" only: tokens per action, in [1, MAX_INTERVAL]; the last window
        may be shorter.
    """

    kind: str
    boundary_ids: tuple[int, ...] = ()
    interval: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"StepRule.kind must be one of {KINDS}, got {self.kind!r}")
        ids = tuple(self.boundary_ids)
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"StepRule.boundary_ids must be ints, got {ids!r}")
        object.__setattr__(self, "boundary_ids", tuple(int(i) for i in ids))
        if self.kind == "boundary" and not ids:
            raise ValueError("StepRule.boundary_ids must be non-empty for kind 'boundary'")
        if self.kind != "boundary" and ids:
            raise ValueError(f"StepRule.boundary_ids is only used by kind 'boundary', not {self.kind!r}")
        if any(i < 0 for i in ids):
            raise ValueError(f"StepRule.boundary_ids must be non-negative token ids, got {ids!r}")
        if not isinstance(self.interval, (int, np.integer)) or isinstance(self.interval, bool):
            raise ValueError(f"StepRule.interval must be an int, got {self.interval!r}")
        if self.kind == "interval" and not 1 <= self.interval <= MAX_INTERVAL:
            raise ValueError(f"StepRule.interval must be in [1, {MAX_INTERVAL}] for kind 'interval', "
                             f"got {self.interval}")
        if self.kind != "interval" and self.interval != 0:
            raise ValueError(f"StepRule.interval is only used by kind 'interval'; leave it 0 for {self.kind!r}")


@dataclass
class PackedBatch:
    """B sequences packed into T tokens with A actions. Flat indices address the packed row.

    input_ids:    (T,) int64 token ids, sequences concatenated.
    cu_seqlens:   (B+1,) int32, sequence b is tokens cu_seqlens[b]:cu_seqlens[b+1].
    max_seqlen:   int, the longest sequence (0 when B == 0).
    position_ids: (T,) int64, restarts at 0 for each sequence.
    seq_id:       (T,) int32, owning sequence.
    action_id:    (T,) int32, global action index in 0..A-1, -1 on prompt tokens.
    action_start: (A,) int64, flat index of the action's first token.
    action_end:   (A,) int64, flat index of the action's last token (inclusive).
    action_seq:   (A,) int32, owning sequence.
    cu_actions:   (B+1,) int32, sequence b owns actions cu_actions[b]:cu_actions[b+1].
    """

    input_ids: Array
    cu_seqlens: Array
    max_seqlen: int
    position_ids: Array
    seq_id: Array
    action_id: Array
    action_start: Array
    action_end: Array
    action_seq: Array
    cu_actions: Array

    @property
    def num_seqs(self) -> int:
        return len(self.cu_seqlens) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_actions(self) -> int:
        return len(self.action_start)

    def to_torch(self, device: str | torch.device = "cpu") -> PackedBatch:
        """The same batch with every array a tensor on `device`, dtypes kept (on the CPU
        the tensors share memory with the arrays)."""
        return PackedBatch(**{
            f.name: torch.as_tensor(getattr(self, f.name)).to(device)
            if f.name != "max_seqlen" else self.max_seqlen
            for f in fields(self)
        })


# ---------------------------------------------------------------- input checks


def _as_numpy(x: IntVector) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    a = np.asarray(x)
    return a.astype(np.int64) if a.size == 0 else a  # [] arrives as float64


def _int64_vector(x: IntVector, name: str) -> np.ndarray:
    """(N,) int64 C-contiguous array from any 1-D integer array, list or tensor."""
    a = _as_numpy(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_rule(rule: StepRule) -> None:
    if not isinstance(rule, StepRule):
        raise TypeError(f"rule must be a StepRule, got {type(rule).__name__}")


def flatten_sequences(sequences: Sequence[IntVector]) -> tuple[np.ndarray, np.ndarray]:
    """B 1-D integer sequences -> (flat_ids (T,) int64, offsets (B+1,) int64)."""
    arrays = [_as_numpy(s) for s in sequences]
    for i, a in enumerate(arrays):
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"sequences[{i}] must be a 1-D integer array, got {a.dtype} {a.shape}")
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return np.ascontiguousarray(flat, dtype=np.int64), offsets


def _flat_inputs(flat_ids, offsets, prompt_lens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (_int64_vector(flat_ids, "flat_ids"), _int64_vector(offsets, "offsets"),
            _int64_vector(prompt_lens, "prompt_lens"))


def _validate_values(flat_ids: np.ndarray, offsets: np.ndarray, prompt_lens: np.ndarray) -> None:
    """The checks csrc/segments.cpp makes, for the two Python twins."""
    if len(offsets) < 1:
        raise ValueError("offsets must have B + 1 >= 1 entries, got 0")
    if len(prompt_lens) != len(offsets) - 1:
        raise ValueError(f"prompt_lens has {len(prompt_lens)} entries but offsets describes "
                         f"{len(offsets) - 1} sequences")
    if offsets[0] != 0 or offsets[-1] != len(flat_ids):
        raise ValueError(f"offsets must start at 0 and end at len(flat_ids) = {len(flat_ids)}, "
                         f"got {offsets[0]} and {offsets[-1]}")
    lengths = np.diff(offsets)
    if (lengths < 0).any() or (offsets > len(flat_ids)).any():
        raise ValueError("offsets must be non-decreasing within [0, len(flat_ids)]")
    bad = np.flatnonzero((prompt_lens < 0) | (prompt_lens > lengths))
    if bad.size:
        b = bad[0]
        raise ValueError(f"prompt_lens[{b}] = {prompt_lens[b]} is outside [0, {lengths[b]}] "
                         f"(the length of sequence {b})")
    neg = np.flatnonzero(flat_ids < 0)
    if neg.size:
        raise ValueError(f"flat_ids[{neg[0]}] = {flat_ids[neg[0]]} is a negative token id")


# ---------------------------------------------------------------- C++ packer


def pack_segments_flat(flat_ids: IntVector, offsets: IntVector, prompt_lens: IntVector,
                       rule: StepRule) -> PackedBatch:
    """Pack B sequences given flat: the C++ path.

    flat_ids: (T,) integer token ids, sequences concatenated; kept as `input_ids`
        without a copy when already a contiguous int64 array.
    offsets: (B+1,) integers, sequence b is flat_ids[offsets[b]:offsets[b+1]].
    prompt_lens: (B,) integers, the first prompt_lens[b] tokens of sequence b are prompt.
    rule: how completions are split into actions.
    Raises ValueError naming the argument on invalid input. Inputs may be numpy,
    torch or lists; outputs are numpy.
    """
    _check_rule(rule)
    flat_ids, offsets, prompt_lens = _flat_inputs(flat_ids, offsets, prompt_lens)
    (cu_seqlens, max_seqlen, position_ids, seq_id, action_id, action_start, action_end,
     action_seq, cu_actions) = _segments.pack(
        flat_ids, offsets, prompt_lens, rule.kind,
        np.asarray(rule.boundary_ids, dtype=np.int64), rule.interval)
    return PackedBatch(flat_ids, cu_seqlens, max_seqlen, position_ids, seq_id, action_id,
                       action_start, action_end, action_seq, cu_actions)


def pack_segments(sequences: Sequence[IntVector], prompt_lens: IntVector,
                  rule: StepRule) -> PackedBatch:
    """Pack B sequences, each a 1-D integer array, list or tensor: the C++ path.

    prompt_lens: (B,) integers, the first prompt_lens[b] tokens of sequences[b] are prompt.
    See `pack_segments_flat` for the rest; this only concatenates first.
    """
    flat_ids, offsets = flatten_sequences(sequences)
    return pack_segments_flat(flat_ids, offsets, prompt_lens, rule)


# ---------------------------------------------------------------- NumPy twin


def _ends_action(rule: StepRule, flat_ids: np.ndarray, k: np.ndarray) -> np.ndarray | bool:
    """(T,) bool: does the rule end an action at this token? k is the index in the completion."""
    if rule.kind == "boundary":
        return np.isin(flat_ids, rule.boundary_ids)
    if rule.kind == "interval":
        return (k + 1) % rule.interval == 0
    return rule.kind == "token"  # token: every token ends one; whole: only the last does


def pack_segments_numpy(flat_ids: IntVector, offsets: IntVector, prompt_lens: IntVector,
                        rule: StepRule) -> PackedBatch:
    """Vectorised NumPy twin of `pack_segments_flat` (same signature and output)."""
    _check_rule(rule)
    flat_ids, offsets, prompt_lens = _flat_inputs(flat_ids, offsets, prompt_lens)
    _validate_values(flat_ids, offsets, prompt_lens)
    B, T = len(prompt_lens), len(flat_ids)
    lengths = np.diff(offsets)
    seq_id = np.repeat(np.arange(B, dtype=np.int32), lengths)  # (T,)
    position_ids = np.arange(T, dtype=np.int64) - np.repeat(offsets[:-1], lengths)  # (T,)
    k = position_ids - np.repeat(prompt_lens, lengths)  # (T,) completion index, < 0 on prompt
    in_completion = k >= 0
    is_last = np.zeros(T, dtype=bool)
    is_last[offsets[1:][lengths > 0] - 1] = True
    ends = in_completion & (_ends_action(rule, flat_ids, k) | is_last)
    starts = k == 0
    starts[1:] |= ends[:-1] & in_completion[1:]
    action_id = np.cumsum(starts, dtype=np.int32) - 1
    action_id[~in_completion] = -1
    action_start = np.flatnonzero(starts)
    action_seq = seq_id[action_start]
    cu_actions = np.searchsorted(action_seq, np.arange(B + 1)).astype(np.int32)
    return PackedBatch(flat_ids, offsets.astype(np.int32), int(lengths.max(initial=0)),
                       position_ids, seq_id, action_id, action_start, np.flatnonzero(ends),
                       action_seq, cu_actions)


# ---------------------------------------------------------------- Python reference


def _reference_ends(rule: StepRule, boundary: set[int], token: int, k: int) -> bool:
    if rule.kind == "boundary":
        return token in boundary
    if rule.kind == "interval":
        return (k + 1) % rule.interval == 0
    return rule.kind == "token"


def pack_segments_reference(flat_ids: IntVector, offsets: IntVector, prompt_lens: IntVector,
                            rule: StepRule) -> PackedBatch:
    """Plain-loop twin of `pack_segments_flat` (same signature and output): the test oracle."""
    _check_rule(rule)
    flat_ids, offsets, prompt_lens = _flat_inputs(flat_ids, offsets, prompt_lens)
    _validate_values(flat_ids, offsets, prompt_lens)
    ids, off, plen = flat_ids.tolist(), offsets.tolist(), prompt_lens.tolist()
    boundary = set(rule.boundary_ids)
    position_ids, seq_id, action_id = [], [], []
    starts, ends, owners, cu_actions = [], [], [], [0]
    for b in range(len(plen)):
        s, e, c0 = off[b], off[b + 1], off[b] + plen[b]
        for t in range(s, e):
            position_ids.append(t - s)
            seq_id.append(b)
            if t < c0:
                action_id.append(-1)
                continue
            if len(starts) == len(ends):  # no open action: this token opens one
                starts.append(t)
            action_id.append(len(starts) - 1)
            if _reference_ends(rule, boundary, ids[t], t - c0) or t == e - 1:
                ends.append(t)
                owners.append(b)
        cu_actions.append(len(starts))
    return PackedBatch(
        flat_ids, np.array(off, np.int32), max((e - s for s, e in pairwise(off)), default=0),
        np.array(position_ids, np.int64), np.array(seq_id, np.int32),
        np.array(action_id, np.int32), np.array(starts, np.int64), np.array(ends, np.int64),
        np.array(owners, np.int32), np.array(cu_actions, np.int32))


# ---------------------------------------------------------------- inverse helpers


def _index_like(index: Array, values: Array) -> Array:
    """An index array from `packed`, converted to the array library of `values`."""
    if isinstance(values, torch.Tensor):
        return torch.as_tensor(index, device=values.device).long()
    return index.cpu().numpy() if isinstance(index, torch.Tensor) else index


def unpack_tokens(values: Array, packed: PackedBatch, pad_value: float = 0.0) -> Array:
    """Per-token values (T, *F) -> right-padded (B, max_seqlen, *F), same dtype and library.

    Torch inputs stay torch (on their device) and the result is differentiable in `values`.
    """
    if values.shape[0] != packed.num_tokens:
        raise ValueError(f"values has {values.shape[0]} rows, packed has {packed.num_tokens} tokens")
    shape = (packed.num_seqs, packed.max_seqlen, *values.shape[1:])
    seq, pos = _index_like(packed.seq_id, values), _index_like(packed.position_ids, values)
    if isinstance(values, torch.Tensor):
        out = values.new_full(shape, pad_value)
        return out.index_put((seq, pos), values)
    out = np.full(shape, pad_value, dtype=values.dtype)
    out[seq, pos] = values
    return out


def split_actions(values: Array, packed: PackedBatch) -> list[Array]:
    """Per-action values (A, *F) -> B arrays, the b-th (A_b, *F) (views, same library)."""
    if values.shape[0] != packed.num_actions:
        raise ValueError(f"values has {values.shape[0]} rows, packed has {packed.num_actions} actions")
    if packed.num_seqs == 0:
        return []
    cuts = _index_like(packed.cu_actions, np.empty(0))[1:-1].tolist()
    if isinstance(values, torch.Tensor):
        return list(torch.tensor_split(values, cuts))
    return np.split(values, cuts)
