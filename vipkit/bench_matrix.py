"""A bench matrix: which models, scored by which rewards, on which prompts (``vipkit bench --matrix``).

The same TOML vocabulary as a recipe: ``[[models]]`` tables are ``[model]`` tables with a ``label``
(or ``label`` + ``path`` of a folder saved by ``vipkit compress``), ``[reward]`` or ``[[rewards]]``,
``[prompts] eval`` / ``eval_file``, ``[objective]`` and ``seed``. ``[[recipes]]`` tables (``vipkit.bench_recipes``)
add the models that compressions make, for the grid "guided by × judged by" (``vipkit.bench_grid``); their teacher,
each recipe's ``[model]``, is a row too. Every problem is reported with its key.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vipkit.bench_recipes import BenchRecipe, read_bench_recipe
from vipkit.errors import VipkitError
from vipkit.export import EXPORT_MANIFEST, find_model
from vipkit.interfaces import VideoModel
from vipkit.model_source import is_local_path
from vipkit.plugins import Plugins, load_plugins
from vipkit.provenance import model_manifest, options_provenance
from vipkit.recipe import ObjectiveSection
from vipkit.saved_model import MANIFEST
from vipkit.validation import (
    DEFAULT_REWARD_TIMEOUT_S,
    CombinedRewardSpec,
    ComponentSpec,
    ProblemsError,
    TomlValidator,
    parse_toml,
    read_text,
)
from vipkit.weights import file_digests

_TOP_LEVEL = {
    "seed",
    "description",
    "reward_timeout_s",
    "prompts",
    "models",
    "recipes",
    "reward",
    "rewards",
    "objective",
}


class MatrixError(ProblemsError):
    """A bench matrix with one or more problems; ``errors`` holds one ``key: message`` line each."""

    what = "bench matrix"


class BenchPrompts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eval: list[str] | None = Field(None, description="the prompts every model renders (one video each)")
    eval_file: str | None = Field(None, description="file with those prompts, one a line, relative to the matrix")

    @model_validator(mode="after")
    def _one_source(self) -> BenchPrompts:
        if (self.eval is None) == (self.eval_file is None):
            raise ValueError("set exactly one of `eval` (a list) and `eval_file` (a path)")
        if self.eval is not None and not [p for p in self.eval if p.strip()]:
            raise ValueError("`eval` holds no prompt")
        return self


@dataclass(frozen=True)
class BenchModel:
    """One row of the bench: a model built from a ``[model]``-style table, or a folder saved by vipkit."""

    label: str
    spec: ComponentSpec | None = None
    path: Path | None = None
    where: str = field(default="", kw_only=True)  # where the matrix asks for it, for messages: "models[1]", ...

    def identity(self, plugins: Plugins) -> dict[str, Any]:
        """What makes this row's videos what they are, by content, with the family plugin's version.

        A ``[model]`` table: its options (with a preset they are the content) and the resolved content of every
        option naming a folder or a hub id (``source_identity``). A saved or exported folder: its manifest's file
        digests and generation settings, wherever the folder lies (``folder_identity``).
        """
        if self.spec is not None:
            options = self.spec.dump()
            sources = {key: source_identity(value) for key, value in options.items() if isinstance(value, str)}
            return {
                "family": self.spec.name,
                "plugin": plugins.provider("models", self.spec.name),
                "options": options,
                "sources": {key: value for key, value in sources.items() if value is not None},
            }
        assert self.path is not None
        content = folder_identity(self.path)
        return {"plugin": plugins.provider("models", str(content.get("family"))), "folder": content}

    def provenance(self) -> tuple[dict[str, Any] | None, int | None]:
        """The record of this model's making (``vipkit.provenance``) and, for a run's stage model, its stage; a
        ``[model]`` table naming no vipkit model folder is a teacher: ``(None, None)``."""
        if self.spec is not None:
            record = options_provenance(self.spec.config.model_dump())
            return (None if record is None else {k: v for k, v in record.items() if k != "from_vipkit_model"}), None
        assert self.path is not None
        manifest = model_manifest(self.path) or {}
        stage = find_model(self.path).stage if manifest.get("kind") == "saved" else None
        return dict(manifest.get("provenance", {})), stage

    def build(self, plugins: Plugins) -> VideoModel:
        if self.spec is not None:
            return self.spec.build(plugins)
        assert self.path is not None
        from vipkit import load_model

        return load_model(self.path)  # a saved model, or an export (its zeroed blocks removed again)


_NOT_CONTENT = {"vipkit_version", "source", "provenance", "kind"}  # manifest keys that change no video
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def folder_identity(folder: Path) -> dict[str, Any]:
    """A model folder's content: a vipkit folder's manifest (file digests, family, removed blocks, generation
    settings; every file hashed for a manifest older than file digests); any other folder by its resolved path and
    each file's size and modification time (hashing a many-GB base on every bench would cost more than it saves)."""
    manifest = model_manifest(folder)
    if manifest is not None:
        content = {key: value for key, value in manifest.items() if key not in _NOT_CONTENT}
        return content if "files" in content else {**content, "files": file_digests(folder)}
    files = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in name.parts):
            stat = path.stat()
            files[str(name)] = [stat.st_size, stat.st_mtime_ns]
    return {"folder": str(folder.resolve()), "files": files}


def source_identity(value: str) -> dict[str, Any] | None:
    """What a model option resolves to: a folder's content (``folder_identity``), a hub id's revision in the
    Hugging Face cache (None when not cached), or None for an option that names neither."""
    if value and Path(value).expanduser().is_dir():
        return folder_identity(Path(value).expanduser())
    if _HUB_ID.fullmatch(value) and not is_local_path(value):
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{value.replace('/', '--')}" / "refs" / "main"
        try:
            return {"hub": value, "revision": ref.read_text(encoding="utf-8").strip()}
        except OSError:
            return {"hub": value, "revision": None}
    return None


@dataclass(frozen=True)
class BenchMatrix:
    source: str
    seed: int
    prompts: list[str]
    models: list[BenchModel]
    reward: ComponentSpec | CombinedRewardSpec
    objective: ObjectiveSection
    reward_timeout_s: float = DEFAULT_REWARD_TIMEOUT_S
    recipes: tuple[BenchRecipe, ...] = ()
    teachers: dict[str, str] = field(default_factory=dict)  # each [[recipes]] label -> its teacher's row label


class _MatrixValidator(TomlValidator):
    def models(self) -> list[BenchModel]:
        tables = self.data.get("models")
        if tables is None and "recipes" in self.data:
            return []
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.errors.append(
                'models: add one [[models]] table per model, each with `label = "..."` and either a [model] table\'s '
                'options (name = "animatediff", ...) or `path = "<a folder saved by vipkit compress>"`; or [[recipes]] '
                "tables whose compressions the bench runs"
            )
            return []
        found: list[BenchModel] = []
        for i, table in enumerate(tables):
            key, options = f"models[{i}]", dict(table)
            label, path = options.pop("label", None), options.pop("path", None)
            if not isinstance(label, str) or not label.strip():
                self.errors.append(f"{key}.label: required: a non-empty name for this model's row and bars")
                continue
            if label in {m.label for m in found}:
                self.errors.append(
                    f"{key}.label: {label!r} is already the label of an earlier model; labels name rows, give each its own"
                )
                continue
            if path is None:
                spec = self.component(key, "models", options)
                if spec is not None:
                    found.append(BenchModel(label, spec=spec, where=key))
            elif not isinstance(path, str):
                self.errors.append(f"{key}.path: must be a string (a folder saved by vipkit compress), got {path!r}")
            elif options:
                self.errors.append(
                    f"{key}: a saved model (`path`) takes no other options, got {', '.join(sorted(options))}"
                )
            elif not any((self.base_dir / path / name).is_file() for name in (MANIFEST, EXPORT_MANIFEST)):
                self.errors.append(
                    f"{key}.path: {self.base_dir / path} is not a model saved or exported by vipkit (no {MANIFEST} or "
                    f"{EXPORT_MANIFEST}); point at RUN/model, RUN/stages/stage-NNN/model or a `vipkit export` folder"
                )
            else:
                found.append(BenchModel(label, path=self.base_dir / path, where=key))
        return found

    def recipes(self) -> list[BenchRecipe]:
        tables = self.data.get("recipes")
        if tables is None:
            return []
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.errors.append(
                'recipes: one [[recipes]] table per compression, each with `label = "..."` and `recipe = "<file>"`'
            )
            return []
        found: list[BenchRecipe] = []
        by_fingerprint: dict[str, tuple[BenchRecipe, str]] = {}
        for i, table in enumerate(tables):
            recipe = read_bench_recipe(f"recipes[{i}]", table, self.base_dir, self.plugins, self.errors)
            if recipe is None:
                continue
            if recipe.label in {r.label for r in found}:
                self.errors.append(f"{recipe.key}.label: {recipe.label!r} is already the label of an earlier recipe")
                continue
            for compression in recipe.compressions:
                other, label = by_fingerprint.setdefault(compression.fingerprint, (recipe, compression.label))
                if other is not recipe:
                    self.errors.append(
                        f"{recipe.key}: seed {compression.seed} is the same compression as {other.key} ({label!r}, "
                        f"recipe fingerprint {compression.fingerprint}); give it other rewards or options, or remove it"
                    )
            found.append(recipe)
        return found

    def teachers(self, models: list[BenchModel], recipes: list[BenchRecipe]) -> dict[str, str]:
        """Each recipe's teacher row: a ``[[models]]`` row with the same ``[model]`` options, else one added to
        ``models`` ("teacher", or "teacher of LABEL" when the recipes start from several models); labels checked."""
        distinct = {json.dumps(r.teacher.dump(), sort_keys=True) for r in recipes}
        teachers: dict[str, str] = {}
        for recipe in recipes:
            options = recipe.teacher.dump()
            row = next((m for m in models if m.spec is not None and m.spec.dump() == options), None)
            if row is None:
                label = "teacher" if len(distinct) == 1 else f"teacher of {recipe.label}"
                if any(m.label == label for m in models):
                    self.errors.append(
                        f"models: {label!r} names a row of its own, and is the label of {recipe.key}'s teacher (its "
                        "recipe's [model]); rename that row, or give it the recipe's [model] options to be the teacher"
                    )
                    continue
                row = BenchModel(label, spec=recipe.teacher, where=f"{recipe.key} (its recipe's [model])")
                models.append(row)
            teachers[recipe.label] = row.label
        labels = {m.label for m in models}
        for recipe in recipes:
            for compression in recipe.compressions:
                if compression.label in labels:
                    self.errors.append(
                        f"{recipe.key}: the row of seed {compression.seed} would be labelled {compression.label!r}, "
                        "the label of another row; rename one of them"
                    )
        return teachers

    def prompts(self) -> list[str]:
        section = self.section("prompts", BenchPrompts)
        return [] if section is None else self.prompt_list("eval", section.eval, section.eval_file)

    def matrix(self, source: str) -> BenchMatrix:
        self.top_level(_TOP_LEVEL)
        seed, reward_timeout_s = self.seed(), self.reward_timeout()
        models, recipes, prompts, reward = self.models(), self.recipes(), self.prompts(), self.reward()
        teachers = self.teachers(models, recipes)
        objective = self.section("objective", ObjectiveSection)
        if objective is not None and reward is not None:
            self.objective_weights(objective.weights, reward)
        if self.errors:
            raise MatrixError(source, self.errors)
        assert reward is not None and objective is not None
        return BenchMatrix(source, seed, prompts, models, reward, objective, reward_timeout_s, tuple(recipes), teachers)


def load_matrix(path: str | Path, plugins: Plugins | None = None) -> BenchMatrix:
    """Read and validate a bench matrix; relative paths resolve against its folder."""
    path = Path(path)
    data = parse_toml(read_text(path, "bench matrix"), str(path), MatrixError)
    if not data:
        raise VipkitError(
            f"{path}: the bench matrix is empty; it needs [[models]] (or [[recipes]]), [reward] (or [[rewards]]) and "
            "[prompts] eval"
        )
    return _MatrixValidator(data, path.parent, plugins or load_plugins()).matrix(str(path))


def is_matrix(path: Path) -> bool:
    """Whether ``path`` holds a bench matrix (``[[models]]`` or ``[[recipes]]`` tables) rather than a recipe; an
    unreadable file is not."""
    try:
        text = read_text(path, "file")
    except VipkitError:
        return False
    try:
        data = tomllib.loads(text)
        return any(isinstance(data.get(key), list) for key in ("models", "recipes"))
    except tomllib.TOMLDecodeError:  # told apart all the same, so that its syntax error calls it a bench matrix
        return re.search(r"^\s*\[\[\s*(models|recipes)\s*\]\]", text, re.MULTILINE) is not None
