"""The ``shapes`` reward measured against the generator's ground truth: real videos score high, and each
corruption scores lower on the dimension it targets."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
import torch.nn.functional as F

from vipkit.interfaces import mean_scores
from vipkit.plugins import load_plugins
from vipkit.testing import check_reward
from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.world import BACKGROUNDS, COLOURS, SHAPES, Scene, describe, render_batch, sample_scenes


def _swap(scene: Scene, attribute: str, mapping: dict[str, str]) -> Scene:
    objects = tuple(dataclasses.replace(o, **{attribute: mapping[getattr(o, attribute)]}) for o in scene.objects)
    return Scene(objects, scene.background)


def _recoloured(scene: Scene) -> Scene:
    """Every object in the next palette colour that no object of the scene uses."""
    names, used, objects = list(COLOURS), {o.colour for o in scene.objects}, []
    for obj in scene.objects:
        index = names.index(obj.colour)
        while names[index] in used:
            index = (index + 1) % len(names)
        used.add(names[index])
        objects.append(dataclasses.replace(obj, colour=names[index]))
    return Scene(tuple(objects), scene.background)


def corrupted_videos(count: int, frames: int, size: int) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Prompts of ``count`` sampled scenes, their real videos, and every corruption of them."""
    scenes, seeds = sample_scenes(count, seed=1), list(range(count))
    backgrounds = list(BACKGROUNDS)

    def render(changed: list[Scene]) -> torch.Tensor:
        return render_batch(changed, seeds, frames, size, size)

    real = render(scenes)
    background_only = torch.tensor([BACKGROUNDS[s.background] for s in scenes]).view(-1, 1, 3, 1, 1).expand_as(real)
    vanishing, brightened = real.clone(), real.clone()
    vanishing[:, 1::2] = background_only[:, 1::2]
    brightened[:, 1::2] = (brightened[:, 1::2] + 0.3).clamp(0, 1)
    noise = torch.Generator().manual_seed(0)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    return [describe(s) for s in scenes], {
        "real": real,
        "wrong colour": render([_recoloured(s) for s in scenes]),
        "wrong shape": render(
            [_swap(s, "shape", dict(zip(SHAPES, SHAPES[1:] + SHAPES[:1], strict=True))) for s in scenes]
        ),
        "wrong direction": render([_swap(s, "direction", opposite) for s in scenes]),
        "wrong background": render(
            [Scene(s.objects, backgrounds[(backgrounds.index(s.background) + 1) % 3]) for s in scenes]
        ),
        "frozen": real[:, :1].expand_as(real).clone(),
        "wrong speed": render([_swap(s, "speed", {"slowly": "quickly", "quickly": "slowly"}) for s in scenes]),
        "flicker brightened": brightened,
        "flicker vanishing": vanishing,
        "noisy": (real + 0.1 * torch.randn(real.shape, generator=noise)).clamp(0, 1),
        "blurred": F.avg_pool2d(real.flatten(0, 1), 3, stride=1, padding=1, count_include_pad=False).view_as(real),
        "uniform noise": torch.rand(real.shape, generator=noise),
    }


# corruption -> (dimension it targets, least drop of that dimension's mean below the real videos').
# A wrong shape, direction or background breaks one of the prompt's 5 facts (9 in two-object scenes),
# so text_alignment can fall by at most 0.2 for them; measured drops 0.17-0.21.
TARGETED = {
    "wrong colour": ("text_alignment", 0.6),  # measured 0.999 -> 0.17
    "wrong shape": ("text_alignment", 0.15),  # -> 0.79
    "wrong direction": ("text_alignment", 0.15),  # -> 0.79
    "wrong background": ("text_alignment", 0.15),  # -> 0.83
    "frozen": ("dynamic_degree", 0.9),  # 0.99 -> 0.00
    "wrong speed": ("dynamic_degree", 0.7),  # -> 0.16
    "flicker brightened": ("temporal_consistency", 0.9),  # 0.985 -> 0.000
    "flicker vanishing": ("temporal_consistency", 0.9),  # -> 0.000
    "noisy": ("visual_quality", 0.9),  # 1.000 -> 0.04
    "blurred": ("visual_quality", 0.4),  # -> 0.50 (32 px), 0.42 (64 px)
}


@pytest.fixture(scope="module", params=[(64, 8, 32), (24, 16, 64)], ids=["8x32x32", "16x64x64"])
def measured(request) -> dict[str, dict[str, float]]:
    count, frames, size = request.param
    prompts, cases = corrupted_videos(count, frames, size)
    reward = ShapesReward()
    return {name: mean_scores(reward.score(videos, prompts)) for name, videos in cases.items()}


def test_reward_keeps_the_contract_and_is_registered():
    scores = check_reward(ShapesReward)
    assert torch.equal(scores["text_alignment"], torch.zeros(2))  # the sample prompts lack a background
    assert load_plugins().registry("rewards").get("shapes") is ShapesReward


def test_real_videos_score_high_on_every_dimension(measured):
    # measured means, 64 videos 8x32x32: 0.999 0.985 0.988 1.000; 24 videos 16x64x64: 1.000 0.993 0.997 1.000
    for dimension, value in measured["real"].items():
        assert value >= 0.95, (dimension, value)


@pytest.mark.parametrize("corruption", list(TARGETED))
def test_each_corruption_lowers_the_dimension_it_targets(measured, corruption):
    dimension, margin = TARGETED[corruption]
    assert measured[corruption][dimension] <= measured["real"][dimension] - margin, (
        dimension,
        measured[corruption][dimension],
    )


def test_uniform_noise_scores_low_everywhere(measured):
    for dimension, value in measured["uniform noise"].items():
        assert value < 0.15, (dimension, value)  # measured 0.09-0.11 (the median of noise is gray), 0.00, 0.01, 0.00


def test_prompts_outside_the_grammar_score_zero_where_they_must():
    scenes = sample_scenes(2, seed=4)
    videos = render_batch(scenes, [0, 1])
    scores = ShapesReward().score(videos, [describe(scenes[0]), "a cat playing piano"])
    assert scores["text_alignment"][0] > 0.95 and scores["text_alignment"][1] == 0
    assert scores["dynamic_degree"][0] > 0.9 and scores["dynamic_degree"][1] == 0
    assert scores["temporal_consistency"][1] > 0.9 and scores["visual_quality"][1] > 0.9  # prompt-free dimensions


def test_a_swapped_object_order_still_aligns_but_a_missing_object_does_not():
    scene = next(s for s in sample_scenes(50, seed=9) if len(s.objects) == 2)
    video = render_batch([scene], [3])
    swapped = Scene(scene.objects[::-1], scene.background)
    only_first = Scene(scene.objects[:1], scene.background)
    reward = ShapesReward()
    full = reward.score(video.expand(3, -1, -1, -1, -1), [describe(scene), describe(swapped), describe(only_first)])
    torch.testing.assert_close(full["text_alignment"][0], full["text_alignment"][1])
    alone = reward.score(render_batch([only_first], [3]), [describe(scene)])
    assert alone["text_alignment"][0] <= full["text_alignment"][0] - 0.4  # 4 of 9 facts missing


def test_scoring_is_fast():
    scenes = sample_scenes(16, seed=0)
    videos, prompts = render_batch(scenes, list(range(16))), [describe(s) for s in scenes]
    reward = ShapesReward()
    start = time.perf_counter()
    reward.score(videos, prompts)
    print(f"score 16 videos 8x32x32: {time.perf_counter() - start:.3f} s")  # measured ~0.08 s, one thread
