"""``--set KEY=VALUE``: change one recipe value from the command line, without editing the file.

The typical use is measuring a recipe before downloading anything (``--set model.preset=random --set
reward.preset=random``) or trying one variant. ``KEY`` is a dotted path into the recipe's TOML tables
(``train.learning_rate``, ``losses[0].beta`` or ``losses.0.beta``); ``VALUE`` is read as a TOML value
(``3``, ``1e-5``, ``true``, ``["a", "b"]``, ``"text"``), and taken as plain text when it is not one,
so ``--set model.dtype=bfloat16`` needs no quotes. The result is validated like the file itself.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from typing import Any


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """Set each ``KEY=VALUE`` in the parsed recipe ``data`` (in place); returns one problem per bad override."""
    problems = []
    for override in overrides:
        key, sep, text = override.partition("=")
        path = [int(part) if part.isdigit() else part for part in re.split(r"\.|\[(\d+)\]\.?", key.strip()) if part]
        if not sep or not path:
            problems.append(
                f"--set {override!r}: write KEY=VALUE, e.g. train.learning_rate=1e-5 or model.preset=random"
            )
            continue
        try:
            _assign(data, path, _value(text.strip()))
        except LookupError as exc:
            problems.append(f"--set {override!r}: {exc.args[0]}")
    return problems


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(data: dict[str, Any], path: list[str | int], value: Any) -> None:
    """Walk ``path``, creating missing tables; a list step must name an existing element."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        where = ".".join(map(str, path[: depth + 1]))
        if isinstance(node, list):
            if not isinstance(part, int) or not 0 <= part < len(node):
                raise LookupError(
                    f"{where}: the recipe has {len(node)} such tables; name one by its index, 0 to {len(node) - 1}"
                )
            node = node[part]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise LookupError(f"{where} is a value, not a table")
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or not 0 <= last < len(node):
            raise LookupError(f"{'.'.join(map(str, path))}: no such element (the list has {len(node)})")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise LookupError(f"{'.'.join(map(str, path[:-1]))} is a value, not a table")
