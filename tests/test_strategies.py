"""Strategies: the degraded-dimensions curator, the block pruner, and the reward-drop / param-count scorers."""

from __future__ import annotations

from collections.abc import Iterator

import pydantic
import pytest
import torch

import vipkit
from vipkit.errors import VipkitError
from vipkit.interfaces import Evaluate
from vipkit.plugins import load_plugins
from vipkit.testing import tiny_model
from vipkit_clip.reward import ClipReward
from vipkit_clip.tiny import save_tiny_clip
from vipkit_strategies import BlockPruner, DegradedDimensions, ParamCount, RewardDrop


def test_registered_under_their_names() -> None:
    plugins = load_plugins()
    assert plugins.registry("scorers").get("reward-drop") is RewardDrop
    assert plugins.registry("scorers").get("param-count") is ParamCount
    assert plugins.registry("pruners").get("block") is BlockPruner
    assert plugins.registry("curators").get("degraded-dimensions") is DegradedDimensions


# -- degraded-dimensions -------------------------------------------------------------------------

# Mean drops (teacher − student): quality 0.28, alignment 0.07, motion −0.02 (improved).
TEACHER_SCORES = {
    "quality": [0.9, 0.8, 0.7, 0.6, 0.5],
    "alignment": [0.6, 0.6, 0.6, 0.6, 0.6],
    "motion": [0.3, 0.3, 0.3, 0.3, 0.3],
}
STUDENT_SCORES = {
    "quality": [0.5, 0.85, 0.2, 0.1, 0.45],
    "alignment": [0.6, 0.3, 0.6, 0.6, 0.55],
    "motion": [0.2, 0.5, 0.3, 0.3, 0.3],
}


def generation(offset: float) -> vipkit.Generation:
    """Five videos whose every value is ``offset + index``, so a selection can be read off the tensors."""
    index = torch.arange(5, dtype=torch.float32) + offset
    return vipkit.Generation(
        videos=index.view(5, 1, 1, 1, 1).expand(5, 2, 3, 4, 4).clone(),
        latents=index.view(5, 1, 1, 1, 1).expand(5, 4, 2, 2, 2).clone(),
    )


@pytest.fixture
def candidates() -> vipkit.CandidateVideos:
    return vipkit.CandidateVideos(
        prompts=[f"prompt {i}" for i in range(5)],
        seeds=[10 + i for i in range(5)],
        teacher=generation(0.0),
        student=generation(100.0),
        teacher_scores={dim: torch.tensor(values) for dim, values in TEACHER_SCORES.items()},
        student_scores={dim: torch.tensor(values) for dim, values in STUDENT_SCORES.items()},
    )


def curate(candidates: vipkit.CandidateVideos, **options) -> vipkit.PairSet:
    return DegradedDimensions.from_options(options).build(candidates)


@pytest.mark.parametrize(
    ("options", "targets", "kept"),
    [
        ({}, ["quality", "alignment"], [0, 1, 2, 3, 4]),
        ({"tau": 0.15}, ["quality", "alignment"], [0, 1, 2, 4]),  # prompt 3's student scores 0.1 on quality
        ({"tau": 0.4}, ["quality", "alignment"], [0, 4]),
        ({"tau": 0.15, "margin": 0.1}, ["quality"], [0, 2, 4]),  # prompt 1 only lost on alignment
        ({"dimensions": ["alignment", "motion"]}, ["alignment"], [1, 4]),
        ({"dimensions": ["motion"], "margin": -0.05}, ["motion"], [0]),  # motion rose by 0.02 on average
        ({"dimensions": ["motion"], "margin": -0.01}, [], []),
    ],
)
def test_keeps_prompts_where_teacher_beats_a_student_above_tau_on_a_degraded_dimension(
    candidates: vipkit.CandidateVideos, options: dict, targets: list[str], kept: list[int]
) -> None:
    pairs = curate(candidates, **options)
    assert pairs.target_dimensions == targets
    assert pairs.prompts == [f"prompt {i}" for i in kept] and pairs.seeds == [10 + i for i in kept]
    assert pairs.winner_latents[:, 0, 0, 0, 0].tolist() == [float(i) for i in kept]
    assert pairs.loser_latents[:, 0, 0, 0, 0].tolist() == [100.0 + i for i in kept]
    assert pairs.winner_videos[:, 0, 0, 0, 0].tolist() == [float(i) for i in kept]
    assert pairs.loser_videos[:, 0, 0, 0, 0].tolist() == [100.0 + i for i in kept]


def test_max_pairs_keeps_the_largest_gaps_in_prompt_order(candidates: vipkit.CandidateVideos) -> None:
    # gaps with tau 0.15: prompt 0 → 0.4, 1 → 0.3, 2 → 0.5, 4 → 0.05
    pairs = curate(candidates, tau=0.15, max_pairs=2)
    assert pairs.prompts == ["prompt 0", "prompt 2"]
    assert pairs.loser_latents[:, 0, 0, 0, 0].tolist() == [100.0, 102.0]
    assert curate(candidates, tau=0.15, max_pairs=3).prompts == ["prompt 0", "prompt 1", "prompt 2"]


def test_nothing_degraded_gives_an_empty_pair_set(candidates: vipkit.CandidateVideos) -> None:
    pairs = curate(candidates, margin=0.5)
    assert len(pairs) == 0 and pairs.target_dimensions == [] and pairs.seeds == []
    assert pairs.winner_latents.shape == (0, 4, 2, 2, 2) and pairs.loser_latents.shape == (0, 4, 2, 2, 2)
    assert pairs.winner_videos.shape == (0, 2, 3, 4, 4) and pairs.loser_videos.shape == (0, 2, 3, 4, 4)


def test_an_unknown_dimension_lists_the_available_ones(candidates: vipkit.CandidateVideos) -> None:
    with pytest.raises(VipkitError, match=r"'sharpness'.*Available dimensions: alignment, motion, quality"):
        curate(candidates, dimensions=["quality", "sharpness"])


@pytest.mark.parametrize("options", [{"margin": "wide"}, {"max_pairs": 0}, {"dimensions": []}, {"taus": 0.1}])
def test_curator_rejects_bad_options(options: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        DegradedDimensions.Config.model_validate(options)


# -- block pruner: options -----------------------------------------------------------------------


def test_pruner_budget_defaults_to_four_blocks_and_a_fraction_replaces_it() -> None:
    assert BlockPruner.Config().blocks_per_stage == 4 and BlockPruner.Config().param_fraction is None
    by_fraction = BlockPruner.Config.model_validate({"param_fraction": 0.3})
    assert by_fraction.blocks_per_stage is None and by_fraction.param_fraction == 0.3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"blocks_per_stage": 2, "param_fraction": 0.3}, "exactly one of blocks_per_stage"),
        ({"blocks_per_stage": None}, "exactly one of blocks_per_stage"),
        ({"param_fraction": 1.0}, "less than 1"),
        ({"param_fraction": 0.0}, "greater than 0"),
        ({"blocks_per_stage": 0}, "greater than 0"),
    ],
)
def test_pruner_rejects_bad_budgets(options: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        BlockPruner.Config.model_validate(options)


# -- on the tiny AnimateDiff -----------------------------------------------------------------------

EVAL_PROMPTS = ["a cat", "hello world"]
EVAL_SEEDS = [0, 1]


@pytest.fixture(scope="module")
def tiny() -> Iterator[vipkit.VideoModel]:
    """The tiny AnimateDiff preset at its cheapest settings; tests work on ``tiny.copy()``."""
    yield tiny_model("animatediff", num_frames=4, num_inference_steps=2, height=16, width=16)


@pytest.fixture(scope="module")
def evaluate(tmp_path_factory: pytest.TempPathFactory) -> Evaluate:
    """The engine's evaluation, for real: generate two seeded videos and score them with a tiny CLIP."""
    reward = ClipReward.from_options({"model": str(save_tiny_clip(tmp_path_factory.mktemp("clip"))), "device": "cpu"})

    def evaluate(model: vipkit.VideoModel) -> vipkit.Scores:
        return reward.score(model.generate(EVAL_PROMPTS, EVAL_SEEDS).videos, EVAL_PROMPTS)

    return evaluate


def nested_pair(model: vipkit.VideoModel) -> tuple[vipkit.Block, vipkit.Block]:
    """A motion module and a block inside it."""
    blocks = model.blocks()
    return next((outer, inner) for outer in blocks for inner in blocks if inner.name.startswith(outer.name + "."))


def ranked(blocks: list[vipkit.Block]) -> list[vipkit.BlockImportance]:
    """A hand-made ranking: importance = position in ``blocks``."""
    return [vipkit.BlockImportance(block, float(position)) for position, block in enumerate(blocks)]


def test_pruner_removes_the_least_important_blocks_by_count(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    spatial = [block for block in model.blocks() if block.kind == "spatial_transformer_block"]
    ranking = ranked(spatial)[::-1]  # given in reverse: the pruner walks it by importance
    removed = BlockPruner.from_options({"blocks_per_stage": 3}).apply(model, ranking)
    assert removed == [block.name for block in spatial[:3]] == model.removed_blocks
    assert model.num_parameters() == tiny.num_parameters() - sum(block.params for block in spatial[:3])


def test_pruner_skips_blocks_hidden_inside_a_removed_one(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    outer, inner = nested_pair(model)
    spatial = next(block for block in model.blocks() if block.kind == "spatial_transformer_block")
    removed = BlockPruner.from_options({"blocks_per_stage": 2}).apply(model, ranked([outer, inner, spatial]))
    assert removed == [outer.name, spatial.name]
    assert model.num_parameters() == tiny.num_parameters() - outer.params - spatial.params


def test_pruner_removes_a_parameter_fraction_and_stops_once_it_is_met(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    motion = [block for block in model.blocks() if block.kind == "motion_module"]  # 23,200 or 91,456 each
    start = model.num_parameters()
    removed = BlockPruner.from_options({"param_fraction": 0.1}).apply(model, ranked(motion))
    # 0.1 × 1,228,388 = 122,839: the first two (23,200 + 91,456) fall short, the third crosses it
    assert removed == [block.name for block in motion[:3]]
    assert start - model.num_parameters() == sum(block.params for block in motion[:3]) >= 0.1 * start
    assert sum(block.params for block in motion[:2]) < 0.1 * start


def test_pruner_removes_what_it_can_when_the_ranking_runs_out(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    outer, inner = nested_pair(model)
    assert BlockPruner.from_options({"blocks_per_stage": 4}).apply(model, ranked([outer, inner])) == [outer.name]
    model = tiny.copy()
    assert BlockPruner.from_options({"param_fraction": 0.9}).apply(model, ranked([inner])) == [inner.name]


def motion_plan(model: vipkit.VideoModel, stages: int, kinds: tuple[str, ...] = ("motion_module",)) -> vipkit.Plan:
    return vipkit.Plan(model, None, stages, kinds, tuple(b for b in model.blocks() if b.kind in kinds))


def test_pruner_reaches_a_target_fraction_of_one_kind_in_equal_shares_per_stage(tiny: vipkit.VideoModel) -> None:
    """The paper states its AnimateDiff budget as "−67.5 % of the motion-module parameters": a target over the schedule."""
    model = tiny.copy()
    motion = [block for block in model.blocks() if block.kind == "motion_module"]  # 435,424 parameters in 7 modules
    spatial = next(block for block in model.blocks() if block.kind == "spatial_transformer_block")
    pruner = BlockPruner.from_options({"target_fraction": 0.5, "target_kind": "motion_module"})
    plan = motion_plan(tiny, stages=2)
    assert pruner.check_plan(plan) == []
    with pytest.raises(VipkitError, match="needs begin_stage"):
        pruner.apply(model, ranked(motion))
    pruner.begin_stage(
        plan, 1
    )  # goal 0.5 × 435,424 × 1/2 = 108,856: 23,200 + 91,456 reach it; a spatial block does not count
    assert pruner.apply(model, ranked([motion[0], spatial, *motion[1:]])) == [
        motion[0].name,
        spatial.name,
        motion[1].name,
    ]
    pruner.begin_stage(
        plan, 2
    )  # goal 217,712 of the teacher's motion parameters: 114,656 gone, two more 91,456 modules
    assert pruner.apply(model, ranked(motion)) == [motion[2].name, motion[3].name]
    left = sum(b.params for b in model.blocks() if b.kind == "motion_module")
    assert left == 435_424 - 297_568 and 1 - left / 435_424 >= 0.5
    pruner.begin_stage(plan, 2)  # the stage's goal already met (a resumed schedule): nothing more goes
    assert pruner.apply(model, ranked(model.blocks())) == []


def test_pruner_target_fraction_is_checked_against_the_plan(tiny: vipkit.VideoModel) -> None:
    whole = BlockPruner.from_options(
        {"target_fraction": 0.4}
    )  # of all 1,228,388 parameters; motion modules hold 35.4 %
    assert (
        "target_fraction: 0.4 of the 1,228,388 parameters is more than the prunable blocks hold (35.4%)"
        in whole.check_plan(motion_plan(tiny, 3))[0]
    )
    assert whole.check_plan(motion_plan(tiny, 3, ("motion_module", "spatial_transformer_block"))) == []
    other = BlockPruner.from_options({"target_fraction": 0.5, "target_kind": "spatial_transformer_block"})
    assert other.check_plan(motion_plan(tiny, 3)) == [
        "target_kind: 'spatial_transformer_block' is not among the pruned block kinds (schedule.block_kinds: motion_module)"
    ]
    with pytest.raises(pydantic.ValidationError, match="target_kind only counts for target_fraction"):
        BlockPruner.Config.model_validate({"target_kind": "motion_module"})
    with pytest.raises(pydantic.ValidationError, match="exactly one of"):
        BlockPruner.Config.model_validate({"target_fraction": 0.5, "param_fraction": 0.1})


def test_reward_drop_scores_every_candidate_and_restores_the_model(tiny: vipkit.VideoModel, evaluate: Evaluate) -> None:
    model = tiny.copy()
    objective = vipkit.Objective(weights={})
    blocks = model.blocks()
    state = {key: value.clone() for key, value in model.pipeline().unet.state_dict().items()}

    ranking = RewardDrop().rank(model, blocks, evaluate, objective)

    assert sorted(item.block.name for item in ranking) == sorted(block.name for block in blocks)
    importances = [item.importance for item in ranking]
    assert importances == sorted(importances) and len(set(importances)) > len(blocks) // 2
    assert model.blocks() == blocks and model.removed_blocks == []
    after = model.pipeline().unet.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[key], state[key]) for key in state)

    baseline = evaluate(model)
    most_important = ranking[-1]
    model.remove_block(most_important.block.name)
    without = evaluate(model)
    model.restore_block(most_important.block.name)
    assert most_important.importance == pytest.approx(objective(baseline) - objective(without), abs=1e-7)
    assert most_important.importance > 0
    assert most_important.scores == pytest.approx({dim: values.mean().item() for dim, values in without.items()})


def test_reward_drop_restores_the_block_when_evaluation_fails(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    blocks = model.blocks()

    def evaluate_without_pruning(candidate: vipkit.VideoModel) -> vipkit.Scores:
        if candidate.removed_blocks:
            raise RuntimeError("generation failed")
        return {"quality": torch.ones(2)}

    with pytest.raises(RuntimeError, match="generation failed"):
        RewardDrop().rank(model, blocks, evaluate_without_pruning, vipkit.Objective(weights={}))
    assert model.removed_blocks == [] and model.blocks() == blocks


def test_param_count_ranks_smallest_first_keeping_candidate_order_on_ties(tiny: vipkit.VideoModel) -> None:
    def no_generation(model: vipkit.VideoModel) -> vipkit.Scores:
        raise AssertionError("param-count must not evaluate")

    blocks = tiny.blocks()
    ranking = ParamCount().rank(tiny, blocks, no_generation, vipkit.Objective(weights={}))
    assert [item.block for item in ranking] == sorted(blocks, key=lambda block: block.params)
    assert [item.importance for item in ranking][:3] == [21024.0, 21024.0, 21024.0]
    assert [item.block.name for item in ranking][:2] == [
        "down_blocks.0.attentions.0.transformer_blocks.0",
        "down_blocks.0.motion_modules.0.transformer_blocks.0",
    ]
