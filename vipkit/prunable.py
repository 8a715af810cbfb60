"""Exact block removal for any torch denoiser: a pass-through stand-in, the removed modules kept aside, restore.

A model family lists its prunable blocks (``Block`` names are dotted module paths); removing one puts a
``PassThrough`` (or the family's ``stand_in``) in its place, which is the exact removal when the block is residual
or keeps its input's shape (motion modules, transformer blocks, ResBlocks of equal width). A block may span several
modules (``"input_blocks.1+output_blocks.10"``: an encoder block with the decoder block that consumes its skip):
every path joined by ``+`` is replaced together. List entries are never deleted, because models zip their
module lists (diffusers' down and up blocks do) and a shorter list would silently drop layers.

Exports go the other way: a residual block whose parameters are all zero computes the identity too (its
branch multiplies everything by zero and adds nothing), so a pruned model can be written as the *full*
architecture with zeros where blocks were removed (``zero_filled_state``), which any loader of the full
architecture computes exactly, and loaded back with those blocks removed again (``remove_zeroed``). Which
kinds that holds for is the family's to say (``zero_identity_kinds``): an encoder block removed with the
decoder block that consumes its skip is not residual, so it has no zero form.

Width pruning makes layers smaller instead of removing them (fewer heads, fewer feed-forward channels); the
module keeps the record of those layers (``resized``, ``vipkit.width_shapes``), which a family's save writes and
its loader replays (``resize``) before loading the smaller tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vipkit.errors import VipkitError
from vipkit.width_shapes import LayerRecord, resize_layers, snapshot

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
    ``zero_identity_kinds``: the block kinds that compute the identity when all their parameters are zero
    (None: every kind), for exports of the full architecture. ``stand_in(path, original)``: the parameter-free
    module that takes the place of the removed module at ``path`` (None: a ``PassThrough``), for blocks whose
    removal is not "return the first input", e.g. a block that returns two streams or a residual branch that
    must return zeros.
    """

    def __init__(
        self,
        module: nn.Module,
        list_blocks: Callable[[nn.Module], list[Block]],
        zero_identity_kinds: Collection[str] | None = None,
        stand_in: Callable[[str, nn.Module], nn.Module] | None = None,
    ) -> None:
        self.module = module
        self.list_blocks = list_blocks
        self.zero_identity_kinds = None if zero_identity_kinds is None else frozenset(zero_identity_kinds)
        self.stand_in = stand_in
        self._stash: dict[str, dict[str, nn.Module | None]] = {}  # block -> {module path: original, None: not kept}
        self._resized: dict[str, LayerRecord] = {}  # layer path -> its shapes after width pruning (vipkit.width_shapes)

    @property
    def removed(self) -> list[str]:
        """Removed block names in removal order."""
        return list(self._stash)

    @property
    def resized(self) -> dict[str, LayerRecord]:
        """The layers made smaller than the config says (width pruning) that are still present, by module path."""
        gone = tuple(f"{path}." for path in self._removed_paths())
        return {path: record for path, record in self._resized.items() if not path.startswith(gone)}

    def note_resized(self, path: str, attributes: Mapping[str, int]) -> None:
        """Record the layer at ``path`` as it is now, after a pruner made it smaller and changed ``attributes``."""
        self._resized[path] = snapshot(self.module.get_submodule(path), attributes)

    def resize(self, record: Mapping[str, LayerRecord]) -> None:
        """Give the recorded layers their recorded shapes (empty tensors) and attributes, as a loader does before it
        loads a width-pruned state dict; the record becomes this module's."""
        resize_layers(self.module, record)
        self._resized.update(record)

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
            replacement = self.stand_in(path, original) if self.stand_in else PassThrough(type(original).__name__)
            parent.set_submodule(attribute, replacement)
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
        clone.zero_identity_kinds = self.zero_identity_kinds
        clone.stand_in = self.stand_in
        clone.module, clone._stash = copy.deepcopy((self.module, self._stash))
        clone._resized = copy.deepcopy(self._resized)
        return clone

    # -- the full architecture with zeros (exports) -------------------------------------------
    def _zero_is_identity(self, kind: str) -> bool:
        return self.zero_identity_kinds is None or kind in self.zero_identity_kinds

    def zero_filled_state(self, full: nn.Module) -> dict[str, torch.Tensor]:
        """The state dict of ``full`` (this denoiser's unpruned architecture, built from the same config, any
        device, ``meta`` too) holding this module's tensors, and zeros of this module's dtype for every tensor of
        a removed block: the full architecture computing exactly what the pruned one does. ``full`` is given this
        module's resized layers first (width pruning: the architecture at this model's widths)."""
        resize_layers(full, self.resized)
        kinds = {block.name: block.kind for block in self.list_blocks(full)}
        inexpressible = [name for name in self.removed if not self._zero_is_identity(kinds.get(name, ""))]
        if inexpressible:
            raise VipkitError(
                f"removed blocks {', '.join(inexpressible)} have no zero form (blocks of kind "
                f"{', '.join(sorted({kinds.get(n, '?') for n in inexpressible}))} are not residual: zeroing them does not "
                "make them the identity), so this model cannot be written as the full architecture"
            )
        own = self.module.state_dict()
        dtype = next(iter(own.values())).dtype if own else torch.float32
        prefixes = tuple(f"{path}." for path in self._removed_paths())
        state, unexplained = {}, []
        for key, tensor in full.state_dict().items():
            if key in own:
                if own[key].shape != tensor.shape:
                    unexplained.append(f"{key} has shape {tuple(own[key].shape)}, the full model {tuple(tensor.shape)}")
                state[key] = own[key]
            elif key.startswith(prefixes):
                state[key] = torch.zeros(tensor.shape, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
            else:
                unexplained.append(f"{key} is missing")
        unexplained += [f"{key} is not in the full model" for key in own.keys() - state.keys()]
        if unexplained:
            raise VipkitError(
                f"the denoiser does not fit the full architecture it was built from: {'; '.join(unexplained[:3])}"
                + (f" (and {len(unexplained) - 3} more)" if len(unexplained) > 3 else "")
            )
        return state

    def remove_zeroed(self) -> list[str]:
        """Remove, for good, every block of a zero-identity kind whose parameters are all zero (what an export
        of the full architecture holds where blocks were removed), outermost first; returns their names."""
        removed: list[str] = []
        for block in self.blocks():  # outer blocks come before the blocks inside them
            paths = block.name.split(PATH_JOIN)
            inside_removed = any(path.startswith(f"{gone}.") for gone in self._removed_paths() for path in paths)
            if inside_removed or not self._zero_is_identity(block.kind) or not block.params:
                continue
            if _all_zero([self.module.get_submodule(path) for path in paths]):
                self.remove(block.name, keep_original=False)
                removed.append(block.name)
        return removed

    def _removed_paths(self) -> list[str]:
        return [path for name in self._stash for path in name.split(PATH_JOIN)]

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


def _all_zero(modules: list[nn.Module]) -> bool:
    """Whether every parameter is zero (one on the meta device has no values: not zero)."""
    parameters = [parameter for module in modules for parameter in module.parameters()]
    return not any(p.is_meta for p in parameters) and all(not p.any() for p in parameters)
