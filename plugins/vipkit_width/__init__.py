"""Width pruning: narrower attention and feed-forward layers (fewer heads, fewer channels) through torch-pruning."""

import vipkit
from vipkit_width.pruner import WidthPruner

__all__ = ["WidthPruner"]


@vipkit.hookimpl
def register_pruners(register):
    register(WidthPruner)
