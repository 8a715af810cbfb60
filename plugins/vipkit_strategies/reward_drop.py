"""``reward-drop``: the V.I.P. importance of a block is the reward lost when it is removed."""

from __future__ import annotations

from collections.abc import Sequence

import vipkit
from vipkit import track
from vipkit.interfaces import Evaluate


class RewardDrop(vipkit.ImportanceScorer):
    """Remove each candidate in turn, generate and score, restore: importance = baseline − objective without it.

    Costs one evaluation per candidate plus one for the baseline. Ties keep the candidates' order
    (the sort is stable), so the ranking is deterministic.
    """

    name = "reward-drop"

    def rank(
        self,
        model: vipkit.VideoModel,
        candidates: Sequence[vipkit.Block],
        evaluate: Evaluate,
        objective: vipkit.Objective,
    ) -> list[vipkit.BlockImportance]:
        baseline = objective(evaluate(model))
        ranking = []
        for block in track(candidates, "reward drop per block", total=len(candidates)):
            model.remove_block(block.name)
            try:
                scores = evaluate(model)
            finally:
                model.restore_block(block.name)
            ranking.append(vipkit.BlockImportance(block, baseline - objective(scores), vipkit.mean_scores(scores)))
        return sorted(ranking, key=lambda item: item.importance)
