"""Prunable units of the VideoCrafter2 UNet: list them with sizes, remove them exactly, put them back.

Every unit is residual or shape-preserving, so a ``RemovedUnit`` (identity) in its place is the
exact removal, and the keys of all other parameters keep their official numbering:

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

import copy

from torch import nn

from vipkit import Block
from vipkit.errors import VipkitError
from vipkit_videocrafter2.attention import SpatialTransformer, TemporalTransformer
from vipkit_videocrafter2.layers import ResBlock
from vipkit_videocrafter2.unet import RemovedUnit, VideoCrafterUNet

KINDS = ("spatial_attention", "temporal_attention", "temporal_conv", "resblock", "middle", "encoder_decoder_pair")


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pair_name(input_index: int, output_index: int) -> str:
    return f"input_blocks.{input_index}+output_blocks.{output_index}"


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
                found.append(Block(name, "resblock", _params(layer)))
            conv = getattr(layer, "temopral_conv", None)
            if conv is not None and not isinstance(conv, RemovedUnit):
                found.append(Block(f"{name}.temopral_conv", "temporal_conv", _params(conv)))
        elif isinstance(layer, SpatialTransformer):
            found.append(Block(name, "spatial_attention", _params(layer)))
        elif isinstance(layer, TemporalTransformer):
            found.append(Block(name, "temporal_attention", _params(layer)))
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
        if isinstance(container, RemovedUnit):
            continue
        if path == "middle_block":
            found.append(Block(path, "middle", _params(container)))
        found += _units(path, container)
    for k, j in safe_pairs(unet):
        encoder, decoder = unet.input_blocks[k], unet.output_blocks[j]
        if not isinstance(encoder, RemovedUnit) and not isinstance(decoder, RemovedUnit):
            found.append(Block(pair_name(k, j), "encoder_decoder_pair", _params(encoder) + _params(decoder)))
    return found


class PrunableUNet:
    """The UNet plus its removed units, kept outside the module tree (not counted, trained nor saved).

    ``restore`` puts back the very same module objects, also into an ancestor that is itself removed.
    """

    def __init__(self, module: VideoCrafterUNet) -> None:
        self.module = module
        self._stash: dict[str, dict[str, nn.Module | None]] = {}  # block -> {module path: original}

    @property
    def removed(self) -> list[str]:
        """Removed block names in removal order."""
        return list(self._stash)

    def blocks(self) -> list[Block]:
        return list_blocks(self.module)

    def remove(self, name: str, *, keep_original: bool = True) -> None:
        """Replace block ``name`` by RemovedUnit(s); ``keep_original=False`` drops its weights for good."""
        present = {block.name for block in self.blocks()}
        if name not in present:
            state = "was already removed" if name in self._stash else "is not a prunable block"
            raise VipkitError(
                f"cannot remove block {name!r}: it {state}. Removable blocks: {', '.join(sorted(present)) or '(none)'}"
            )
        originals: dict[str, nn.Module | None] = {}
        for path in name.split("+"):
            parent, attribute = self._parent(path)
            original = parent.get_submodule(attribute)
            parent.set_submodule(attribute, RemovedUnit(type(original).__name__))
            originals[path] = original if keep_original else None
        self._stash[name] = originals

    def restore(self, name: str) -> None:
        """Put a removed block back exactly where it was."""
        if name not in self._stash:
            raise VipkitError(
                f"cannot restore block {name!r}: it is not removed. Removed blocks: {', '.join(self._stash) or '(none)'}"
            )
        originals = self._stash[name]
        if any(original is None for original in originals.values()):
            raise VipkitError(
                f"cannot restore block {name!r}: it was removed before this model was saved, so its weights are not stored"
            )
        for path, original in originals.items():
            parent, attribute = self._parent(path)
            parent.set_submodule(attribute, original)
        del self._stash[name]

    def copy(self) -> PrunableUNet:
        """A deep copy of the UNet and the stash together (a stashed unit may live inside another)."""
        clone = PrunableUNet.__new__(PrunableUNet)
        clone.module, clone._stash = copy.deepcopy((self.module, self._stash))
        return clone

    def _stashed(self, path: str) -> nn.Module | None:
        for originals in self._stash.values():
            if originals.get(path) is not None:
                return originals[path]
        return None

    def _parent(self, path: str) -> tuple[nn.Module, str]:
        """The module holding ``path`` and its attribute there, looking inside removed ancestors."""
        *parents, attribute = path.split(".")
        parent: nn.Module = self.module
        for depth, part in enumerate(parents, start=1):
            stashed = self._stashed(".".join(parents[:depth]))
            parent = stashed if stashed is not None else parent.get_submodule(part)
        return parent, attribute
