"""Names the AnimateDiff family's blocks and options use, in a module without heavy imports (the family class
reads them when it registers)."""

from typing import Literal

MOTION_MODULE = "motion_module"
TEMPORAL_BLOCK = "temporal_transformer_block"
SPATIAL_BLOCK = "spatial_transformer_block"

AttentionKernel = Literal["auto", "cudnn", "flash", "efficient", "math"]
"""A scaled-dot-product-attention kernel order (``vipkit_animatediff.attention.KERNEL_ORDERS``), or PyTorch's choice."""
