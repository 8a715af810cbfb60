"""The shapes world: a procedural text-to-video world and the ``shapes`` reward that measures it."""

import vipkit
from vipkit_shapes.reward import ShapesReward

__all__ = ["ShapesReward"]


@vipkit.hookimpl
def register_rewards(register):
    register(ShapesReward)
