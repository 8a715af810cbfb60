"""What diffusion-transformer presets are built from without a download: a T5-style tokenizer made in memory, T5 /
UMT5 text encoders of given sizes, and seeded construction on a device.

The video DiTs encode prompts with T5-family encoders (T5 v1.1 XXL, UMT5 XXL) whose SentencePiece vocabularies are
downloads. ``byte_level_t5_tokenizer`` needs none: a ``tokenizers`` BPE model without merges over the 256 byte symbols
(every UTF-8 string round-trips, one token per byte) plus T5's special tokens at T5's ids (pad 0, end of text 1,
unknown 2), appending end-of-text as T5 does, returned as a ``transformers`` fast tokenizer that saves to and loads
from a ``tokenizer.json`` like any other. Its ids lie below ``BYTE_LEVEL_T5_VOCAB_SIZE``, so it drives an encoder of
any vocabulary size (a ``random`` preset keeps the real embedding table).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
BYTE_LEVEL_T5_VOCAB_SIZE = len(T5_SPECIAL_TOKENS) + 256

T5_V1_1_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
)
"""``google/t5-v1_1-xxl`` (CogVideoX's and LTX-Video's text encoder; diffusers' conversion scripts load it), as its
config.json and the T5.1.1 XXL gin file give it: 4096 wide, 24 layers of 64 heads of 64, gated-GELU 10240."""
UMT5_XXL = {**T5_V1_1_XXL, "vocab_size": 256384}
"""``google/umt5-xxl`` (Wan's text encoder): the same sizes with a 256,384-token vocabulary (Wan-Video/Wan2.1
``wan/modules/t5.py``, ``umt5_xxl``: dim 4096, dim_ffn 10240, 64 heads, 24 encoder layers, 32 buckets)."""

TINY_T5 = dict(
    vocab_size=BYTE_LEVEL_T5_VOCAB_SIZE,
    d_model=16,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
)
"""What tiny presets change in an XXL encoder's sizes (``{**T5_V1_1_XXL, **TINY_T5}``): 2 layers of 2 heads, 16 wide,
the byte-level tokenizer's vocabulary."""


def byte_level_t5_tokenizer(model_max_length: int = 512) -> Any:
    """A T5-style fast tokenizer with a byte-level vocabulary (259 tokens), built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*T5_SPECIAL_TOKENS, *symbols])}
    pad, end, unknown = T5_SPECIAL_TOKENS
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unknown))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {end}", pair=f"$A {end} $B {end}", special_tokens=[(end, vocab[end])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=pad, eos_token=end, unk_token=unknown, model_max_length=model_max_length
    )


def t5_encoder(sizes: dict[str, Any], tokenizer: Any, *, umt5: bool = False) -> torch.nn.Module:
    """A T5 (or UMT5) encoder of ``sizes`` with random weights, its special token ids the tokenizer's, in eval mode
    (a directly built model trains, and T5's dropout would make its prompts differ call to call)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return model_class(config_class(**sizes, **ids, decoder_start_token_id=tokenizer.pad_token_id)).eval()


@contextmanager
def seeded_on(device: torch.device, seed: int) -> Iterator[None]:
    """Build modules directly on ``device`` (a full-size model never passes through CPU memory on its way to a GPU;
    on ``meta`` nothing is allocated) from torch's generator seeded with ``seed``, leaving the global one as it was:
    the same seed and device give the same weights."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        yield
