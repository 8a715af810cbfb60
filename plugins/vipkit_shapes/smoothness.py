"""The ``shapes-smoothness`` reward: whether each object moves steadily, which the ``shapes`` reward does not measure.

Objects of the shapes world move in a straight line at constant speed. ``shapes`` checks the direction of the
least-squares fit of an object's track and its travel over the clip, and whether the frame flickers or the object's
area and colour change; it does not see an object that keeps its size and colour but jumps about its line: stutter
(stop and go), jitter, a jump back and forth. That is what ``motion_smoothness`` measures, in [0, 1], higher is better:

- per object of the prompt, its track: the centroid of the pixels of its prompted colour in each frame (as ``shapes``
  finds them), each frame weighted by how much of the object is there (its mass against the prompted shape's area,
  at most 1);
- its jitter: the weighted RMS distance of the track from the track's own least-squares constant-velocity line, over
  the frame's shorter side; the score is ``presence · exp(-jitter / jitter_scale)``, presence being the mean weight
  (an object missing from half the frames has no steady track there), averaged over the prompt's objects; 0 for a
  prompt outside the shapes grammar (no object to follow).

A frozen object is perfectly steady: like VBench's motion smoothness, this dimension is meant to be read (or guided
by) beside one that asks for motion, such as ``shapes``' ``dynamic_degree``. Measured values: docs/shapes.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

import vipkit

if TYPE_CHECKING:
    from torch import Tensor


class ShapesSmoothness(vipkit.RewardModel):
    """Analytic, no model; the arithmetic is in ``smoothness_scoring`` (imported when it scores: no torch to register)."""

    name = "shapes-smoothness"
    dimensions = ("motion_smoothness",)
    value_ranges = {"motion_smoothness": (0.0, 1.0)}

    class Config(vipkit.Config):
        jitter_scale: float = Field(
            0.03,
            gt=0,
            description="RMS distance of the track from its line, as a fraction of the frame's shorter side, that costs "
            "a factor e (0.03: about one pixel of a 32-pixel frame).",
        )
        colour_tolerance: float = Field(
            0.2, gt=0, description="Max RGB distance of an object pixel from the background→colour line (as shapes)."
        )
        min_coverage: float = Field(
            0.2, ge=0, lt=1, description="Pixels covered less than this are not the object (keeps noise out)."
        )

    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        from vipkit_shapes.smoothness_scoring import motion_smoothness

        if videos.shape[0] != len(prompts):
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
        return {"motion_smoothness": motion_smoothness(self.config, videos.float(), prompts)}
