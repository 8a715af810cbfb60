"""Recipes: TOML → one validated, resolved plan, before any model loads.

Validation collects every error at once, each with its key path (``losses[0].beta: ...``); TOML
syntax errors carry line and column. Component tables (``[model]``, ``[reward]``, ``[scorer]``,
``[pruner]``, ``[curator]``, ``[[losses]]``) name a registered component and are validated against
that component's own ``Config``. Several rewards combine through ``[[rewards]]`` tables instead of
``[reward]`` (each may set ``as = "alias"``); their dimensions are then named ``<alias>.<dimension>``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vipkit.combined_reward import CombinedReward, combined_dimensions
from vipkit.errors import VipkitError
from vipkit.interfaces import Config
from vipkit.plugins import Plugins, load_plugins
from vipkit.recipe_overrides import apply_overrides


class RecipeError(VipkitError):
    """A recipe with one or more problems; ``errors`` holds one ``key: message`` line each."""

    def __init__(self, source: str, errors: list[str], what: str = "recipe") -> None:
        self.source = source
        self.errors = errors
        count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
        super().__init__(f"{what} {source} has {count}:\n" + "\n".join(f"  - {e}" for e in errors))


_M = TypeVar("_M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptsSection(_Section):
    """Prompts for training pairs, for evaluation and for ranking blocks (inline lists or files, one prompt a line)."""

    train: list[str] | None = Field(None, description="prompts whose teacher/student videos become pairs")
    train_file: str | None = Field(None, description="file with the training prompts, relative to the recipe")
    eval: list[str] | None = Field(None, description="prompts for the reports (and for importance scoring without `probe`)")
    eval_file: str | None = Field(None, description="file with the evaluation prompts, relative to the recipe")
    probe: list[str] | None = Field(
        None,
        description="prompts the importance scorer ranks blocks on, with their own seeds; without it the scorer "
        "uses the evaluation prompts and seeds, and the run's table then scores the videos the pruning was chosen on",
    )
    probe_file: str | None = Field(None, description="file with the probe prompts, relative to the recipe")
    videos_per_prompt: int = Field(1, ge=1, description="training videos per prompt, each with its own seed")

    @model_validator(mode="after")
    def _one_source_each(self) -> PromptsSection:
        for kind, required in (("train", True), ("eval", True), ("probe", False)):
            inline, file = getattr(self, kind), getattr(self, f"{kind}_file")
            sources = (inline is not None) + (file is not None)
            if sources > 1 or (required and not sources):
                raise ValueError(f"set {'exactly' if required else 'at most'} one of `{kind}` (a list) and `{kind}_file` (a path)")
            if inline is not None and not [p for p in inline if p.strip()]:
                raise ValueError(f"`{kind}` holds no prompt")
        return self


class ScheduleSection(_Section):
    stages: int = Field(3, ge=1, description="prune → curate → train rounds")
    block_kinds: list[str] = Field(["motion_module"], min_length=1, description="block kinds that may be pruned")


class LoraSection(_Section):
    """Low-rank adapters (peft) on the trainable scope instead of training its weights directly."""

    rank: int = Field(8, ge=1, description="adapter rank r")
    alpha: float = Field(8.0, gt=0, description="adapter scale numerator (the update is scaled by alpha / rank)")
    target_modules: list[str] = Field(
        ["to_q", "to_k", "to_v", "to_out.0"],
        min_length=1,
        description="name endings of the Linear layers inside the trainable scope that get adapters",
    )


class TrainSection(_Section):
    epochs: int = Field(2, ge=0, description="passes over each stage's pairs")
    batch_size: int = Field(1, ge=1, description="pairs per optimizer step, over all processes together")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="micro-batches per optimizer step (the batch is split, the step is the same)"
    )
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with momentum 0.9")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning rate after warm-up, per stage: constant, linear to 0, or cosine to 0"
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warm-up from 0 at the start of each stage")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; None disables it")
    trainable: str = Field("motion", description="family-defined parameter scope to train, e.g. motion or all")
    lora: LoraSection | None = Field(None, description="train low-rank adapters on the trainable scope; merged on save")
    mixed_precision: Literal["no", "bf16"] = Field(
        "no",
        description="bf16 autocast for the training passes of a float32 model; a bfloat16 or float16 model always "
        "trains under autocast in its own dtype",
    )
    trainable_dtype: Literal["float32", "model"] = Field(
        "float32",
        description="dtype of the trained weights and optimizer state while training: float32 master weights (the "
        "model's dtype again when the stage ends), or 'model' to train a bf16/fp16 model's weights in place (less "
        "memory, but updates below the dtype's resolution, most of them at lr 1e-5, are rounded away)",
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    compile: bool = Field(
        False,
        description="torch.compile the student's and the teacher's denoisers for training: each stage starts with a "
        "compilation (minutes at full size), then steps run faster on a GPU (benchmarks/RESULTS.md section 5)",
    )
    fsdp: bool = Field(
        False, description="on several processes, shard parameters, gradients and optimizer state (FSDP2) instead of DDP"
    )
    checkpoint_every: int = Field(
        0, ge=0, description="write a training checkpoint every this many optimizer steps (0: only when a stage's training ends)"
    )
    keep_checkpoints: int = Field(2, ge=2, description="complete training checkpoints kept, newest first")

    @model_validator(mode="after")
    def _micro_batches_hold_pairs(self) -> TrainSection:
        if self.gradient_accumulation_steps > self.batch_size:
            raise ValueError(
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must be <= batch_size ({self.batch_size}): "
                "each micro-batch needs at least one pair"
            )
        return self


class ObjectiveSection(_Section):
    weights: dict[str, float] = Field(
        default_factory=dict, description="reward dimension -> weight; empty = equal weights over all dimensions"
    )


class ComponentSpec(BaseModel):
    """A component table after validation: its registered name and validated options."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    key: str  # where the recipe sets it, e.g. "model" or "losses[1]"
    name: str
    config: Config
    weight: float = 1.0  # only for losses

    def build(self, plugins: Plugins) -> Any:
        """Build the component; its user-facing errors are prefixed with the recipe key that set it."""
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
    """The ``[[rewards]]`` tables after validation: each part's spec by its alias, in recipe order."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    parts: dict[str, ComponentSpec]
    key: str = "rewards"  # where the recipe holds it, for messages

    @property
    def name(self) -> str:
        return " + ".join(spec.name for spec in self.parts.values())

    def build(self, plugins: Plugins) -> CombinedReward:
        return CombinedReward({alias: spec.build(plugins) for alias, spec in self.parts.items()})

    def dump(self) -> dict[str, Any]:
        return {"combine": [{"as": alias, **spec.dump()} for alias, spec in self.parts.items()]}

    def dimensions(self, plugins: Plugins) -> tuple[str, ...]:
        return combined_dimensions({alias: spec.dimensions(plugins) for alias, spec in self.parts.items()})


class Recipe(BaseModel):
    """A validated recipe: everything a run needs, with defaults filled in."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    seed: int
    model: ComponentSpec
    reward: ComponentSpec | CombinedRewardSpec
    scorer: ComponentSpec
    pruner: ComponentSpec
    curator: ComponentSpec
    losses: list[ComponentSpec]
    prompts_train: list[str]
    prompts_eval: list[str]
    prompts_probe: list[str] = []  # empty: the scorer ranks on the evaluation prompts
    videos_per_prompt: int
    schedule: ScheduleSection
    train: TrainSection
    objective: ObjectiveSection

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what the run directory stores and fingerprints)."""
        prompts: dict[str, Any] = {"train": self.prompts_train, "eval": self.prompts_eval, "videos_per_prompt": self.videos_per_prompt}
        if self.prompts_probe:  # only when set: runs made before probe prompts existed keep their fingerprint
            prompts["probe"] = self.prompts_probe
        return {
            "seed": self.seed,
            "model": self.model.dump(),
            "reward": self.reward.dump(),
            "scorer": self.scorer.dump(),
            "pruner": self.pruner.dump(),
            "curator": self.curator.dump(),
            "losses": [loss.dump() for loss in self.losses],
            "prompts": prompts,
            "schedule": self.schedule.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "objective": self.objective.model_dump(mode="json"),
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.dump(), sort_keys=True).encode()).hexdigest()[:16]


_COMPONENT_TABLES = {"model": "models", "scorer": "scorers", "pruner": "pruners", "curator": "curators"}
_SECTIONS: dict[str, type[_Section]] = {
    "prompts": PromptsSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
    "objective": ObjectiveSection,
}
_TOP_LEVEL = {"seed", "description", "losses", "reward", "rewards", *_COMPONENT_TABLES, *_SECTIONS}
MAX_SEED = 2**32 - 1  # seeds of videos and steps are derived by adding offsets; keep them far from int64


def _non_finite_numbers(data: Any, key: str = "") -> list[str]:
    """Key paths of every nan / inf in the parsed TOML: no option of any component means anything with them."""
    if isinstance(data, float) and not math.isfinite(data):
        return [f"{key}: must be a finite number, got {data}"]
    if isinstance(data, dict):
        return [e for k, v in data.items() for e in _non_finite_numbers(v, f"{key}.{k}" if key else k)]
    if isinstance(data, list):
        return [e for i, v in enumerate(data) for e in _non_finite_numbers(v, f"{key}[{i}]")]
    return []


def _read_text(path: Path, what: str) -> str:
    """A text file's content; every way it can fail becomes one sentence naming ``what`` and the path."""
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not an error
    except UnicodeDecodeError as exc:
        raise VipkitError(f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise VipkitError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise VipkitError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _key(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _pydantic_errors(prefix: str, exc: ValidationError, schema: type[BaseModel]) -> list[str]:
    errors = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = sorted(schema.model_fields)
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            message = "unknown option" + (f"; did you mean {close[0]!r}?" if close else "") + f" (known: {', '.join(known) or 'none'})"
        elif err["type"].endswith("_type") or err["type"].startswith(("greater", "less")):
            message += f", got {err['input']!r}"
        errors.append(f"{_key(prefix, err['loc']) or prefix}: {message}")
    return errors


def _strict(schema: type[_M], data: Any) -> _M:
    """Validate TOML data with its own types: ``"3"`` or ``true`` is no number, an array may fill a tuple."""
    return schema.model_validate_json(json.dumps(data, default=str), strict=True)


class _Validator:
    """Collects every problem of one recipe before giving up."""

    def __init__(self, data: dict[str, Any], base_dir: Path, plugins: Plugins) -> None:
        self.data = data
        self.base_dir = base_dir
        self.plugins = plugins
        self.errors: list[str] = []

    def component(self, key: str, kind: str, table: Any) -> ComponentSpec | None:
        if not isinstance(table, dict):
            self.errors.append(f"{key}: must be a table with at least `name = \"...\"`, got {type(table).__name__} {table!r}")
            return None
        options = dict(table)
        name = options.pop("name", None)
        weight = options.pop("weight", 1.0) if kind == "losses" else 1.0
        if not isinstance(name, str):
            known = ", ".join(self.plugins.registry(kind).names())
            self.errors.append(f"{key}.name: required: the registered name of a {self.plugins.registry(kind).base.__name__} (known: {known})")
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
            config = _strict(cls.Config, options)
        except ValidationError as exc:
            self.errors.extend(_pydantic_errors(key, exc, cls.Config))
            return None
        return ComponentSpec(kind=kind, key=key, name=name, config=config, weight=float(weight))

    def duplicate_losses(self, losses: list[ComponentSpec | None]) -> None:
        """The same loss with the same options twice is one loss with the summed weight: say so."""
        seen: dict[str, str] = {}
        for spec in losses:
            if spec is None:
                continue
            identity = json.dumps({"name": spec.name, **spec.config.model_dump(mode="json")}, sort_keys=True)
            if identity in seen:
                self.errors.append(
                    f"{spec.key}: repeats {seen[identity]} (same loss, same options); "
                    "remove it and give the first one the summed weight"
                )
            seen.setdefault(identity, spec.key)

    def reward(self) -> ComponentSpec | CombinedRewardSpec | None:
        """``[reward]`` (one reward) or ``[[rewards]]`` (several, combined), never both."""
        if ("reward" in self.data) == ("rewards" in self.data):
            problem = "has both [reward] and [[rewards]]" if "reward" in self.data else "missing table [reward]"
            self.errors.append(
                f"reward: {problem}; use one [reward] table (a RewardModel: name = \"...\") for one reward, "
                "or [[rewards]] tables (each with name and optionally as = \"alias\") to combine several"
            )
            return None
        if "reward" in self.data:
            return self.component("reward", "rewards", self.data["reward"])
        tables = self.data["rewards"]
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.errors.append("rewards: must be one or more [[rewards]] tables, each with name = \"...\"")
            return None
        parts: dict[str, ComponentSpec] = {}
        for i, table in enumerate(tables):
            options = dict(table)
            alias = options.pop("as", options.get("name"))
            spec = self.component(f"rewards[{i}]", "rewards", options)
            if spec is None:
                continue
            if not isinstance(alias, str) or not alias or "." in alias:
                self.errors.append(f"rewards[{i}].as: must be a non-empty name without dots (it prefixes the dimensions: alias.dimension)")
            elif alias in parts:
                self.errors.append(f"rewards[{i}].as: {alias!r} is already used by an earlier [[rewards]] table; give each table its own `as = \"...\"`")
            else:
                parts[alias] = spec
        return CombinedRewardSpec(parts=parts) if len(parts) == len(tables) else None

    def objective_weights(self, objective: ObjectiveSection, reward: ComponentSpec | CombinedRewardSpec) -> None:
        dimensions = reward.dimensions(self.plugins)
        for dim, weight in objective.weights.items():
            if dim not in dimensions:
                close = difflib.get_close_matches(dim, dimensions, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                self.errors.append(f"objective.weights.{dim}: reward {reward.name!r} has no such dimension.{hint} It has: {', '.join(dimensions)}")
            elif weight < 0:
                self.errors.append(f"objective.weights.{dim}: must be >= 0")
        if objective.weights and not sum(objective.weights.values()) > 0:
            self.errors.append("objective.weights: at least one weight must be > 0")

    def section(self, key: str) -> _Section | None:
        try:
            return _strict(_SECTIONS[key], self.data.get(key, {}))
        except ValidationError as exc:
            self.errors.extend(_pydantic_errors(key, exc, _SECTIONS[key]))
            return None

    def prompt_list(self, prompts: PromptsSection, kind: str) -> list[str]:
        inline = getattr(prompts, kind)
        if inline is not None:
            return [p.strip() for p in inline if p.strip()]
        path = self.base_dir / getattr(prompts, f"{kind}_file")
        try:
            lines = [line.strip() for line in _read_text(path, "prompt file").splitlines()]
        except VipkitError as exc:
            self.errors.append(f"prompts.{kind}_file: {exc}")
            return []
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            self.errors.append(f"prompts.{kind}_file: {path} holds no prompt")
        return found

    def run(self, source: str) -> Recipe:
        for key in sorted(set(self.data) - _TOP_LEVEL):
            self.errors.append(f"{key}: unknown key (known: {', '.join(sorted(_TOP_LEVEL))})")
        self.errors.extend(_non_finite_numbers(self.data))
        if not isinstance(self.data.get("description", ""), str):
            self.errors.append("description: must be a string")
        seed = self.data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            self.errors.append(f"seed: must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        specs = {}
        for key, kind in _COMPONENT_TABLES.items():
            if key not in self.data:
                known = ", ".join(self.plugins.registry(kind).names())
                self.errors.append(f"{key}: missing table [{key}]; add it with `name = ` one of: {known}")
            else:
                specs[key] = self.component(key, kind, self.data[key])
        specs["reward"] = self.reward()
        losses_data = self.data.get("losses")
        losses: list[ComponentSpec | None] = []
        if losses_data is None or losses_data == []:
            self.errors.append("losses: missing: add at least one [[losses]] table (e.g. name = \"redpo\")")
        elif not isinstance(losses_data, list):
            self.errors.append("losses: must be an array of tables: write [[losses]] (two brackets), one per loss")
        else:
            losses = [self.component(f"losses[{i}]", "losses", table) for i, table in enumerate(losses_data)]
            self.duplicate_losses(losses)
        sections = {key: self.section(key) for key in _SECTIONS}
        prompts = sections["prompts"]
        train_prompts = self.prompt_list(prompts, "train") if isinstance(prompts, PromptsSection) else []
        eval_prompts = self.prompt_list(prompts, "eval") if isinstance(prompts, PromptsSection) else []
        has_probe = isinstance(prompts, PromptsSection) and (prompts.probe, prompts.probe_file) != (None, None)
        probe_prompts = self.prompt_list(prompts, "probe") if has_probe else []
        objective = sections["objective"]
        if isinstance(objective, ObjectiveSection) and specs["reward"] is not None:
            self.objective_weights(objective, specs["reward"])
        train = sections["train"]
        if isinstance(train, TrainSection) and isinstance(prompts, PromptsSection) and train_prompts:
            videos = len(train_prompts) * prompts.videos_per_prompt
            if train.batch_size > videos:
                self.errors.append(
                    f"train.batch_size: {train.batch_size} pairs per step, but a stage has at most {videos} pairs "
                    f"({len(train_prompts)} training prompts × videos_per_prompt {prompts.videos_per_prompt})"
                )
        if self.errors:
            raise RecipeError(source, self.errors)
        return Recipe(
            source=source,
            seed=seed,
            losses=losses,
            prompts_train=train_prompts,
            prompts_eval=eval_prompts,
            prompts_probe=probe_prompts,
            videos_per_prompt=prompts.videos_per_prompt,
            **specs,
            schedule=sections["schedule"],
            train=sections["train"],
            objective=objective,
        )


def parse_recipe(
    text: str, source: str = "<recipe>", base_dir: Path | None = None, plugins: Plugins | None = None, overrides: Sequence[str] = ()
) -> Recipe:
    """Validate recipe text, with ``--set KEY=VALUE`` overrides applied; raise ``RecipeError`` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(source, [f"TOML syntax error: {exc}"]) from None
    problems = apply_overrides(data, overrides)
    if problems:
        raise RecipeError(source, problems)
    return _Validator(data, base_dir or Path.cwd(), plugins or load_plugins()).run(source)


def load_recipe(path: str | Path, plugins: Plugins | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """Read and validate a recipe file (relative prompt files resolve against its folder)."""
    path = Path(path)
    text = _read_text(path, "recipe")
    if not text.strip():
        raise RecipeError(str(path), ["the file is empty: a recipe needs at least [model], [reward], [prompts], [scorer], [pruner], [curator] and [[losses]]"])
    return parse_recipe(text, str(path), path.parent, plugins, overrides)
