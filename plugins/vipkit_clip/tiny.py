"""Random CLIPs built from sizes, no download: the ``tiny`` preset (also written to disk, so the reward's real
loading path runs offline in tests and dry runs) and the ``random`` preset (OpenAI's ViT-L/14 sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkit.tokenizers import BYTE_LEVEL_VOCAB_SIZE

if TYPE_CHECKING:
    import torch

TINY_SIZES: dict[str, Any] = dict(
    text_config=dict(
        vocab_size=BYTE_LEVEL_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
    ),
    vision_config=dict(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4
    ),
    projection_dim=16,
)
"""``CLIPConfig`` options of the tiny preset: 32 px, projection 16."""

VIT_L_14_SIZES: dict[str, Any] = dict(
    text_config=dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
    ),
    vision_config=dict(
        image_size=224,
        patch_size=14,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
    ),
    projection_dim=768,
)
"""``CLIPConfig`` options of ``openai/clip-vit-large-patch14`` (427.6 M parameters), the ``random`` preset."""


def random_clip(sizes: dict[str, Any], seed: int = 0, device: torch.device | None = None) -> tuple[Any, Any]:
    """A CLIP of ``sizes`` with seeded random weights built on ``device`` (default the CPU), and the byte-level
    tokenizer (ids below 514, the text config's special ids set to its); same seed and device, same weights."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from vipkit.tokenizers import byte_level_clip_tokenizer

    device = torch.device("cpu") if device is None else device
    tokenizer = byte_level_clip_tokenizer()
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    config = CLIPConfig(
        text_config={**sizes["text_config"], **ids},
        vision_config=sizes["vision_config"],
        projection_dim=sizes["projection_dim"],
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, tokenizer


def tiny_clip(seed: int = 0) -> tuple[Any, Any]:
    """The tiny preset's CLIP and tokenizer, on the CPU."""
    return random_clip(TINY_SIZES, seed)


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """Write ``tiny_clip(seed)`` to ``directory``; load it with the reward option ``model = "<directory>"``."""
    model, tokenizer = tiny_clip(seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
