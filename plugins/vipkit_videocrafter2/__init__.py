"""The ``videocrafter2`` model family: an independent port of VideoCrafter2 that loads the official checkpoint.

``build_unet(official_unet_config)`` is public so that people can convert their own checkpoints.
The UNet needs only torch: diffusers and transformers (VAE, text encoder) load with the family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import vipkit
from vipkit_videocrafter2.unet import build_unet

if TYPE_CHECKING:
    from vipkit_videocrafter2.family import VideoCrafter2

__all__ = ["VideoCrafter2", "build_unet"]


def __getattr__(name: str) -> Any:
    if name == "VideoCrafter2":
        from vipkit_videocrafter2.family import VideoCrafter2

        return VideoCrafter2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@vipkit.hookimpl
def register_models(register: vipkit.hookspecs.Register) -> None:
    from vipkit_videocrafter2.family import VideoCrafter2

    register(VideoCrafter2)
