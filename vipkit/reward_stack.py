"""The reward a run scores with, assembled in one place so ``compress`` and ``bench`` check and cache alike.

Each part of the recipe's reward is checked first (``vipkit.reward_checks``), so its score cache
(``vipkit.score_cache``) only ever stores scores that passed, and cached on its own, so changing one
part's options rescores only that part; the parts are then combined once (``vipkit.combined_reward``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vipkit.combined_reward import CombinedReward
from vipkit.interfaces import RewardModel
from vipkit.reward_checks import CheckedReward
from vipkit.score_cache import CachedReward

if TYPE_CHECKING:
    from vipkit.plugins import Plugins


def reward_stack(
    reward: RewardModel, plugins: Plugins, cache_root: Path, timeout_s: float | None = None
) -> RewardModel:
    """``reward`` as ``recipe.reward.build`` gives it, each part wrapped as cached(checked(part)) under ``cache_root``;
    ``timeout_s``: the seconds each part's score call may take.

    A single ``[reward]`` is one part and keeps its dimension names; ``[[rewards]]`` parts are combined
    again under their aliases. Errors name the part's plugin; cache keys name its plugin and version.
    """
    registry = plugins.registry("rewards")

    def stacked(part: RewardModel) -> CachedReward:
        return CachedReward(
            CheckedReward(part, registry.source(part.name), timeout_s),
            cache_root,
            plugins.provider("rewards", part.name),
        )

    if isinstance(reward, CombinedReward):
        return CombinedReward({alias: stacked(part) for alias, part in reward.parts.items()})
    return stacked(reward)
