"""The ``tiny`` preset: a random VideoCrafter2-architecture checkpoint in the *official* layout, no download.

``official_checkpoint`` builds such a checkpoint at any size (the ``random`` preset is the released
one's). It has the official key names for all three parts (``model.diffusion_model.``, the OpenCLIP text
tower under ``cond_stage_model.model.``, the LDM VAE under ``first_stage_model.``), so the preset
goes through the same conversion as a real ``model.ckpt``, and tests can save it with
``torch.save`` to exercise the converter end to end. Same seed, bit-identical weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from vipkit.tokenizers import BYTE_LEVEL_VOCAB_SIZE, byte_level_clip_tokenizer
from vipkit_videocrafter2.checkpoint import UNET_PREFIX
from vipkit_videocrafter2.text_encoder import OPEN_CLIP_PREFIX
from vipkit_videocrafter2.unet import build_unet
from vipkit_videocrafter2.unet_config import TINY_UNET_CONFIG
from vipkit_videocrafter2.vae import LDM_VAE_PREFIX

TEXT_HEAD_WIDTH = 16
TINY_SETTINGS = {"height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 4}
"""Generation defaults of the tiny preset (its VAE halves the size: 16 px -> 8 latent)."""


@dataclass(frozen=True)
class CheckpointSizes:
    """What a random official checkpoint is made of: the UNet config, the OpenCLIP text tower (as wide as the
    UNet's ``context_dim``, 77 positions) and the VAE's ``AutoencoderKL`` options."""

    unet_config: dict[str, Any]
    text_layers: int
    text_head_width: int
    vocab_size: int
    vae: dict[str, Any]


TINY_SIZES = CheckpointSizes(
    unet_config=TINY_UNET_CONFIG,
    text_layers=3,  # the penultimate-layer readout uses the first two
    text_head_width=TEXT_HEAD_WIDTH,
    vocab_size=BYTE_LEVEL_VOCAB_SIZE,
    vae=dict(
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ),
)


def tiny_tokenizer() -> Any:
    """A byte-level CLIP tokenizer padding with token 0, as ``open_clip.tokenize`` does."""
    tokenizer = byte_level_clip_tokenizer()
    tokenizer.pad_token = "!"
    return tokenizer


def _open_clip_text_state(
    sizes: CheckpointSizes, generator: torch.Generator, device: torch.device
) -> dict[str, Tensor]:
    width = sizes.unet_config["context_dim"]

    def draw(*shape: int, std: float = 0.1, mean: float = 0.0) -> Tensor:
        return torch.randn(shape, generator=generator, device=device) * std + mean

    state = {"token_embedding.weight": draw(sizes.vocab_size, width), "positional_embedding": draw(77, width, std=0.01)}
    for index in range(sizes.text_layers):
        block = f"transformer.resblocks.{index}."
        state |= {
            block + "ln_1.weight": draw(width, mean=1.0),
            block + "ln_1.bias": draw(width),
            block + "attn.in_proj_weight": draw(3 * width, width),
            block + "attn.in_proj_bias": draw(3 * width),
            block + "attn.out_proj.weight": draw(width, width),
            block + "attn.out_proj.bias": draw(width),
            block + "ln_2.weight": draw(width, mean=1.0),
            block + "ln_2.bias": draw(width),
            block + "mlp.c_fc.weight": draw(4 * width, width),
            block + "mlp.c_fc.bias": draw(4 * width),
            block + "mlp.c_proj.weight": draw(width, 4 * width),
            block + "mlp.c_proj.bias": draw(width),
        }
    state |= {
        "ln_final.weight": draw(width, mean=1.0),
        "ln_final.bias": draw(width),
        "text_projection": draw(width, width),
        "logit_scale": torch.tensor(4.6052, device=device),
    }
    return {OPEN_CLIP_PREFIX + key: value for key, value in state.items()}


def ldm_vae_state(vae: AutoencoderKL) -> dict[str, Tensor]:
    """A diffusers ``AutoencoderKL`` state in the original LDM layout (the inverse of diffusers' converter)."""
    levels = len(vae.config.block_out_channels)

    def up(match: re.Match[str]) -> str:
        return f"decoder.up.{levels - 1 - int(match[1])}.{match[2]}."

    rules: list[tuple[str, Any]] = [
        (r"conv_norm_out", "norm_out"),
        (r"conv_shortcut", "nin_shortcut"),
        (r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
        (r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.", up),
        (r"decoder\.up\.(\d+)\.resnets\.", r"decoder.up.\1.block."),
        (r"decoder\.up\.(\d+)\.upsamplers\.0\.", r"decoder.up.\1.upsample."),
        (r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}."),
        (r"mid_block\.attentions\.0\.group_norm\.", "mid.attn_1.norm."),
        (r"mid_block\.attentions\.0\.to_out\.0\.", "mid.attn_1.proj_out."),
        (r"mid_block\.attentions\.0\.to_([qkv])\.", r"mid.attn_1.\1."),
    ]
    out = {}
    for key, value in vae.state_dict().items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        if ".attn_1." in key and key.endswith("weight") and value.dim() == 2:
            value = value[:, :, None, None]  # LDM attention projections are 1x1 convolutions
        out[LDM_VAE_PREFIX + key] = value
    return out


def official_checkpoint(sizes: CheckpointSizes, seed: int = 0, device: torch.device | None = None) -> dict[str, Tensor]:
    """The state dict of a random official ``model.ckpt`` of ``sizes``: UNet, OpenCLIP text tower and VAE, official names.

    Drawn directly on ``device`` (default the CPU; on ``meta`` nothing is allocated). Same seed and device, same weights.
    """
    device = torch.device("cpu") if device is None else device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        unet = build_unet(sizes.unet_config)  # default init: unlike the official one, no layer is zeroed
        vae = AutoencoderKL(**sizes.vae)
    generator = torch.Generator("cpu" if device.type == "meta" else device).manual_seed(seed)  # meta draws nothing
    state = {UNET_PREFIX + key: value for key, value in unet.state_dict().items()}
    state |= _open_clip_text_state(sizes, generator, device)
    state |= ldm_vae_state(vae)
    return state


def tiny_checkpoint(seed: int = 0) -> dict[str, Tensor]:
    """The state dict of a tiny official ``model.ckpt``, on the CPU."""
    return official_checkpoint(TINY_SIZES, seed)
