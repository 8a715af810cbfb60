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

import torch
from pydantic import Field
from torch import Tensor

import vipkit
from vipkit_shapes.measures import (
    EPS,
    border_colour,
    centroids,
    colour_mask,
    edge_sharpness,
    noise_level,
    temporal_instability,
    template_overlaps,
    weighted_velocity,
)
from vipkit_shapes.world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPE_AREA, SHAPES, SIZES, SPEEDS, Scene, SceneObject, parse_prompt


class ShapesReward(vipkit.RewardModel):
    """Analytic reward for the shapes world; no model, pure torch."""

    name = "shapes"
    dimensions = ("text_alignment", "temporal_consistency", "dynamic_degree", "visual_quality")
    value_ranges = dict.fromkeys(dimensions, (0.0, 1.0))

    class Config(vipkit.Config):
        colour_tolerance: float = Field(0.2, gt=0, description="Max RGB distance of an object pixel from the background→colour line.")
        min_coverage: float = Field(0.2, ge=0, lt=1, description="Pixels covered less than this are not counted (keeps noise out).")
        presence_fraction: float = Field(0.5, gt=0, le=1, description="Fraction of the prompted shape the colour must fill to be present.")
        background_tolerance: float = Field(0.3, gt=0, description="RGB distance at which the background fact scores 0 (linear from 1 at 0).")
        size_tolerance: float = Field(0.25, gt=0, description="Std of the Gaussian on log(measured / prompted area).")
        shape_temperature: float = Field(0.03, gt=0, description="Softmax temperature over the shapes' IoUs.")
        speed_sharpness: float = Field(2.0, gt=0, description="k in exp(-k·|log(travel/target)|).")
        min_foreground_contrast: float = Field(0.1, gt=0, description="Floor of the foreground-vs-background distance (a blank video has no foreground).")
        pixel_change_scale: float = Field(0.05, gt=0, description="s1: median frame-to-frame pixel change that costs a factor e.")
        area_change_scale: float = Field(0.25, gt=0, description="s2: coefficient of variation of foreground area that costs a factor e.")
        colour_change_scale: float = Field(0.15, gt=0, description="s3: foreground mean-colour change per frame that costs a factor e.")
        noise_scale: float = Field(0.02, gt=0, description="Noise standard deviation that costs a factor e of visual quality.")
        sharpness_reference: float = Field(0.3, gt=0, le=1, description="Re-blur ratio that scores full sharpness.")
        chunk_size: int = Field(16, gt=0, description="Videos measured at once (bounds memory).")

    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        if videos.shape[0] != len(prompts):
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
        chunks = [
            self._score_chunk(videos[start : start + self.config.chunk_size].float(), prompts[start : start + self.config.chunk_size])
            for start in range(0, len(prompts), self.config.chunk_size)
        ]
        return {dim: torch.cat([chunk[dim] for chunk in chunks]) for dim in self.dimensions}

    def _score_chunk(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        cfg = self.config
        background = border_colour(videos)
        scenes = [_parse_or_none(prompt) for prompt in prompts]
        alignment, dynamics = self._prompted_facts(videos, background, scenes)
        instability = temporal_instability(videos, background, cfg.min_foreground_contrast)
        consistency = torch.exp(
            -(
                instability["pixel_change"] / cfg.pixel_change_scale
                + instability["area_change"] / cfg.area_change_scale
                + instability["colour_change"] / cfg.colour_change_scale
            )
        )
        quality = torch.exp(-noise_level(videos) / cfg.noise_scale) * (edge_sharpness(videos) / cfg.sharpness_reference).clamp(max=1)
        return {
            "text_alignment": alignment,
            "temporal_consistency": consistency,
            "dynamic_degree": dynamics,
            "visual_quality": quality,
        }

    def _prompted_facts(self, videos: Tensor, background: Tensor, scenes: list[Scene | None]) -> tuple[Tensor, Tensor]:
        """Text alignment and dynamic degree ``(B,)`` of each video against its parsed prompt."""
        batch = videos.shape[0]
        fact_sum, speed_sum = torch.zeros(batch), torch.zeros(batch)
        parsed = [i for i, scene in enumerate(scenes) if scene is not None]
        if parsed:
            index = torch.tensor(parsed)
            prompted = torch.tensor([BACKGROUNDS[scenes[i].background] for i in parsed])
            distance = (background[index] - prompted[:, None]).norm(dim=-1)
            fact_sum[index] = (1 - distance / self.config.background_tolerance).clamp(min=0).mean(1)
        for slot in range(max((len(s.objects) for s in scenes if s is not None), default=0)):
            rows = [i for i in parsed if len(scenes[i].objects) > slot]
            index = torch.tensor(rows)
            facts, speed = self._object_facts(videos[index], background[index], [scenes[i].objects[slot] for i in rows])
            fact_sum[index] += facts
            speed_sum[index] += speed
        counts = torch.tensor([len(s.objects) if s is not None else 0 for s in scenes], dtype=torch.float32)
        alignment = torch.where(counts > 0, fact_sum / (1 + 4 * counts), 0.0)
        dynamics = torch.where(counts > 0, speed_sum / counts.clamp(min=1), 0.0)
        return alignment, dynamics

    def _object_facts(self, videos: Tensor, background: Tensor, objects: list[SceneObject]) -> tuple[Tensor, Tensor]:
        """Per video ``(n,)``: the sum of the object's four fact scores, and its speed score."""
        cfg = self.config
        frames, height, width = videos.shape[1], videos.shape[-2], videos.shape[-1]
        side = min(height, width)
        colour = torch.tensor([COLOURS[o.colour] for o in objects])
        diameter = torch.tensor([SIZES[o.size] * side for o in objects])
        masks = colour_mask(videos, background, colour, cfg.colour_tolerance, cfg.min_coverage)
        mass, centre = centroids(masks)
        iou, filled = template_overlaps(masks, centre, diameter)
        present = (filled.amax(-1) / cfg.presence_fraction).clamp(max=1)  # (n, F)

        shape_index = torch.tensor([SHAPES.index(o.shape) for o in objects])
        shape_probability = torch.softmax(iou / cfg.shape_temperature, dim=-1)
        shape_right = shape_probability.gather(-1, shape_index.view(-1, 1, 1).expand(-1, frames, 1)).squeeze(-1)
        seen_area = torch.tensor([SHAPE_AREA[s] for s in SHAPES])[iou.argmax(-1)] * diameter[:, None] ** 2
        size_right = torch.exp(-torch.log(mass.clamp(min=EPS) / seen_area).pow(2) / (2 * cfg.size_tolerance**2))

        velocity = weighted_velocity(centre, present)
        prompted_direction = torch.tensor([DIRECTIONS[o.direction] for o in objects])
        slowest = min(SPEEDS.values()) * side / max(frames - 1, 1)
        direction_right = ((velocity * prompted_direction).sum(-1) / velocity.norm(dim=-1).clamp(min=slowest / 2)).clamp(min=0)
        travel = velocity.norm(dim=-1) * (frames - 1) / side
        target = torch.tensor([SPEEDS[o.speed] for o in objects])
        speed_right = torch.exp(-cfg.speed_sharpness * torch.log((travel + EPS) / target).abs())

        presence = present.mean(1)
        facts = presence + (present * shape_right).mean(1) + (present * size_right).mean(1) + presence * direction_right
        return facts, presence * speed_right


def _parse_or_none(prompt: str) -> Scene | None:
    try:
        return parse_prompt(prompt)
    except ValueError:
        return None
