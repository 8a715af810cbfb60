"""The ``random`` preset: VideoScore's real architecture (Idefics2-8B + the 5-way head) with random weights, no download.

It measures time and memory at the real size; its scores mean nothing. The tokenizer is word-level over
the official query's words, with Idefics2's special tokens at their real ids (``<unk>`` 0, ``<s>`` 1,
``</s>`` 2, the image tokens from 32000), so a query is about as many tokens as with the real Llama
tokenizer; words outside the query become ``<unk>``, one token each.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from vipkit_videoscore.inputs import REGRESSION_QUERY_PROMPT
from vipkit_videoscore.tiny import idefics2_tokenizer, seeded_videoscore

if TYPE_CHECKING:
    import torch


def query_word_tokenizer(image_token_id: int) -> Any:
    """Word-level tokenizer over the query's words, filled with unused tokens so that Idefics2's added tokens follow
    at their ids: ``<fake_token_around_image>``, ``<image>`` = ``image_token_id``, ``<end_of_utterance>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    query = REGRESSION_QUERY_PROMPT.format(text_prompt=" ")  # the quotes around a prompt stay apart from its words
    words = sorted(set(re.findall(r"\w+|[^\w\s]+", query)))  # the pieces the Whitespace pre-tokenizer makes
    base = ["<unk>", "<s>", "</s>", *words]
    base += [f"<unused{i}>" for i in range(image_token_id - 1 - len(base))]
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(base)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return idefics2_tokenizer(backend)


def random_videoscore(
    seed: int = 0, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """The model (8.27 B parameters, built on ``device`` in ``dtype``: 16.5 GB in bfloat16) and its tokenizer."""
    from vipkit_videoscore.model import idefics2_8b_config

    config = idefics2_8b_config()
    tokenizer = query_word_tokenizer(config.image_token_id)
    return seeded_videoscore(config, seed, device, dtype), tokenizer
