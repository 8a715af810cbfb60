"""Wan presets: random components from configs, no download.

``random`` is Wan 2.1 T2V 1.3B and ``random-14b`` the 14B, with the sizes of their published configs: the
transformer's from diffusers' ``scripts/convert_wan_to_diffusers.py`` (``Wan-T2V-1.3B``: 12 heads of 128, feed-forward
8960, 30 layers; ``Wan-T2V-14B``: 40 heads, 13824, 40 layers; patch (1, 2, 2), text_dim 4096, freq_dim 256,
cross-attention norm, RMS q/k norm, eps 1e-6), which match Wan's own ``wan/configs`` (``t2v_1_3B.dim = 1536``,
``num_layers = 30``); the VAE is ``AutoencoderKLWan()``'s defaults, which that script converts the released VAE into;
the text encoder UMT5-XXL (``vipkit.dit_presets.UMT5_XXL``); the scheduler the script's UniPC flow sampler with
``flow_shift = 3.0`` (T2V). The tokenizer is the byte-level one (``vipkit.dit_presets``): no vocabulary download.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

from vipkit.dit_presets import TINY_T5, UMT5_XXL, byte_level_t5_tokenizer, seeded_on, t5_encoder
from vipkit_wan.family import REAL_SETTINGS

WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
WAN_14B = {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
SCHEDULER = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0)

TINY_TRANSFORMER = {
    **WAN_1_3B,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "text_dim": 16,
    "freq_dim": 32,
    "ffn_dim": 32,
    "num_layers": 4,
}
TINY_TEXT_ENCODER = {**UMT5_XXL, **TINY_T5}
TINY_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_SETTINGS = {
    **REAL_SETTINGS,
    "height": 32,
    "width": 32,
    "num_frames": 5,
    "num_inference_steps": 4,
    "max_sequence_length": 64,
}

PRESETS = {
    "tiny": (TINY_TRANSFORMER, TINY_TEXT_ENCODER, TINY_VAE, TINY_SETTINGS),
    "random": (WAN_1_3B, UMT5_XXL, {}, REAL_SETTINGS),
    "random-14b": (WAN_14B, UMT5_XXL, {}, REAL_SETTINGS),
}


def preset_components(preset: str, seed: int, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The WanPipeline components of ``preset`` (seeded random weights, built on ``device``) and its settings."""
    transformer, text_encoder, vae, settings = PRESETS[preset]
    tokenizer = byte_level_t5_tokenizer(settings["max_sequence_length"])
    with seeded_on(device, seed):
        components = dict(
            transformer=WanTransformer3DModel(**transformer),
            vae=AutoencoderKLWan(**vae),
            text_encoder=t5_encoder(text_encoder, tokenizer, umt5=True),
        )
    return {**components, "tokenizer": tokenizer, "scheduler": UniPCMultistepScheduler(**SCHEDULER)}, dict(settings)
