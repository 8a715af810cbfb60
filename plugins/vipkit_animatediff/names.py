"""Names the AnimateDiff family's blocks and options use, in a module without heavy imports (the family class
reads them when it registers)."""

from typing import Literal

MOTION_MODULE = "motion_module"
TEMPORAL_BLOCK = "temporal_transformer_block"
SPATIAL_BLOCK = "spatial_transformer_block"

AttentionKernel = Literal["auto", "cudnn", "flash", "efficient", "math"]
"""A scaled-dot-product-attention kernel order (``vipkit_animatediff.attention.KERNEL_ORDERS``), or PyTorch's choice."""

EXPORT_FORMATS = {
    "motion-adapter": "a diffusers MotionAdapter folder (the motion modules only) for any SD-1.5 checkpoint: "
    "MotionAdapter.from_pretrained + AnimateDiffPipeline, and motion-module users (ComfyUI-style); only when nothing "
    "but motion modules was trained or removed",
    "diffusers": "a whole diffusers AnimateDiffPipeline folder (UNetMotionModel, VAE, text encoder, tokenizer, "
    "scheduler): AnimateDiffPipeline.from_pretrained",
}
"""``vipkit export --format`` choices; removed blocks are written as zeros (exact), which vipkit skips again on load."""
