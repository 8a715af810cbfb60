"""Pixel measurements the ``shapes`` reward is built from: pure functions of video tensors.

Videos are ``(B, F, 3, H, W)`` in [0, 1]. Everything here is batched over videos and independent
between them, so a video measures the same alone and in a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vipkit_shapes.world import SHAPE_CENTROID_OFFSET, SHAPES, shape_coverage

EPS = 1e-6


def colour_distance(difference: Tensor, dim: int = 2) -> Tensor:
    """Euclidean length over the colour axis (faster than ``Tensor.norm`` over a short middle axis)."""
    return difference.pow(2).sum(dim).sqrt()


def border_colour(videos: Tensor) -> Tensor:
    """Per-frame background colour ``(B, F, 3)``: the median of the frame's border pixels."""
    border = torch.cat([videos[..., 0, :], videos[..., -1, :], videos[..., 1:-1, 0], videos[..., 1:-1, -1]], dim=-1)
    return border.median(dim=-1).values


def colour_mask(videos: Tensor, background: Tensor, colour: Tensor, tolerance: float, min_coverage: float) -> Tensor:
    """How much of each pixel ``(B, F, H, W)`` an object of ``colour (B, 3)`` covers.

    Anti-aliased pixels lie on the line from the background colour ``(B, F, 3)`` to the object's colour;
    the position along it is the coverage. Pixels farther than ``tolerance`` from that line, or covered
    less than ``min_coverage`` (noise around the background), count as not covered.
    """
    direction = colour[:, None, :] - background  # (B, F, 3)
    offset = videos - background[..., None, None]
    alpha = (
        torch.einsum("bfchw,bfc->bfhw", offset, direction) / direction.pow(2).sum(-1).clamp(min=EPS)[..., None, None]
    )
    off_line = colour_distance(offset - alpha[:, :, None] * direction[..., None, None])
    keep = (alpha >= min_coverage) & (off_line <= tolerance)
    return alpha.clamp(0, 1) * keep


def centroids(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Mass ``(B, F)`` and centroid ``(B, F, 2)`` (x, y in pixels, pixel centres at +0.5) of masks ``(B, F, H, W)``."""
    height, width = masks.shape[-2:]
    ys = torch.arange(height, dtype=masks.dtype) + 0.5
    xs = torch.arange(width, dtype=masks.dtype) + 0.5
    mass = masks.sum((-1, -2))
    x = (masks.sum(-2) * xs).sum(-1) / mass.clamp(min=EPS)
    y = (masks.sum(-1) * ys).sum(-1) / mass.clamp(min=EPS)
    return mass, torch.stack([x, y], dim=-1)


def template_overlaps(masks: Tensor, centre: Tensor, diameters: Tensor) -> tuple[Tensor, Tensor]:
    """Compare masks ``(B, F, H, W)`` with each shape drawn at its diameter ``(B,)`` on the mask's centroid.

    Returns ``(iou, filled)``, each ``(B, F, len(SHAPES))``: the soft intersection over union with each
    shape's template, and the fraction of the template the mask fills.
    """
    batch, frames, height, width = masks.shape
    iou, filled = [], []
    for shape in SHAPES:
        box_centre = centre.clone()
        box_centre[..., 1] -= SHAPE_CENTROID_OFFSET[shape] * diameters[:, None]
        template = shape_coverage(
            [shape] * (batch * frames), box_centre.reshape(-1, 2), diameters.repeat_interleave(frames), height, width
        ).view(batch, frames, height, width)
        overlap = torch.minimum(masks, template).sum((-1, -2))
        iou.append(overlap / torch.maximum(masks, template).sum((-1, -2)).clamp(min=EPS))
        filled.append(overlap / template.sum((-1, -2)).clamp(min=EPS))
    return torch.stack(iou, dim=-1), torch.stack(filled, dim=-1)


def weighted_velocity(positions: Tensor, weights: Tensor) -> Tensor:
    """Least-squares velocity ``(B, 2)`` (pixels per frame) of positions ``(B, F, 2)``, frames weighted ``(B, F)``."""
    times = torch.arange(positions.shape[1], dtype=positions.dtype).expand_as(weights)
    total = weights.sum(1, keepdim=True).clamp(min=EPS)
    t_mean = (weights * times).sum(1, keepdim=True) / total
    p_mean = (weights[..., None] * positions).sum(1, keepdim=True) / total[..., None]
    dt = times - t_mean
    spread = (weights * dt * dt).sum(1).clamp(min=EPS)
    return (weights[..., None] * dt[..., None] * (positions - p_mean)).sum(1) / spread[:, None]


def temporal_instability(videos: Tensor, background: Tensor, min_contrast: float) -> dict[str, Tensor]:
    """Per video ``(B,)``: how much the video changes between frames in ways motion does not explain.

    ``pixel_change``: median over pixels of the colour change between consecutive frames (a moving object
    touches few pixels, so this stays 0 unless the whole frame flickers or is noisy). ``area_change``:
    coefficient of variation over frames of the foreground area, where a pixel's foreground weight is its
    distance from the background colour over the video's largest such distance (linear in anti-aliased
    coverage, so a clean moving object keeps its area exactly). ``colour_change``: mean colour change, between
    consecutive frames, of the pixels that are object (foreground weight ≥ 0.97) in both frames: a moving
    object keeps its colour where it overlaps itself; a vanishing object shows in ``area_change``. The contrast that normalises the weight is the median over frames of each frame's
    largest distance from the background, so decoder overshoot in a few pixels does not hide the object.
    """
    if videos.shape[1] < 2:
        zero = videos.new_zeros(videos.shape[0])
        return {"pixel_change": zero, "area_change": zero, "colour_change": zero}
    pixel_change = colour_distance(videos[:, 1:] - videos[:, :-1]).flatten(2).median(dim=-1).values.mean(1)
    distance = colour_distance(videos - background[..., None, None])
    # The median over frames of each frame's largest distance: one overshooting frame (a decoder's ringing)
    # must not shrink every other frame's foreground.
    contrast = distance.flatten(2).amax(2).median(1).values.clamp(min=min_contrast)
    foreground = (distance / contrast.view(-1, 1, 1, 1)).clamp(max=1.0)
    area = foreground.sum((-1, -2))
    area_change = area.std(1) / area.mean(1).clamp(min=1.0)
    core = (foreground >= 0.97).to(videos.dtype)  # (B, F, H, W): pixels that are object, not edge
    both = core[:, 1:] * core[:, :-1]  # object pixels in two consecutive frames: their colour should not change
    step = colour_distance(videos[:, 1:] - videos[:, :-1])
    colour_change = ((step * both).sum((-1, -2)) / both.sum((-1, -2)).clamp(min=1)).mean(1)
    return {"pixel_change": pixel_change, "area_change": area_change, "colour_change": colour_change}


_LAPLACIAN = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).view(1, 1, 3, 3)


def noise_level(videos: Tensor) -> Tensor:
    """Robust noise standard deviation ``(B,)`` (Immerkær's estimator with a median instead of a mean).

    The 3×3 operator is blind to flat areas and linear ramps; the median ignores the few edge pixels,
    so a clean flat-coloured video measures 0 and Gaussian noise of σ measures about σ.
    """
    batch = videos.shape[0]
    response = F.conv2d(videos.flatten(0, 2)[:, None], _LAPLACIAN).abs()
    per_channel = response.flatten(1).median(dim=-1).values.view(batch, -1)
    return per_channel.mean(1) / (0.6745 * 6.0)


def edge_sharpness(videos: Tensor) -> Tensor:
    """Re-blur ratio ``(B,)`` in [0, 1] (Crété-Roffet et al. 2007): how much variation a 3-tap blur removes.

    A crisp edge loses much of its neighbour differences when blurred again; an already soft edge loses
    little. Measured per edge, so it does not depend on resolution or on how much of the frame is edge.
    """
    frames = videos.flatten(0, 2)[:, None]  # (N, 1, H, W)
    removed, total = 0.0, 0.0
    for dim, kernel in ((-1, (1, 3)), (-2, (3, 1))):
        padding = (1, 1, 0, 0) if dim == -1 else (0, 0, 1, 1)
        blurred = F.avg_pool2d(F.pad(frames, padding, mode="replicate"), kernel, stride=1)
        sharp_diff = frames.diff(dim=dim).abs()
        blurred_diff = blurred.diff(dim=dim).abs()
        removed = removed + (sharp_diff - blurred_diff).clamp(min=0).view(videos.shape[0], -1).sum(1)
        total = total + sharp_diff.view(videos.shape[0], -1).sum(1)
    return removed / total.clamp(min=EPS)
