"""The shapes teachers' architecture: a tiny AnimateDiff sized for the world's 8-frame 32×32 videos.

The numbers here are those of the shipped folders (``models/shapes-teacher``, ``models/shapes-teacher-fast``):
changing one builds a model their weights no longer fit.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    DDIMScheduler,
    MotionAdapter,
    UNet2DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from vipkit_shapes.teacher_kind import TeacherParts
from vipkit_shapes.tokenizer import word_tokenizer

FRAMES, SIZE, LATENT_CHANNELS, TEXT_DIM, MAX_TOKENS = 8, 32, 8, 64, 24
LATENT_POSITIONS = (SIZE // 4) ** 2  # the VAE downsamples by 4
ATTENTION_EVERYWHERE = (("CrossAttnDownBlock2D",) * 2, ("CrossAttnUpBlock2D",) * 2)
UnetSpec = tuple[tuple[int, int], int, int, int, tuple[tuple[str, ...], tuple[str, ...]]]
UNET_SPECS: dict[
    str, UnetSpec
] = {  # name: (channels, spatial heads, motion heads, norm groups, (down, up) block types)
    "shipped": ((32, 64), 16, 4, 16, ATTENTION_EVERYWHERE),  # models/shapes-teacher
    "fast": ((16, 32), 1, 1, 8, ATTENTION_EVERYWHERE),  # models/shapes-teacher-fast: ~3x cheaper on a CPU
}
GENERATION_SETTINGS: dict[str, Any] = {
    "height": SIZE,
    "width": SIZE,
    "num_frames": FRAMES,
    "num_inference_steps": 20,
    "guidance_scale": 5.0,
    "negative_prompt": "",
    "dtype": "float32",
}
"""How the teachers sample (stored in the exported folder as the model's defaults, used by the evaluation)."""


def build_unet(
    channels: tuple[int, int],
    heads: int,
    motion_heads: int,
    groups: int,
    blocks: tuple[tuple[str, ...], tuple[str, ...]],
) -> UNetMotionModel:
    """A UNetMotionModel for the world's 8×8 latents (random weights from the current torch seed)."""
    unet2d = UNet2DConditionModel(
        sample_size=SIZE // 4,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=channels,
        layers_per_block=1,
        norm_num_groups=groups,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=heads,
        down_block_types=blocks[0],
        up_block_types=blocks[1],
    )
    adapter = MotionAdapter(
        block_out_channels=channels,
        motion_layers_per_block=1,
        motion_norm_num_groups=groups,
        motion_num_attention_heads=motion_heads,
        motion_max_seq_length=32,
    )
    return UNetMotionModel.from_unet2d(unet2d, adapter)


def build_parts(seed: int = 0, unet: str = "shipped", vae_config: dict[str, Any] | None = None) -> TeacherParts:
    """The teacher's architecture, randomly initialised from ``seed`` (the parts are drawn in a fixed order);
    ``vae_config`` replaces entries of the VAE's config."""
    torch.manual_seed(seed)
    tokenizer = word_tokenizer(MAX_TOKENS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=4 * TEXT_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            projection_dim=TEXT_DIM,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL.from_config(
        {
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": LATENT_CHANNELS,
            "block_out_channels": (32, 64, 64),
            "layers_per_block": 2,
            "norm_num_groups": 8,
            "down_block_types": ("DownEncoderBlock2D",) * 3,
            "up_block_types": ("UpDecoderBlock2D",) * 3,
            "sample_size": SIZE,
            **(vae_config or {}),
        }
    )
    denoiser = build_unet(*UNET_SPECS[unet])
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        set_alpha_to_one=True,
    )
    return TeacherParts(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, denoiser=denoiser, scheduler=scheduler)


def teacher_pipeline(parts: TeacherParts, unet: UNetMotionModel) -> AnimateDiffPipeline:
    """The inference pipeline around ``unet`` (the EMA copy) and the other trained parts."""
    pipe = AnimateDiffPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=unet,
        motion_adapter=None,
        scheduler=parts.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
