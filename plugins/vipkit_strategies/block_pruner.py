"""``block``: remove this stage's least important blocks: a count, a fraction of what is left, or a share of a target
stated over the whole schedule (the paper's "−67.5 % of the motion-module parameters")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

import vipkit
from vipkit import VipkitError


class BlockPruner(vipkit.Pruner):
    """Walk the ranking from the least important block and remove blocks until the stage budget is met.

    A candidate no longer among ``model.blocks()`` (e.g. inside a motion module removed earlier) is
    skipped. Removed parameters are measured on the model, so nested blocks are never counted twice.
    If the ranking runs out first, fewer blocks are removed; the returned list says how many.
    """

    name = "block"

    class Config(vipkit.Config):
        blocks_per_stage: int | None = Field(
            4, gt=0, description="Blocks to remove per stage (default 4 unless param_fraction is given)."
        )
        param_fraction: float | None = Field(
            None,
            gt=0,
            lt=1,
            description="Remove blocks until at least this fraction of the model's parameters at the start "
            "of the stage is gone (0 < f < 1).",
        )
        target_fraction: float | None = Field(
            None,
            gt=0,
            lt=1,
            description="Remove this fraction of the teacher's parameters (of the blocks of `target_kind`, or of the "
            "whole denoiser) over the whole schedule, an equal share per stage: after stage s of S at least "
            "s/S of it is gone (0 < f < 1).",
        )
        target_kind: str | None = Field(
            None,
            min_length=1,
            description="The block kind whose parameters `target_fraction` counts (e.g. motion_module); "
            "None: the whole denoiser's.",
        )

        @model_validator(mode="before")
        @classmethod
        def _fraction_replaces_default_count(cls, data: Any) -> Any:
            fractions = ("param_fraction", "target_fraction")
            if (
                isinstance(data, dict)
                and any(data.get(key) is not None for key in fractions)
                and "blocks_per_stage" not in data
            ):
                return {**data, "blocks_per_stage": None}
            return data

        @model_validator(mode="after")
        def _exactly_one_budget(self) -> BlockPruner.Config:
            if (
                sum(value is not None for value in (self.blocks_per_stage, self.param_fraction, self.target_fraction))
                != 1
            ):
                raise ValueError(
                    "set exactly one of blocks_per_stage (blocks removed per stage), param_fraction (fraction of "
                    "parameters removed per stage) or target_fraction (fraction removed over the whole schedule)"
                )
            if self.target_kind is not None and self.target_fraction is None:
                raise ValueError(
                    "target_kind only counts for target_fraction: set target_fraction too, or remove target_kind"
                )
            return self

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._target: tuple[int, float] | None = None  # target_fraction: the teacher's amount, and this stage's goal

    def begin_stage(self, plan: vipkit.Plan, stage: int) -> None:
        """With ``target_fraction``: this stage's goal is stage/stages of the whole target, of the teacher's amount."""
        if self.config.target_fraction is not None:
            reference = self._amount(plan.model)
            self._target = (reference, self.config.target_fraction * reference * stage / plan.stages)

    def apply(self, model: vipkit.VideoModel, ranking: Sequence[vipkit.BlockImportance]) -> list[str]:
        if self.config.target_fraction is not None and self._target is None:
            raise VipkitError(
                "the block pruner's target_fraction needs begin_stage(plan, stage) before apply: it counts from the teacher"
            )
        params_at_start = model.num_parameters()
        present = {block.name for block in model.blocks()}
        removed: list[str] = []
        for item in sorted(ranking, key=lambda item: item.importance):
            if self._budget_met(len(removed), params_at_start - model.num_parameters(), params_at_start, model):
                break
            if item.block.name not in present:
                continue
            model.remove_block(item.block.name)
            removed.append(item.block.name)
            present = {block.name for block in model.blocks()}
        return removed

    def check_plan(self, plan: vipkit.Plan) -> list[str]:
        """The schedule must be able to take each stage's budget from the candidate blocks."""
        stages, kinds = plan.stages, ", ".join(plan.block_kinds)
        if self.config.blocks_per_stage is not None:
            wanted = self.config.blocks_per_stage * stages
            if wanted > len(plan.candidates):
                return [
                    f"blocks_per_stage: {self.config.blocks_per_stage} blocks × schedule.stages {stages} = {wanted} blocks, "
                    f"but the model has {len(plan.candidates)} prunable blocks of kinds {kinds}; lower one of the two"
                ]
            return []
        available = sum(block.params for block in _outermost(plan.candidates))
        if self.config.target_fraction is not None:
            return self._check_target(plan, available)
        total = plan.model.num_parameters()
        needed = 1 - (1 - self.config.param_fraction) ** stages  # each stage removes a fraction of what is left
        if available < needed * total:
            return [
                f"param_fraction: {self.config.param_fraction} per stage over schedule.stages {stages} removes at least "
                f"{needed:.1%} of the {total:,} parameters, but blocks of kinds {kinds} hold only "
                f"{available / total:.1%} ({available:,}); lower param_fraction or the number of stages, or allow more block kinds"
            ]
        return []

    def describe_stage(self, plan: vipkit.Plan, stage: int) -> str:
        """The stage's parameter budget, and the parameters and FLOPs (per denoiser call) of the blocks it picks from."""
        cfg = self.config
        if cfg.blocks_per_stage is not None:
            budget = f"{cfg.blocks_per_stage} block(s) per stage, the least important first"
        elif cfg.param_fraction is not None:
            left = (1 - cfg.param_fraction) ** stage
            budget = (
                f"denoiser parameters ≤ {left:.1%} of the teacher's after this stage ({cfg.param_fraction:.0%} of what "
                "is left per stage)"
            )
        else:
            share = cfg.target_fraction * stage / plan.stages
            what = f"{cfg.target_kind} parameters" if cfg.target_kind else "denoiser parameters"
            amount = self._amount(plan.model)
            budget = (
                f"{what} ≤ {1 - share:.1%} of the teacher's {amount:,} after this stage (≥ {share * amount:,.0f} gone)"
            )
        return f"block: {budget}{_pool(plan)}"

    def _check_target(self, plan: vipkit.Plan, available: int) -> list[str]:
        kind = self.config.target_kind
        if kind is not None and kind not in plan.block_kinds:
            return [
                f"target_kind: {kind!r} is not among the pruned block kinds (schedule.block_kinds: {', '.join(plan.block_kinds)})"
            ]
        reference = self._amount(plan.model)
        if kind is not None:
            available = sum(b.params for b in _outermost(plan.candidates) if b.kind == kind)
        if available < self.config.target_fraction * reference:
            what = f"the {reference:,} parameters of kind {kind!r}" if kind else f"the {reference:,} parameters"
            return [
                f"target_fraction: {self.config.target_fraction} of {what} is more than the prunable blocks hold "
                f"({available / reference:.1%}); lower target_fraction or allow more block kinds"
            ]
        return []

    def _amount(self, model: vipkit.VideoModel) -> int:
        """What ``target_fraction`` counts in ``model``: its parameters in blocks of ``target_kind``, or all of them."""
        if self.config.target_kind is None:
            return model.num_parameters()
        return sum(block.params for block in _outermost(model.blocks()) if block.kind == self.config.target_kind)

    def _budget_met(
        self, blocks_removed: int, params_removed: int, params_at_start: int, model: vipkit.VideoModel
    ) -> bool:
        if self.config.blocks_per_stage is not None:
            return blocks_removed >= self.config.blocks_per_stage
        if self.config.param_fraction is not None:
            return params_removed >= self.config.param_fraction * params_at_start
        reference, goal = self._target
        return reference - self._amount(model) >= goal


def _outermost(blocks: Sequence[vipkit.Block]) -> list[vipkit.Block]:
    """The blocks not inside another of ``blocks`` (nested blocks' parameters are their container's too)."""
    names = {block.name for block in blocks}
    return [b for b in blocks if not any(b.name.startswith(f"{other}.") for other in names)]


def _pool(plan: vipkit.Plan) -> str:
    """What the candidate blocks hold of the teacher: parameters and FLOPs per denoiser call (for the plan)."""
    from vipkit.measure import flops_by_module
    from vipkit.prunable import PATH_JOIN

    candidates = _outermost(plan.candidates)
    if not candidates:
        return ""
    flops = flops_by_module(plan.model) or {}
    sizes = [block.params for block in candidates]
    in_blocks = sum(flops.get(path, 0) for block in candidates for path in block.name.split(PATH_JOIN))
    return (
        f"; the teacher's {len(candidates)} {', '.join(plan.block_kinds)} blocks hold {sum(sizes):,} of its "
        f"{plan.model.num_parameters():,} parameters ({min(sizes):,}-{max(sizes):,} each) and {in_blocks / 1e9:.4g} of "
        f"its {flops.get('', 0) / 1e9:.4g} GFLOP per denoiser call"
    )
