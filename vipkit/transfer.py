"""Host-to-device copies that do not stall the GPU.

Copying from ordinary (pageable) host memory makes the CPU wait until the GPU has finished all the
work queued before the copy, so a training step that copies its batch, or a noise draw, halfway
through throws away the queue of kernels the CPU had built up ahead of the GPU. A copy through pinned
memory is queued like a kernel instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """``tensor`` on ``device``; a CPU tensor bound for a CUDA device travels through pinned memory without a host sync."""
    import torch

    device = torch.device(device)
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
