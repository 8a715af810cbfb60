"""The ``clip`` reward: CLIPScore and frame consistency from a transformers CLIP model."""

import vipkit
from vipkit_clip.reward import ClipReward

__all__ = ["ClipReward"]


@vipkit.hookimpl
def register_rewards(register):
    register(ClipReward)
