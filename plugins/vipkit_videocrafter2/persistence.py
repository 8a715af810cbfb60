"""Save and load a (pruned) VideoCrafter2 model: safetensors only, plus a manifest written last.

Layout: ``unet.safetensors`` (official UNet keys, prefix stripped; pruned units simply absent),
``text_encoder/`` and ``tokenizer/`` (transformers), ``vae/`` (diffusers) and ``videocrafter2.json``
with the official UNet config, the removed units in order and the generation settings. Loading
rebuilds the UNet from its config, replays the removals, then loads the weights strictly. A pickle file
in the folder is refused before anything loads (vipkit never writes one), and the VAE and text encoder load
with ``use_safetensors=True``. No config written records where the parts were loaded from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from vipkit.weights import (
    check_weight_folder,
    forget_source_paths,
    keep_saved_tokenizer_config,
    scrub_source_paths,
)
from vipkit_videocrafter2.blocks import prunable_unet
from vipkit_videocrafter2.parts import ModelParts
from vipkit_videocrafter2.unet import build_unet

MANIFEST = "videocrafter2.json"
UNET_WEIGHTS = "unet.safetensors"
FORMAT_VERSION = 1


def is_saved_model(source: str | Path) -> bool:
    """Whether ``source`` is a folder written by ``save_parts`` (a converted or compressed model)."""
    return (Path(source).expanduser() / MANIFEST).is_file()


def save_parts(directory: Path, parts: ModelParts, settings: dict[str, Any]) -> None:
    """Write every part; the manifest goes last, so its presence means the folder is complete."""
    directory.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()
    state = {key: tensor.detach().contiguous() for key, tensor in parts.unet.module.state_dict().items()}
    save_file(state, directory / UNET_WEIGHTS, metadata={"format": "pt"})
    parts.text_encoder.save_pretrained(directory / "text_encoder")
    parts.tokenizer.save_pretrained(directory / "tokenizer")
    parts.vae.save_pretrained(directory / "vae", safe_serialization=True)
    scrub_source_paths(directory)  # no machine path: the same parts save to the same bytes
    manifest = {
        "family": "videocrafter2",
        "format_version": FORMAT_VERSION,
        "unet_config": parts.unet_config,
        "removed_blocks": parts.unet.removed,
        **({"resized_layers": parts.unet.resized} if parts.unet.resized else {}),  # width pruning's narrower layers
        "generation_settings": settings,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def load_saved_parts(directory: Path) -> ModelParts:
    """Rebuild the parts written by ``save_parts``; the UNet bit-identical, removals included."""
    transformers_logging.disable_progress_bar()
    check_weight_folder(directory, refuse_any_pickle=True)  # no pickle is ever opened; a truncated file is named
    manifest = json.loads((directory / MANIFEST).read_text())
    with torch.device("meta"):
        unet = prunable_unet(build_unet(manifest["unet_config"]))
    for name in manifest["removed_blocks"]:
        unet.remove(name, keep_original=False)
    unet.resize(manifest.get("resized_layers", {}))  # width-pruned layers get their smaller shapes first
    unet.module.load_state_dict(load_file(directory / UNET_WEIGHTS), strict=True, assign=True)
    vae = AutoencoderKL.from_pretrained(directory / "vae", use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(directory / "text_encoder", use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(directory / "tokenizer")
    forget_source_paths(vae, text_encoder, tokenizer)  # nothing saved or exported from them writes this folder
    keep_saved_tokenizer_config(tokenizer, directory / "tokenizer")  # re-saved: the same bytes
    return ModelParts(
        unet=unet,
        unet_config=manifest["unet_config"],
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        default_settings=manifest["generation_settings"],
    )
