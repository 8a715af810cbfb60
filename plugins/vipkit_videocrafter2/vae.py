"""VideoCrafter2's VAE: the Stable Diffusion KL autoencoder, run frame by frame through diffusers.

The official checkpoint keeps it under ``first_stage_model.`` in the original LDM layout;
diffusers' own single-file converter maps those keys. The architecture is read from the weights
(widths per level, blocks per level, latent channels), so smaller test VAEs convert the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from torch import Tensor

from vipkit import VipkitError
from vipkit_videocrafter2.schedule import LATENT_SCALE

LDM_VAE_PREFIX = "first_stage_model."
SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
"""``AutoencoderKL`` options of the SD KL autoencoder VideoCrafter2 ships (83,653,863 parameters)."""


def vae_config_from_ldm(state: Mapping[str, Tensor], prefix: str = LDM_VAE_PREFIX) -> dict:
    """The diffusers ``AutoencoderKL`` config of the LDM VAE stored under ``prefix`` (SD: 128-256-512-512)."""
    levels = sorted(
        {int(key[len(prefix) :].split(".")[2]) for key in state if key.startswith(prefix + "encoder.down.")}
    )
    if not levels:
        raise VipkitError(f"no VAE in the checkpoint: no key starts with {prefix + 'encoder.down.'!r}")
    start = f"{prefix}encoder.down.0.block."
    blocks = {key[len(start) :].split(".")[0] for key in state if key.startswith(start)}
    widths = [int(state[f"{prefix}encoder.down.{level}.block.0.conv1.weight"].shape[0]) for level in levels]
    return dict(
        in_channels=int(state[prefix + "encoder.conv_in.weight"].shape[1]),
        out_channels=int(state[prefix + "decoder.conv_out.weight"].shape[0]),
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
        block_out_channels=widths,
        layers_per_block=len(blocks),
        latent_channels=int(state[prefix + "post_quant_conv.weight"].shape[0]),
        norm_num_groups=32,
        sample_size=512,
        scaling_factor=LATENT_SCALE,
    )


def vae_from_ldm(state: Mapping[str, Tensor], prefix: str = LDM_VAE_PREFIX) -> AutoencoderKL:
    """A frozen diffusers ``AutoencoderKL`` holding the LDM VAE found under ``prefix`` in ``state``."""
    config = vae_config_from_ldm(state, prefix)
    vae = AutoencoderKL(**config)
    weights = convert_ldm_vae_checkpoint({k: v for k, v in state.items() if k.startswith(prefix)}, config)
    vae.load_state_dict({key: value.float() for key, value in weights.items()}, strict=True)
    return vae.eval().requires_grad_(False)
