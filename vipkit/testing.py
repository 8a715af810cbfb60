"""Helpers for plugin authors' tests (and vipkit's own): tiny models, sample videos, contract checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vipkit.interfaces import RewardModel, VideoModel
from vipkit.plugins import load_plugins

if TYPE_CHECKING:
    from torch import Tensor

SAMPLE_PROMPTS = ("a red square moving left", "a blue circle moving up", "a green star spinning")


def tiny_model(family: str = "animatediff", **options: Any) -> VideoModel:
    """A registered model family's tiny random preset (built from configs, no download)."""
    cls = load_plugins().registry("models").get(family)
    return cls.from_options({"preset": "tiny", **options})  # type: ignore[return-value]


def sample_videos(batch: int = 2, frames: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> Tensor:
    """Deterministic videos ``(B, F, 3, H, W)`` in [0, 1]: a bright square drifting over a gradient."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, width)
    videos = torch.empty(batch, frames, 3, height, width)
    for b in range(batch):
        colour = torch.rand(3, generator=generator)
        for f in range(frames):
            frame = torch.cat([ys.expand(1, height, width), xs.expand(1, height, width), (ys * xs).expand(1, height, width)]) * 0.5
            top, left = (f * 2 + b * 3) % (height // 2), (f * 3 + b * 5) % (width // 2)
            frame[:, top : top + height // 4, left : left + width // 4] = colour.view(3, 1, 1)
            videos[b, f] = frame
    return videos


def check_reward(cls: type[RewardModel], options: dict[str, Any] | None = None, prompts: Sequence[str] = SAMPLE_PROMPTS[:2]) -> dict[str, Tensor]:
    """Assert that ``cls`` keeps the RewardModel contract; return its scores of the sample videos.

    Checks: a non-empty ``name``; ``dimensions`` a tuple of distinct names; a ``Config`` that rejects
    unknown keys; ``score`` returns exactly one finite float tensor of shape (batch,) per dimension of the
    built reward (its ``dimensions``, which its configuration may narrow to a subset of the class's),
    leaves the input unchanged, repeats itself, and gives each video the same score alone as in a batch.
    """
    import torch

    from vipkit.interfaces import Config

    assert isinstance(cls, type) and issubclass(cls, RewardModel), f"{cls!r} is not a vipkit.RewardModel subclass"
    assert isinstance(getattr(cls, "name", None), str) and cls.name, f"{cls.__qualname__}.name must be a non-empty str"
    dims = getattr(cls, "dimensions", None)
    assert isinstance(dims, tuple) and dims and all(isinstance(d, str) and d for d in dims), (
        f"{cls.__qualname__}.dimensions must be a non-empty tuple of str"
    )
    assert len(set(dims)) == len(dims), f"{cls.__qualname__}.dimensions has duplicates: {dims}"
    assert issubclass(cls.Config, Config), f"{cls.__qualname__}.Config must subclass vipkit.Config"
    try:
        cls.Config.model_validate({"__no_such_option__": 1})
    except ValueError:
        pass
    else:
        raise AssertionError(f"{cls.__qualname__}.Config accepts unknown keys; subclass vipkit.Config")

    reward = cls.from_options(options)
    dims = reward.dimensions  # a configuration may narrow the class's dimensions, never add to them
    assert dims and set(dims) <= set(cls.dimensions), f"{cls.__qualname__} instance dimensions {dims} not within {cls.dimensions}"
    videos = sample_videos(batch=len(prompts))
    before = videos.clone()
    scores = reward.score(videos, list(prompts))
    assert torch.equal(videos, before), "score() modified its input videos"
    assert set(scores) == set(dims), f"score() returned {sorted(scores)}, declared dimensions {sorted(dims)}"
    for dim, values in scores.items():
        assert isinstance(values, torch.Tensor) and values.shape == (len(prompts),), (
            f"score()[{dim!r}] must be a tensor of shape ({len(prompts)},), got {getattr(values, 'shape', type(values))}"
        )
        assert values.is_floating_point() and torch.isfinite(values).all(), f"score()[{dim!r}] has non-finite values: {values}"
    again = reward.score(videos, list(prompts))
    for dim in dims:
        torch.testing.assert_close(again[dim], scores[dim], msg=f"score()[{dim!r}] is not deterministic")
    for i, prompt in enumerate(prompts):
        alone = reward.score(videos[i : i + 1], [prompt])
        for dim in dims:
            torch.testing.assert_close(
                alone[dim][0], scores[dim][i], atol=1e-4, rtol=1e-4, msg=f"score()[{dim!r}] of video {i} differs alone and in a batch"
            )
    return scores
