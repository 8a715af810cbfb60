"""What a saved model's manifest records of its making: the recipe that made it, and which weights training changed.

Every model a run saves carries this record (``vipkit_model.json``'s ``provenance``; ``vipkit export`` copies it
into ``vipkit_export.json``), so a model found later says how it was made without its run folder:

- ``rewards``: the guiding reward, one entry per part (``as``: its alias in ``[[rewards]]``, None for a single
  ``[reward]``; ``name``; the validated ``config``; ``provider``: the plugin and version that scored), and
  ``objective_weights`` over their dimensions (empty: the mean of all);
- ``schedule``: stages, block kinds, and the ``scorer``, ``pruner`` and ``curator`` with their options;
  ``losses`` with weights and options; ``training``: the few settings that say how hard it was trained;
- ``recipe``: its file name and fingerprint (``Recipe.fingerprint``), the run's seed;
- ``base_models``: the hub ids the teacher came from (the model card's ``base_model``);
- ``trained_scope``: the trainable scope training changed (None when nothing was trained). An export format that
  holds only part of a model (AnimateDiff's motion adapter) is exact only when nothing outside that part changed;
- ``teacher_provenance``: the teacher's own record when it is itself a vipkit model (a second compression).

A teacher that is a vipkit model hands its record on: two different scopes give a combined one that no partial
format accepts, and a teacher without a record leaves the scope unknown (the key absent). ``vipkit bench`` shows
the record as its "guided by" and "budget" columns (``guided_by``, ``budget``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vipkit.errors import VipkitError
from vipkit.interfaces import VideoModel
from vipkit.recipe import Recipe
from vipkit.validation import CombinedRewardSpec, ComponentSpec


def run_provenance(recipe: Recipe, teacher: VideoModel, trained: bool) -> dict[str, Any]:
    """The record of a model a run of ``recipe`` saves; ``trained``: whether any of its stages took a training step."""
    inherited = _teacher_record(recipe)
    record: dict[str, Any] = {"base_models": teacher.source_models() or list(inherited.get("base_models", []))}
    scopes = {recipe.train.trainable} if trained else set()
    if not inherited.get("from_vipkit_model"):
        record["trained_scope"] = "+".join(sorted(scopes)) if scopes else None
    elif "trained_scope" in inherited:  # else unknown: a teacher saved before vipkit recorded it
        scopes |= {inherited["trained_scope"]} - {None}
        record["trained_scope"] = "+".join(sorted(scopes)) if scopes else None
    record |= recipe_record(recipe)
    if inherited.get("rewards"):
        record["teacher_provenance"] = {k: v for k, v in inherited.items() if k != "from_vipkit_model"}
    return record


def recipe_record(recipe: Recipe) -> dict[str, Any]:
    """What guided the compression and how hard: rewards, objective, schedule, losses, training (see the module)."""
    from vipkit.plugins import load_plugins

    plugins = load_plugins()
    parts = recipe.reward.parts.items() if isinstance(recipe.reward, CombinedRewardSpec) else [(None, recipe.reward)]
    train = recipe.train
    return {
        "recipe": {"file": Path(recipe.source).name, "fingerprint": recipe.fingerprint(), "seed": recipe.seed},
        "rewards": [
            {"as": alias, **reward_part_identity(spec, plugins.provider("rewards", spec.name))} for alias, spec in parts
        ],
        "objective_weights": dict(recipe.objective.weights),
        "schedule": {
            "stages": recipe.schedule.stages,
            "block_kinds": list(recipe.schedule.block_kinds or []),
            "scorer": recipe.scorer.dump(),
            "pruner": recipe.pruner.dump(),
            "curator": recipe.curator.dump(),
        },
        "losses": [loss.dump() for loss in recipe.losses],
        "training": {
            "epochs": train.epochs,
            "batch_size": train.batch_size,
            "learning_rate": train.learning_rate,
            "trainable": train.trainable,
            "lora_rank": train.lora.rank if train.lora else None,
        },
    }


def reward_part_identity(spec: ComponentSpec, provider: str) -> dict[str, Any]:
    """One reward part as provenance and ``vipkit bench`` name it: its name, validated config and plugin version."""
    return {"name": spec.name, "config": spec.config.model_dump(mode="json"), "provider": provider}


def model_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a model folder vipkit saved (``vipkit_model.json``) or exported (``vipkit_export.json``), with
    ``kind`` ("saved" or "export") added; None for any other folder. A damaged manifest is a ``VipkitError``."""
    from vipkit.export import export_manifest
    from vipkit.saved_model import MANIFEST, read_manifest

    folder = Path(folder).expanduser()
    if (folder / MANIFEST).is_file():
        return {**read_manifest(folder), "kind": "saved"}
    manifest = export_manifest(folder)
    return None if manifest is None else {**manifest, "kind": "export"}


def options_provenance(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of the vipkit model folder (saved or exported) that any of a ``[model]`` table's options names:
    ``{"from_vipkit_model": True, **its provenance}``; None when no option names one. A damaged manifest gives
    ``{"from_vipkit_model": True}`` alone (nothing known)."""
    for value in options.values():
        if not isinstance(value, str) or not value or not Path(value).expanduser().is_dir():
            continue
        try:
            manifest = model_manifest(value)
        except VipkitError:
            return {"from_vipkit_model": True}
        if manifest is not None:
            return {"from_vipkit_model": True, **manifest.get("provenance", {})}
    return None


def _teacher_record(recipe: Recipe) -> dict[str, Any]:
    return options_provenance(recipe.model.config.model_dump()) or {}


def guided_by(provenance: Mapping[str, Any]) -> str:
    """The record's guiding reward(s) in a few words: ``shapes``, ``clip + shapes (s2) · objective shapes.a 1``;
    an earlier compression first (``clip → shapes``); ``not recorded`` for a model saved before vipkit recorded it."""
    rewards = provenance.get("rewards")
    if not rewards:
        return "not recorded"
    names = " + ".join(
        part["name"] if part.get("as") in (None, part["name"]) else f"{part['name']} ({part['as']})" for part in rewards
    )
    weights = provenance.get("objective_weights") or {}
    text = names + (" · objective " + ", ".join(f"{dim} {w:g}" for dim, w in weights.items()) if weights else "")
    earlier = provenance.get("teacher_provenance")
    return f"{guided_by(earlier)} → {text}" if earlier else text


def budget(provenance: Mapping[str, Any], stage: int | None = None) -> str:
    """The schedule's pruning budget: ``2 stages × block(blocks_per_stage=1)``; ``stage 1 of 2 × ...`` for a stage's
    model (``stage``: the stage whose model this is, when known); ``not recorded`` without a record."""
    schedule = provenance.get("schedule")
    if not schedule:
        return "not recorded"
    pruner = dict(schedule["pruner"])
    name = pruner.pop("name")
    options = ", ".join(f"{key}={value}" for key, value in pruner.items() if value is not None)
    stages = schedule["stages"]
    done = f"stage {stage} of {stages}" if stage is not None and stage < stages else f"{stages} stages"
    return f"{done} × {name}({options})"
