"""The ``videocrafter2`` model family: an independent port of VideoCrafter2 that loads the official checkpoint."""

from __future__ import annotations

from vipkit_videocrafter2.unet import build_unet

__all__ = ["build_unet"]
