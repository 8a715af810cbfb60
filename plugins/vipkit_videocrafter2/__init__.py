"""The ``videocrafter2`` model family: an independent port of VideoCrafter2 that loads the official checkpoint.

``build_unet(official_unet_config)`` is public so that people can convert their own checkpoints.
The UNet needs only torch: diffusers and transformers (VAE, text encoder) load with the family.
``build_unet`` is imported on first use, so registering the family imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import vipkit
from vipkit_videocrafter2.family import VideoCrafter2

if TYPE_CHECKING:
    from vipkit_videocrafter2.unet import build_unet

__all__ = ["VideoCrafter2", "build_unet"]


def __getattr__(name: str) -> Any:
    if name == "build_unet":
        from vipkit_videocrafter2.unet import build_unet

        return build_unet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@vipkit.hookimpl
def register_models(register: vipkit.hookspecs.Register) -> None:
    register(VideoCrafter2)
