"""The ``videocrafter2`` model family: an independent port of VideoCrafter2 that loads the official checkpoint.

``build_unet(official_unet_config)`` is public so that people can convert their own checkpoints.
"""

from __future__ import annotations

import vipkit
from vipkit_videocrafter2.family import VideoCrafter2
from vipkit_videocrafter2.unet import build_unet

__all__ = ["VideoCrafter2", "build_unet"]


@vipkit.hookimpl
def register_models(register: vipkit.hookspecs.Register) -> None:
    register(VideoCrafter2)
