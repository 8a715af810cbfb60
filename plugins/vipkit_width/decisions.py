"""A stage's width decision as lines a person reads and ``replay`` reads back: ``PATH: heads 0, 3`` or
``PATH: channels 0-11, 17`` (units numbered as the layer had them before the stage narrowed it)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vipkit import VipkitError

UNIT_WORDS = {"head": "heads", "head channel": "head channels", "channel": "channels"}
_LINE = re.compile(r"(?P<path>[\w.]+): (?P<unit>heads|head channels|channels) (?P<units>[\d, -]+)")


def decision_line(path: str, unit: str, units: Sequence[int]) -> str:
    return f"{path}: {UNIT_WORDS[unit]} {_ranges(sorted(units))}"


def parse_decision(line: str) -> tuple[str, str, list[int]]:
    """``(path, unit, units)`` of a line ``decision_line`` wrote."""
    match = _LINE.fullmatch(line)
    if match is None:
        raise VipkitError(f"a stored width-pruning decision is not one vipkit wrote: {line!r}")
    unit = next(name for name, word in UNIT_WORDS.items() if word == match["unit"])
    units = []
    for part in match["units"].split(", "):
        first, _, last = part.partition("-")
        units += range(int(first), int(last or first) + 1)
    return match["path"], unit, units


def _ranges(numbers: Sequence[int]) -> str:
    """``0-3, 7, 9-12``: consecutive runs written as ranges."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
