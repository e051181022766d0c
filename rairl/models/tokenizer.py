"""Offline BPE tokenizer for tiny models, and the prompt template (plain, or the tokenizer's chat template).

The tokenizer is trained with `tokenizers` on a text corpus (no hub access),
splits every digit into its own token (arithmetic is learned per digit) and
keeps byte-level round-tripping so decode(encode(text)) == text. It is saved
as a `PreTrainedTokenizerFast`, so it loads through the same
`AutoTokenizer.from_pretrained` call as a real checkpoint's tokenizer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .lm import TOKENIZER_FILES, checked_path

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


TEMPLATES = ("plain", "chat")


def format_prompt(question: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The prompt text the policy completes: `Question: …\nAnswer:\n` (template `plain`), or, when
    `set_template(tokenizer, "chat")` was called, the tokenizer's own chat template with the question
    as the user turn and the generation prompt added."""
    if tokenizer is not None and getattr(tokenizer, "rairl_template", "plain") == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": question.strip()}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {question.strip()}\nAnswer:\n"


def set_template(tokenizer: PreTrainedTokenizerBase, template: str) -> PreTrainedTokenizerBase:
    """Make every prompt `tokenizer` encodes through `format_prompt` use `template` (plain | chat)."""
    if template not in TEMPLATES:
        raise ValueError(f"template {template!r}; choose one of {TEMPLATES}")
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{tokenizer.name_or_path or 'the tokenizer'}: has no chat template; use template 'plain'")
    tokenizer.rairl_template = template
    return tokenizer


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with single-digit tokens on `corpus`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, padding_side="left"
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load any tokenizer by path (tiny or real); guarantees a pad token. A local path that does not exist or
    holds no tokenizer files is a one-line error (`checked_path`), never a hub lookup."""
    tok = AutoTokenizer.from_pretrained(checked_path(path, holds=TOKENIZER_FILES, what="tokenizer"))
    if tok.eos_token_id is None:
        raise ValueError(f"{path}: tokenizer has no eos_token; rairl needs one to end completions")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


@functools.lru_cache(maxsize=8)  # decoding a 150k vocabulary takes seconds; tokenizers hash by identity
def newline_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """Ids of every token whose text ends in a newline: the default step boundary."""
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if text.endswith("\n"):
            ids.append(token_id)
    if not ids:
        raise ValueError("tokenizer has no token ending in a newline; choose another step rule")
    return tuple(ids)
