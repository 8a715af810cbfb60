"""The pieces a VideoCrafter2 model is assembled from, whichever source (preset, checkpoint, saved folder) built them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vipkit.prunable import PrunableModule


@dataclass
class ModelParts:
    """Denoiser (with its official UNet config), frozen VAE and text encoder, tokenizer, source's default settings."""

    unet: PrunableModule  # the 3-D UNet (vipkit_videocrafter2.blocks.prunable_unet)
    unet_config: dict[str, Any]  # the official `unet_config.params` table the UNet was built from
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel (OpenCLIP ViT-H-14 text tower up to its penultimate block)
    tokenizer: Any  # transformers CLIPTokenizer padding with token 0
    default_settings: dict[str, Any] = field(default_factory=dict)  # used where the config leaves a setting unset
