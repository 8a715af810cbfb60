"""The ``wan`` model family: Wan 2.1 text-to-video (diffusers ``WanPipeline``) on vipkit's DiT kit."""

from __future__ import annotations

import vipkit
from vipkit_wan.family import Wan

__all__ = ["Wan"]


@vipkit.hookimpl
def register_models(register: vipkit.hookspecs.Register) -> None:
    register(Wan)
