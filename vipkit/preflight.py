"""The recipe against its built parts, before a run writes anything: what validation alone cannot know.

Validation (``vipkit.recipe``) needs no model. Some contradictions only show once the parts exist:
block kinds the model does not have, a trainable scope it does not define, objective weights on
dimensions the built reward does not score, and each component's own ``check_plan`` (a pruner's
budget that the model's blocks cannot supply). All of them are reported at once, with recipe keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vipkit.errors import VipkitError
from vipkit.interfaces import Component, Plan
from vipkit.recipe import ComponentSpec, Recipe, RecipeError

if TYPE_CHECKING:
    from vipkit.engine import BuiltRecipe


def _components(recipe: Recipe, parts: BuiltRecipe) -> list[tuple[ComponentSpec, Component]]:
    pairs: list[tuple[ComponentSpec, Component]] = [
        (recipe.model, parts.teacher),
        (recipe.reward, parts.reward),
        (recipe.scorer, parts.scorer),
        (recipe.pruner, parts.pruner),
        (recipe.curator, parts.curator),
    ]
    if recipe.heldout_reward is not None and parts.heldout_reward is not None:
        pairs.append((recipe.heldout_reward, parts.heldout_reward))
    return pairs + [(spec, item.loss) for spec, item in zip(recipe.losses, parts.losses, strict=True)]


def check_plan(recipe: Recipe, parts: BuiltRecipe) -> Plan:
    """The plan the run will follow; raise ``RecipeError`` listing every contradiction in it."""
    model, errors = parts.teacher, []
    blocks = model.blocks()
    kinds = tuple(recipe.schedule.block_kinds)
    available = sorted({block.kind for block in blocks})
    for kind in kinds:
        if kind not in available:
            errors.append(
                f"schedule.block_kinds: model {recipe.model.name!r} has no block of kind {kind!r} "
                f"(its prunable kinds: {', '.join(available) or 'none'})"
            )
    try:
        model.trainable_parameters(recipe.train.trainable)
    except VipkitError as exc:
        errors.append(f"train.trainable: {exc}")
    dimensions = tuple(parts.reward.dimensions)
    for dimension in recipe.objective.weights:
        if dimension not in dimensions:
            errors.append(
                f"objective.weights.{dimension}: the reward {recipe.reward.name!r} as configured does not score it "
                f"(it scores: {', '.join(dimensions)})"
            )
    probe_prompts, probe_seeds = recipe.probe_videos()
    plan = Plan(
        model,
        parts.reward,
        recipe.schedule.stages,
        kinds,
        tuple(model.blocks_of(kinds)),
        tuple(probe_prompts),
        tuple(probe_seeds),
    )
    for spec, component in _components(recipe, parts):  # "[i].option" of a table array joins without a dot
        errors += [
            f"{spec.key}{'' if problem.startswith('[') else '.'}{problem}" for problem in component.check_plan(plan)
        ]
    if errors:
        raise RecipeError(recipe.source, errors)
    return plan
