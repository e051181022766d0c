"""Causal LMs: tiny ones built from a config, real ones loaded by path, one code path for both.

Per-token log-probs always go through `rairl.kernels.token_logprobs` (the
fused, chunked LM-head + log-softmax + gather), never through full logits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..configs import check_at_least
from ..kernels import token_logprobs
from .packing import packed_decoder_hidden


@dataclass(frozen=True)
class TinyLMConfig:
    """Shape of a tiny Llama/Qwen2-architecture model (about 1M parameters by default)."""

    arch: str = "llama"  # "llama" or "qwen2"
    hidden_size: int = 128  # width of the residual stream
    num_layers: int = 4  # decoder layers
    num_heads: int = 4  # attention heads (as many key/value heads)
    intermediate_size: int = 384  # width of the MLP
    max_positions: int = 512  # longest sequence in tokens (rotary positions)

    def __post_init__(self) -> None:
        if self.arch not in ("llama", "qwen2"):
            raise ValueError(f"TinyLMConfig.arch: {self.arch!r}; use 'llama' or 'qwen2'")
        check_at_least(self, 1, "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions")
        if self.hidden_size % self.num_heads:
            raise ValueError("TinyLMConfig: hidden_size must be a multiple of num_heads")


def build_tiny_lm(tokenizer: PreTrainedTokenizerBase, cfg: TinyLMConfig = TinyLMConfig(), seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM of the given shape for `tokenizer`'s vocabulary."""
    config = AutoConfig.for_model(
        cfg.arch,
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)


def check_attn_implementation(attn_implementation: str) -> None:
    """Raise ImportError naming the extra when `attn_implementation` needs a package that is missing."""
    if attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as e:
            raise ImportError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'rairl[gpu]'") from e


def looks_local(path: str | Path) -> bool:
    """A path meant as a local folder rather than a hub id `org/name`: absolute, `./`- or `~`-relative,
    deeper than `org/name`, or under a folder that exists here."""
    text = str(path)
    return Path(text).is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or Path(text.split("/")[0]).is_dir() and "/" in text


MODEL_FILES = ("config.json",)  # what a model folder holds
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what a tokenizer folder holds, one of them at least


def checked_path(path: str | Path, option: str = "", holds: Sequence[str] = MODEL_FILES, what: str = "model",
                 hub: bool = True) -> str:
    """`path` as `from_pretrained` should read it (`~` expanded), checked before anything is loaded.

    A path meant as local (`looks_local`; every path with `hub=False`) that does not exist, is not a
    folder, or holds none of `holds` is a one-line FileNotFoundError / NotADirectoryError naming `option`
    (e.g. "--policy") and the path, never a hub lookup of the mistyped name. A hub id `org/name` passes.
    """
    label = f"{option} {path}" if option else str(path)
    local = Path(path).expanduser()
    if not local.exists():
        if hub and not looks_local(path):
            return str(path)
        raise FileNotFoundError(f"{label}: no such folder")
    if not local.is_dir():
        raise NotADirectoryError(f"{label}: a file, not a {what} folder")
    if not any((local / name).is_file() for name in holds):
        raise FileNotFoundError(f"{label}: no {what} files ({' / '.join(holds)})")
    return str(local)


def check_vocab(tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> None:
    """Refuse a tokenizer and a model that are not a pair: a token id (up to `len(tokenizer)`) past the model's
    embedding rows would index out of range (a device assert, or garbage scores). Names both paths."""
    n_ids, rows = len(tokenizer), model.get_input_embeddings().num_embeddings
    if n_ids > rows:
        raise ValueError(f"the tokenizer {tokenizer.name_or_path or '(built in code)'} has {n_ids} token ids but the model "
                         f"{getattr(model, 'name_or_path', '') or '(built in code)'} embeds only {rows}: "
                         "use the tokenizer saved with this model")


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
                   device: str | torch.device = "cpu") -> PreTrainedModel:
    """Load a causal LM saved with `save_pretrained` (tiny or real checkpoint) on `device` in `dtype`.

    A local path that does not exist or holds no model is an error here (`checked_path`), never a hub lookup.
    """
    check_attn_implementation(attn_implementation)
    return AutoModelForCausalLM.from_pretrained(checked_path(path), dtype=dtype, attn_implementation=attn_implementation).to(device)


# Padding-free forward passes are the default for every log-prob (trainer and scorer);
# RAIRL_PACKING=0 turns them off, e.g. to compare against the padded path.
PACKING_DEFAULT = os.environ.get("RAIRL_PACKING", "1") != "0"


def decoder_hidden(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, packing: bool = PACKING_DEFAULT
) -> torch.Tensor:
    """Final hidden states (after the last norm) of a causal LM, `(B, T, H)`.

    With `packing`, computed padding-free (`rairl.models.packing`; right padding only):
    the same values on real tokens, 0 on padding.
    """
    if packing:
        return packed_decoder_hidden(model, input_ids, attention_mask)
    decoder = model.get_decoder()
    return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def per_token_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    return_hidden: bool = False,
    packing: bool = PACKING_DEFAULT,
    score_mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(token_t | tokens_<t) for every position, `(B, T)` fp32; position 0 and padding hold 0.

    With `return_hidden`, also the hidden states `(B, T, H)` that produced them. With
    `packing`, the decoder runs padding-free. The LM head scores real tokens only, and with
    `score_mask` `(B, T)` bool only the tokens it marks (e.g. `TokenBatch.completion_mask()`:
    the prompt's log-probs are then 0 and never computed, which saves LM-head work).
    """
    hidden = decoder_hidden(model, input_ids, attention_mask, packing=packing)  # (B, T, H)
    B, T, H = hidden.shape
    valid = (attention_mask[:, 1:] > 0) & (attention_mask[:, :-1] > 0)  # (B, T-1)
    if score_mask is not None:
        valid &= score_mask[:, 1:].bool()
    idx = valid.reshape(-1).nonzero().squeeze(1)  # (N',) scored tokens
    x, targets = hidden[:, :-1].reshape(-1, H), input_ids[:, 1:].reshape(-1)  # (B*(T-1), H), (B*(T-1),)
    weight = model.get_output_embeddings().weight
    lp_scored = token_logprobs(x.index_select(0, idx), weight, targets.index_select(0, idx), temperature=temperature)
    lp = lp_scored.new_zeros(B * (T - 1)).index_copy(0, idx, lp_scored).view(B, T - 1)
    lp = torch.nn.functional.pad(lp, (1, 0))  # (B, T): align log-prob with the token it scores
    return (lp, hidden) if return_hidden else lp
