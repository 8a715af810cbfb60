"""``block``: remove this stage's least important blocks, by count or by a fraction of the parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

import vipkit


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

        @model_validator(mode="before")
        @classmethod
        def _fraction_replaces_default_count(cls, data: Any) -> Any:
            if isinstance(data, dict) and data.get("param_fraction") is not None and "blocks_per_stage" not in data:
                return {**data, "blocks_per_stage": None}
            return data

        @model_validator(mode="after")
        def _exactly_one_budget(self) -> BlockPruner.Config:
            if (self.blocks_per_stage is None) == (self.param_fraction is None):
                raise ValueError(
                    "set exactly one of blocks_per_stage (blocks removed per stage) or "
                    "param_fraction (fraction of parameters removed per stage)"
                )
            return self

    config: Config

    def apply(self, model: vipkit.VideoModel, ranking: Sequence[vipkit.BlockImportance]) -> list[str]:
        params_at_start = model.num_parameters()
        present = {block.name for block in model.blocks()}
        removed: list[str] = []
        for item in sorted(ranking, key=lambda item: item.importance):
            if self._budget_met(len(removed), params_at_start - model.num_parameters(), params_at_start):
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
        names = {block.name for block in plan.candidates}
        outermost = [b for b in plan.candidates if not any(b.name.startswith(f"{other}.") for other in names)]
        available = sum(block.params for block in outermost)
        total = plan.model.num_parameters()
        needed = 1 - (1 - self.config.param_fraction) ** stages  # each stage removes a fraction of what is left
        if available < needed * total:
            return [
                f"param_fraction: {self.config.param_fraction} per stage over schedule.stages {stages} removes at least "
                f"{needed:.1%} of the {total:,} parameters, but blocks of kinds {kinds} hold only "
                f"{available / total:.1%} ({available:,}); lower param_fraction or the number of stages, or allow more block kinds"
            ]
        return []

    def _budget_met(self, blocks_removed: int, params_removed: int, params_at_start: int) -> bool:
        if self.config.blocks_per_stage is not None:
            return blocks_removed >= self.config.blocks_per_stage
        return params_removed >= self.config.param_fraction * params_at_start
