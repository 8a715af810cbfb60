"""``two-pass``: a cheap first ranking of every candidate, then reward-drop only for the least important few."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

import vipkit
from vipkit.interfaces import Evaluate
from vipkit_strategies.prediction_drop import PredictionDrop
from vipkit_strategies.reward_drop import RewardDrop


class TwoPass(vipkit.ImportanceScorer):
    """``prediction-drop`` ranks every candidate; its ``finalists`` least important are ranked again by reward-drop.

    The ranking starts with the finalists in reward-drop order, with their reward-drop importance and scores; the
    other candidates follow in first-pass order. Their importance is not a reward drop: it is the largest finalist's
    plus their first-pass importance (a relative prediction change, >= 0), which keeps them after every finalist.
    Costs the first pass plus ``finalists + 1`` evaluations, where reward-drop alone costs one per candidate plus
    one; set ``finalists`` at or above the blocks a stage prunes (the pruner takes blocks from the front), with
    room for the first pass's misorderings.
    """

    name = "two-pass"

    class Config(vipkit.Config):
        finalists: int = Field(
            3, gt=0, description="Candidates, the first pass's least important, that reward-drop ranks again."
        )
        first: PredictionDrop.Config = Field(
            default_factory=PredictionDrop.Config,
            description="Options of the first pass, `prediction-drop` (a table: `[scorer.first]`).",
        )

    config: Config

    def rank(
        self,
        model: vipkit.VideoModel,
        candidates: Sequence[vipkit.Block],
        evaluate: Evaluate,
        objective: vipkit.Objective,
    ) -> list[vipkit.BlockImportance]:
        first = PredictionDrop(self.config.first).rank(model, candidates, evaluate, objective)
        shortlist, rest = first[: self.config.finalists], first[self.config.finalists :]
        finalists = RewardDrop().rank(model, [item.block for item in shortlist], evaluate, objective)
        ceiling = finalists[-1].importance
        return finalists + [vipkit.BlockImportance(item.block, ceiling + item.importance) for item in rest]
