"""What a recipe and a bench matrix validate alike: a TOML file in, every problem out with its key path.

Reading fails in one sentence naming the file; TOML values are checked with their own types (``"3"`` is
no number) and unknown options get a did-you-mean; component tables (``[model]``, ``[reward]``,
``[[rewards]]``, ...) name a registered component and are validated against its own ``Config``.
``vipkit.recipe`` and ``vipkit.bench_matrix`` each add their own sections and checks on top.
"""

from __future__ import annotations

import difflib
import json
import math
import stat
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from vipkit.combined_reward import CombinedReward, combined_dimensions
from vipkit.errors import VipkitError
from vipkit.interfaces import Config
from vipkit.plugins import Plugins
from vipkit.seeds import MAX_SEED

_M = TypeVar("_M", bound=BaseModel)


class ProblemsError(VipkitError):
    """A file with one or more problems; ``errors`` holds one ``key: message`` line each."""

    what: ClassVar[str] = "file"  # how the message names the file: "recipe", "bench matrix"

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
        super().__init__(f"{self.what} {source} has {count}:\n" + "\n".join(f"  - {e}" for e in errors))


DEFAULT_REWARD_TIMEOUT_S = 1800.0
"""Seconds one reward score call may take (a batch of videos) before a run stops naming the reward: generous, since
a real reward scores a batch in seconds to minutes, but a hung plugin no longer blocks a run for ever."""

MAX_TEXT_BYTES = 16 * 2**20
"""The largest recipe, matrix or prompt file read (16 MiB: about 150,000 prompts)."""


def read_text(path: Path, what: str) -> str:
    """A text file's content; every way it can fail becomes one sentence naming ``what`` and the path. Only regular
    files up to ``MAX_TEXT_BYTES`` are read: ``/dev/zero`` or a pipe would never end."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):
            raise VipkitError(f"{what} {path} is not a regular file (a device, pipe or socket); give a text file")
        if info.st_size > MAX_TEXT_BYTES:
            raise VipkitError(_too_large(what, path))
        with open(path, "rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)  # a file that grows while read is still bounded
        if len(data) > MAX_TEXT_BYTES:
            raise VipkitError(_too_large(what, path))
        return data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not an error
    except UnicodeDecodeError as exc:
        raise VipkitError(
            f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None
    except IsADirectoryError:
        raise VipkitError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise VipkitError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _too_large(what: str, path: Path) -> str:
    return f"{what} {path} is larger than {MAX_TEXT_BYTES // 2**20} MiB, more than any recipe or prompt list; is it the right file?"


def parse_toml(text: str, source: str, error: type[ProblemsError]) -> dict[str, Any]:
    """The TOML data; a syntax error (with its line and column) is the file's one problem."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(source, [f"TOML syntax error: {exc}"]) from None


def non_finite_numbers(data: Any, key: str = "") -> list[str]:
    """Key paths of every nan / inf in the parsed TOML: no option of any component means anything with them."""
    if isinstance(data, float) and not math.isfinite(data):
        return [f"{key}: must be a finite number, got {data}"]
    if isinstance(data, dict):
        return [e for k, v in data.items() for e in non_finite_numbers(v, f"{key}.{k}" if key else k)]
    if isinstance(data, list):
        return [e for i, v in enumerate(data) for e in non_finite_numbers(v, f"{key}[{i}]")]
    return []


def _key(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def pydantic_errors(prefix: str, exc: ValidationError, schema: type[BaseModel]) -> list[str]:
    """One ``key: message`` line per pydantic error, keys under ``prefix``; unknown options get a did-you-mean."""
    errors = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = sorted(schema.model_fields)
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            message = (
                "unknown option"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" (known: {', '.join(known) or 'none'})"
            )
        elif err["type"].endswith("_type") or err["type"].startswith(("greater", "less")):
            message += f", got {err['input']!r}"
        errors.append(f"{_key(prefix, err['loc']) or prefix}: {message}")
    return errors


def strict(schema: type[_M], data: Any) -> _M:
    """Validate TOML data with its own types: ``"3"`` or ``true`` is no number, an array may fill a tuple."""
    return schema.model_validate_json(json.dumps(data, default=str), strict=True)


class ComponentSpec(BaseModel):
    """A component table after validation: its registered name and validated options."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    key: str  # where the file sets it, e.g. "model" or "losses[1]"
    name: str
    config: Config
    weight: float = 1.0  # only for losses

    def build(self, plugins: Plugins) -> Any:
        """Build the component; its user-facing errors are prefixed with the key that set it."""
        try:
            return plugins.registry(self.kind).get(self.name)(self.config)
        except VipkitError as exc:
            raise VipkitError(f"{self.key} ({self.name!r}): {exc}") from exc

    def dump(self) -> dict[str, Any]:
        data = {"name": self.name, **self.config.model_dump(mode="json")}
        return data | ({"weight": self.weight} if self.kind == "losses" else {})

    def dimensions(self, plugins: Plugins) -> tuple[str, ...]:
        """A reward's declared dimensions."""
        return tuple(plugins.registry(self.kind).get(self.name).dimensions)


class CombinedRewardSpec(BaseModel):
    """The ``[[rewards]]`` tables after validation: each part's spec by its alias, in file order."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    parts: dict[str, ComponentSpec]
    key: str = "rewards"  # where the file holds it, for messages

    @property
    def name(self) -> str:
        return " + ".join(spec.name for spec in self.parts.values())

    def build(self, plugins: Plugins) -> CombinedReward:
        return CombinedReward({alias: spec.build(plugins) for alias, spec in self.parts.items()})

    def dump(self) -> dict[str, Any]:
        return {"combine": [{"as": alias, **spec.dump()} for alias, spec in self.parts.items()]}

    def dimensions(self, plugins: Plugins) -> tuple[str, ...]:
        return combined_dimensions({alias: spec.dimensions(plugins) for alias, spec in self.parts.items()})


class TomlValidator:
    """Collects every problem of one file before giving up; subclasses validate their own sections."""

    def __init__(self, data: dict[str, Any], base_dir: Path, plugins: Plugins) -> None:
        self.data = data
        self.base_dir = base_dir
        self.plugins = plugins
        self.errors: list[str] = []

    def top_level(self, known: set[str]) -> None:
        """Unknown top-level keys, and nan / inf anywhere."""
        for key in sorted(set(self.data) - known):
            self.errors.append(f"{key}: unknown key (known: {', '.join(sorted(known))})")
        self.errors.extend(non_finite_numbers(self.data))

    def seed(self) -> int:
        """The top-level ``seed`` (default 0), within what the seed scheme (``vipkit.seeds``) allows."""
        seed = self.data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            self.errors.append(f"seed: must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        return seed

    def reward_timeout(self) -> float:
        """The top-level ``reward_timeout_s``: seconds one reward score call may take before the run stops."""
        value = self.data.get("reward_timeout_s", DEFAULT_REWARD_TIMEOUT_S)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            self.errors.append(f"reward_timeout_s: must be a number of seconds > 0, got {value!r}")
            return DEFAULT_REWARD_TIMEOUT_S
        return float(value)

    def section(self, key: str, schema: type[_M]) -> _M | None:
        """The table ``key`` (empty when absent) validated by ``schema``."""
        try:
            return strict(schema, self.data.get(key, {}))
        except ValidationError as exc:
            self.errors.extend(pydantic_errors(key, exc, schema))
            return None

    def component(self, key: str, kind: str, table: Any) -> ComponentSpec | None:
        if not isinstance(table, dict):
            self.errors.append(
                f'{key}: must be a table with at least `name = "..."`, got {type(table).__name__} {table!r}'
            )
            return None
        options = dict(table)
        name = options.pop("name", None)
        weight = options.pop("weight", 1.0) if kind == "losses" else 1.0
        if not isinstance(name, str):
            known = ", ".join(self.plugins.registry(kind).names())
            self.errors.append(
                f"{key}.name: required: the registered name of a {self.plugins.registry(kind).base.__name__} (known: {known})"
            )
            return None
        registry = self.plugins.registry(kind)
        if name not in registry:
            self.errors.append(f"{key}.name: {registry.unknown_message(name)}")
            return None
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight <= 0:
            self.errors.append(f"{key}.weight: must be a number > 0")
            return None
        cls = registry.get(name)
        try:
            config = strict(cls.Config, options)
        except ValidationError as exc:
            self.errors.extend(pydantic_errors(key, exc, cls.Config))
            return None
        return ComponentSpec(kind=kind, key=key, name=name, config=config, weight=float(weight))

    def reward(
        self, single: str = "reward", several: str = "rewards", required: bool = True
    ) -> ComponentSpec | CombinedRewardSpec | None:
        """``[reward]`` (one reward) or ``[[rewards]]`` (several, combined), never both; ``single`` and ``several`` name
        other tables read the same way (a recipe's ``[heldout_reward]`` / ``[[heldout_rewards]]``, optional)."""
        given = (single in self.data, several in self.data)
        if given == (True, True) or (given == (False, False) and required):
            problem = f"has both [{single}] and [[{several}]]" if given[0] else f"missing table [{single}]"
            self.errors.append(
                f'{single}: {problem}; use one [{single}] table (a RewardModel: name = "...") for one reward, '
                f'or [[{several}]] tables (each with name and optionally as = "alias") to combine several'
            )
            return None
        if not any(given):
            return None
        if given[0]:
            return self.component(single, "rewards", self.data[single])
        tables = self.data[several]
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.errors.append(f'{several}: must be one or more [[{several}]] tables, each with name = "..."')
            return None
        parts: dict[str, ComponentSpec] = {}
        for i, table in enumerate(tables):
            options = dict(table)
            alias = options.pop("as", options.get("name"))
            spec = self.component(f"{several}[{i}]", "rewards", options)
            if spec is None:
                continue
            if not isinstance(alias, str) or not alias or "." in alias:
                self.errors.append(
                    f"{several}[{i}].as: must be a non-empty name without dots (it prefixes the dimensions: alias.dimension)"
                )
            elif alias in parts:
                self.errors.append(
                    f'{several}[{i}].as: {alias!r} is already used by an earlier [[{several}]] table; give each table its own `as = "..."`'
                )
            else:
                parts[alias] = spec
        return CombinedRewardSpec(parts=parts, key=several) if len(parts) == len(tables) else None

    def objective_weights(self, weights: dict[str, float], reward: ComponentSpec | CombinedRewardSpec) -> None:
        """``[objective] weights`` name dimensions the reward declares, are >= 0, and not all 0."""
        dimensions = reward.dimensions(self.plugins)
        for dim, weight in weights.items():
            if dim not in dimensions:
                close = difflib.get_close_matches(dim, dimensions, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                self.errors.append(
                    f"objective.weights.{dim}: reward {reward.name!r} has no such dimension.{hint} It has: {', '.join(dimensions)}"
                )
            elif weight < 0:
                self.errors.append(f"objective.weights.{dim}: must be >= 0")
        if weights and not sum(weights.values()) > 0:
            self.errors.append("objective.weights: at least one weight must be > 0")

    def prompt_list(self, kind: str, inline: list[str] | None, file: str | None) -> list[str]:
        """The ``[prompts]`` of ``kind``: the inline list, or the lines of ``{kind}_file`` (relative to the file's folder)."""
        if inline is not None:
            return [p.strip() for p in inline if p.strip()]
        assert file is not None  # the prompts section allows exactly one of the two
        path = self.base_dir / file
        try:
            lines = [line.strip() for line in read_text(path, "prompt file").splitlines()]
        except VipkitError as exc:
            self.errors.append(f"prompts.{kind}_file: {exc}")
            return []
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            self.errors.append(f"prompts.{kind}_file: {path} holds no prompt")
        return found
