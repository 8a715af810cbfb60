"""The shapes world: scenes of coloured shapes moving on a flat background, their prompts, their videos.

A scene is one or two objects (shape, colour, size, direction, speed) on a background. ``describe``
turns a scene into its prompt and ``parse_prompt`` is its exact inverse, so the ``shapes`` reward can
read back from any prompt what the video should show. ``render`` draws the scene with anti-aliased
edges (analytic pixel coverage from signed distances) and flat colours.

Sizes and speeds are fractions of the frame's shorter side, and a speed is the distance travelled over
the whole clip, so the same scene looks the same at every resolution and frame count and the object
always stays inside the frame.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import torch
from torch import Tensor

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.1),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.1, 0.9),
    "cyan": (0.1, 0.85, 0.9),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "gray": (0.5, 0.5, 0.5),
}
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit (x, y) in image coordinates, y pointing down
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
SPEEDS: dict[str, float] = {"slowly": 0.2, "quickly": 0.5}  # distance over the clip / shorter side
SIZES: dict[str, float] = {"small": 0.25, "large": 0.4}  # bounding-box side / shorter side
SHAPE_AREA: dict[str, float] = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}
"""Area of each shape as a fraction of its bounding box (side = the object's diameter)."""
SHAPE_CENTROID_OFFSET: dict[str, float] = {"circle": 0.0, "square": 0.0, "triangle": 1 / 6, "diamond": 0.0}
"""Downward offset of each shape's centroid from its box centre, as a fraction of the diameter."""
CONNECTIVES: tuple[str, ...] = ("a", "moving", "and", "on", "background")
"""The grammar's words that are not attribute values."""


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    direction: str
    speed: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str


def grammar_words() -> tuple[str, ...]:
    """Every word a prompt of the world can contain."""
    return (*CONNECTIVES, *SIZES, *COLOURS, *SHAPES, *DIRECTIONS, *SPEEDS, *BACKGROUNDS)


# ---------------------------------------------------------------------------------------------
# Prompts


def describe(scene: Scene) -> str:
    """The scene's prompt, e.g. "a small red circle moving left slowly on a white background"."""
    phrases = [f"a {o.size} {o.colour} {o.shape} moving {o.direction} {o.speed}" for o in scene.objects]
    return f"{' and '.join(phrases)} on a {scene.background} background"


_OBJECT_SLOTS: tuple[tuple[str, Sequence[str]], ...] = (
    ("a", ("a",)),
    ("size", tuple(SIZES)),
    ("colour", tuple(COLOURS)),
    ("shape", SHAPES),
    ("moving", ("moving",)),
    ("direction", tuple(DIRECTIONS)),
    ("speed", tuple(SPEEDS)),
)


def parse_prompt(text: str) -> Scene:
    """The scene a prompt describes (inverse of ``describe``); ``ValueError`` names the first word not understood."""
    words = text.split()
    position = 0

    def take(role: str, allowed: Sequence[str]) -> str:
        nonlocal position
        word = words[position] if position < len(words) else None
        if word not in allowed:
            found = f"{word!r} (word {position + 1})" if word is not None else "the end of the prompt"
            raise ValueError(
                f"cannot parse shapes prompt {text!r}: expected {role} ({', '.join(allowed)}), got {found}"
            )
        position += 1
        return word

    objects = []
    while True:
        values = {role: take(role, allowed) for role, allowed in _OBJECT_SLOTS}
        objects.append(
            SceneObject(values["shape"], values["colour"], values["size"], values["direction"], values["speed"])
        )
        if take("'and' or 'on'", ("and", "on")) == "on":
            break
    take("a", ("a",))
    background = take("background colour", tuple(BACKGROUNDS))
    take("background", ("background",))
    if position != len(words):
        raise ValueError(
            f"cannot parse shapes prompt {text!r}: unexpected {words[position]!r} (word {position + 1}) after the end"
        )
    return Scene(tuple(objects), background)


def all_single_object_scenes() -> list[Scene]:
    """Every one-object scene, in a fixed order (4 shapes × 6 colours × 2 sizes × 4 directions × 2 speeds × 3 backgrounds)."""
    return [
        Scene((SceneObject(shape, colour, size, direction, speed),), background)
        for background, size, colour, shape, direction, speed in product(
            BACKGROUNDS, SIZES, COLOURS, SHAPES, DIRECTIONS, SPEEDS
        )
    ]


def sample_scenes(count: int, seed: int, two_object_fraction: float = 0.3) -> list[Scene]:
    """``count`` random scenes, deterministic by ``seed``; two objects in a scene have different colours."""
    rng = random.Random(seed)
    scenes = []
    for _ in range(count):
        colours = rng.sample(list(COLOURS), 2 if rng.random() < two_object_fraction else 1)
        objects = tuple(
            SceneObject(
                rng.choice(SHAPES),
                colour,
                rng.choice(list(SIZES)),
                rng.choice(list(DIRECTIONS)),
                rng.choice(list(SPEEDS)),
            )
            for colour in colours
        )
        scenes.append(Scene(objects, rng.choice(list(BACKGROUNDS))))
    return scenes


# ---------------------------------------------------------------------------------------------
# Rendering


def _signed_distance(shape: str, x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    """Signed distance (pixels, negative inside) from offsets ``x, y`` to a shape of radius ``r`` at the origin."""
    if shape == "circle":
        return torch.sqrt(x * x + y * y) - r
    if shape == "square":
        qx, qy = x.abs() - r, y.abs() - r
        return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)
    if shape == "diamond":
        return (x.abs() + y.abs() - r) / math.sqrt(2)
    return torch.maximum(y - r, (2 * x.abs() - y - r) / math.sqrt(5))  # triangle, apex up


def shape_coverage(shapes: Sequence[str], centres: Tensor, diameters: Tensor, height: int, width: int) -> Tensor:
    """Anti-aliased masks ``(N, H, W)`` in [0, 1] of N shapes with box centres ``(N, 2)`` (x, y) in pixels.

    Coverage is ``clamp(0.5 - signed distance, 0, 1)``: exact area for straight edges, one pixel of
    anti-aliasing, no supersampling.
    """
    ys = torch.arange(height, dtype=torch.float32).add_(0.5).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).add_(0.5).view(1, 1, width)
    sdf = torch.empty(len(shapes), height, width)
    for name in set(shapes):
        rows = torch.tensor([i for i, s in enumerate(shapes) if s == name])
        x = xs - centres[rows, 0].view(-1, 1, 1)
        y = ys - centres[rows, 1].view(-1, 1, 1)
        sdf[rows] = _signed_distance(name, x, y, (diameters[rows] / 2).view(-1, 1, 1))
    return (0.5 - sdf).clamp_(0, 1)


def _object_path(obj: SceneObject, start: tuple[float, float], num_frames: int, side: int) -> list[tuple[float, float]]:
    dx, dy = DIRECTIONS[obj.direction]
    step = SPEEDS[obj.speed] * side / max(num_frames - 1, 1)
    return [(start[0] + dx * step * f, start[1] + dy * step * f) for f in range(num_frames)]


def _random_path(
    obj: SceneObject, rng: random.Random, num_frames: int, height: int, width: int
) -> list[tuple[float, float]]:
    """A box-centre path (pixels) that keeps the whole object inside the frame on every frame."""
    side = min(height, width)
    radius = SIZES[obj.size] * side / 2
    dx, dy = DIRECTIONS[obj.direction]
    travel = SPEEDS[obj.speed] * side
    start = []
    for extent, d in ((width, dx), (height, dy)):
        low, high = radius + max(-d, 0) * travel, extent - radius - max(d, 0) * travel
        start.append(rng.uniform(low, high))
    return _object_path(obj, (start[0], start[1]), num_frames, side)


def _closest_approach(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    return min(math.dist(p, q) for p, q in zip(a, b, strict=True))


def object_paths(
    scene: Scene, seed: int, num_frames: int, height: int, width: int, tries: int = 100
) -> list[list[tuple[float, float]]]:
    """Each object's box-centre path (pixels), deterministic by ``seed``; two objects keep apart if they can."""
    rng = random.Random(seed)
    side = min(height, width)
    best, best_gap = None, -math.inf
    for _ in range(tries):
        paths = [_random_path(obj, rng, num_frames, height, width) for obj in scene.objects]
        if len(paths) == 1:
            return paths
        needed = 0.9 * sum(SIZES[o.size] for o in scene.objects) * side / 2
        gap = _closest_approach(paths[0], paths[1]) - needed
        if gap >= 0:
            return paths
        if gap > best_gap:
            best, best_gap = paths, gap
    return best


def render_batch(
    scenes: Sequence[Scene], seeds: Sequence[int], num_frames: int = 8, height: int = 32, width: int = 32
) -> Tensor:
    """Videos ``(B, F, 3, H, W)`` in [0, 1]; video ``i`` depends only on ``scenes[i]`` and ``seeds[i]``."""
    side = min(height, width)
    videos = (
        torch.tensor([BACKGROUNDS[s.background] for s in scenes])
        .view(-1, 1, 3, 1, 1)
        .repeat(1, num_frames, 1, height, width)
    )
    all_paths = [
        object_paths(scene, seed, num_frames, height, width) for scene, seed in zip(scenes, seeds, strict=True)
    ]
    for slot in range(max(len(s.objects) for s in scenes)):
        present = [i for i, s in enumerate(scenes) if len(s.objects) > slot]
        objs = [scenes[i].objects[slot] for i in present]
        paths = [all_paths[i][slot] for i in present]
        centres = torch.tensor(paths, dtype=torch.float32).view(-1, 2)
        diameters = torch.tensor([SIZES[o.size] * side for o in objs]).repeat_interleave(num_frames)
        shapes = [o.shape for o in objs for _ in range(num_frames)]
        alpha = shape_coverage(shapes, centres, diameters, height, width).view(
            len(present), num_frames, 1, height, width
        )
        colours = torch.tensor([COLOURS[o.colour] for o in objs]).view(-1, 1, 3, 1, 1)
        index = torch.tensor(present)
        videos[index] = videos[index] * (1 - alpha) + colours * alpha
    return videos


def render(scene: Scene, num_frames: int = 8, height: int = 32, width: int = 32, seed: int = 0) -> Tensor:
    """One video ``(F, 3, H, W)`` of the scene, start positions drawn from ``seed``."""
    return render_batch([scene], [seed], num_frames, height, width)[0]
