"""A trained teacher written as a vipkit ``animatediff`` model folder (``[model] base = "<folder>"`` loads it).

The one place the shapes plugin depends on the animatediff family's internals (``ModelParts``,
``prunable_unet``, ``save_parts``), as a third-party plugin may depend on another package. The public
route, an ``AnimateDiff`` model and its ``save``, cannot take these parts: the family builds its parts
only from a preset, a saved folder, or an SD-1.5 pipeline plus a MotionAdapter, and that last route
replaces the sampler (linear betas, linspace steps) and the defaults (512 pixels, 16 frames) with
AnimateDiff's, where the teachers sample with their own (cosine betas, trailing steps; ``GENERATION_SETTINGS``). ``save_parts`` is the writer
``AnimateDiff.save`` calls, so the folder is the one the family writes and loads.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import UNetMotionModel

from vipkit_animatediff.blocks import prunable_unet
from vipkit_animatediff.parts import ModelParts
from vipkit_animatediff.persistence import save_parts
from vipkit_shapes.teacher_kind import TeacherParts
from vipkit_shapes.teacher_model import GENERATION_SETTINGS, teacher_pipeline


def export_teacher(path: Path, parts: TeacherParts, ema: UNetMotionModel) -> None:
    """Write the teacher with ``ema`` as its UNet, in float32 on the CPU (safetensors only)."""
    family_parts = ModelParts(
        unet=prunable_unet(ema.float().cpu()),
        vae=parts.vae.float().cpu(),
        text_encoder=parts.text_encoder.float().cpu(),
        tokenizer=parts.tokenizer,
        scheduler=parts.scheduler,
    )
    save_parts(path, family_parts, teacher_pipeline(parts, ema), GENERATION_SETTINGS)
