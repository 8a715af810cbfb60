"""The shapes world: scenes, prompts, rendering, and the word-level tokenizer, against their ground truth."""

from __future__ import annotations

import math
import time

import pytest
import torch

from vipkit_shapes.tokenizer import word_tokenizer
from vipkit_shapes.world import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SIZES,
    SPEEDS,
    Scene,
    SceneObject,
    all_single_object_scenes,
    describe,
    grammar_words,
    object_paths,
    parse_prompt,
    render,
    render_batch,
    sample_scenes,
)

RED_CIRCLE = Scene((SceneObject("circle", "red", "large", "right", "quickly"),), "white")


def test_sampling_and_rendering_are_deterministic_by_seed():
    assert sample_scenes(50, seed=3) == sample_scenes(50, seed=3)
    assert sample_scenes(50, seed=3) != sample_scenes(50, seed=4)
    assert torch.equal(render(RED_CIRCLE, seed=5), render(RED_CIRCLE, seed=5))
    assert not torch.equal(render(RED_CIRCLE, seed=5), render(RED_CIRCLE, seed=6))
    scenes = sample_scenes(6, seed=0)
    batch = render_batch(scenes, list(range(6)))
    assert torch.equal(batch[4], render(scenes[4], seed=4))  # a video depends only on its scene and seed


@pytest.mark.parametrize(("frames", "height", "width"), [(8, 32, 32), (16, 64, 64), (5, 24, 40)])
def test_videos_have_the_requested_shape_and_flat_prompted_colours(frames, height, width):
    scenes = sample_scenes(40, seed=1)
    videos = render_batch(scenes, list(range(40)), frames, height, width)
    assert videos.shape == (40, frames, 3, height, width) and videos.dtype == torch.float32
    assert videos.min() >= 0 and videos.max() <= 1
    for scene, video in zip(scenes, videos, strict=True):
        assert torch.allclose(video[0, :, 0, 0], torch.tensor(BACKGROUNDS[scene.background]))  # a corner is background
        for obj in scene.objects:  # every object shows its exact colour somewhere, on every frame
            distance = (video - torch.tensor(COLOURS[obj.colour]).view(1, 3, 1, 1)).abs().amax(1)
            assert (distance.flatten(1).amin(1) < 1e-5).all()


def test_edges_are_anti_aliased_and_areas_exact():
    video = render(Scene((SceneObject("circle", "red", "large", "left", "slowly"),), "black"), 1, 64, 64)
    red = video[0, 0] / 0.9  # coverage, since the background is black
    diameter = SIZES["large"] * 64
    assert red.sum().item() == pytest.approx(math.pi * diameter**2 / 4, rel=0.005)
    assert ((red > 0.05) & (red < 0.95)).sum() > 40  # a one-pixel soft rim, not a jagged step


@pytest.mark.parametrize(("frames", "height", "width"), [(8, 32, 32), (16, 64, 64), (12, 24, 48)])
def test_objects_stay_inside_the_frame_for_the_whole_clip(frames, height, width):
    side = min(height, width)
    for seed, scene in enumerate(sample_scenes(300, seed=2)):
        for obj, path in zip(scene.objects, object_paths(scene, seed, frames, height, width), strict=True):
            radius = SIZES[obj.size] * side / 2
            for x, y in path:
                assert radius - 1e-4 <= x <= width - radius + 1e-4 and radius - 1e-4 <= y <= height - radius + 1e-4


@pytest.mark.parametrize(("frames", "size"), [(8, 32), (16, 64)])
def test_objects_move_at_their_speed_in_their_direction(frames, size):
    for direction, (dx, dy) in DIRECTIONS.items():
        for speed, travel in SPEEDS.items():
            scene = Scene((SceneObject("square", "blue", "small", direction, speed),), "black")
            video = render(scene, frames, size, size, seed=7)
            mass = video[:, 2]  # blue channel = 0.9 · coverage on black
            coords = torch.arange(size) + 0.5
            x = (mass.sum(1) * coords).sum(1) / mass.sum((1, 2))
            y = (mass.sum(2) * coords).sum(1) / mass.sum((1, 2))
            step = travel * size / (frames - 1)
            torch.testing.assert_close(
                x.diff(), torch.full((frames - 1,), dx * step), atol=0.01, rtol=0
            )  # steps of 1-2 px
            torch.testing.assert_close(
                y.diff(), torch.full((frames - 1,), dy * step), atol=0.01, rtol=0
            )  # steps of 1-2 px


def test_two_object_scenes_have_distinct_colours_and_keep_apart():
    scenes = sample_scenes(1000, seed=5, two_object_fraction=0.3)
    pairs = [s for s in scenes if len(s.objects) == 2]
    assert 0.25 < len(pairs) / len(scenes) < 0.35
    assert all(s.objects[0].colour != s.objects[1].colour for s in pairs)
    apart = 0
    for seed, scene in enumerate(pairs):
        first, second = object_paths(scene, seed, 8, 32, 32)
        closest = min(math.dist(p, q) for p, q in zip(first, second, strict=True))
        apart += closest >= 0.9 * sum(SIZES[o.size] for o in scene.objects) * 32 / 2
    assert apart / len(pairs) > 0.95


def test_prompts_round_trip():
    scenes = sample_scenes(500, seed=11) + all_single_object_scenes()
    assert len(all_single_object_scenes()) == 4 * 6 * 2 * 4 * 2 * 3
    for scene in scenes:
        assert parse_prompt(describe(scene)) == scene
    assert describe(RED_CIRCLE) == "a large red circle moving right quickly on a white background"
    two = Scene(RED_CIRCLE.objects + (SceneObject("square", "blue", "small", "up", "slowly"),), "gray")
    assert (
        describe(two)
        == "a large red circle moving right quickly and a small blue square moving up slowly on a gray background"
    )


@pytest.mark.parametrize(
    ("prompt", "word"),
    [
        ("a huge red circle moving left slowly on a white background", "'huge'"),
        ("a small red star moving left slowly on a white background", "'star'"),
        ("a small red circle moving left slowly on a white", "the end of the prompt"),
        ("a small red circle moving left slowly on a white background today", "'today'"),
    ],
)
def test_unparsable_prompts_name_the_word(prompt, word):
    with pytest.raises(ValueError, match=word):
        parse_prompt(prompt)


def test_rendering_is_fast():
    scenes = sample_scenes(256, seed=0)
    start = time.perf_counter()
    render_batch(scenes, list(range(256)))
    print(f"render 256 videos 8x32x32: {time.perf_counter() - start:.3f} s")  # measured 0.09-0.15 s, one thread


def test_word_tokenizer_reads_each_grammar_word_as_one_token(tmp_path):
    tokenizer = word_tokenizer()
    assert len(tokenizer) == 614  # 514 byte-level tokens + 100 merged prefixes and words
    for word in grammar_words():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert tokenizer.convert_ids_to_tokens(ids) == [word + "</w>"]
    ids = tokenizer("a small red circle moving left slowly on a white background").input_ids
    assert (
        len(ids) == 1 + 11 + 1 and ids[0] == tokenizer.bos_token_id == 512 and ids[-1] == tokenizer.eos_token_id == 513
    )
    unknown = tokenizer("zebra", add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(unknown) == ["z", "e", "b", "r", "a</w>"]
    tokenizer.save_pretrained(tmp_path)
    from transformers import CLIPTokenizer

    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    for text in (
        "a large cyan diamond moving down quickly and a small red circle moving up slowly on a black background",
        "zebra!",
    ):
        assert reloaded(text).input_ids == tokenizer(text).input_ids
