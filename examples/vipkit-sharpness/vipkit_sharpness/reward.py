"""The ``sharpness`` reward: how crisp and how contrasted the frames are, measured from pixels alone.

Both dimensions are in [0, 1], higher is better, and ignore the prompt:

- ``sharpness``: the variance of the Laplacian of each grayscale frame (the classic focus measure:
  blur removes the high frequencies the Laplacian responds to), mapped to [0, 1] by
  ``v / (v + reference_variance)`` and averaged over frames. A flat frame scores 0; a frame whose
  Laplacian variance equals ``reference_variance`` scores 0.5.
- ``contrast``: the RMS contrast (standard deviation of the grayscale pixels) of each frame, times 2
  so that the largest possible value (half the pixels black, half white) is 1; averaged over frames.

Grayscale uses the ITU-R BT.601 luma weights. Only the interior of a frame enters the Laplacian (no
padding), so a frame's border never adds fake edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

import vipkit

if TYPE_CHECKING:
    from torch import Tensor

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


class Sharpness(vipkit.RewardModel):
    """Variance-of-Laplacian sharpness and RMS contrast per video; no model, pure torch."""

    name = "sharpness"
    dimensions = ("sharpness", "contrast")

    class Config(vipkit.Config):
        reference_variance: float = Field(
            0.05,
            gt=0,
            description="Laplacian variance that scores 0.5 sharpness (v / (v + reference)); lower = stricter.",
        )
        frames_per_chunk: int = Field(256, gt=0, description="Frames measured at once (bounds memory, not the result).")

    config: Config

    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        import torch

        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"expected videos (batch, frames, 3, height, width), got {tuple(videos.shape)}")
        if videos.shape[0] != len(prompts):
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
        batch, frames = videos.shape[:2]
        gray = torch.einsum("bfchw,c->bfhw", videos.float(), torch.tensor(LUMA_WEIGHTS)).flatten(0, 1)
        variance = torch.cat([laplacian_variance(chunk) for chunk in gray.split(self.config.frames_per_chunk)])
        sharpness = variance / (variance + self.config.reference_variance)
        contrast = (2 * gray.flatten(1).std(dim=1, correction=0)).clamp(max=1)
        return {
            "sharpness": sharpness.view(batch, frames).mean(dim=1),
            "contrast": contrast.view(batch, frames).mean(dim=1),
        }


def laplacian_variance(gray: Tensor) -> Tensor:
    """Variance of the 3×3 Laplacian over the interior of each frame: ``(N, H, W)`` → ``(N,)``."""
    import torch
    import torch.nn.functional as F

    kernel = torch.tensor(LAPLACIAN).view(1, 1, 3, 3)
    response = F.conv2d(gray.unsqueeze(1), kernel)  # no padding: interior only
    return response.flatten(1).var(dim=1, correction=0)
