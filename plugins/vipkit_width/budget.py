"""Which units each layer loses in a stage: every layer loses about the same share of its units, the least important
first, and no more units than the stage needs (every layer keeps at least one unit).

Each unit's place is its layer's share of units gone once it is: a layer of 4 heads loses its least important head
at share 1/4, the next at 2/4; a layer of 128 channels loses one per 1/128 (or, in steps of 8, eight per 8/128: the
kept width stays a multiple of 8). Taking units in that order, the cheaper first among equal shares, until their
costs add up to what the stage needs keeps the layers at the same share up to one step and overshoots the goal by
less than one step's cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vipkit import VipkitError


def choose_units(
    importance: Sequence[Tensor], costs: Sequence[float], steps: Sequence[int], need: float, shortfall: str
) -> list[list[int]]:
    """For each layer (its units' ``importance``, the cost of one unit, and how many units go together: ``steps``,
    so that the kept count stays a multiple of it), the units to remove so that their costs add up to at least
    ``need``; ``shortfall`` ends the error when even the fewest units kept per layer are too many."""
    removable = sum(
        most_removable(len(scores), step) * cost for scores, cost, step in zip(importance, costs, steps, strict=True)
    )
    if removable < need:
        raise VipkitError(f"the stage needs {need:,.0f} more gone but at most {removable:,.0f} can go {shortfall}")
    order = [torch.argsort(scores, stable=True).tolist() for scores in importance]
    queue = sorted(
        (count / len(ranked), costs[layer] * step, layer, count)
        for layer, (ranked, step) in enumerate(zip(order, steps, strict=True))
        for count in range(step, most_removable(len(ranked), step) + 1, step)
    )
    taken = [0] * len(order)
    gone = 0.0
    for _, cost, layer, count in queue:
        if gone >= need:
            break
        taken[layer] = count
        gone += cost
    return [sorted(ranked[:count]) for ranked, count in zip(order, taken, strict=True)]


def most_removable(units: int, step: int) -> int:
    """The most units a layer of ``units`` can lose in steps of ``step``, keeping at least one step (or one unit)."""
    return units - step if step > 1 else units - 1
