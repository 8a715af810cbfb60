"""The compressions a bench matrix asks for: ``[[recipes]]`` tables, each a recipe with reward overrides, per seed.

The cross-reward grid compares models compressed under different rewards; a ``[[recipes]]`` table names a recipe
file and what to change in it, so "the same recipe guided by each of several rewards" is a few lines of the matrix::

    [[recipes]]
    label = "smoothness"                       # the grid's "guided by" row
    recipe = "../recipes/shapes_vip_fast.toml" # relative to the matrix
    seeds = [0, 1, 2]                          # one compression per seed (default: the recipe's own seed)
    set = ["train.epochs=2"]                   # --set KEY=VALUE overrides, applied last
    [recipes.reward]                           # or [[recipes.rewards]]: replaces the recipe's reward and objective
    name = "shapes-smoothness"
    [recipes.objective]                        # optional: the guiding objective's weights
    weights = { motion_smoothness = 1.0 }

Each compression is validated here like ``vipkit validate`` validates a recipe (every problem under its
``recipes[i]`` key), so a bad matrix fails before anything runs, and is known by ``Recipe.fingerprint``: the bench
keeps its run folder under that name, so a finished compression is never run again and a killed one resumes.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipkit.errors import VipkitError
from vipkit.plugins import Plugins
from vipkit.recipe import Recipe, RecipeError, parse_recipe
from vipkit.recipe_overrides import apply_overrides
from vipkit.seeds import MAX_SEED
from vipkit.validation import ComponentSpec, ProblemsError, parse_toml, read_text

RECIPE_KEYS = {"label", "recipe", "seeds", "set", "reward", "rewards", "objective"}
_REWARD_KEYS = ("reward", "rewards", "objective")  # what a reward override replaces in the recipe


@dataclass(frozen=True)
class Compression:
    """One compression of a matrix: a recipe with its overrides at one seed."""

    guide: str  # the [[recipes]] label: the grid's "guided by" row
    recipe: Recipe
    text: str  # the recipe as validated (TOML), kept in the run folder as recipe.toml

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def label(self) -> str:
        return f"{self.guide} · seed {self.seed}"

    @property
    def fingerprint(self) -> str:
        return self.recipe.fingerprint()


@dataclass(frozen=True)
class BenchRecipe:
    """A ``[[recipes]]`` table: its compressions (one per seed) and the model they all start from."""

    key: str  # "recipes[i]", for messages
    label: str
    compressions: list[Compression]

    @property
    def teacher(self) -> ComponentSpec:
        return self.compressions[0].recipe.model


def read_bench_recipe(
    key: str, table: dict[str, Any], base_dir: Path, plugins: Plugins, errors: list[str]
) -> BenchRecipe | None:
    """The ``[[recipes]]`` table at ``key``; every problem is appended to ``errors`` under ``key`` (None then)."""
    before = len(errors)
    for unknown in sorted(set(table) - RECIPE_KEYS):
        errors.append(f"{key}.{unknown}: unknown key (known: {', '.join(sorted(RECIPE_KEYS))})")
    label, file, seeds, overrides = (table.get(k) for k in ("label", "recipe", "seeds", "set"))
    if not isinstance(label, str) or not label.strip():
        errors.append(f"{key}.label: required: a non-empty name for this recipe's row of the grid (its 'guided by')")
    if not isinstance(file, str) or not file:
        errors.append(f"{key}.recipe: required: the recipe file to compress with, relative to the matrix")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        errors.append(f"{key}.seeds: must be a list of distinct integers from 0 to {MAX_SEED}, got {seeds!r}")
    if overrides is not None and (not isinstance(overrides, list) or not all(isinstance(s, str) for s in overrides)):
        errors.append(f'{key}.set: must be a list of "KEY=VALUE" strings, as given to --set, got {overrides!r}')
    for name in _REWARD_KEYS:
        value = table.get(name)
        if value is not None and not isinstance(value, dict | list):
            errors.append(f"{key}.{name}: must be a table, as in a recipe, got {value!r}")
    if len(errors) > before:
        return None
    path = base_dir / file
    try:
        data = parse_toml(read_text(path, "recipe"), str(path), RecipeError)
    except ProblemsError as exc:
        errors.extend(f"{key}.recipe: {error}" for error in exc.errors)
        return None
    except VipkitError as exc:
        errors.append(f"{key}.recipe: {exc}")
        return None
    if "reward" in table or "rewards" in table:
        for name in _REWARD_KEYS:
            data.pop(name, None)
    data.update({name: table[name] for name in _REWARD_KEYS if name in table})
    problems = apply_overrides(data, overrides or [])
    if problems:
        errors.extend(f"{key}.set: {problem}" for problem in problems)
        return None
    compressions = []
    for seed in seeds or [data.get("seed", 0)]:
        text = recipe_toml({**data, "seed": seed})
        try:
            recipe = parse_recipe(text, str(path), path.parent, plugins)
        except RecipeError as exc:  # the same problems for every seed: named once
            errors.extend(f"{key} ({label!r}, recipe {file}): {error}" for error in exc.errors)
            return None
        header = f"# compressed by vipkit bench: {key} ({label!r}) of the matrix, seed {seed}; {path} as validated\n"
        compressions.append(Compression(label, recipe, header + text))
    return BenchRecipe(key, label, compressions)


def recipe_toml(data: dict[str, Any]) -> str:
    """Parsed recipe data as TOML text that reads back to the same data: top-level values, then ``[tables]`` and
    ``[[arrays of tables]]``, nested tables inline. (No TOML writer ships with Python.)"""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not _is_table(v) and not _is_table_array(v)]
    for k, v in data.items():
        if _is_table(v):
            lines += ["", f"[{_key(k)}]", *(f"{_key(kk)} = {_value(vv)}" for kk, vv in v.items())]
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{_key(k)}]]", *(f"{_key(kk)} = {_value(vv)}" for kk, vv in item.items())]
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML wants DEL escaped too
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int | float):
        return repr(value)  # nan and inf read back as TOML's own nan and inf (and are refused by validation)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
