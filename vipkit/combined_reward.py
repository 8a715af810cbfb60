"""Several rewards scored as one: a recipe's ``[[rewards]]`` tables become a single ``RewardModel``.

The engine, the scorers and the curators keep seeing one reward with one set of dimensions; each
part's dimensions are named ``<alias>.<dimension>`` so two rewards may both have, say, a
``text_alignment``. The objective (``[objective] weights``) then weighs any of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from vipkit.errors import VipkitError
from vipkit.interfaces import RewardModel, Scores

if TYPE_CHECKING:
    from torch import Tensor


def combined_dimensions(dimensions_by_alias: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The combined reward's dimension names, in recipe order: ``<alias>.<dimension>``."""
    return tuple(f"{alias}.{dim}" for alias, dims in dimensions_by_alias.items() for dim in dims)


def require_declared_dimensions(reward: RewardModel, scores: Scores) -> Scores:
    """``scores`` if they hold exactly ``reward``'s declared dimensions; else a clear error naming the plugin."""
    if set(scores) != set(reward.dimensions):
        raise VipkitError(
            f"reward {reward.name!r} returned the dimensions {sorted(scores)} but declares {list(reward.dimensions)}; "
            "the plugin breaks the RewardModel contract (vipkit.testing.check_reward lists every violation)."
        )
    return scores


class CombinedReward(RewardModel):
    """Scores the videos with every part and returns all their dimensions, prefixed by the part's alias."""

    name = "combined"

    def __init__(self, parts: Mapping[str, RewardModel]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a combined reward needs at least one part")
        self.parts = dict(parts)
        self.dimensions = combined_dimensions({alias: part.dimensions for alias, part in self.parts.items()})

    def score(self, videos: Tensor, prompts: Sequence[str]) -> Scores:
        scores: Scores = {}
        for alias, part in self.parts.items():
            returned = require_declared_dimensions(part, part.score(videos, prompts))
            scores.update({f"{alias}.{dim}": returned[dim] for dim in part.dimensions})
        return scores
