"""Prunable units of the VideoCrafter2 UNet: list them with sizes, remove them exactly, put them back.

Every unit is residual or shape-preserving, so a pass-through in its place is the exact removal
(``vipkit.prunable``), and the keys of all other parameters keep their official numbering:

* ``spatial_attention`` / ``temporal_attention``: a Spatial/TemporalTransformer (``init_attn.0`` too);
* ``temporal_conv``: the temporal convolution inside a ResBlock;
* ``resblock``: a ResBlock whose input and output widths are equal and which does not resample;
* ``middle``: the whole middle block;
* ``encoder_decoder_pair``: input block ``k`` with the output block that consumes its skip
  (BK-SDM style). Only pairs whose removal keeps every shape are listed, worked out from the
  blocks' channels: the input block and the output block (without its skip) must keep their
  width and resolution. For VideoCrafter2 these are (1, 10), (8, 3), (10, 1), (11, 0).
"""

from __future__ import annotations

from torch import nn

from vipkit import Block
from vipkit.prunable import PATH_JOIN, PassThrough, PrunableModule, parameter_count
from vipkit_videocrafter2.attention import SpatialTransformer, TemporalTransformer
from vipkit_videocrafter2.layers import ResBlock
from vipkit_videocrafter2.names import ZERO_IDENTITY_KINDS
from vipkit_videocrafter2.unet import VideoCrafterUNet


def pair_name(input_index: int, output_index: int) -> str:
    return f"input_blocks.{input_index}{PATH_JOIN}output_blocks.{output_index}"


def safe_pairs(unet: VideoCrafterUNet) -> list[tuple[int, int]]:
    """(input k, output j) pairs whose joint removal keeps every tensor shape; j consumes k's skip."""
    last = len(unet.output_shapes) - 1
    return [
        (k, last - k)
        for k in range(1, len(unet.input_shapes))
        if unet.input_shapes[k].keeps_shape and unet.output_shapes[last - k].keeps_shape
    ]


def _units(path: str, container: nn.Module) -> list[Block]:
    found = []
    for index, layer in enumerate(container):
        name = f"{path}.{index}"
        if isinstance(layer, ResBlock):
            if layer.in_channels == layer.out_channels and layer.resample is None:
                found.append(Block(name, "resblock", parameter_count(layer)))
            conv = getattr(layer, "temopral_conv", None)
            if conv is not None and not isinstance(conv, PassThrough):
                found.append(Block(f"{name}.temopral_conv", "temporal_conv", parameter_count(conv)))
        elif isinstance(layer, SpatialTransformer):
            found.append(Block(name, "spatial_attention", parameter_count(layer)))
        elif isinstance(layer, TemporalTransformer):
            found.append(Block(name, "temporal_attention", parameter_count(layer)))
    return found


def list_blocks(unet: VideoCrafterUNet) -> list[Block]:
    """Every unit still present, in execution order, then the still-removable encoder/decoder pairs."""
    found: list[Block] = []
    containers = [("input_blocks.0", unet.input_blocks[0])]
    if hasattr(unet, "init_attn"):
        containers.append(("init_attn", unet.init_attn))
    containers += [(f"input_blocks.{k}", block) for k, block in enumerate(unet.input_blocks) if k]
    containers.append(("middle_block", unet.middle_block))
    containers += [(f"output_blocks.{j}", block) for j, block in enumerate(unet.output_blocks)]
    for path, container in containers:
        if isinstance(container, PassThrough):
            continue
        if path == "middle_block":
            found.append(Block(path, "middle", parameter_count(container)))
        found += _units(path, container)
    for k, j in safe_pairs(unet):
        encoder, decoder = unet.input_blocks[k], unet.output_blocks[j]
        if not isinstance(encoder, PassThrough) and not isinstance(decoder, PassThrough):
            found.append(
                Block(pair_name(k, j), "encoder_decoder_pair", parameter_count(encoder) + parameter_count(decoder))
            )
    return found


def prunable_unet(unet: VideoCrafterUNet) -> PrunableModule:
    """``unet`` with its units (and safe encoder/decoder pairs, removed together) removable and restorable."""
    return PrunableModule(unet, list_blocks, zero_identity_kinds=ZERO_IDENTITY_KINDS)
