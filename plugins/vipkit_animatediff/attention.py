"""Which scaled-dot-product-attention kernel each kind of AnimateDiff attention layer runs, and fused projections.

PyTorch picks one kernel order for every call. AnimateDiff's two kinds of attention want different ones:
the spatial layers attend over thousands of pixels per image (cuDNN's Hopper kernels are fastest there,
benchmarks/RESULTS.md §5), the motion modules over 16 frames for each of B·H·W pixels. That last batch
outgrows what one CUDA attention call takes (8 videos at 512², with guidance: 65,536 sequences), so the
motion modules' layers split it, whatever the kernel.

While generating, the query, key and value projections of each layer can run as one matrix product
(``fused_projections``): the fused weights are built from the current ones for that call and dropped after, so
parameters, training and saving never see them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from vipkit_animatediff.names import AttentionKernel

KERNEL_ORDERS: dict[str, list[SDPBackend]] = {  # the named kernel first, the others as fallbacks for inputs it refuses
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
    "math": [SDPBackend.MATH],
}
MAX_ATTENTION_BATCH = 65_535
"""Most sequences one attention call gets: CUDA's attention kernels put the batch on a launch-grid dimension
capped at 65,535 and fail past it (H200, torch 2.11, 65,536 sequences: flash `CUDA error: invalid argument`,
cuDNN's backward `mha_graph.execute(...).is_good()`)."""
FLASH_BACKWARD_ELEMENTS = 2**31
"""Flash attention's backward indexes a buffer of batch x heads x (sequence rounded up to 128) x (head size rounded
up to 64) elements with 32-bit offsets and reads out of bounds past 2^31 (`illegal memory access`; H200, torch 2.11,
16 frames, 8 heads: 32,768 sequences of head size 40 pass, 32,769 fail; 10,922 of head size 160 pass, 13,107 fail)."""


class OrderedKernelAttention:
    """A diffusers SDPA processor run under its own kernel order (nested inside any order the caller set)."""

    def __init__(self, kernel: str, processor: AttnProcessor2_0 | FusedAttnProcessor2_0) -> None:
        self.kernel = kernel
        self.processor = processor

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        with sdpa_kernel(KERNEL_ORDERS[self.kernel], set_priority=True):
            return self.processor(*args, **kwargs)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def max_attention_batch(attn: Attention, sequence_length: int) -> int:
    """Sequences one call of ``attn`` may take: the grid limit, and while gradients are on flash's backward limit
    too (whichever kernel is asked for: "auto" may pick flash)."""
    if not torch.is_grad_enabled():
        return MAX_ATTENTION_BATCH
    head_size = attn.inner_dim // attn.heads
    per_sequence = attn.heads * _round_up(sequence_length, 128) * _round_up(head_size, 64)
    return min(MAX_ATTENTION_BATCH, FLASH_BACKWARD_ELEMENTS // per_sequence)


class BatchChunkedAttention:
    """Runs ``processor`` on at most ``max_attention_batch`` sequences at a time and concatenates the results.

    Attention (and the projections around it) work on each sequence alone, so the split is exact; a batch
    within the limit goes through untouched.
    """

    def __init__(self, processor: AttnProcessor2_0 | FusedAttnProcessor2_0 | OrderedKernelAttention) -> None:
        self.processor = processor

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
    ) -> Tensor:
        limit = max_attention_batch(attn, hidden_states.shape[1])  # hidden_states: (sequences, frames, channels)
        if hidden_states.shape[0] <= limit:
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch_first = (hidden_states, encoder_hidden_states, attention_mask, temb)
        return torch.cat(
            [
                self.processor(attn, *(None if part is None else part[start : start + limit] for part in batch_first))
                for start in range(0, hidden_states.shape[0], limit)
            ]
        )


def choose_attention_kernels(unet: torch.nn.Module, spatial: AttentionKernel, temporal: AttentionKernel) -> None:
    """Give the spatial and the motion-module attention layers their kernel order; "auto" keeps PyTorch's choice.
    A layer whose projections are fused (``fused_projections``) gets the processor that uses them.

    The motion modules' layers are also batch-chunked, whatever the kernel.
    """
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            temporal_layer = "motion_modules" in name
            kernel = temporal if temporal_layer else spatial
            processor = FusedAttnProcessor2_0() if module.fused_projections else AttnProcessor2_0()
            if kernel != "auto":
                processor = OrderedKernelAttention(kernel, processor)
            module.set_processor(BatchChunkedAttention(processor) if temporal_layer else processor)


FUSED_LAYERS = ("to_qkv", "to_kv")
"""What diffusers' ``Attention.fuse_projections`` adds: q, k, v in one Linear (self-attention), k, v (cross)."""


@contextmanager
def fused_projections(unet: torch.nn.Module, spatial: AttentionKernel, temporal: AttentionKernel) -> Iterator[None]:
    """Inside, every attention layer runs one matrix product for its query, key and value projections (key and
    value for cross-attention), with weights concatenated from the current ones; outside, the fused layers are
    gone and every layer has its unfused processor again. A layer whose projections are not plain ``Linear``
    layers (a LoRA adapter on them) stays unfused: fusing its base weights would drop the adapter."""
    layers = [
        module
        for module in unet.modules()
        if isinstance(module, Attention)
        and all(type(getattr(module, name)) is torch.nn.Linear for name in ("to_q", "to_k", "to_v"))
    ]
    for layer in layers:
        layer.fuse_projections()
    choose_attention_kernels(unet, spatial, temporal)
    try:
        yield
    finally:
        for layer in layers:
            for name in FUSED_LAYERS:
                if hasattr(layer, name):
                    delattr(layer, name)
            layer.fused_projections = False
        choose_attention_kernels(unet, spatial, temporal)
