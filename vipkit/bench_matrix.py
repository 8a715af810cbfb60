"""A bench matrix: which models, scored by which rewards, on which prompts (``vipkit bench --matrix``).

The same TOML vocabulary as a recipe: ``[[models]]`` tables are ``[model]`` tables with a ``label``
(or ``label`` + ``path`` of a folder saved by ``vipkit compress``), ``[reward]`` or ``[[rewards]]``,
``[prompts] eval`` / ``eval_file``, ``[objective]`` and ``seed``. Every problem is reported with its key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vipkit.errors import VipkitError
from vipkit.export import EXPORT_MANIFEST
from vipkit.interfaces import VideoModel
from vipkit.plugins import Plugins, load_plugins
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
from vipkit.weights import file_sha256

_TOP_LEVEL = {"seed", "description", "reward_timeout_s", "prompts", "models", "reward", "rewards", "objective"}


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

    def identity(self) -> dict[str, Any]:
        """What makes this row's videos what they are: the options, or the saved folder's manifest digest."""
        if self.spec is not None:
            return {"model": self.spec.dump()}
        assert self.path is not None
        manifest = self.path / (MANIFEST if (self.path / MANIFEST).is_file() else EXPORT_MANIFEST)
        return {"path": str(self.path), "manifest_sha256": file_sha256(manifest)}

    def build(self, plugins: Plugins) -> VideoModel:
        if self.spec is not None:
            return self.spec.build(plugins)
        assert self.path is not None
        from vipkit import load_model

        return load_model(self.path)  # a saved model, or an export (its zeroed blocks removed again)


@dataclass(frozen=True)
class BenchMatrix:
    source: str
    seed: int
    prompts: list[str]
    models: list[BenchModel]
    reward: ComponentSpec | CombinedRewardSpec
    objective: ObjectiveSection
    reward_timeout_s: float = DEFAULT_REWARD_TIMEOUT_S


class _MatrixValidator(TomlValidator):
    def models(self) -> list[BenchModel]:
        tables = self.data.get("models")
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.errors.append(
                'models: add one [[models]] table per model, each with `label = "..."` and either a [model] table\'s '
                'options (name = "animatediff", ...) or `path = "<a folder saved by vipkit compress>"`'
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
                    found.append(BenchModel(label, spec=spec))
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
                found.append(BenchModel(label, path=self.base_dir / path))
        return found

    def prompts(self) -> list[str]:
        section = self.section("prompts", BenchPrompts)
        return [] if section is None else self.prompt_list("eval", section.eval, section.eval_file)

    def matrix(self, source: str) -> BenchMatrix:
        self.top_level(_TOP_LEVEL)
        seed, reward_timeout_s = self.seed(), self.reward_timeout()
        models, prompts, reward = self.models(), self.prompts(), self.reward()
        objective = self.section("objective", ObjectiveSection)
        if objective is not None and reward is not None:
            self.objective_weights(objective.weights, reward)
        if self.errors:
            raise MatrixError(source, self.errors)
        assert reward is not None and objective is not None
        return BenchMatrix(source, seed, prompts, models, reward, objective, reward_timeout_s)


def load_matrix(path: str | Path, plugins: Plugins | None = None) -> BenchMatrix:
    """Read and validate a bench matrix; relative paths resolve against its folder."""
    path = Path(path)
    data = parse_toml(read_text(path, "bench matrix"), str(path), MatrixError)
    if not data:
        raise VipkitError(
            f"{path}: the bench matrix is empty; it needs [[models]], [reward] (or [[rewards]]) and [prompts] eval"
        )
    return _MatrixValidator(data, path.parent, plugins or load_plugins()).matrix(str(path))


def is_matrix(path: Path) -> bool:
    """Whether ``path`` holds a bench matrix (``[[models]]`` tables) rather than a recipe; an unreadable file is not."""
    try:
        text = read_text(path, "file")
    except VipkitError:
        return False
    try:
        return isinstance(tomllib.loads(text).get("models"), list)
    except tomllib.TOMLDecodeError:  # told apart all the same, so that its syntax error calls it a bench matrix
        return re.search(r"^\s*\[\[\s*models\s*\]\]", text, re.MULTILINE) is not None
