"""Offline BPE tokenizer for tiny models, and the chat-free prompt template.

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

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def format_prompt(question: str) -> str:
    """The one prompt template: the model completes after the trailing newline."""
    return f"Question: {question.strip()}\nAnswer:\n"


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
    """Load any tokenizer by path (tiny or real); guarantees a pad token."""
    tok = AutoTokenizer.from_pretrained(str(path))
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
