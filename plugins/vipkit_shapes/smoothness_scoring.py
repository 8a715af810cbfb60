"""The arithmetic of the ``shapes-smoothness`` reward (``smoothness.py`` says what it measures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vipkit_shapes.measures import EPS, border_colour, centroids, colour_mask, weighted_velocity
from vipkit_shapes.scoring import parse_or_none
from vipkit_shapes.world import COLOURS, SHAPE_AREA, SIZES, SceneObject

if TYPE_CHECKING:
    from vipkit_shapes.smoothness import ShapesSmoothness


def motion_smoothness(cfg: ShapesSmoothness.Config, videos: Tensor, prompts: Sequence[str]) -> Tensor:
    """``(B,)``: the mean over each prompt's objects of ``presence · exp(-jitter / jitter_scale)``."""
    background = border_colour(videos)
    scenes = [parse_or_none(prompt) for prompt in prompts]
    total = torch.zeros(videos.shape[0])
    for slot in range(max((len(s.objects) for s in scenes if s is not None), default=0)):
        rows = [i for i, scene in enumerate(scenes) if scene is not None and len(scene.objects) > slot]
        index = torch.tensor(rows)
        total[index] += _steadiness(cfg, videos[index], background[index], [scenes[i].objects[slot] for i in rows])
    counts = torch.tensor([len(s.objects) if s is not None else 0 for s in scenes], dtype=torch.float32)
    return total / counts.clamp(min=1)


def _steadiness(cfg: ShapesSmoothness.Config, videos: Tensor, background: Tensor, objects: list[SceneObject]) -> Tensor:
    """``(n,)``: each object's presence times ``exp(-jitter / jitter_scale)``."""
    frames, side = videos.shape[1], min(videos.shape[-2:])
    colour = torch.tensor([COLOURS[o.colour] for o in objects])
    area = torch.tensor([SHAPE_AREA[o.shape] * (SIZES[o.size] * side) ** 2 for o in objects])
    mass, track = centroids(colour_mask(videos, background, colour, cfg.colour_tolerance, cfg.min_coverage))
    weight = (mass / area[:, None]).clamp(max=1)  # (n, F): how much of the object each frame shows
    velocity = weighted_velocity(track, weight)
    total = weight.sum(1).clamp(min=EPS)
    times = torch.arange(frames, dtype=videos.dtype)
    t_mean = (weight * times).sum(1) / total
    p_mean = (weight[..., None] * track).sum(1) / total[:, None]
    line = p_mean[:, None] + (times[None, :] - t_mean[:, None])[..., None] * velocity[:, None]
    jitter = ((weight * (track - line).pow(2).sum(-1)).sum(1) / total).sqrt() / side
    return weight.mean(1) * torch.exp(-jitter / cfg.jitter_scale)
