"""One reward stack for compress and bench: each part checked, then cached, then combined once."""

from __future__ import annotations

import pytest
import torch

import vipkit
from vipkit.combined_reward import CombinedReward
from vipkit.plugins import Plugins, discover_plugins
from vipkit.reward_checks import CheckedReward, RewardOutputError
from vipkit.reward_stack import reward_stack
from vipkit.score_cache import CachedReward
from vipkit.testing import sample_videos

PROMPTS = ["a red square moving left", "a blue circle moving up"]


class Brightness(vipkit.RewardModel):
    name = "brightness"
    dimensions = ("brightness",)

    def score(self, videos, prompts):
        return {"brightness": videos.mean(dim=(1, 2, 3, 4))}


class Broken(vipkit.RewardModel):
    """NaN for the second video."""

    name = "broken"
    dimensions = ("brightness",)

    def score(self, videos, prompts):
        return {"brightness": torch.tensor([0.5, float("nan")])[: len(prompts)]}


class Registers:
    """A plugin registering one reward class."""

    def __init__(self, reward: type[vipkit.RewardModel]) -> None:
        self.reward = reward

    @vipkit.hookimpl
    def register_rewards(self, register):
        register(self.reward)


def two_plugins() -> Plugins:
    plugins = discover_plugins((), include_entry_points=False)
    plugins.add(Registers(Brightness), name="plugin_one", version="1.0")
    plugins.add(Registers(Broken), name="plugin_two", version="2.0")
    return plugins


def test_each_part_is_checked_then_cached_once_and_a_bad_part_is_named(tmp_path):
    built = {"first": Brightness(), "second": Broken()}
    stack = reward_stack(CombinedReward(built), two_plugins(), tmp_path)

    assert type(stack) is CombinedReward and stack.dimensions == ("first.brightness", "second.brightness")
    for alias, part in stack.parts.items():
        assert type(part) is CachedReward and type(part.reward) is CheckedReward
        assert part.reward.inner is built[alias]  # wrapped once: no second CheckedReward or CachedReward inside
    assert (stack.parts["first"].provider, stack.parts["second"].provider) == ("plugin_one 1.0", "plugin_two 2.0")

    with pytest.raises(RewardOutputError, match=r"^reward 'broken' \(plugin plugin_two\) returned a non-finite score"):
        stack.score(sample_videos(2), PROMPTS)
    assert [p.name for p in tmp_path.iterdir()] == [stack.parts["first"].key]  # the bad part's scores were never stored


def test_a_single_reward_is_one_part_and_keeps_its_dimension_names(tmp_path):
    reward = Brightness()
    stack = reward_stack(reward, two_plugins(), tmp_path)
    assert type(stack) is CachedReward and type(stack.reward) is CheckedReward and stack.reward.inner is reward
    assert stack.dimensions == ("brightness",) and stack.reward.source == "plugin_one"
