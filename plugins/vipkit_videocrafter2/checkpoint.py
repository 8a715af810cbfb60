"""Read an official VideoCrafter2 ``model.ckpt`` safely and split it into the family's parts.

``torch.load(..., weights_only=True)`` unpickles tensors and plain containers only, so a
checkpoint cannot run code while it is read; ``mmap=True`` leaves the 5 GB file on disk until a
tensor is used. Like the official loader, a DeepSpeed dump (top-level ``module``) has 16 leading
characters (``_forward_module.``) stripped from each key; otherwise ``state_dict`` is used.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vipkit import VipkitError
from vipkit.prunable import PrunableModule
from vipkit_videocrafter2.blocks import prunable_unet
from vipkit_videocrafter2.parts import ModelParts
from vipkit_videocrafter2.text_encoder import (
    OPEN_CLIP_HEAD_WIDTH,
    text_encoder_from_open_clip,
)
from vipkit_videocrafter2.unet import build_unet
from vipkit_videocrafter2.vae import vae_from_ldm

UNET_PREFIX = "model.diffusion_model."
DEEPSPEED_PREFIX_LENGTH = 16  # len("_forward_module.")


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The flat state dict of an official checkpoint (PyTorch Lightning, DeepSpeed, or a bare state dict)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VipkitError(f"checkpoint {str(path)!r} does not exist; download model.ckpt of VideoCrafter2 first")
    try:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            raw = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if culprit is None:  # not an object the safe loader refused: a damaged file
            raise VipkitError(f"cannot read checkpoint {str(path)!r}: it is not a valid torch file") from None
        raise VipkitError(
            f"refused to read {str(path)!r}: it holds an object of type {culprit[1]}, not only tensors and plain "
            "containers, and unpickling it could run code"
        ) from None
    except Exception as exc:  # truncated download, not a torch file, ...
        raise VipkitError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(raw, Mapping) and "module" in raw:
        return {key[DEEPSPEED_PREFIX_LENGTH:]: value for key, value in raw["module"].items()}
    if isinstance(raw, Mapping) and "state_dict" in raw:
        return dict(raw["state_dict"])
    if isinstance(raw, Mapping) and all(isinstance(value, Tensor) for value in raw.values()):
        return dict(raw)
    raise VipkitError(f"{str(path)!r} is not a VideoCrafter checkpoint: no 'state_dict' or 'module' entry")


def unet_from_state(state: Mapping[str, Tensor], unet_config: Mapping[str, Any]) -> PrunableModule:
    """The UNet of ``unet_config`` holding the ``model.diffusion_model.*`` tensors of ``state`` (no copy)."""
    weights = {key[len(UNET_PREFIX) :]: value for key, value in state.items() if key.startswith(UNET_PREFIX)}
    with torch.device("meta"):
        unet = build_unet(unet_config)
    expected = unet.state_dict().keys()
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise VipkitError(
            f"the checkpoint's UNet does not fit the UNet config: {len(missing)} missing keys "
            f"({', '.join(missing[:3]) or '-'}), {len(unexpected)} unexpected keys ({', '.join(unexpected[:3]) or '-'}). "
            "Pass the `unet_config.params` table of the YAML the checkpoint was trained with."
        )
    unet.load_state_dict(weights, strict=True, assign=True)
    prunable = prunable_unet(unet)
    prunable.remove_zeroed()  # units an export wrote as zeros (vipkit export --format official): exact, and faster
    return prunable


def parts_from_checkpoint(
    state: Mapping[str, Tensor],
    unet_config: Mapping[str, Any],
    tokenizer: Any,
    settings: dict[str, Any],
    text_head_width: int = OPEN_CLIP_HEAD_WIDTH,
) -> ModelParts:
    """UNet, OpenCLIP text encoder and VAE of an official-layout state dict, ready to use."""
    return ModelParts(
        unet=unet_from_state(state, unet_config),
        unet_config=dict(unet_config),
        vae=vae_from_ldm(state),
        text_encoder=text_encoder_from_open_clip(state, text_head_width),
        tokenizer=tokenizer,
        default_settings=dict(settings),
    )
