"""The arithmetic of the ``shapes`` reward; ``reward.py`` says what each dimension measures.

It lives apart from ``ShapesReward`` so that registering the reward imports no torch: ``score``
imports this module when it first runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

import vipkit
from vipkit_shapes.measures import (
    EPS,
    border_colour,
    centroids,
    colour_mask,
    edge_sharpness,
    noise_level,
    template_overlaps,
    temporal_instability,
    weighted_velocity,
)
from vipkit_shapes.world import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPE_AREA,
    SHAPES,
    SIZES,
    SPEEDS,
    Scene,
    SceneObject,
    parse_prompt,
)

if TYPE_CHECKING:
    from vipkit_shapes.reward import ShapesReward


def score_chunk(cfg: ShapesReward.Config, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
    """The four dimensions ``(B,)`` of float videos, one chunk of ``ShapesReward.score``."""
    background = border_colour(videos)
    scenes = [parse_or_none(prompt) for prompt in prompts]
    alignment, dynamics = _prompted_facts(cfg, videos, background, scenes)
    instability = temporal_instability(videos, background, cfg.min_foreground_contrast)
    consistency = torch.exp(
        -(
            instability["pixel_change"] / cfg.pixel_change_scale
            + instability["area_change"] / cfg.area_change_scale
            + instability["colour_change"] / cfg.colour_change_scale
        )
    )
    quality = torch.exp(-noise_level(videos) / cfg.noise_scale) * (
        edge_sharpness(videos) / cfg.sharpness_reference
    ).clamp(max=1)
    return {
        "text_alignment": alignment,
        "temporal_consistency": consistency,
        "dynamic_degree": dynamics,
        "visual_quality": quality,
    }


def _prompted_facts(
    cfg: ShapesReward.Config, videos: Tensor, background: Tensor, scenes: list[Scene | None]
) -> tuple[Tensor, Tensor]:
    """Text alignment and dynamic degree ``(B,)`` of each video against its parsed prompt."""
    batch = videos.shape[0]
    fact_sum, speed_sum = torch.zeros(batch), torch.zeros(batch)
    parsed = [i for i, scene in enumerate(scenes) if scene is not None]
    if parsed:
        index = torch.tensor(parsed)
        prompted = torch.tensor([BACKGROUNDS[scenes[i].background] for i in parsed])
        distance = (background[index] - prompted[:, None]).norm(dim=-1)
        fact_sum[index] = (1 - distance / cfg.background_tolerance).clamp(min=0).mean(1)
    for slot in range(max((len(s.objects) for s in scenes if s is not None), default=0)):
        rows = [i for i in parsed if len(scenes[i].objects) > slot]
        index = torch.tensor(rows)
        facts, speed = _object_facts(cfg, videos[index], background[index], [scenes[i].objects[slot] for i in rows])
        fact_sum[index] += facts
        speed_sum[index] += speed
    counts = torch.tensor([len(s.objects) if s is not None else 0 for s in scenes], dtype=torch.float32)
    alignment = torch.where(counts > 0, fact_sum / (1 + 4 * counts), 0.0)
    dynamics = torch.where(counts > 0, speed_sum / counts.clamp(min=1), 0.0)
    return alignment, dynamics


def _object_facts(
    cfg: ShapesReward.Config, videos: Tensor, background: Tensor, objects: list[SceneObject]
) -> tuple[Tensor, Tensor]:
    """Per video ``(n,)``: the sum of the object's four fact scores, and its speed score."""
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
    direction_right = ((velocity * prompted_direction).sum(-1) / velocity.norm(dim=-1).clamp(min=slowest / 2)).clamp(
        min=0
    )
    travel = velocity.norm(dim=-1) * (frames - 1) / side
    target = torch.tensor([SPEEDS[o.speed] for o in objects])
    speed_right = torch.exp(-cfg.speed_sharpness * torch.log((travel + EPS) / target).abs())

    presence = present.mean(1)
    facts = presence + (present * shape_right).mean(1) + (present * size_right).mean(1) + presence * direction_right
    return facts, presence * speed_right


def parse_or_none(prompt: str) -> Scene | None:
    """The scene a prompt describes, or None for one outside the world's grammar (its prompted facts score 0)."""
    try:
        return parse_prompt(prompt)
    except ValueError:
        return None
