"""A CLIP tokenizer that reads every word of the shapes grammar as one token, built in memory.

It is the byte-level base of ``vipkit.tokenizers.byte_level_clip_tokenizer`` (so any text still
tokenizes, unknown words into bytes) plus one token per grammar word, reached through BPE merges that
join the word's characters left to right (``r e`` → ``re``, ``re d</w>`` → ``red</w>``). A small text
encoder then sees "red" as one embedding instead of four bytes.
"""

from __future__ import annotations

import itertools
from typing import Any

from vipkit.tokenizers import byte_level_clip_tokenizer
from vipkit_shapes.world import grammar_words

END_OF_WORD = "</w>"


def _apply_merges(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: repeatedly join the adjacent pair of lowest merge rank."""
    symbols = [*word[:-1], word[-1] + END_OF_WORD]
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(itertools.pairwise(symbols))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that turn each word into one token, in priority order.

    Each new merge joins a word's first two current symbols and is appended last (lowest priority), so it
    cannot change how earlier words merge: they become one token before it is ever the best pair.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(symbols := _apply_merges(word, ranks)) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    return merges


def word_tokenizer(model_max_length: int = 77) -> Any:
    """A ``transformers.CLIPTokenizer``: byte-level base + one token per shapes-grammar word."""
    from transformers import CLIPTokenizer

    vocab = dict(byte_level_clip_tokenizer(model_max_length).get_vocab())
    merges = word_merges(list(grammar_words()))
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length, pad_token="<|endoftext|>")
