"""Where a model's parts come from: a preset, a vipkit-saved directory, or hub / local weights.

Hub ids and local directories are told apart the way people write them: an existing path, or one
that starts with ``/ . ~`` or has more than one ``/``, is local; ``owner/name`` is a hub id. Every
failure becomes a one-paragraph ``VipkitError`` naming the option and the path or id. Only safetensors
weights load (``use_safetensors=True``; a local folder is checked file by file first) and no remote
code is ever run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from diffusers import MotionAdapter, StableDiffusionPipeline

from vipkit.errors import VipkitError
from vipkit.model_source import resolve_device
from vipkit.weights import check_weight_folder
from vipkit_animatediff.parts import ModelParts
from vipkit_animatediff.persistence import is_saved_model, load_saved_parts
from vipkit_animatediff.sd15 import REAL_SETTINGS, random_parts
from vipkit_animatediff.tiny import inference_scheduler, preset_parts, tiny_parts

if TYPE_CHECKING:
    from vipkit_animatediff.family import AnimateDiff

SD_PIPELINE = "a Stable Diffusion 1.5 diffusers pipeline"
ADAPTER = "an AnimateDiff MotionAdapter"
SAVED_MODEL = "a compressed model saved by vipkit"

T = TypeVar("T")


def load_parts(config: AnimateDiff.Config, dtype: torch.dtype) -> ModelParts:
    """The parts the config asks for: ``preset`` wins, then a vipkit-saved ``base``, then hub / local weights."""
    if config.preset == "tiny":
        return tiny_parts(config.preset_seed)
    if config.preset == "random":
        return random_parts(config.preset_seed, resolve_device(config.device))
    if is_saved_model(config.base):
        return _guarded("base", config.base, SAVED_MODEL, lambda: load_saved_parts(Path(config.base).expanduser()))
    adapter_source = _located("motion_adapter", config.motion_adapter, ADAPTER)
    base_source = _located("base", config.base, SD_PIPELINE)  # both checked before the slow part
    adapter = _guarded(
        "motion_adapter",
        adapter_source,
        ADAPTER,
        lambda: MotionAdapter.from_pretrained(adapter_source, dtype=dtype, use_safetensors=True),
    )
    sd = _guarded(
        "base",
        base_source,
        SD_PIPELINE,
        lambda: StableDiffusionPipeline.from_pretrained(
            base_source,
            dtype=dtype,
            use_safetensors=True,
            safety_checker=None,  # passed components are not downloaded
            feature_extractor=None,
            requires_safety_checker=False,
        ),
    )
    # The motion UNet takes over the 2D UNet's and the adapter's tensors. AnimateDiffPipeline would build it
    # with random weights, copy them in and cast it to the dtype it already has (a warning every load).
    components = {**sd.components, "motion_adapter": adapter, "scheduler": inference_scheduler(sd.scheduler.config)}
    return _guarded(
        "motion_adapter", adapter_source, f"{ADAPTER} for this base", lambda: preset_parts(components, REAL_SETTINGS)
    )


def looks_local(source: str) -> bool:
    """Whether ``source`` is written as a local path rather than an ``owner/name`` hub id."""
    return source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1


def _located(option: str, source: str, what: str) -> str:
    """The existing local path for ``source`` (its weight files checked), or ``source`` as a hub id.

    A local-looking path that does not exist was refused by ``Config`` validation already.
    """
    path = Path(source).expanduser()
    if path.exists():
        _guarded(option, str(path), what, lambda: check_weight_folder(path))
        return str(path)
    return source


def _guarded(option: str, source: str, what: str, build: Callable[[], T]) -> T:
    """Run ``build``, turning every failure (hub, file, format) into a VipkitError naming the option."""
    try:
        return build()
    except VipkitError as exc:  # already says what is wrong and what to do
        raise VipkitError(f"{option} = {source!r}: {exc}") from exc
    except Exception as exc:  # the user's to fix: wrong path, offline hub, not that kind of checkpoint
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise VipkitError(
            f"could not load {option} = {source!r} as {what}: {type(exc).__name__}: {reason} "
            f"Without internet access, download it beforehand and set {option} to the local directory."
        ) from exc
