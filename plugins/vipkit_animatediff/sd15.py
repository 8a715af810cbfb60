"""The real AnimateDiff (SD-1.5 + motion adapter v1-5-2): its sizes, its generation defaults, and the ``random`` preset.

The ``random`` preset builds this architecture from its configs with random weights, offline: time,
memory and disk of a recipe can be measured before anything is downloaded, but its videos mean
nothing. Sizes are the published configs': ``stable-diffusion-v1-5`` (UNet, VAE, CLIP ViT-L/14 text
encoder with its full 49,408-token embedding) and ``guoyww/animatediff-motion-adapter-v1-5-2``; the
tokenizer is the byte-level one (ids below 514), so no vocabulary file is needed.
"""

from __future__ import annotations

import torch

from vipkit_animatediff.parts import ModelParts
from vipkit_animatediff.tiny import SDSizes, preset_parts, sd_components

REAL_SETTINGS = {"height": 512, "width": 512, "num_frames": 16, "num_inference_steps": 25}
"""Generation defaults of the real SD-1.5 AnimateDiff model."""

CHANNELS = (320, 640, 1280, 1280)

SD15_SIZES = SDSizes(
    unet=dict(
        sample_size=64,
        block_out_channels=CHANNELS,
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    ),
    motion_adapter=dict(
        block_out_channels=CHANNELS,
        motion_layers_per_block=2,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=8,
        motion_norm_num_groups=32,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    ),
    vae=dict(
        sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        scaling_factor=0.18215,
    ),
    text_encoder=dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        projection_dim=768,
    ),
)


def random_parts(seed: int, device: torch.device) -> ModelParts:
    """The ``random`` preset, built on ``device`` (1.31 B UNet parameters: about 5 GB in float32)."""
    return preset_parts(sd_components(SD15_SIZES, seed, device), REAL_SETTINGS)
