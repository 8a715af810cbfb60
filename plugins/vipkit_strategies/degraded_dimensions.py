"""``degraded-dimensions``: preference pairs that target what pruning hurt (V.I.P.'s pair selection)."""

from __future__ import annotations

from pydantic import Field

import vipkit
from vipkit import VipkitError


class DegradedDimensions(vipkit.PairCurator):
    """Find the dimensions whose mean fell after pruning; keep prompts where S(teacher) > S(student) > tau on one.

    The teacher's generation is the winner, the student's the loser. A pair's gap is the largest
    teacher − student difference among the target dimensions it qualifies on; ``max_pairs`` keeps the
    largest gaps. Pairs stay in prompt order.
    """

    name = "degraded-dimensions"

    class Config(vipkit.Config):
        tau: float = Field(
            0.0, description="A pair is kept only if the student's score is above tau (the loser is not a failure)."
        )
        margin: float = Field(
            0.0,
            description="A dimension is degraded when mean(teacher) − mean(student) exceeds this. A negative margin "
            "also targets dimensions that did not drop (e.g. to keep training in a smoke-test recipe).",
        )
        dimensions: list[str] | None = Field(
            None, min_length=1, description="Only consider these reward dimensions; unset = every scored dimension."
        )
        max_pairs: int | None = Field(
            None, gt=0, description="Keep at most this many pairs, those with the largest teacher − student gap."
        )

    config: Config

    def build(self, candidates: vipkit.CandidateVideos) -> vipkit.PairSet:
        import torch

        teacher = {dim: values.float().cpu() for dim, values in candidates.teacher_scores.items()}
        student = {dim: values.float().cpu() for dim, values in candidates.student_scores.items()}
        targets = self.degraded_dimensions(teacher, student)
        gaps = torch.full((len(candidates.prompts),), -torch.inf)
        for dim in targets:
            qualifies = (teacher[dim] > student[dim]) & (student[dim] > self.config.tau)
            gaps = torch.where(qualifies, torch.maximum(gaps, teacher[dim] - student[dim]), gaps)
        kept = [i for i in range(len(gaps)) if gaps[i] > -torch.inf]
        if self.config.max_pairs is not None:
            kept = sorted(sorted(kept, key=lambda i: -gaps[i].item())[: self.config.max_pairs])
        index = torch.tensor(kept, dtype=torch.long)
        return vipkit.PairSet(
            prompts=[candidates.prompts[i] for i in kept],
            seeds=[candidates.seeds[i] for i in kept],
            winner_latents=candidates.teacher.latents.index_select(0, index),
            loser_latents=candidates.student.latents.index_select(0, index),
            winner_videos=candidates.teacher.videos.index_select(0, index),
            loser_videos=candidates.student.videos.index_select(0, index),
            target_dimensions=targets,
        )

    def check_plan(self, plan: vipkit.Plan) -> list[str]:
        unknown = [dim for dim in self.config.dimensions or () if dim not in plan.reward.dimensions]
        if unknown:
            return [
                f"dimensions: {', '.join(map(repr, unknown))} not scored by the reward {plan.reward.name!r} "
                f"(it scores: {', '.join(plan.reward.dimensions)})"
            ]
        return []

    def degraded_dimensions(self, teacher: vipkit.Scores, student: vipkit.Scores) -> list[str]:
        """Dimensions whose mean dropped by more than ``margin``, largest drop first."""
        available = sorted(teacher.keys() & student.keys())
        wanted = self.config.dimensions if self.config.dimensions is not None else available
        unknown = [dim for dim in wanted if dim not in available]
        if unknown:
            raise VipkitError(
                f"curator option `dimensions` names {', '.join(map(repr, unknown))}, which the reward does not "
                f"score. Available dimensions: {', '.join(available) or '(none)'}."
            )
        drops = {dim: float(teacher[dim].mean() - student[dim].mean()) for dim in wanted}
        return sorted((dim for dim in wanted if drops[dim] > self.config.margin), key=lambda dim: -drops[dim])
