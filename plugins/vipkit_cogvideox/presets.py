"""CogVideoX presets: random components from configs, no download.

``random`` is CogVideoX-2b and ``random-5b`` CogVideoX-5b, with the sizes diffusers' ``scripts/
convert_cogvideox_to_diffusers.py`` converts the released checkpoints into: the transformer's defaults
(``CogVideoXTransformer3DModel``: heads of 64, time embedding 512, text 4096, 226 text tokens, patch 2, 480 x 720 x 49
frames as 60 x 90 x 13 latents) with 30 layers of 30 heads and sin-cos positions for 2B, 42 layers of 48 heads and
rotary positions for 5B (the script's comments: "For CogVideoX-2B, num_layers is 30. For 5B, it is 42", "30 ... 48",
"use_rotary_positional_embeddings is False ... For 5B, it is True"); the VAE ``AutoencoderKLCogVideoX``'s defaults with
scaling factor 1.15258426 (2B) or 0.7 (5B); the text encoder T5 v1.1 XXL (``vipkit.dit_presets.T5_V1_1_XXL``); the
script's ``CogVideoXDDIMScheduler`` (v-prediction, zero-SNR, trailing), SNR shift 3.0 (2B) or 1.0 (5B). The tokenizer
is the byte-level one (``vipkit.dit_presets``).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

from vipkit.dit_presets import T5_V1_1_XXL, TINY_T5, byte_level_t5_tokenizer, seeded_on, t5_encoder
from vipkit_cogvideox.family import REAL_SETTINGS

COGVIDEOX_2B = dict(
    num_attention_heads=30,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=30,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    use_rotary_positional_embeddings=False,
)
COGVIDEOX_5B = {**COGVIDEOX_2B, "num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True}
SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    timestep_spacing="trailing",
)

TINY_TRANSFORMER = {
    **COGVIDEOX_5B,  # rotary positions: the path where training makes them as the pipeline does
    "num_attention_heads": 2,
    "attention_head_dim": 16,  # the smallest whose 3-D rotary split (1/4, 3/8, 3/8) is even
    "in_channels": 4,
    "out_channels": 4,
    "time_embed_dim": 8,
    "text_embed_dim": 16,
    "num_layers": 4,
    "sample_width": 4,
    "sample_height": 4,
    "sample_frames": 9,
    "max_text_seq_length": 64,
}
TINY_VAE = dict(
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    block_out_channels=(8, 8, 8, 8),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=2,
    temporal_compression_ratio=4,
)
TINY_TEXT_ENCODER = {**T5_V1_1_XXL, **TINY_T5}
TINY_SETTINGS = {
    **REAL_SETTINGS,
    "height": 32,
    "width": 32,
    "num_frames": 9,  # 3 latent frames: an odd count decodes to 1 + 4 k frames, as the real 13 do to 49
    "num_inference_steps": 4,
    "max_sequence_length": 64,
}

PRESETS = {
    "tiny": (TINY_TRANSFORMER, TINY_TEXT_ENCODER, TINY_VAE, 3.0, TINY_SETTINGS),
    "random": (COGVIDEOX_2B, T5_V1_1_XXL, {"scaling_factor": 1.15258426}, 3.0, REAL_SETTINGS),
    "random-5b": (COGVIDEOX_5B, T5_V1_1_XXL, {"scaling_factor": 0.7}, 1.0, REAL_SETTINGS),
}


def preset_components(preset: str, seed: int, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CogVideoXPipeline components of ``preset`` (seeded random weights, built on ``device``) and its settings."""
    transformer, text_encoder, vae, snr_shift_scale, settings = PRESETS[preset]
    tokenizer = byte_level_t5_tokenizer(settings["max_sequence_length"])
    with seeded_on(device, seed):
        components = dict(
            transformer=CogVideoXTransformer3DModel(**transformer),
            vae=AutoencoderKLCogVideoX(**vae),
            text_encoder=t5_encoder(text_encoder, tokenizer),
        )
    scheduler = CogVideoXDDIMScheduler(**SCHEDULER, snr_shift_scale=snr_shift_scale)
    return {**components, "tokenizer": tokenizer, "scheduler": scheduler}, dict(settings)
