"""CLIP tokenizers that need no download, for tiny presets and tests."""

from __future__ import annotations

from functools import cache
from typing import Any

BYTE_LEVEL_VOCAB_SIZE = 2 * 256 + 2
"""Tokens of ``byte_level_clip_tokenizer``: every byte alone and word-final, then start and end of text."""


@cache
def _bytes_to_unicode() -> tuple[str, ...]:
    """OpenAI CLIP's reversible byte -> printable-character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in chars)


def byte_level_clip_tokenizer(model_max_length: int = 77) -> Any:
    """A CLIPTokenizer with a byte-level vocabulary and no merges (514 tokens), built in memory.

    Every UTF-8 string round-trips; words are split into bytes, so it is larger than real CLIP BPE per
    word but needs no vocabulary file. Returns a ``transformers.CLIPTokenizer``.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length, pad_token="<|endoftext|>")
