"""vipkit-sharpness: an example third-party reward plugin for vipkit.

vipkit finds this module through the ``vipkit`` entry point in pyproject.toml and calls its hooks;
each hook hands vipkit the component classes it provides.
"""

import vipkit
from vipkit_sharpness.reward import Sharpness

__all__ = ["Sharpness"]


@vipkit.hookimpl
def register_rewards(register):
    register(Sharpness)
