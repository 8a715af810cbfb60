"""The ``tiny`` preset, and the builder every preset shares: random AnimateDiff components from sizes, no download.

Small enough that a whole V.I.P. run finishes in minutes on two CPU cores, and the same seed gives
bit-identical weights. The SD-1.5-shaped pieces (2D UNet + motion adapter) are exposed separately so
tests can write them in the hub layout and exercise the real loading path offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    MotionAdapter,
    UNet2DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from vipkit.tokenizers import BYTE_LEVEL_VOCAB_SIZE, byte_level_clip_tokenizer
from vipkit_animatediff.blocks import prunable_unet
from vipkit_animatediff.parts import ModelParts

TINY_SETTINGS = {"height": 32, "width": 32, "num_frames": 8, "num_inference_steps": 10}
"""Generation defaults of the tiny preset (its VAE halves the size: 32 px -> 16 latent)."""


@dataclass(frozen=True)
class SDSizes:
    """Constructor options of each SD-1.5-layout piece; the text encoder's special token ids are the tokenizer's."""

    unet: dict[str, Any]  # UNet2DConditionModel
    motion_adapter: dict[str, Any]  # MotionAdapter
    vae: dict[str, Any]  # AutoencoderKL
    text_encoder: dict[str, Any]  # CLIPTextConfig


TINY_SIZES = SDSizes(
    unet=dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ),
    motion_adapter=dict(
        block_out_channels=(32, 64), motion_layers_per_block=1, motion_norm_num_groups=2, motion_num_attention_heads=4
    ),
    vae=dict(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ),
    text_encoder=dict(
        vocab_size=BYTE_LEVEL_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
    ),
)


def inference_scheduler(config: Any = None) -> DDIMScheduler:
    """The DDIM sampler AnimateDiff's documentation uses, from an SD-1.5 scheduler config (or SD-1.5's betas)."""
    options = dict(beta_schedule="linear", clip_sample=False, timestep_spacing="linspace", steps_offset=1)
    if config is None:
        return DDIMScheduler(beta_start=0.00085, beta_end=0.012, **options)
    return DDIMScheduler.from_config(config, **options)


def sd_components(sizes: SDSizes, seed: int = 0, device: torch.device | None = None) -> dict[str, Any]:
    """SD-1.5-layout pieces of ``sizes`` with seeded random weights: 2D UNet, motion adapter, VAE, text encoder,
    byte-level tokenizer, scheduler.

    Built directly on ``device`` (default the CPU): a full-size model never passes through CPU memory on
    its way to a GPU, and on ``meta`` nothing is allocated. Same seed and device, same weights.
    """
    device = torch.device("cpu") if device is None else device
    tokenizer = byte_level_clip_tokenizer()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**sizes.unet)
        adapter = MotionAdapter(**sizes.motion_adapter)
        vae = AutoencoderKL(**sizes.vae)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **sizes.text_encoder,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    return dict(
        unet=unet,
        motion_adapter=adapter,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=inference_scheduler(),
    )


def tiny_sd_components(seed: int = 0) -> dict[str, Any]:
    """The tiny preset's SD-1.5-layout pieces, on the CPU."""
    return sd_components(TINY_SIZES, seed)


def write_hub_folders(directory: Path, sizes: SDSizes | None = None, seed: int = 0) -> dict[str, str]:
    """Pieces of ``sizes`` (default the tiny preset's) as an SD-1.5 pipeline folder and a MotionAdapter folder (the
    hub layout), for exercising the real loading path offline; returns the ``base`` and ``motion_adapter``
    options naming them."""
    from diffusers import StableDiffusionPipeline

    parts = sd_components(sizes or TINY_SIZES, seed)
    StableDiffusionPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=parts["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(directory / "sd15")
    parts["motion_adapter"].save_pretrained(directory / "adapter")
    return {"base": str(directory / "sd15"), "motion_adapter": str(directory / "adapter")}


def preset_parts(components: dict[str, Any], settings: dict[str, Any]) -> ModelParts:
    """A preset assembled: the 2D UNet and the motion adapter merged into a UNetMotionModel.

    The 2D UNet's and the adapter's parameter names are the motion UNet's, so their tensors are taken
    over as they are (no second copy, no second random initialisation).
    """
    with torch.device("meta"):
        unet = UNetMotionModel.from_unet2d(components["unet"], components["motion_adapter"], load_weights=False)
    state = components["unet"].state_dict() | components["motion_adapter"].state_dict()
    unet.load_state_dict(state, strict=True, assign=True)
    return ModelParts(
        unet=prunable_unet(unet),
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        scheduler=components["scheduler"],
        default_settings=dict(settings),
    )


def tiny_parts(seed: int) -> ModelParts:
    """The tiny preset, assembled."""
    return preset_parts(tiny_sd_components(seed), TINY_SETTINGS)
