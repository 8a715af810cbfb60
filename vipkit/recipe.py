"""Recipes: TOML → one validated, resolved plan, before any model loads.

Validation collects every error at once, each with its key path (``losses[0].beta: ...``); TOML
syntax errors carry line and column. Component tables (``[model]``, ``[reward]``, ``[scorer]``,
``[pruner]``, ``[curator]``, ``[[losses]]``) name a registered component and are validated against
that component's own ``Config``. Several rewards combine through ``[[rewards]]`` tables instead of
``[reward]`` (each may set ``as = "alias"``); their dimensions are then named ``<alias>.<dimension>``.
Held-out prompts (``[prompts] heldout``) and an optional held-out reward (``[heldout_reward]`` or
``[[heldout_rewards]]``, read like ``[reward]``/``[[rewards]]``) are only ever scored, never ranked or curated on.
Several pruners combine through ``[[pruners]]`` tables instead of ``[pruner]``, each acting in the stages it names
(``stages = [1, 2]``; ``vipkit.pruner_stack``). What a bench matrix validates alike (reading, strict types, component tables) is in ``vipkit.validation``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vipkit.plugins import Plugins, load_plugins
from vipkit.pruner_stack import PrunerStackSpec
from vipkit.recipe_overrides import apply_overrides
from vipkit.seeds import video_seeds

# the component specs are shared with bench matrices; ``from vipkit.recipe import ComponentSpec`` still works
from vipkit.validation import (
    DEFAULT_REWARD_TIMEOUT_S,
    CombinedRewardSpec,
    ComponentSpec,
    ProblemsError,
    TomlValidator,
    parse_toml,
    read_text,
)


class RecipeError(ProblemsError):
    """A recipe with one or more problems; ``errors`` holds one ``key: message`` line each."""

    what = "recipe"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptsSection(_Section):
    """Prompts for training pairs, for evaluation, for ranking blocks and held out (inline lists or files, one prompt
    a line)."""

    train: list[str] | None = Field(None, description="prompts whose teacher/student videos become pairs")
    train_file: str | None = Field(None, description="file with the training prompts, relative to the recipe")
    eval: list[str] | None = Field(
        None, description="prompts for the reports (and for importance scoring without `probe`)"
    )
    eval_file: str | None = Field(None, description="file with the evaluation prompts, relative to the recipe")
    probe: list[str] | None = Field(
        None,
        description="prompts the importance scorer ranks blocks on, with their own seeds; without it the scorer "
        "uses the evaluation prompts and seeds, and the run's table then scores the videos the pruning was chosen on",
    )
    probe_file: str | None = Field(None, description="file with the probe prompts, relative to the recipe")
    heldout: list[str] | None = Field(
        None,
        description="prompts the run never trains, probes or evaluates on, with their own seeds: scored after every "
        "prune and distillation (and for the teacher) and reported beside the in-run numbers; none may be a training, "
        "evaluation or probe prompt",
    )
    heldout_file: str | None = Field(None, description="file with the held-out prompts, relative to the recipe")
    videos_per_prompt: int = Field(1, ge=1, le=1000, description="training videos per prompt, each with its own seed")

    @model_validator(mode="after")
    def _one_source_each(self) -> PromptsSection:
        for kind, required in (("train", True), ("eval", True), ("probe", False), ("heldout", False)):
            inline, file = getattr(self, kind), getattr(self, f"{kind}_file")
            sources = (inline is not None) + (file is not None)
            if sources > 1 or (required and not sources):
                raise ValueError(
                    f"set {'exactly' if required else 'at most'} one of `{kind}` (a list) and `{kind}_file` (a path)"
                )
            if inline is not None and not [p for p in inline if p.strip()]:
                raise ValueError(f"`{kind}` holds no prompt")
        return self


class ScheduleSection(_Section):
    stages: int = Field(3, ge=1, description="prune → curate → train rounds")
    block_kinds: list[str] | None = Field(
        None,
        min_length=1,
        description="block kinds that may be pruned; default: the model family's (`default_block_kinds`)",
    )
    ranking: Literal["every_stage", "once"] = Field(
        "every_stage",
        description="every_stage: the scorer ranks the student's blocks again at each stage (V.I.P.'s iterative "
        "loop: what a stage's distillation changed counts); once: it ranks the teacher's blocks at stage 1 and later "
        "stages walk on along that ranking, so that runs differing only in their distillation remove the same blocks "
        "(ablations at equal size)",
    )


class LoraSection(_Section):
    """Low-rank adapters (peft) on the trainable scope instead of training its weights directly."""

    rank: int = Field(8, ge=1, description="adapter rank r")
    alpha: float = Field(8.0, gt=0, description="adapter scale numerator (the update is scaled by alpha / rank)")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="name endings of the Linear layers inside the trainable scope that get adapters; default: the "
        "model family's (`lora_targets`)",
    )


TRACKERS = {  # train.log_with: the modules accelerate's tracker imports (any one will do), and how to install one
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'vipkit[tensorboard]'"),
    "wandb": (("wandb",), "pip install wandb"),
}


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
    warmup_steps: int = Field(
        0, ge=0, description="optimizer steps of linear warm-up from 0 at the start of each stage"
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; None disables it")
    trainable: str | None = Field(
        None, description="family-defined parameter scope to train (e.g. motion or all); default: the model family's"
    )
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
        False,
        description="on several processes, shard parameters, gradients and optimizer state (FSDP2) instead of DDP",
    )
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="write a training checkpoint every this many optimizer steps (0: only when a stage's training ends)",
    )
    keep_checkpoints: int = Field(2, ge=2, description="complete training checkpoints kept, newest first")
    log_with: Literal["tensorboard", "wandb"] | None = Field(
        None,
        exclude=True,  # watching a run changes nothing it computes: not in resolved.json nor the fingerprint
        description="also log every training step to TensorBoard or Weights & Biases (accelerate's trackers, "
        "files under RUN/trackers/) to follow a run live; metrics.jsonl holds every step either way. Not part of "
        "the recipe's fingerprint: a run may resume with another choice",
    )

    @field_validator("log_with")
    @classmethod
    def _tracker_installed(cls, value: str | None) -> str | None:
        """A tracker that is not installed fails here, before any work, not with a traceback mid-run."""
        modules, command = TRACKERS.get(value, ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise ValueError(
                f"{value!r} is not installed in this environment; install it with `{command}`, or leave "
                "train.log_with unset (metrics.jsonl and the report's curves.png hold every step either way)"
            )
        return value

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


class Recipe(BaseModel):
    """A validated recipe: everything a run needs, with defaults filled in."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    seed: int
    model: ComponentSpec
    reward: ComponentSpec | CombinedRewardSpec
    scorer: ComponentSpec
    pruner: ComponentSpec | PrunerStackSpec  # [pruner] every stage, or [[pruners]] each in its stages
    curator: ComponentSpec
    losses: list[ComponentSpec]
    prompts_train: list[str]
    prompts_eval: list[str]
    prompts_probe: list[str] = []  # empty: the scorer ranks on the evaluation prompts
    prompts_heldout: list[str] = []  # empty: no held-out evaluation
    heldout_reward: ComponentSpec | CombinedRewardSpec | None = None  # scored on the held-out videos only
    videos_per_prompt: int
    schedule: ScheduleSection
    train: TrainSection
    objective: ObjectiveSection
    reward_timeout_s: float = DEFAULT_REWARD_TIMEOUT_S  # not in dump() nor the fingerprint: it changes no result

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what the run directory stores and fingerprints)."""
        prompts: dict[str, Any] = {
            "train": self.prompts_train,
            "eval": self.prompts_eval,
            "videos_per_prompt": self.videos_per_prompt,
        }
        if self.prompts_probe:  # only when set: runs made before probe prompts existed keep their fingerprint
            prompts["probe"] = self.prompts_probe
        if self.prompts_heldout:  # likewise
            prompts["heldout"] = self.prompts_heldout
        heldout_reward = {"heldout_reward": self.heldout_reward.dump()} if self.heldout_reward is not None else {}
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
            **heldout_reward,
        }

    def probe_videos(self) -> tuple[list[str], list[int]]:
        """The prompts and seeds the scorer ranks on: the probe ones, or the evaluation ones when there are none."""
        if self.prompts_probe:
            return self.prompts_probe, video_seeds(self.seed, "probe", len(self.prompts_probe))
        return self.prompts_eval, video_seeds(self.seed, "eval", len(self.prompts_eval))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.dump(), sort_keys=True).encode()).hexdigest()[:16]


_COMPONENT_TABLES = {"model": "models", "scorer": "scorers", "curator": "curators"}
_SECTIONS: dict[str, type[_Section]] = {
    "prompts": PromptsSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
    "objective": ObjectiveSection,
}
_TOP_LEVEL = {
    "seed",
    "description",
    "reward_timeout_s",
    "losses",
    "reward",
    "rewards",
    "heldout_reward",
    "heldout_rewards",
    "pruner",
    "pruners",
    *_COMPONENT_TABLES,
    *_SECTIONS,
}
_PROMPT_ROLES = {"train": "training", "eval": "evaluation", "probe": "probe"}  # what a held-out prompt may not be


class _RecipeValidator(TomlValidator):
    """Collects every problem of one recipe before giving up."""

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

    def family_defaults(
        self, model: ComponentSpec, schedule: ScheduleSection, train: TrainSection
    ) -> tuple[ScheduleSection, TrainSection]:
        """The sections with what the recipe leaves unset filled from the model family's declared defaults."""
        family = self.plugins.registry("models").get(model.name)
        if schedule.block_kinds is None:
            if not family.default_block_kinds:
                self.errors.append(
                    f"schedule.block_kinds: model family {model.name!r} declares no default block kinds; name the kinds to prune"
                )
            schedule = schedule.model_copy(update={"block_kinds": list(family.default_block_kinds)})
        updates: dict[str, Any] = {}
        if train.trainable is None:
            updates["trainable"] = family.default_trainable
        if train.lora is not None and train.lora.target_modules is None:
            if not family.lora_targets:
                self.errors.append(
                    f"train.lora.target_modules: model family {model.name!r} declares no default LoRA targets; name the Linear layers to adapt"
                )
            updates["lora"] = train.lora.model_copy(update={"target_modules": list(family.lora_targets)})
        return schedule, train.model_copy(update=updates)

    def prompts(self, prompts: PromptsSection, kind: str) -> list[str]:
        """The prompts of ``kind``; empty when the section sets none (only ``probe`` and ``heldout`` may be unset)."""
        inline, file = getattr(prompts, kind), getattr(prompts, f"{kind}_file")
        return [] if (inline, file) == (None, None) else self.prompt_list(kind, inline, file)

    def heldout_overlap(self, prompts: PromptsSection, heldout: list[str], others: dict[str, list[str]]) -> None:
        """A held-out prompt that the run also trains, probes or evaluates on (exact match after strip) is an error
        naming it: its held-out score would not be held out."""
        key = "prompts.heldout" if prompts.heldout is not None else "prompts.heldout_file"
        overlaps = []
        for prompt in dict.fromkeys(heldout):
            roles = [_PROMPT_ROLES[kind] for kind, listed in others.items() if prompt in listed]
            if roles:
                overlaps.append(f"{key}: {prompt!r} is also among the {' and '.join(roles)} prompts")
        shown = overlaps[:5] + ([f"{key}: ... and {len(overlaps) - 5} more"] if len(overlaps) > 5 else [])
        if overlaps:
            shown[-1] += "; held-out prompts must be ones the run never trains, probes or evaluates on"
        self.errors.extend(shown)

    def pruners(self) -> list[tuple[tuple[int, ...] | None, ComponentSpec | None, str]] | ComponentSpec | None:
        """``[pruner]`` (one pruner, every stage) or ``[[pruners]]`` (several, each in the stages it names: None for every
        stage until the schedule is known, ``pruner_stack``; a table whose options failed keeps its stages, so their
        problems are found too), never both."""
        given = ("pruner" in self.data, "pruners" in self.data)
        if given[0] == given[1]:
            problem = "has both [pruner] and [[pruners]]" if given[0] else "missing table [pruner]"
            known = ", ".join(self.plugins.registry("pruners").names())
            self.errors.append(
                f"pruner: {problem}; use one [pruner] table (name = one of: {known}) to prune the same way every stage, "
                "or [[pruners]] tables, each with name and optionally stages = [...], to combine several"
            )
            return None
        if given[0]:
            return self.component("pruner", "pruners", self.data["pruner"])
        tables = self.data["pruners"]
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            self.errors.append('pruners: must be one or more [[pruners]] tables, each with name = "..."')
            return None
        parts: list[tuple[tuple[int, ...] | None, ComponentSpec | None, str]] = []
        for i, table in enumerate(tables):
            options = dict(table)
            stages = options.pop("stages", None)
            spec = self.component(f"pruners[{i}]", "pruners", options)
            numbers = isinstance(stages, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in stages)
            if stages is not None and not (numbers and stages and len(set(stages)) == len(stages)):
                self.errors.append(
                    f"pruners[{i}].stages: must be a list of distinct stage numbers (1 is the first stage), e.g. [1, 2], "
                    f"or left out to act in every stage; got {stages!r}"
                )
                parts.append(((), None, f"pruners[{i}]"))  # its stages are unknown: no other check of them
            else:
                parts.append((tuple(sorted(stages)) if stages is not None else None, spec, f"pruners[{i}]"))
        return parts

    def pruner_stack(
        self, parts: list[tuple[tuple[int, ...] | None, ComponentSpec | None, str]], schedule: ScheduleSection
    ) -> PrunerStackSpec | None:
        """The ``[[pruners]]`` against the schedule: stage numbers within it, a pruner in every stage, no pruner twice in
        one stage; None when a table's options failed (their problems are already listed)."""
        count = schedule.stages
        resolved = [
            (tuple(range(1, count + 1)) if stages is None else stages, spec, key) for stages, spec, key in parts
        ]
        for stages, _, key in resolved:
            outside = [n for n in stages if not 1 <= n <= count]
            if outside:
                self.errors.append(
                    f"{key}.stages: stage {', '.join(map(str, outside))} is outside the schedule's stages 1-{count} "
                    "(schedule.stages)"
                )
        valid = [(stages, spec) for stages, spec, _ in resolved if spec is not None]
        if len(valid) < len(resolved):  # which pruner acts when is unknown until every table is right
            return None
        for stage in range(1, count + 1):
            acting = [(spec, key) for stages, spec, key in resolved if stage in stages]
            if not acting:
                self.errors.append(
                    f"pruners: stage {stage} of the {count} stages (schedule.stages) has no pruner; add {stage} to a "
                    "[[pruners]] table's stages (a table without stages acts in every stage)"
                )
            named = [(spec.name, key) for spec, key in acting]
            for later, (name, key) in enumerate(named):
                earlier = next((k for n, k in named[:later] if n == name), None)
                if earlier is not None:
                    self.errors.append(
                        f"{key}: a second {name!r} pruner acting in stage {stage}, where {earlier} acts too; give them "
                        "different stages or merge their options into one table"
                    )
        return PrunerStackSpec(parts=valid)

    def run(self, source: str) -> Recipe:
        self.top_level(_TOP_LEVEL)
        if not isinstance(self.data.get("description", ""), str):
            self.errors.append("description: must be a string")
        seed = self.seed()
        reward_timeout_s = self.reward_timeout()
        specs = {}
        for key, kind in _COMPONENT_TABLES.items():
            if key not in self.data:
                known = ", ".join(self.plugins.registry(kind).names())
                self.errors.append(f"{key}: missing table [{key}]; add it with `name = ` one of: {known}")
            else:
                specs[key] = self.component(key, kind, self.data[key])
        specs["reward"] = self.reward()
        pruners = self.pruners()
        heldout_reward = self.reward("heldout_reward", "heldout_rewards", required=False)
        losses_data = self.data.get("losses")
        losses: list[ComponentSpec | None] = []
        if losses_data is None or losses_data == []:
            self.errors.append('losses: missing: add at least one [[losses]] table (e.g. name = "redpo")')
        elif not isinstance(losses_data, list):
            self.errors.append("losses: must be an array of tables: write [[losses]] (two brackets), one per loss")
        else:
            losses = [self.component(f"losses[{i}]", "losses", table) for i, table in enumerate(losses_data)]
            self.duplicate_losses(losses)
        sections = {key: self.section(key, schema) for key, schema in _SECTIONS.items()}
        prompts = sections["prompts"]
        listed = {
            kind: self.prompts(prompts, kind) if isinstance(prompts, PromptsSection) else []
            for kind in ("train", "eval", "probe", "heldout")
        }
        train_prompts, eval_prompts, probe_prompts, heldout_prompts = listed.values()
        if heldout_prompts:
            self.heldout_overlap(prompts, heldout_prompts, {kind: listed[kind] for kind in _PROMPT_ROLES})
        elif heldout_reward is not None and isinstance(prompts, PromptsSection):
            table = "heldout_reward" if isinstance(heldout_reward, ComponentSpec) else "heldout_rewards"
            self.errors.append(
                f"{table}: scored on the held-out prompts only, and the recipe has none: set [prompts] heldout or heldout_file"
            )
        schedule = sections["schedule"]
        if isinstance(pruners, list):  # [[pruners]]: checked against the schedule, when it is right
            pruners = self.pruner_stack(pruners, schedule) if isinstance(schedule, ScheduleSection) else None
        specs["pruner"] = pruners
        objective = sections["objective"]
        if isinstance(objective, ObjectiveSection) and specs["reward"] is not None:
            self.objective_weights(objective.weights, specs["reward"])
        train = sections["train"]
        if isinstance(train, TrainSection) and isinstance(prompts, PromptsSection) and train_prompts:
            videos = len(train_prompts) * prompts.videos_per_prompt
            if train.batch_size > videos:
                self.errors.append(
                    f"train.batch_size: {train.batch_size} pairs per step, but a stage has at most {videos} pairs "
                    f"({len(train_prompts)} training prompts × videos_per_prompt {prompts.videos_per_prompt})"
                )
        if (
            specs.get("model") is not None
            and isinstance(sections["schedule"], ScheduleSection)
            and isinstance(train, TrainSection)
        ):
            sections["schedule"], sections["train"] = self.family_defaults(specs["model"], sections["schedule"], train)
        if self.errors:
            raise RecipeError(source, self.errors)
        return Recipe(
            source=source,
            seed=seed,
            reward_timeout_s=reward_timeout_s,
            losses=losses,
            prompts_train=train_prompts,
            prompts_eval=eval_prompts,
            prompts_probe=probe_prompts,
            prompts_heldout=heldout_prompts,
            heldout_reward=heldout_reward,
            videos_per_prompt=prompts.videos_per_prompt,
            **specs,
            schedule=sections["schedule"],
            train=sections["train"],
            objective=objective,
        )


def parse_recipe(
    text: str,
    source: str = "<recipe>",
    base_dir: Path | None = None,
    plugins: Plugins | None = None,
    overrides: Sequence[str] = (),
) -> Recipe:
    """Validate recipe text, with ``--set KEY=VALUE`` overrides applied; raise ``RecipeError`` listing every problem."""
    data = parse_toml(text, source, RecipeError)
    problems = apply_overrides(data, overrides)
    if problems:
        raise RecipeError(source, problems)
    return _RecipeValidator(data, base_dir or Path.cwd(), plugins or load_plugins()).run(source)


def load_recipe(path: str | Path, plugins: Plugins | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """Read and validate a recipe file (relative prompt files resolve against its folder)."""
    path = Path(path)
    text = read_text(path, "recipe")
    if not text.strip():
        raise RecipeError(
            str(path),
            [
                "the file is empty: a recipe needs at least [model], [reward], [prompts], [scorer], [pruner], [curator] and [[losses]]"
            ],
        )
    return parse_recipe(text, str(path), path.parent, plugins, overrides)
