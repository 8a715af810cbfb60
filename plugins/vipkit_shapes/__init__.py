"""The shapes world: a procedural text-to-video world, the ``shapes`` reward that measures it and the
``shapes-smoothness`` reward that measures what ``shapes`` does not (how steadily objects move)."""

import vipkit
from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.smoothness import ShapesSmoothness

__all__ = ["ShapesReward", "ShapesSmoothness"]


@vipkit.hookimpl
def register_rewards(register):
    register(ShapesReward)
    register(ShapesSmoothness)
