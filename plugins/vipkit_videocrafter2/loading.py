"""Where a VideoCrafter2 model's parts come from: a preset or a converted / saved folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vipkit import VipkitError
from vipkit.model_source import resolve_device
from vipkit_videocrafter2.checkpoint import parts_from_checkpoint
from vipkit_videocrafter2.parts import ModelParts
from vipkit_videocrafter2.persistence import MANIFEST, is_saved_model, load_saved_parts
from vipkit_videocrafter2.text_encoder import OPEN_CLIP_HEAD_WIDTH, VIT_H_14_TEXT
from vipkit_videocrafter2.tiny import (
    TINY_SETTINGS,
    TINY_SIZES,
    CheckpointSizes,
    official_checkpoint,
    tiny_tokenizer,
)
from vipkit_videocrafter2.unet_config import VC2_UNET_CONFIG
from vipkit_videocrafter2.vae import SD_VAE

if TYPE_CHECKING:
    from vipkit_videocrafter2.family import VideoCrafter2

REAL_SETTINGS = {"height": 320, "width": 512, "num_frames": 16, "num_inference_steps": 50}
"""Generation defaults of the released VideoCrafter2 (``scripts/run_text2video.sh``)."""

RANDOM_SIZES = CheckpointSizes(
    unet_config=VC2_UNET_CONFIG,
    text_layers=VIT_H_14_TEXT["layers"],
    text_head_width=OPEN_CLIP_HEAD_WIDTH,
    vocab_size=VIT_H_14_TEXT["vocab_size"],
    vae=SD_VAE,
)
"""The ``random`` preset: the released model's sizes (1.41 B UNet, ViT-H-14 text tower, SD VAE)."""


def load_parts(config: VideoCrafter2.Config) -> ModelParts:
    """The parts the config asks for: ``preset`` wins, else the folder ``base`` names."""
    if config.preset == "tiny":  # built on the CPU: the same weights on every machine
        return preset_parts(TINY_SIZES, TINY_SETTINGS, config.preset_seed)
    if config.preset == "random":  # built where it runs: 1.85 B parameters never pass through CPU memory
        return preset_parts(RANDOM_SIZES, REAL_SETTINGS, config.preset_seed, resolve_device(config.device))
    if config.base is None:
        raise VipkitError(
            "model.base is not set: point it at a folder written by "
            "`python -m vipkit_videocrafter2.convert model.ckpt OUT_DIR --tokenizer TOKENIZER_DIR`, "
            "or set preset = 'tiny' or 'random' for a random model (no download)"
        )
    if not is_saved_model(config.base):
        path = Path(config.base).expanduser()
        hint = (
            f"convert it first: python -m vipkit_videocrafter2.convert {config.base} OUT_DIR --tokenizer TOKENIZER_DIR"
            if path.is_file()
            else "convert the official model.ckpt with `python -m vipkit_videocrafter2.convert` and point base at its output"
        )
        raise VipkitError(f"base = {config.base!r} is not a converted VideoCrafter2 folder (no {MANIFEST}); {hint}")
    try:
        return load_saved_parts(Path(config.base).expanduser())
    except Exception as exc:  # a damaged or partial folder
        raise VipkitError(f"could not load base = {config.base!r}: {type(exc).__name__}: {exc}") from exc


def preset_parts(
    sizes: CheckpointSizes, settings: dict[str, Any], seed: int, device: torch.device | None = None
) -> ModelParts:
    """A random checkpoint of ``sizes`` in the official layout, converted as a real one is, on ``device`` (default CPU)."""
    device = torch.device("cpu") if device is None else device
    with device:
        state = official_checkpoint(sizes, seed, device)
        return parts_from_checkpoint(state, sizes.unet_config, tiny_tokenizer(), settings, sizes.text_head_width)
