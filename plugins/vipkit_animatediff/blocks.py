"""Prunable blocks of a UNetMotionModel: motion modules and the transformer blocks inside them and the spatial ones.

Every such block is residual (motion modules add their input back; transformer blocks are residual
inside), so a pass-through in its place is the exact removal (``vipkit.prunable``).
"""

from __future__ import annotations

from diffusers.models import Transformer2DModel
from diffusers.models.unets.unet_motion_model import (
    AnimateDiffTransformer3D,
    UNetMotionModel,
)
from torch import nn

from vipkit import Block
from vipkit.prunable import PassThrough, PrunableModule, parameter_count
from vipkit_animatediff.names import MOTION_MODULE, SPATIAL_BLOCK, TEMPORAL_BLOCK


def list_blocks(unet: nn.Module) -> list[Block]:
    """Every block still present, in module-registration order (stable across runs)."""
    found: list[Block] = []
    for name, module in unet.named_modules():
        if isinstance(module, AnimateDiffTransformer3D):
            found.append(Block(name, MOTION_MODULE, parameter_count(module)))
            kind = TEMPORAL_BLOCK
        elif isinstance(module, Transformer2DModel):
            kind = SPATIAL_BLOCK
        else:
            continue
        found += [
            Block(f"{name}.transformer_blocks.{index}", kind, parameter_count(block))
            for index, block in enumerate(module.transformer_blocks)
            if not isinstance(block, PassThrough)
        ]
    return found


def motion_modules(unet: nn.Module) -> list[nn.Module]:
    """The motion modules still present (the AnimateDiff motion adapter's part of the UNet)."""
    return [module for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]


def prunable_unet(unet: UNetMotionModel) -> PrunableModule:
    """``unet`` with its blocks removable and restorable."""
    return PrunableModule(unet, list_blocks)
