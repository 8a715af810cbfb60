"""Recipes: TOML → one validated, resolved plan, before any model loads.

Validation collects every error at once, each with its key path (``losses[0].beta: ...``); TOML
syntax errors carry line and column. Component tables (``[model]``, ``[reward]``, ``[scorer]``,
``[pruner]``, ``[curator]``, ``[[losses]]``) name a registered component and are validated against
that component's own ``Config``.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vipkit.errors import VipkitError
from vipkit.interfaces import Config
from vipkit.plugins import Plugins, load_plugins


class RecipeError(VipkitError):
    """A recipe with one or more problems; ``errors`` holds one ``key: message`` line each."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
        super().__init__(f"recipe {source} has {count}:\n" + "\n".join(f"  - {e}" for e in errors))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptsSection(_Section):
    """Prompts for training pairs and for evaluation (inline lists or files, one prompt a line)."""

    train: list[str] | None = Field(None, description="prompts whose teacher/student videos become pairs")
    train_file: str | None = Field(None, description="file with the training prompts, relative to the recipe")
    eval: list[str] | None = Field(None, description="prompts for importance scoring and reports")
    eval_file: str | None = Field(None, description="file with the evaluation prompts, relative to the recipe")
    videos_per_prompt: int = Field(1, ge=1, description="training videos per prompt, each with its own seed")

    @model_validator(mode="after")
    def _one_source_each(self) -> PromptsSection:
        for kind in ("train", "eval"):
            inline, file = getattr(self, kind), getattr(self, f"{kind}_file")
            if (inline is None) == (file is None):
                raise ValueError(f"set exactly one of `{kind}` (a list) and `{kind}_file` (a path)")
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
    mixed_precision: Literal["no", "bf16"] = Field("no", description="bf16 autocast for the training forward passes")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
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
    name: str
    config: Config
    weight: float = 1.0  # only for losses

    def build(self, plugins: Plugins) -> Any:
        return plugins.registry(self.kind).get(self.name)(self.config)

    def dump(self) -> dict[str, Any]:
        data = {"name": self.name, **self.config.model_dump(mode="json")}
        return data | ({"weight": self.weight} if self.kind == "losses" else {})


class Recipe(BaseModel):
    """A validated recipe: everything a run needs, with defaults filled in."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    seed: int
    model: ComponentSpec
    reward: ComponentSpec
    scorer: ComponentSpec
    pruner: ComponentSpec
    curator: ComponentSpec
    losses: list[ComponentSpec]
    prompts_train: list[str]
    prompts_eval: list[str]
    videos_per_prompt: int
    schedule: ScheduleSection
    train: TrainSection
    objective: ObjectiveSection

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what the run directory stores and fingerprints)."""
        return {
            "seed": self.seed,
            "model": self.model.dump(),
            "reward": self.reward.dump(),
            "scorer": self.scorer.dump(),
            "pruner": self.pruner.dump(),
            "curator": self.curator.dump(),
            "losses": [loss.dump() for loss in self.losses],
            "prompts": {"train": self.prompts_train, "eval": self.prompts_eval, "videos_per_prompt": self.videos_per_prompt},
            "schedule": self.schedule.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "objective": self.objective.model_dump(mode="json"),
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.dump(), sort_keys=True).encode()).hexdigest()[:16]


_COMPONENT_TABLES = {"model": "models", "reward": "rewards", "scorer": "scorers", "pruner": "pruners", "curator": "curators"}
_SECTIONS: dict[str, type[_Section]] = {
    "prompts": PromptsSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
    "objective": ObjectiveSection,
}
_TOP_LEVEL = {"seed", "description", "losses", *_COMPONENT_TABLES, *_SECTIONS}


def _key(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _pydantic_errors(prefix: str, exc: ValidationError) -> list[str]:
    errors = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown option"
        errors.append(f"{_key(prefix, err['loc']) or prefix}: {message}")
    return errors


class _Validator:
    """Collects every problem of one recipe before giving up."""

    def __init__(self, data: dict[str, Any], base_dir: Path, plugins: Plugins) -> None:
        self.data = data
        self.base_dir = base_dir
        self.plugins = plugins
        self.errors: list[str] = []

    def component(self, key: str, kind: str, table: Any) -> ComponentSpec | None:
        if not isinstance(table, dict):
            self.errors.append(f"{key}: must be a table with at least `name = \"...\"`")
            return None
        options = dict(table)
        name = options.pop("name", None)
        weight = options.pop("weight", 1.0) if kind == "losses" else 1.0
        if not isinstance(name, str):
            self.errors.append(f"{key}.name: required: the registered name of a {self.plugins.registry(kind).base.__name__}")
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
            config = cls.Config.model_validate(options)
        except ValidationError as exc:
            self.errors.extend(_pydantic_errors(key, exc))
            return None
        return ComponentSpec(kind=kind, name=name, config=config, weight=float(weight))

    def section(self, key: str) -> _Section | None:
        try:
            return _SECTIONS[key].model_validate(self.data.get(key, {}))
        except ValidationError as exc:
            self.errors.extend(_pydantic_errors(key, exc))
            return None

    def prompt_list(self, prompts: PromptsSection, kind: str) -> list[str]:
        inline = getattr(prompts, kind)
        if inline is not None:
            return [p.strip() for p in inline if p.strip()]
        path = self.base_dir / getattr(prompts, f"{kind}_file")
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            self.errors.append(f"prompts.{kind}_file: cannot read {path}: {exc.strerror or exc}")
            return []
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            self.errors.append(f"prompts.{kind}_file: {path} holds no prompt")
        return found

    def run(self, source: str) -> Recipe:
        for key in sorted(set(self.data) - _TOP_LEVEL):
            self.errors.append(f"{key}: unknown key (known: {', '.join(sorted(_TOP_LEVEL))})")
        seed = self.data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            self.errors.append("seed: must be an integer >= 0")
        specs = {}
        for key, kind in _COMPONENT_TABLES.items():
            if key not in self.data:
                base = self.plugins.registry(kind).base.__name__
                self.errors.append(f"{key}: missing table [{key}] (a {base}: name = \"...\")")
            else:
                specs[key] = self.component(key, kind, self.data[key])
        losses_data = self.data.get("losses")
        losses: list[ComponentSpec | None] = []
        if not isinstance(losses_data, list) or not losses_data:
            self.errors.append("losses: missing: add at least one [[losses]] table (e.g. name = \"redpo\")")
        else:
            losses = [self.component(f"losses[{i}]", "losses", table) for i, table in enumerate(losses_data)]
        sections = {key: self.section(key) for key in _SECTIONS}
        prompts = sections["prompts"]
        train_prompts = self.prompt_list(prompts, "train") if isinstance(prompts, PromptsSection) else []
        eval_prompts = self.prompt_list(prompts, "eval") if isinstance(prompts, PromptsSection) else []
        objective = sections["objective"]
        reward = specs.get("reward")
        if isinstance(objective, ObjectiveSection) and reward is not None:
            dimensions = self.plugins.registry("rewards").get(reward.name).dimensions
            for dim, weight in objective.weights.items():
                if dim not in dimensions:
                    self.errors.append(f"objective.weights.{dim}: reward {reward.name!r} has no such dimension (it has: {', '.join(dimensions)})")
                elif weight < 0:
                    self.errors.append(f"objective.weights.{dim}: must be >= 0")
            if objective.weights and not sum(objective.weights.values()) > 0:
                self.errors.append("objective.weights: at least one weight must be > 0")
        if self.errors:
            raise RecipeError(source, self.errors)
        return Recipe(
            source=source,
            seed=seed,
            losses=losses,
            prompts_train=train_prompts,
            prompts_eval=eval_prompts,
            videos_per_prompt=prompts.videos_per_prompt,
            **specs,
            schedule=sections["schedule"],
            train=sections["train"],
            objective=objective,
        )


def parse_recipe(text: str, source: str = "<recipe>", base_dir: Path | None = None, plugins: Plugins | None = None) -> Recipe:
    """Validate recipe text; raise ``RecipeError`` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(source, [f"TOML syntax error: {exc}"]) from None
    return _Validator(data, base_dir or Path.cwd(), plugins or load_plugins()).run(source)


def load_recipe(path: str | Path, plugins: Plugins | None = None) -> Recipe:
    """Read and validate a recipe file (relative prompt files resolve against its folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VipkitError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    return parse_recipe(text, str(path), path.parent, plugins)
