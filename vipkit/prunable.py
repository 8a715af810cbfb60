"""Exact block removal for any torch denoiser: a pass-through stand-in, the removed modules kept aside, restore.

A model family lists its prunable blocks (``Block`` names are dotted module paths); removing one puts a
``PassThrough`` in its place, which is the exact removal when the block is residual or keeps its input's
shape (motion modules, transformer blocks, ResBlocks of equal width). A block may span several modules
(``"input_blocks.1+output_blocks.10"``: an encoder block with the decoder block that consumes its skip):
every path joined by ``+`` is replaced together. List entries are never deleted, because models zip their
module lists (diffusers' down and up blocks do) and a shorter list would silently drop layers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    from vipkit.interfaces import Block

PATH_JOIN = "+"
"""Joins the module paths of a block that spans several modules."""


class PassThrough(nn.Module):
    """Stands in for a removed block: no parameters, any calling convention, returns its first input."""

    def __init__(self, replaced: str) -> None:
        super().__init__()
        self.replaced = replaced

    def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        return hidden_states

    def extra_repr(self) -> str:
        return f"replaced={self.replaced}"


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class PrunableModule:
    """A denoiser module plus its removed blocks, kept outside the module tree.

    The stash is a plain dict, not registered submodules, so removed weights are neither counted,
    trained nor saved, and ``restore`` puts back the very same module objects, also into an ancestor
    that is itself removed. ``list_blocks`` is the family's: every block still present in the module.
    """

    def __init__(self, module: nn.Module, list_blocks: Callable[[nn.Module], list[Block]]) -> None:
        self.module = module
        self.list_blocks = list_blocks
        self._stash: dict[str, dict[str, nn.Module | None]] = {}  # block -> {module path: original, None: not kept}

    @property
    def removed(self) -> list[str]:
        """Removed block names in removal order."""
        return list(self._stash)

    def blocks(self) -> list[Block]:
        return self.list_blocks(self.module)

    def num_parameters(self) -> int:
        return parameter_count(self.module)

    def remove(self, name: str, *, keep_original: bool = True) -> None:
        """Replace block ``name`` by pass-throughs; ``keep_original=False`` drops its weights for good."""
        present = {block.name for block in self.blocks()}
        if name not in present:
            state = "was already removed" if name in self._stash else "is not a prunable block"
            raise VipkitError(
                f"cannot remove block {name!r}: it {state}. Removable blocks: {', '.join(sorted(present)) or '(none)'}"
            )
        originals: dict[str, nn.Module | None] = {}
        for path in name.split(PATH_JOIN):
            parent, attribute = self._parent(path)
            original = parent.get_submodule(attribute)
            parent.set_submodule(attribute, PassThrough(type(original).__name__))
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

    def copy(self) -> PrunableModule:
        """A deep copy of the module and the stash together (a stashed block may live inside another)."""
        clone = PrunableModule.__new__(PrunableModule)
        clone.list_blocks = self.list_blocks
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
