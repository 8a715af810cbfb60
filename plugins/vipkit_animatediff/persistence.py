"""Save and load a (pruned) AnimateDiff model: diffusers layout, safetensors only, plus a manifest.

A diffusers ``from_pretrained`` of a pruned UNet would silently rebuild the removed blocks with
random weights and compute a different model. So a pruned model's folder holds no ``model_index.json``
and its UNet weights under a name diffusers does not look for (``PRUNED_UNET_WEIGHTS``): plain
diffusers refuses it with an error instead. vipkit rebuilds the UNet from its config, replays the
removals in order, gives width-pruned layers their recorded smaller shapes (``resized_layers``, which no
diffusers config can express) and loads the pruned state dict strictly. An unpruned model is a plain diffusers
pipeline folder. A pickle file in the folder is refused before anything loads (vipkit never writes one), and
no config written records where the parts were loaded from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DDIMScheduler, UNetMotionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from vipkit.weights import (
    check_weight_folder,
    forget_source_paths,
    keep_saved_tokenizer_config,
    scrub_source_paths,
)
from vipkit_animatediff.blocks import prunable_unet
from vipkit_animatediff.parts import ModelParts

MANIFEST = "animatediff.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
PRUNED_UNET_WEIGHTS = "vipkit_pruned_unet.safetensors"
"""A pruned UNet's weights: a name diffusers' ``from_pretrained`` does not load, so it fails loudly there."""
FORMAT_VERSION = 2  # 2: pruned UNets under PRUNED_UNET_WEIGHTS, no model_index.json (1: diffusers' names for all)


def is_saved_model(source: str | Path) -> bool:
    """Whether ``source`` is a directory written by ``save_parts`` (a compressed vipkit model)."""
    return (Path(source).expanduser() / MANIFEST).is_file()


def save_parts(directory: Path, parts: ModelParts, pipeline: Any, settings: dict[str, Any]) -> None:
    """Write every component in diffusers layout; the manifest goes last, so its presence means complete."""
    directory.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()  # its per-shard bar would break the run's own progress display
    parts.vae.save_pretrained(directory / "vae", safe_serialization=True)
    parts.text_encoder.save_pretrained(directory / "text_encoder")
    parts.tokenizer.save_pretrained(directory / "tokenizer")
    parts.scheduler.save_pretrained(directory / "scheduler")
    unet_dir = directory / "unet"
    unet_dir.mkdir(exist_ok=True)
    parts.unet.module.save_config(unet_dir)
    state = {key: tensor.detach().contiguous() for key, tensor in parts.unet.module.state_dict().items()}
    resized = parts.unet.resized  # width pruning's narrower layers (vipkit.width_shapes)
    pruned = bool(parts.unet.removed or resized)
    save_file(state, unet_dir / (PRUNED_UNET_WEIGHTS if pruned else UNET_WEIGHTS), metadata={"format": "pt"})
    if not pruned:
        pipeline.save_config(directory)  # model_index.json: a plain diffusers pipeline
    scrub_source_paths(directory)  # no machine path: the same parts save to the same bytes
    manifest = {
        "family": "animatediff",
        "format_version": FORMAT_VERSION,
        "removed_blocks": parts.unet.removed,
        **({"resized_layers": resized} if resized else {}),
        "generation_settings": settings,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def unet_weights(directory: Path) -> Path:
    """The UNet weights file of a saved model: the pruned name, else diffusers' (unpruned, or format 1)."""
    pruned = directory / "unet" / PRUNED_UNET_WEIGHTS
    return pruned if pruned.is_file() else directory / "unet" / UNET_WEIGHTS


def load_saved_parts(directory: Path) -> ModelParts:
    """Rebuild the parts written by ``save_parts``; the UNet bit-identical, removals included."""
    transformers_logging.disable_progress_bar()
    check_weight_folder(directory, refuse_any_pickle=True)  # no pickle is ever opened; a truncated file is named
    manifest = json.loads((directory / MANIFEST).read_text())
    with init_empty_weights():  # parameters on the meta device: no time spent on random init
        module = UNetMotionModel.from_config(UNetMotionModel.load_config(directory / "unet"))
    unet = prunable_unet(module)
    for name in manifest["removed_blocks"]:
        unet.remove(name, keep_original=False)
    unet.resize(manifest.get("resized_layers", {}))  # width-pruned layers get their smaller shapes first
    module.load_state_dict(load_file(unet_weights(directory)), strict=True, assign=True)
    dtype = getattr(torch, manifest["generation_settings"]["dtype"])  # the files' own: loaded without a cast
    parts = ModelParts(
        unet=unet,
        vae=AutoencoderKL.from_pretrained(directory / "vae", dtype=dtype, use_safetensors=True),
        text_encoder=CLIPTextModel.from_pretrained(directory / "text_encoder", dtype=dtype, use_safetensors=True),
        tokenizer=CLIPTokenizer.from_pretrained(directory / "tokenizer"),
        scheduler=DDIMScheduler.from_pretrained(directory / "scheduler"),
        default_settings=manifest["generation_settings"],
    )
    forget_source_paths(module, parts.vae, parts.text_encoder, parts.tokenizer, parts.scheduler)  # no path saved
    keep_saved_tokenizer_config(parts.tokenizer, directory / "tokenizer")  # re-saved: the same bytes
    return parts
