"""The ``cogvideox`` model family: CogVideoX text-to-video (diffusers ``CogVideoXPipeline``) on vipkit's DiT kit."""

from __future__ import annotations

import vipkit
from vipkit_cogvideox.family import CogVideoX

__all__ = ["CogVideoX"]


@vipkit.hookimpl
def register_models(register: vipkit.hookspecs.Register) -> None:
    register(CogVideoX)
