"""The pieces a model is assembled from, whichever source (preset, hub, saved directory) built them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vipkit.prunable import PrunableModule


@dataclass
class ModelParts:
    """Denoiser, frozen parts and inference scheduler, plus the source's default generation settings."""

    unet: PrunableModule  # the UNetMotionModel (vipkit_animatediff.blocks.prunable_unet)
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler: Any  # diffusers DDIMScheduler (inference)
    default_settings: dict[str, Any] = field(default_factory=dict)  # used where the config leaves a setting unset
