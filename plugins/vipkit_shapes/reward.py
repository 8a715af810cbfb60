"""The ``shapes`` reward: VideoScore's four dimensions, measured analytically on shapes-world videos.

Each dimension is in [0, 1], higher is better (docs/shapes.md has the measured values):

- ``text_alignment``: the fraction of the prompt's facts the video shows, each fact scored in [0, 1]:
  the background colour (border median within ``background_tolerance``), and per object its colour
  (present: pixels of the prompted colour fill ``presence_fraction`` of the prompted shape placed on
  their centroid), its size (area against the prompted size), its shape (probability, by soft IoU
  with the four shapes drawn at the prompted size, that it is the prompted one) and its direction
  (cosine of the measured motion with the prompted one). An object's facts count only in the frames
  where it is present. A prompt outside the shapes grammar scores 0: nothing in it can be checked.
- ``temporal_consistency``: ``exp(-(pixel_change/s1 + area_change/s2 + colour_change/s3))``: the frame
  does not flicker or crawl as a whole, and the foreground keeps its area and colour over frames.
  Needs no prompt.
- ``dynamic_degree``: per object, the measured travel over the clip against the prompted speed,
  ``exp(-k·|log(travel / target)|)`` (1 at the prompted speed, 0 for a frozen or absent object),
  averaged over objects; 0 for a prompt outside the grammar (no target speed).
- ``visual_quality``: ``exp(-noise/noise_scale) · min(1, sharpness/sharpness_reference)``: flat areas
  are flat (robust noise estimate) and edges are as crisp as the generator's anti-aliased ones
  (re-blur ratio). Needs no prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

import vipkit

if TYPE_CHECKING:
    from torch import Tensor


class ShapesReward(vipkit.RewardModel):
    """Analytic reward for the shapes world; no model, pure torch (in ``scoring``, imported when it scores)."""

    name = "shapes"
    dimensions = ("text_alignment", "temporal_consistency", "dynamic_degree", "visual_quality")
    value_ranges = dict.fromkeys(dimensions, (0.0, 1.0))

    class Config(vipkit.Config):
        colour_tolerance: float = Field(
            0.2, gt=0, description="Max RGB distance of an object pixel from the background→colour line."
        )
        min_coverage: float = Field(
            0.2, ge=0, lt=1, description="Pixels covered less than this are not counted (keeps noise out)."
        )
        presence_fraction: float = Field(
            0.5, gt=0, le=1, description="Fraction of the prompted shape the colour must fill to be present."
        )
        background_tolerance: float = Field(
            0.3, gt=0, description="RGB distance at which the background fact scores 0 (linear from 1 at 0)."
        )
        size_tolerance: float = Field(0.25, gt=0, description="Std of the Gaussian on log(measured / prompted area).")
        shape_temperature: float = Field(0.03, gt=0, description="Softmax temperature over the shapes' IoUs.")
        speed_sharpness: float = Field(2.0, gt=0, description="k in exp(-k·|log(travel/target)|).")
        min_foreground_contrast: float = Field(
            0.1, gt=0, description="Floor of the foreground-vs-background distance (a blank video has no foreground)."
        )
        pixel_change_scale: float = Field(
            0.05, gt=0, description="s1: median frame-to-frame pixel change that costs a factor e."
        )
        area_change_scale: float = Field(
            0.25, gt=0, description="s2: coefficient of variation of foreground area that costs a factor e."
        )
        colour_change_scale: float = Field(
            0.15, gt=0, description="s3: foreground mean-colour change per frame that costs a factor e."
        )
        noise_scale: float = Field(
            0.02, gt=0, description="Noise standard deviation that costs a factor e of visual quality."
        )
        sharpness_reference: float = Field(0.3, gt=0, le=1, description="Re-blur ratio that scores full sharpness.")
        chunk_size: int = Field(16, gt=0, description="Videos measured at once (bounds memory).")

    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        import torch

        from vipkit_shapes.scoring import score_chunk

        if videos.shape[0] != len(prompts):
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
        chunks = [
            score_chunk(
                self.config,
                videos[start : start + self.config.chunk_size].float(),
                prompts[start : start + self.config.chunk_size],
            )
            for start in range(0, len(prompts), self.config.chunk_size)
        ]
        return {dim: torch.cat([chunk[dim] for chunk in chunks]) for dim in self.dimensions}
