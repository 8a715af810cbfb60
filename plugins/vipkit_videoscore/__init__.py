"""The ``videoscore`` reward: TIGER-Lab's VideoScore on transformers' Idefics2, official checkpoints unchanged."""

import vipkit
from vipkit_videoscore.reward import VideoScoreReward

__all__ = ["VideoScoreReward"]


@vipkit.hookimpl
def register_rewards(register):
    register(VideoScoreReward)
