"""The ``vbench`` reward: VBench's quality dimensions implemented natively, with their Quality Score."""

import vipkit
from vipkit_vbench.reward import VBenchReward

__all__ = ["VBenchReward"]


@vipkit.hookimpl
def register_rewards(register):
    register(VBenchReward)
