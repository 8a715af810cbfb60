"""The ``shapes-smoothness`` reward: exact on hand-drawn tracks, and it sees the stutter the ``shapes`` reward does not."""

from __future__ import annotations

import math

import pytest
import torch

from vipkit.testing import check_reward
from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.smoothness import ShapesSmoothness
from vipkit_shapes.world import describe, render_batch, sample_scenes

PROMPT = "a small red square moving right slowly on a white background"  # an 8-pixel square in a 32-pixel frame
RED = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)


def square_video(xs: list[int | None], y: int = 12) -> torch.Tensor:
    """8 frames ``(F, 3, 32, 32)``: white, with the 8×8 red square's left edge at ``xs[f]`` (None: not drawn).

    Pixel-aligned, so every covered pixel is exactly the prompted colour and the centroid is exact."""
    video = torch.ones(len(xs), 3, 32, 32)
    for frame, x in enumerate(xs):
        if x is not None:
            video[frame, :, y : y + 8, x : x + 8] = RED
    return video


def smoothness(videos: torch.Tensor, prompts: list[str], **options) -> torch.Tensor:
    return ShapesSmoothness(ShapesSmoothness.Config(**options)).score(videos, prompts)["motion_smoothness"]


def test_keeps_the_reward_contract():
    prompts = [describe(scene) for scene in sample_scenes(2, seed=3)]
    check_reward(ShapesSmoothness, prompts=prompts, ranges=(0.0, 1.0))


def test_a_steady_track_scores_1_and_a_displaced_frame_costs_what_the_least_squares_line_says():
    steady = list(range(4, 12))
    jolted = [*steady[:3], steady[3] + 2, *steady[4:]]  # frame 3 two pixels ahead of its place
    # the residual of a frame moved by d off a least-squares line: d·sqrt(1 − h), h its leverage 1/F + (t − t̄)²/Σ(t − t̄)²
    leverage = 1 / 8 + (3 - 3.5) ** 2 / sum((t - 3.5) ** 2 for t in range(8))
    jitter = 2 * math.sqrt((1 - leverage) / 8) / 32  # RMS over the 8 frames, over the frame's side
    videos = torch.stack([square_video(steady), square_video(jolted), square_video([6] * 8)])
    scores = smoothness(videos, [PROMPT] * 3)
    assert scores.tolist() == pytest.approx([1.0, math.exp(-jitter / 0.03), 1.0], abs=1e-6)  # 1, 0.503, frozen 1
    assert smoothness(videos[1:2], [PROMPT], jitter_scale=0.06).item() == pytest.approx(
        math.exp(-jitter / 0.06), abs=1e-6
    )


def test_missing_frames_count_as_unsteady_and_two_objects_are_averaged():
    half = square_video([4, 5, 6, 7, None, None, None, None])  # present in 4 of 8 frames, steady there
    assert smoothness(half[None], [PROMPT]).item() == pytest.approx(0.5, abs=1e-6)
    two = square_video(list(range(4, 12)), y=2)
    two[:, :, 20:28, 10:18] = torch.tensor([0.1, 0.2, 0.9]).view(3, 1, 1)  # a blue square standing still: steady
    jolted = two.clone()
    jolted[3, :, 2:10] = 1.0
    jolted[3, :, 2:10, 9:17] = RED  # the red one two pixels ahead in frame 3
    prompt = f"{PROMPT.removesuffix(' on a white background')} and a small blue square moving up slowly on a white background"
    alone = smoothness(square_video([4, 5, 6, 9, 8, 9, 10, 11])[None], [PROMPT]).item()
    assert smoothness(torch.stack([two, jolted]), [prompt] * 2).tolist() == pytest.approx(
        [1.0, (1 + alone) / 2], abs=1e-6
    )
    assert smoothness(two[None], ["a red square moving left"]).item() == 0.0  # outside the grammar: nothing to follow


def test_it_sees_stutter_and_jumps_that_the_shapes_reward_does_not():
    scenes = sample_scenes(16, seed=1)
    prompts = [describe(scene) for scene in scenes]
    real = render_batch(scenes, list(range(16)), 8, 32, 32)
    changed = {
        "stutter": real[:, [0, 0, 2, 2, 4, 4, 6, 7]],  # stop and go
        "swapped frames": real[:, [0, 2, 1, 3, 5, 4, 6, 7]],
        "back and forth": real[:, [0, 1, 2, 3, 2, 3, 4, 5]],
    }
    shapes = ShapesReward(ShapesReward.Config())
    before, shapes_before = smoothness(real, prompts).mean().item(), shapes.score(real, prompts)
    assert before > 0.95  # measured 0.959: anti-aliased centroids wobble by a few hundredths of a pixel
    for name, videos in changed.items():
        after = smoothness(videos, prompts).mean().item()
        assert after < 0.5, (name, after)  # measured 0.49, 0.37, 0.49
        shapes_after = shapes.score(videos, prompts)
        for dim in ("text_alignment", "temporal_consistency", "visual_quality"):  # what shapes sees: no change
            assert shapes_after[dim].mean().item() == pytest.approx(shapes_before[dim].mean().item(), abs=0.01), (
                name,
                dim,
            )
