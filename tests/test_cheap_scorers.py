"""The cheap importance scorers, ``prediction-drop`` and ``two-pass``, on the tiny AnimateDiff."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
import torch

import vipkit
from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.recipe import RecipeError, parse_recipe
from vipkit.testing import tiny_model
from vipkit_strategies import PredictionDrop, RewardDrop, TwoPass

PROMPTS = ["a cat", "hello world", "a red ball"]
OBJECTIVE = vipkit.Objective(weights={})


@pytest.fixture(scope="module")
def tiny() -> Iterator[vipkit.VideoModel]:
    """The tiny AnimateDiff preset at its cheapest settings; tests work on ``tiny.copy()``."""
    yield tiny_model("animatediff", num_frames=4, num_inference_steps=2, height=16, width=16)


class Probe:
    """The engine's ``evaluate`` on the probe prompts: render and score (brightness, one number per video), counted."""

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = seeds
        self.renders = 0

    def __call__(self, model: vipkit.VideoModel) -> vipkit.Scores:
        videos = model.generate(PROMPTS, self.seeds).videos
        self.renders += 1
        return {"brightness": videos.mean(dim=(1, 2, 3, 4))}


def unet_state(model: vipkit.VideoModel) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.pipeline().unet.state_dict().items()}


def test_registered_under_their_names() -> None:
    scorers = load_plugins().registry("scorers")
    assert scorers.get("prediction-drop") is PredictionDrop
    assert scorers.get("two-pass") is TwoPass


def test_prediction_drop_scores_every_candidate_without_rendering_the_probe_videos(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    blocks = model.blocks()
    before = unet_state(model)
    probe = Probe([0, 1, 2])
    generated: list[list[str]] = []
    generate = model.generate

    def counted_generate(prompts: list[str], seeds: list[int]) -> vipkit.Generation:
        generated.append(list(prompts))
        return generate(prompts, seeds)

    model.generate = counted_generate  # type: ignore[method-assign]
    scorer = PredictionDrop()

    ranking = scorer.rank(model, blocks, probe, OBJECTIVE)

    assert sorted(item.block.name for item in ranking) == sorted(block.name for block in blocks)
    importances = [item.importance for item in ranking]
    assert importances == sorted(importances) and min(importances) > 0 and len(set(importances)) == len(blocks)
    assert probe.renders == 0 and generated == [PROMPTS[:1]]  # one video, for the latents' shape
    assert model.blocks() == blocks and model.removed_blocks == []
    after = unet_state(model)
    assert all(torch.equal(after[key], before[key]) for key in before)

    again = scorer.rank(model, blocks, probe, OBJECTIVE)  # a later stage: the shape is known, nothing is rendered
    assert generated == [PROMPTS[:1]]
    assert [(item.block, item.importance) for item in again] == [(item.block, item.importance) for item in ranking]
    assert PredictionDrop().rank(model, blocks, probe, OBJECTIVE) == ranking


def test_prediction_drop_follows_the_probe_seeds_and_its_options(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    blocks = model.blocks()

    def importances(seeds: list[int], **options) -> dict[str, float]:
        ranking = PredictionDrop.from_options(options).rank(model, blocks, Probe(seeds), OBJECTIVE)
        return {item.block.name: item.importance for item in ranking}

    base = importances([0, 1, 2])
    assert importances([5, 6, 7]) != base
    assert importances([0, 1, 9], videos=2) == importances([0, 1, 2], videos=2)  # only the first 2 probe videos count
    assert importances([0, 1, 2], measure_at=[2]) != base
    assert importances([0, 1, 2], guidance_scale=1.0) != base


def test_prediction_drop_restores_the_block_when_a_prediction_fails(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    blocks = model.blocks()
    predict = model.predict_noise

    def predict_unpruned(*args, **kwargs):
        if model.removed_blocks:
            raise RuntimeError("prediction failed")
        return predict(*args, **kwargs)

    model.predict_noise = predict_unpruned  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="prediction failed"):
        PredictionDrop().rank(model, blocks, Probe([0, 1, 2]), OBJECTIVE)
    assert model.removed_blocks == [] and model.blocks() == blocks


def test_prediction_drop_learns_the_prompts_when_the_engine_has_the_videos_already(tiny: vipkit.VideoModel) -> None:
    """Without probe prompts the engine scores the evaluation videos it holds for the model's state: no generate."""
    model = tiny.copy()
    blocks = model.blocks()
    probe = Probe([0, 1, 2])
    held = probe(model)

    def engine(candidate: vipkit.VideoModel) -> vipkit.Scores:
        return held if not candidate.removed_blocks else probe(candidate)

    ranking = PredictionDrop().rank(model, blocks, engine, OBJECTIVE)
    assert ranking == PredictionDrop().rank(model, blocks, Probe([0, 1, 2]), OBJECTIVE)
    assert model.removed_blocks == []

    with pytest.raises(VipkitError, match="could not learn the probe prompts"):
        PredictionDrop().rank(model, blocks, lambda candidate: held, OBJECTIVE)
    assert model.removed_blocks == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"measure_at": [4]}, r"measure_at \[4\] outside the trajectory's points 0..3"),
        ({"steps": 2, "measure_at": [1, 2]}, r"measure_at \[2\] outside"),
        ({"measure_at": [1, 1]}, "names a point twice"),
        ({"measure_at": []}, "at least 1 item"),
        ({"videos": 0}, "greater than 0"),
    ],
)
def test_prediction_drop_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        PredictionDrop.Config.model_validate(options)


def test_two_pass_ranks_the_finalists_with_reward_drop(tiny: vipkit.VideoModel) -> None:
    model = tiny.copy()
    blocks = model.blocks()
    probe = Probe([0, 1, 2])
    first = PredictionDrop().rank(model, blocks, probe, OBJECTIVE)
    shortlist = [item.block for item in first[:3]]
    by_reward = RewardDrop().rank(model, shortlist, probe, OBJECTIVE)
    renders = probe.renders

    ranking = TwoPass.from_options({"finalists": 3}).rank(model, blocks, probe, OBJECTIVE)

    assert probe.renders - renders == 3 + 1  # reward-drop's baseline and one per finalist, nothing for the rest
    assert ranking[:3] == by_reward
    rest = ranking[3:]
    assert [item.block for item in rest] == [item.block for item in first[3:]]
    ceiling = by_reward[-1].importance
    assert [item.importance for item in rest] == pytest.approx([ceiling + item.importance for item in first[3:]])
    assert all(item.scores == {} for item in rest)
    assert [item.importance for item in ranking] == sorted(item.importance for item in ranking)
    assert model.removed_blocks == [] and model.blocks() == blocks


MICRO_RECIPE = Path(__file__).parent / "recipes" / "micro_vip.toml"


def recipe_with_scorer(table: str) -> str:
    return MICRO_RECIPE.read_text().replace('[scorer]\nname = "reward-drop"\n', table)


def test_two_pass_in_a_recipe_takes_the_first_pass_options_as_a_table() -> None:
    text = recipe_with_scorer(
        '[scorer]\nname = "two-pass"\nfinalists = 2\n[scorer.first]\nvideos = 2\nmeasure_at = [2]\n'
    )
    scorer = parse_recipe(text).scorer.build(load_plugins())
    assert isinstance(scorer, TwoPass)
    assert scorer.config.finalists == 2 and scorer.config.first == PredictionDrop.Config(videos=2, measure_at=(2,))

    with pytest.raises(RecipeError, match=r"scorer\.first: measure_at \[7\] outside the trajectory's points 0\.\.3"):
        parse_recipe(recipe_with_scorer('[scorer]\nname = "two-pass"\n[scorer.first]\nmeasure_at = [7]\n'))
    with pytest.raises(RecipeError, match=r"scorer\.first\.vidoes: unknown option"):
        parse_recipe(recipe_with_scorer('[scorer]\nname = "two-pass"\n[scorer.first]\nvidoes = 2\n'))
