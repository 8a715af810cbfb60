"""Where a model's parts come from: a preset, a vipkit-saved directory, or hub / local weights.

Hub ids and local directories are told apart by ``vipkit.model_source.is_local_path``. Both sources are
checked before either loads, and every failure becomes a one-paragraph ``VipkitError`` naming the option
and the path or id. Only safetensors weights load (``use_safetensors=True``; a local folder is checked
file by file first) and no remote code is ever run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline

from vipkit import VipkitError
from vipkit.export import export_manifest
from vipkit.model_source import ModelSource, hub_offline, is_local_path, model_source, resolve_device
from vipkit.weights import check_weight_folder, forget_source_paths
from vipkit_animatediff.blocks import prunable_unet
from vipkit_animatediff.parts import ModelParts
from vipkit_animatediff.persistence import is_saved_model, load_saved_parts
from vipkit_animatediff.sd15 import REAL_SETTINGS, random_parts
from vipkit_animatediff.tiny import inference_scheduler, preset_parts, tiny_parts

if TYPE_CHECKING:
    from vipkit_animatediff.family import AnimateDiff

SD_PIPELINE = "a Stable Diffusion 1.5 diffusers pipeline"
ADAPTER = "an AnimateDiff MotionAdapter"
SAVED_MODEL = "a compressed model saved by vipkit"
ANIMATEDIFF_PIPELINE = "an AnimateDiff diffusers pipeline"

T = TypeVar("T")


def load_parts(config: AnimateDiff.Config, dtype: torch.dtype) -> ModelParts:
    """The parts the config asks for: ``preset`` wins, then a vipkit-saved ``base``, then hub / local weights."""
    if config.preset == "tiny":
        return tiny_parts(config.preset_seed)
    if config.preset == "random":
        return random_parts(config.preset_seed, resolve_device(config.device))
    if is_saved_model(config.base):
        saved = model_source(config.base, "base", SAVED_MODEL)
        return _guarded(saved, SAVED_MODEL, lambda: load_saved_parts(Path(saved.source)))
    parts = _pipeline_parts(config.base, dtype) if _is_animatediff_pipeline(config.base) else _sd_parts(config, dtype)
    parts.unet.remove_zeroed()  # an export's removed blocks are zeros: removing them is exact and keeps the speed-up
    forget_source_paths(parts.unet.module, parts.vae, parts.text_encoder, parts.tokenizer, parts.scheduler)
    return parts


def _sd_parts(config: AnimateDiff.Config, dtype: torch.dtype) -> ModelParts:
    """An SD-1.5 pipeline (``base``) with a motion adapter (``motion_adapter``), merged."""
    adapter_source, base_source = _sources(config)
    adapter = _guarded(
        adapter_source,
        ADAPTER,
        lambda: MotionAdapter.from_pretrained(adapter_source.source, dtype=dtype, use_safetensors=True),
    )
    sd = _guarded(
        base_source,
        SD_PIPELINE,
        lambda: StableDiffusionPipeline.from_pretrained(
            base_source.source,
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
    try:
        return preset_parts(
            components, _settings(Path(adapter_source.source)) if adapter_source.local else REAL_SETTINGS
        )
    except Exception as exc:  # both loaded, but they do not fit together
        raise adapter_source.load_error(
            f"{ADAPTER} for this base", None, " ".join(f"{type(exc).__name__}: {exc}".split())
        ) from exc


def _is_animatediff_pipeline(base: str) -> bool:
    """Whether ``base`` is a whole AnimateDiff pipeline folder (``vipkit export --format diffusers`` writes one)
    rather than an SD-1.5 one, by its model_index.json; offline, a hub id not in the cache is left to the SD-1.5
    path, which lists every missing model at once."""
    if is_local_path(base):
        index: str | Path | None = Path(base).expanduser() / "model_index.json"
    elif hub_offline():
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(base, "model_index.json")
    else:
        from huggingface_hub import hf_hub_download

        source = model_source(base, "base", SD_PIPELINE)
        index = _guarded(source, SD_PIPELINE, lambda: hf_hub_download(base, "model_index.json"))
    if not isinstance(index, str | Path):
        return False
    try:
        return json.loads(Path(index).read_text(encoding="utf-8")).get("_class_name") == AnimateDiffPipeline.__name__
    except (OSError, ValueError, AttributeError):
        return False


def _pipeline_parts(base: str, dtype: torch.dtype) -> ModelParts:
    """The parts of an AnimateDiff pipeline folder; its generation settings are the export's, else SD-1.5's."""
    source = model_source(base, "base", ANIMATEDIFF_PIPELINE)
    if source.local:
        _guarded(source, ANIMATEDIFF_PIPELINE, partial(check_weight_folder, Path(source.source)))
    source.require_available(ANIMATEDIFF_PIPELINE)
    pipe = _guarded(
        source,
        ANIMATEDIFF_PIPELINE,
        lambda: AnimateDiffPipeline.from_pretrained(source.source, dtype=dtype, use_safetensors=True),
    )
    return ModelParts(
        unet=prunable_unet(pipe.unet),
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler=pipe.scheduler,
        default_settings=_settings(Path(source.source)) if source.local else dict(REAL_SETTINGS),
    )


def _settings(folder: Path) -> dict[str, Any]:
    """The generation settings a vipkit export recorded, else the real model's defaults."""
    manifest = export_manifest(folder)
    return dict(manifest["generation_settings"]) if manifest else dict(REAL_SETTINGS)


def _sources(config: AnimateDiff.Config) -> tuple[ModelSource, ModelSource]:
    """``motion_adapter`` and ``base`` resolved and checked (weight files, an offline hub) before the slow loads;
    the problems of both are reported together."""
    sources: list[ModelSource] = []
    problems: list[str] = []
    for option, what in (("motion_adapter", ADAPTER), ("base", SD_PIPELINE)):
        try:
            source = model_source(getattr(config, option), option, what)
            if source.local:
                _guarded(source, what, partial(check_weight_folder, Path(source.source)))
            source.require_available(what)
            sources.append(source)
        except VipkitError as exc:
            problems.append(str(exc))
    if problems:
        raise VipkitError(" ".join(problems))
    adapter, base = sources
    return adapter, base


def _guarded(source: ModelSource, what: str, build: Callable[[], T]) -> T:
    """Run ``build``, turning every failure (hub, file, format) into a VipkitError naming the option."""
    try:
        return build()
    except Exception as exc:  # the user's to fix: wrong folder, unreachable hub, not that kind of checkpoint
        raise source.load_error(what, exc, f"Point {source.option} at a folder holding {what}.") from exc
