"""Videos as people and files hold them: 8-bit frames, and GIFs to look at what a model makes.

A run keeps every video it generates on the 8-bit grid a saved video has (``eight_bit``): the pair and
teacher stores then hold 1 byte per value instead of 4, and a video read back from them is bit for bit
the one that was scored and trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def to_uint8(videos: Tensor) -> Tensor:
    """Videos in [0, 1] as uint8 values 0..255 (rounded to nearest)."""
    import torch

    return (videos.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def from_uint8(videos: Tensor) -> Tensor:
    """uint8 videos back to float32 in [0, 1]; ``from_uint8(to_uint8(x))`` is ``eight_bit(x)``."""
    import torch

    return videos.to(torch.float32) / 255


def eight_bit(videos: Tensor) -> Tensor:
    """Float videos rounded to the 8-bit grid: what storing them as uint8 and reading them back gives."""
    return from_uint8(to_uint8(videos))


def save_gif(video: Tensor, path: Path, fps: int = 8, min_size: int = 128) -> None:
    """Write one video ``(F, C, H, W)`` in [0, 1] as a looping GIF, upscaled (nearest) to ``min_size`` px."""
    from PIL import Image

    frames = to_uint8(video).permute(0, 2, 3, 1).cpu().numpy()
    height, width = frames.shape[1:3]
    scale = max(1, -(-min_size // min(height, width)))
    images = [Image.fromarray(frame).resize((width * scale, height * scale), Image.NEAREST) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def save_gif_grid(videos: Tensor, path: Path, fps: int = 8, min_size: int = 128) -> None:
    """Several videos ``(B, F, C, H, W)`` side by side in one GIF."""
    import torch

    save_gif(torch.cat(list(videos), dim=-1), path, fps, min_size)
