"""The prunable structure of a diffusion transformer (``vipkit.dit_kit``): blocks and their residual branches.

A removed block or branch is replaced by a ``StandIn``, a parameter-free module that answers in the calling
convention of what it replaces: a block returns its inputs (the streams it would have updated, by name, so a
block returning ``(hidden_states, encoder_hidden_states)`` keeps doing so, called with positional or keyword
arguments); a branch returns zeros shaped like its inputs, which its block adds to the residual stream (times a
finite gate), leaving the stream exactly as it was. Both removals are exact.

A block or branch whose parameters are all zero computes the same identity (every attention and feed-forward
branch ends in a linear layer; zero weights and bias give exact zeros), so every kind has a zero form
(``PrunableModule(zero_identity_kinds=None)``): what the ``diffusers`` export writes for removed branches.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from vipkit.dit_kit import BlockLayout
from vipkit.interfaces import Block
from vipkit.prunable import PassThrough, PrunableModule, parameter_count


class StandIn(PassThrough):
    """Stands in for a removed block (returns the named inputs) or branch (returns zeros shaped like them)."""

    def __init__(self, replaced: str, arguments: Sequence[str], returns: Sequence[str], zeros: bool) -> None:
        super().__init__(replaced)
        self.arguments = tuple(arguments)  # the replaced forward's argument names, in order (positional binding)
        self.returns = tuple(returns)
        self.zeros = zeros

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        bound = {**dict(zip(self.arguments, args, strict=False)), **kwargs}
        values = [bound[name] for name in self.returns]
        if self.zeros:
            values = [torch.zeros_like(value) for value in values]
        return values[0] if len(values) == 1 else tuple(values)

    def extra_repr(self) -> str:
        return f"replaced={self.replaced}, returns={'zeros like ' if self.zeros else ''}{', '.join(self.returns)}"


def _argument_names(module: nn.Module) -> tuple[str, ...]:
    """The named (positional-or-keyword) arguments of ``module.forward``, in order."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in inspect.signature(module.forward).parameters.values() if p.kind in kinds)


def stand_in(layout: BlockLayout, path: str, original: nn.Module) -> StandIn:
    """The stand-in for the block or branch at ``path`` (``<block_list>.<i>`` or ``<block_list>.<i>.<branch>``)."""
    inside = path.removeprefix(f"{layout.block_list}.").split(".", 1)
    branch = next((b for b in layout.branches if len(inside) == 2 and b.attribute == inside[1]), None)
    returns = branch.returns if branch is not None else layout.block_returns
    return StandIn(type(original).__name__, _argument_names(original), returns, zeros=branch is not None)


def list_blocks(layout: BlockLayout, transformer: nn.Module) -> list[Block]:
    """Every block still present, each followed by its branches still present, in depth order."""
    found: list[Block] = []
    for index, block in enumerate(transformer.get_submodule(layout.block_list)):
        if isinstance(block, PassThrough):
            continue
        name = f"{layout.block_list}.{index}"
        found.append(Block(name, layout.block_kind, parameter_count(block)))
        for branch in layout.branches:
            part = block.get_submodule(branch.attribute)
            if not isinstance(part, PassThrough):
                found.append(Block(f"{name}.{branch.attribute}", branch.kind, parameter_count(part)))
    return found


def prunable_transformer(transformer: nn.Module, layout: BlockLayout) -> PrunableModule:
    """``transformer`` with its blocks and branches removable and restorable; every kind has a zero form."""
    return PrunableModule(
        transformer, partial(list_blocks, layout), zero_identity_kinds=None, stand_in=partial(stand_in, layout)
    )


def kept_positions(transformer: nn.Module, layout: BlockLayout) -> list[int]:
    """The indices of the blocks still present."""
    blocks = transformer.get_submodule(layout.block_list)
    return [index for index, block in enumerate(blocks) if not isinstance(block, PassThrough)]


@contextmanager
def recorded_outputs(modules: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """Yield a list that fills, in call order, with each module's output (the first element of a tuple)."""
    outputs: list[Tensor] = []

    def record(module: nn.Module, args: Any, output: Any) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [module.register_forward_hook(record) for module in modules]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def in_one_dtype(module: nn.Module, dtype: torch.dtype) -> None:
    """Every floating tensor of ``module`` in ``dtype``. diffusers and transformers keep some layers in float32 when
    they load in half precision (``_keep_in_fp32_modules``: norms, modulation and rotary tables, T5's ``wo``), while a
    model built here and then cast has none: one dtype everywhere makes a reloaded model compute bit for bit what the
    saved one did."""
    if any(t.is_floating_point() and t.dtype != dtype for t in [*module.parameters(), *module.buffers()]):
        torch.nn.Module.to(module, dtype=dtype)
