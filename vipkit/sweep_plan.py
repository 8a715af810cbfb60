"""A sweep (``vipkit sweep``): one recipe under several seeds and variants, resolved and validated before any model
loads, every problem at once with its key.

The sweep file::

    recipe = "../../recipes/shapes_vip_fast.toml"   # relative to the sweep file
    seeds = 3                                       # seeds 0, 1, 2; or a list: seeds = [0, 7, 9]
    set = ['prompts.heldout_file="prompts/shapes_heldout.txt"']   # --set KEY=VALUE for every run
    baseline = "redpo"                              # the variant the others are compared with (default: the first)

    [variants]                                      # name = its --set KEY=VALUE list, applied after `set`
    redpo = []
    sft = ["losses[0].dpo_weight=0"]

    [curve]                                         # optional: one numeric key swept, every value under every variant
    key = "losses[0].sft_weight"
    values = [0.01, 1, 100]

Each run is the recipe with ``set``, its variant's overrides, the curve's value and ``seed = N`` applied as
``--set`` (``vipkit.recipe_overrides``), validated like a recipe. The sweep owns the seed: neither ``set`` nor a
variant may change it, so the same seed of two variants renders the same prompts with the same video seeds and
trains on pairs from the same seeds, and their difference can be taken seed by seed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vipkit.errors import VipkitError
from vipkit.plugins import Plugins, load_plugins
from vipkit.recipe import Recipe, load_recipe
from vipkit.seeds import MAX_SEED
from vipkit.validation import ProblemsError, TomlValidator, parse_toml, pydantic_errors, read_text, strict

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SEEDS = 10_000  # a count beyond this is a typo, not a sweep


class SweepError(ProblemsError):
    """A sweep with one or more problems; ``errors`` holds one ``key: message`` line each."""

    what = "sweep"


class _Curve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="the recipe key swept, as --set writes it, e.g. losses[0].sft_weight")
    values: list[Any] = Field(min_length=2, description="its numbers; each runs under every variant and seed")


class _SweepFile(BaseModel):
    """The sweep file's types; what they cannot say (seeds, names, overridden keys) is checked by the ``_*_errors`` functions."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    recipe: str = Field(description="the recipe every run starts from, relative to the sweep file")
    seeds: Any = Field(description="how many seeds (seeds 0 to N − 1), or the list of seeds")
    set: list[str] = Field(default_factory=list, description="--set KEY=VALUE overrides for every run")
    baseline: str | None = Field(
        None,
        description="the variant the others are compared with (default: the first); with a curve, a variant of the "
        "file is compared at each value of the swept key",
    )
    variants: dict[str, list[str]] = Field(
        default_factory=dict, description="variant name -> its --set KEY=VALUE overrides (default: the recipe as is)"
    )
    curve: _Curve | None = Field(None, description="one numeric key swept over values, under every variant")


@dataclass(frozen=True)
class Variant:
    """One set of overrides; with a curve, one named variant at one value of the swept key."""

    name: str  # also its folder under OUT/runs
    group: str  # the named variant (a curve's line); the name itself without a curve
    overrides: tuple[str, ...]  # the sweep's `set`, the variant's own, the curve's value: in that order
    curve_value: float | None
    prompts: dict[str, tuple[str, ...]]  # its recipe's "heldout" and "eval" prompts: what pairing needs equal


@dataclass(frozen=True)
class SweepRun:
    variant: Variant
    seed: int
    recipe: Recipe
    recipe_text: str  # what the run folder keeps as recipe.toml: the overrides as comments, then the recipe file

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.seed}"

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.variant.name / f"seed-{self.seed}"


@dataclass(frozen=True)
class SweepPlan:
    source: str
    recipe: Path
    seeds: tuple[int, ...]
    common: tuple[str, ...]
    variants: tuple[Variant, ...]
    baseline: str
    curve_key: str | None
    runs: tuple[SweepRun, ...]  # seed by seed: a stopped sweep already holds whole seeds of every variant

    def variant(self, name: str) -> Variant:
        return next(variant for variant in self.variants if variant.name == name)

    def baseline_of(self, name: str) -> str | None:
        """The variant that variant ``name`` is compared with; None for a baseline itself. With a curve and a
        baseline naming a variant of the sweep file, its point at the same value of the swept key: the comparison is
        at the same budget, weight or rate."""
        fixed = self.curve_key is None or any(v.name == self.baseline for v in self.variants)
        if fixed:
            return None if name == self.baseline else self.baseline
        value = self.variant(name).curve_value
        base = next((v.name for v in self.variants if v.group == self.baseline and v.curve_value == value), None)
        return None if base in (None, name) else base

    def paired(self, name: str, prompts: str) -> bool:
        """Whether variant ``name`` and its baseline render the same ``prompts`` ("heldout" or "eval") under each
        seed, so that their difference may be taken seed by seed."""
        base = self.baseline_of(name)
        return base is not None and self.variant(name).prompts[prompts] == self.variant(base).prompts[prompts]

    def describe(self) -> dict[str, Any]:
        """The plan as sweep.json records it."""
        return {
            "sweep": self.source,
            "recipe": str(self.recipe),
            "seeds": list(self.seeds),
            "set": list(self.common),
            "baseline": self.baseline,
            "curve": self.curve_key,
            "variants": [
                {
                    "name": v.name,
                    "group": v.group,
                    "curve_value": v.curve_value,
                    "baseline": self.baseline_of(v.name),
                    "overrides": list(v.overrides[len(self.common) :]),
                    "prompts": {prompts: len(listed) for prompts, listed in v.prompts.items()},
                }
                for v in self.variants
            ],
        }


def load_sweep(path: Path, seeds: int | None = None, plugins: Plugins | None = None) -> SweepPlan:
    """Read and validate a sweep file; ``seeds`` (a count) replaces the file's seeds."""
    data = parse_toml(read_text(path, "sweep file"), str(path), SweepError)
    if seeds is not None:
        data["seeds"] = seeds
    return resolve_sweep(data, str(path), path.parent, plugins)


def sweep_from_options(recipe: Path, seeds: int, variants: Sequence[str], plugins: Plugins | None = None) -> SweepPlan:
    """The sweep the command line describes: ``--variant NAME`` or ``NAME:KEY=VALUE`` (repeated for several keys of
    one variant), validated exactly like a sweep file."""
    table: dict[str, list[str]] = {}
    for given in variants:
        name, _, override = given.partition(":")
        table.setdefault(name.strip(), [])
        if override.strip():
            table[name.strip()].append(override.strip())
    data = {"recipe": str(recipe), "seeds": seeds, "variants": table}
    return resolve_sweep(data, "the command line", Path.cwd(), plugins)


def resolve_sweep(data: dict[str, Any], source: str, base_dir: Path, plugins: Plugins | None = None) -> SweepPlan:
    """Every run of the sweep ``data`` with its recipe resolved; ``SweepError`` lists every problem."""
    checks = TomlValidator(data, base_dir, plugins or load_plugins())
    checks.top_level(set(_SweepFile.model_fields))
    try:
        spec = strict(_SweepFile, {key: value for key, value in data.items() if key in _SweepFile.model_fields})
    except ValidationError as exc:
        raise SweepError(source, checks.errors + pydantic_errors("", exc, _SweepFile)) from None
    errors = checks.errors
    seeds = _seeds(spec.seeds, errors)
    errors += _name_errors(spec) + _override_errors(spec) + (_curve_errors(spec.curve) if spec.curve else [])
    resolver = _Resolver(base_dir / spec.recipe, checks.plugins, source, errors)
    variants = resolver.variants(spec, seeds)
    points = _points(spec)
    names = [point.name for point in points]
    groups = list(dict.fromkeys(point.group for point in points)) if spec.curve else []
    baseline = spec.baseline if spec.baseline is not None else (groups or names)[0]
    if baseline not in names and baseline not in groups:
        errors.append(f"baseline: {baseline!r} is none of the variants ({', '.join(groups + names)})")
    if errors:
        raise SweepError(source, errors)
    return SweepPlan(
        source=source,
        recipe=resolver.path,
        seeds=seeds,
        common=tuple(spec.set),
        variants=tuple(variant for variant, _ in variants),
        baseline=baseline,
        curve_key=spec.curve.key if spec.curve else None,
        # seed by seed (variants in their order within a seed): a stopped sweep already holds whole seeds
        runs=tuple(run for seed in seeds for _, runs in variants for run in runs if run.seed == seed),
    )


@dataclass(frozen=True)
class _Point:
    """A variant before its recipes are resolved."""

    name: str
    group: str
    overrides: tuple[str, ...]
    curve_value: float | None
    curve_index: int | None


def _points(spec: _SweepFile) -> list[_Point]:
    """Every variant of ``spec``: each named one (or the recipe as it is, named "recipe") at each value of the curve."""
    named = spec.variants or {"recipe": []}
    if spec.curve is None:
        return [_Point(name, name, (*spec.set, *sets), None, None) for name, sets in named.items()]
    key = spec.curve.key
    return [
        _Point(f"{name}@{value!r}", name, (*spec.set, *sets, f"{key}={value!r}"), value, i)
        for name, sets in named.items()
        for i, value in enumerate(spec.curve.values)
    ]


class _Resolver:
    """Resolves the sweep's recipes; each problem is recorded once, under the sweep key that causes it: the recipe
    with ``set`` first, then each variant's overrides and each curve value alone, then their combinations."""

    def __init__(self, path: Path, plugins: Plugins, source: str, errors: list[str]) -> None:
        self.path, self.plugins, self.source, self.errors = path, plugins, source, errors
        try:
            self.text = read_text(path, "recipe")
        except VipkitError as exc:
            raise SweepError(source, [*errors, f"recipe: {exc}"]) from None

    def recipe(self, overrides: Sequence[str], seed: int, where: str) -> Recipe | None:
        try:
            return load_recipe(self.path, self.plugins, [*overrides, f"seed={seed}"])
        except VipkitError as exc:
            problems = exc.errors if isinstance(exc, ProblemsError) else [str(exc)]
            self.errors.extend(f"{where}: {p}" for p in problems if f"{where}: {p}" not in self.errors)
            return None

    def variants(self, spec: _SweepFile, seeds: tuple[int, ...]) -> list[tuple[Variant, list[SweepRun]]]:
        """Each variant whose recipes all validate, with its runs (one per seed)."""
        first = seeds[0] if seeds else 0
        if self.recipe(spec.set, first, f"recipe {self.path}" + (" with `set`" if spec.set else "")) is None:
            raise SweepError(self.source, self.errors)  # every variant would repeat these problems
        failed_variants = {
            name
            for name, sets in spec.variants.items()
            if not self.recipe([*spec.set, *sets], first, f"variants.{name}")
        }
        failed_values = set()
        if spec.curve is not None:
            if _curve_errors(spec.curve):
                return []  # reported as they are; runs with such values mean nothing
            key = spec.curve.key
            for i, value in enumerate(spec.curve.values):
                if not self.recipe([*spec.set, f"{key}={value!r}"], first, f"curve.values[{i}] ({key} = {value!r})"):
                    failed_values.add(i)
        found = []
        for point in _points(spec):
            if point.group in failed_variants or point.curve_index in failed_values:
                continue
            recipes = {seed: self.recipe(point.overrides, seed, f"variants.{point.name}") for seed in seeds}
            if not seeds or None in recipes.values():
                continue
            listed = recipes[seeds[0]]
            prompts = {"heldout": tuple(listed.prompts_heldout), "eval": tuple(listed.prompts_eval)}
            variant = Variant(point.name, point.group, point.overrides, point.curve_value, prompts)
            found.append((variant, [self.run(variant, seed, recipe) for seed, recipe in recipes.items()]))
        return found

    def run(self, variant: Variant, seed: int, recipe: Recipe) -> SweepRun:
        """One run, its recipe.toml saying which --set options made it (as ``vipkit compress`` writes them)."""
        given = [*variant.overrides, f"seed={seed}"]
        header = "".join(f"# applied by vipkit sweep ({self.source}, {variant.name}): --set {item}\n" for item in given)
        return SweepRun(variant, seed, recipe, header + self.text)


def _seeds(given: Any, errors: list[str]) -> tuple[int, ...]:
    """The seeds ``seeds`` names: a count N (seeds 0 to N − 1) or a list; problems appended to ``errors``."""

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if integer(given):
        if not 1 <= given <= MAX_SEEDS:
            errors.append(
                f"seeds: how many seeds to run, from 1 to {MAX_SEEDS} (3 or more for an interval), got {given}"
            )
        return tuple(range(max(0, min(given, MAX_SEEDS))))
    if not isinstance(given, list) or not given or not all(integer(seed) for seed in given):
        errors.append(
            f"seeds: a number of seeds (seeds = 3) or a non-empty list of them (seeds = [0, 7, 9]), got {given!r}"
        )
        return ()
    errors += [
        f"seeds[{i}]: must be from 0 to {MAX_SEED}, got {s}" for i, s in enumerate(given) if not 0 <= s <= MAX_SEED
    ]
    if len(set(given)) != len(given):
        errors.append(f"seeds: {given} repeats a seed; each run of a variant needs its own")
    return tuple(given)


def _name_errors(spec: _SweepFile) -> list[str]:
    return [
        f"variants.{name}: a variant's name is its folder: letters, digits, '_', '.', '-' (up to 64, not starting "
        "with '.', '_' or '-')"
        for name in spec.variants
        if not _NAME.fullmatch(name)
    ]


def _override_errors(spec: _SweepFile) -> list[str]:
    """Overrides of the seed (the sweep's own) or of the swept key (the curve's)."""
    errors = []
    overrides = {"set": spec.set, **{f"variants.{name}": items for name, items in spec.variants.items()}}
    for where, items in overrides.items():
        for i, item in enumerate(items):
            key = _key(item)
            if key == "seed":
                errors.append(f"{where}[{i}]: {item!r} sets the seed, which the sweep sets for each run from `seeds`")
            elif spec.curve is not None and key == _key(spec.curve.key):
                errors.append(f"{where}[{i}]: {item!r} sets the key [curve] sweeps ({spec.curve.key})")
    return errors


def _curve_errors(curve: _Curve) -> list[str]:
    """Values that are no numbers or repeat one, and a swept seed."""
    errors = [
        f"curve.values[{i}]: must be a number, got {value!r}"
        for i, value in enumerate(curve.values)
        if isinstance(value, bool) or not isinstance(value, int | float)
    ]
    if not errors and len({float(value) for value in curve.values}) < len(curve.values):
        errors.append(f"curve.values: {curve.values} repeats a value")
    if _key(curve.key) == "seed":
        errors.append("curve.key: the sweep sets the seed from `seeds`; sweep another key")
    return errors


def _key(override: str) -> str:
    """The key an override sets, as written before ``=`` (``losses[0].beta`` and ``losses.0.beta`` alike)."""
    return re.sub(r"\[(\d+)\]", r".\1", override.partition("=")[0].strip())
