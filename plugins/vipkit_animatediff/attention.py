"""Which scaled-dot-product-attention kernel each kind of AnimateDiff attention layer runs.

PyTorch picks one kernel order for every call. AnimateDiff's two kinds of attention want different ones:
the spatial layers attend over thousands of pixels per image (cuDNN's Hopper kernels are fastest there,
benchmarks/RESULTS.md §5), the motion modules over 16 frames for each of B·H·W pixels.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel

AttentionKernel = Literal["auto", "cudnn", "flash", "efficient", "math"]
KERNEL_ORDERS: dict[str, list[SDPBackend]] = {  # the named kernel first, the others as fallbacks for inputs it refuses
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
    "math": [SDPBackend.MATH],
}


class OrderedKernelAttention(AttnProcessor2_0):
    """diffusers' SDPA processor run under its own kernel order (nested inside any order the caller set)."""

    def __init__(self, kernel: str) -> None:
        super().__init__()
        self.kernel = kernel

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        with sdpa_kernel(KERNEL_ORDERS[self.kernel], set_priority=True):
            return super().__call__(*args, **kwargs)


def choose_attention_kernels(unet: torch.nn.Module, spatial: AttentionKernel, temporal: AttentionKernel) -> None:
    """Give the spatial and the motion-module attention layers their kernel order; "auto" keeps PyTorch's choice."""
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            kernel = temporal if "motion_modules" in name else spatial
            module.set_processor(AttnProcessor2_0() if kernel == "auto" else OrderedKernelAttention(kernel))
