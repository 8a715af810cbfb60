"""A tiny random VideoScore (same architecture and parameter names, toy sizes) built offline, for tests and CI,
and the builders it shares with the ``random`` preset (seeded weights, Idefics2's special tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkit_videoscore.inputs import FAKE_IMAGE_TOKEN, IMAGE_TOKEN, ImageSettings

if TYPE_CHECKING:
    import torch

TINY_IMAGE_SETTINGS = ImageSettings(shortest_edge=28, longest_edge=56)
"""Frames of 28 to 56 px keep their size; smaller ones are raised to 28 px (the tiny vision tower's size)."""


def idefics2_tokenizer(backend: Any) -> Any:
    """``backend`` (a ``tokenizers.Tokenizer`` with ``<unk>``, ``<s>``, ``</s>`` as ids 0-2) with Idefics2's special
    tokens: ``<s>`` prepended, ``<unk>`` pads, the image tokens and ``<end_of_utterance>`` after the vocabulary."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, "<end_of_utterance>"]})
    return tokenizer


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (no merges) with Idefics2's special tokens: ``<unk>`` = pad = 0, ``<s>`` = 1 (prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {
        token: index
        for index, token in enumerate(["<unk>", "<s>", "</s>", *sorted(pre_tokenizers.ByteLevel.alphabet())])
    }
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return idefics2_tokenizer(backend)


def tiny_config(vocab_size: int, image_token_id: int) -> Any:
    """Idefics2 at toy width: 2-layer 32-wide vision tower on 28 px (7 px patches), 4 latents, 2-layer Mistral."""
    from transformers import Idefics2Config

    return Idefics2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=28,
            patch_size=7,
        ),
        perceiver_config=dict(
            hidden_size=32,
            rms_norm_eps=1e-5,
            resampler_n_latents=4,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=8,
            num_key_value_heads=1,
        ),
        text_config=dict(
            model_type="mistral",
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            pad_token_id=0,
        ),
        image_token_id=image_token_id,
        use_cache=False,
    )


def seeded_videoscore(
    config: Any, seed: int = 0, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Any:
    """A ``VideoScoreModel`` of ``config`` with seeded random weights, built on ``device`` (default the CPU) in
    ``dtype`` (default float32), in eval mode; same seed and device, same weights."""
    import torch

    from vipkit_videoscore.model import VideoScoreModel

    device = torch.device("cpu") if device is None else device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        model = VideoScoreModel._from_config(config, dtype=dtype)  # transformers' from_config: built in `dtype`
        with (
            torch.no_grad()
        ):  # the default init (std 0.02) gives near-equal scores; spread them over VideoScore's 1..4 range
            model.score.weight.normal_(std=0.1)
            model.score.bias.uniform_(1.5, 3.5)
    return model.eval()


def tiny_videoscore(seed: int = 0) -> tuple[Any, Any]:
    """The tiny model (float32 on the CPU) and its tokenizer."""
    tokenizer = tiny_tokenizer()
    return seeded_videoscore(tiny_config(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)), seed), tokenizer


def save_tiny_videoscore(directory: Path, seed: int = 0) -> Path:
    """Write the tiny model like a hub checkpoint: config, safetensors, tokenizer and image-processor settings."""
    from transformers import Idefics2ImageProcessorPil

    model, tokenizer = tiny_videoscore(seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    settings = TINY_IMAGE_SETTINGS
    Idefics2ImageProcessorPil(
        size={"shortest_edge": settings.shortest_edge, "longest_edge": settings.longest_edge},
        image_mean=list(settings.mean),
        image_std=list(settings.std),
        do_image_splitting=False,
    ).save_pretrained(directory)
    return Path(directory)
