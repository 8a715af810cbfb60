"""Several rewards in one recipe: ``[[rewards]]`` tables, ``alias.dimension`` names, the weighted objective."""

import pytest
import torch

import vipkit
from vipkit.combined_reward import CombinedReward
from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.recipe import RecipeError, parse_recipe
from vipkit.testing import sample_videos
from vipkit_shapes import ShapesReward

BASE = """
[model]
name = "animatediff"
preset = "tiny"
[prompts]
train = ["a"]
eval = ["b"]
[scorer]
name = "param-count"
[pruner]
name = "block"
[curator]
name = "degraded-dimensions"
[[losses]]
name = "sft"
"""

TWO_REWARDS = (
    BASE
    + """
[[rewards]]
name = "shapes"
as = "world"
[[rewards]]
name = "clip"
preset = "tiny"
frames = 2
[objective]
weights = { "world.text_alignment" = 2.0, "clip.clip_score" = 1.0 }
"""
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    return info.value.errors


def test_rewards_tables_resolve_to_one_combined_reward():
    recipe = parse_recipe(TWO_REWARDS)
    assert recipe.reward.name == "shapes + clip"
    assert recipe.dump()["reward"]["combine"][1] == {
        "as": "clip",
        "name": "clip",
        "model": "openai/clip-vit-base-patch32",
        "preset": "tiny",
        "frames": 2,
        "batch_size": 32,
        "device": "auto",
        "dtype": "float32",
    }
    reward = recipe.reward.build(load_plugins())
    assert isinstance(reward, CombinedReward)
    assert reward.dimensions == (
        "world.text_alignment",
        "world.temporal_consistency",
        "world.dynamic_degree",
        "world.visual_quality",
        "clip.clip_score",
        "clip.frame_consistency",
    )
    assert recipe.reward.dimensions(load_plugins()) == reward.dimensions


def test_combined_scores_are_the_parts_scores_and_the_objective_weighs_them():
    videos, prompts = sample_videos(2), ["a red square moving left", "a blue circle moving up"]
    recipe = parse_recipe(TWO_REWARDS)
    combined = recipe.reward.build(load_plugins())
    scores = combined.score(videos, prompts)
    alone = ShapesReward().score(videos, prompts)
    for dim, values in alone.items():
        assert torch.equal(scores[f"world.{dim}"], values)
    objective = vipkit.Objective(dict(recipe.objective.weights))
    expected = (2 * alone["text_alignment"].mean() + scores["clip.clip_score"].mean()) / 3
    assert objective(scores) == pytest.approx(float(expected), rel=1e-6)


def test_single_reward_table_is_unchanged():
    text = BASE + '[reward]\nname = "shapes"\n[objective]\nweights = { text_alignment = 1.0 }\n'
    recipe = parse_recipe(text)
    assert recipe.dump()["reward"]["name"] == "shapes" and recipe.reward.name == "shapes"
    assert type(recipe.reward.build(load_plugins())) is ShapesReward


def test_both_or_neither_reward_form_is_an_error():
    both = errors_of(TWO_REWARDS + '[reward]\nname = "shapes"\n')
    assert len(both) == 1 and both[0].startswith("reward: has both [reward] and [[rewards]]")
    neither = errors_of(BASE)
    assert len(neither) == 1 and neither[0].startswith("reward: missing table [reward]") and "[[rewards]]" in neither[0]


def test_aliases_must_be_unique_and_dotless_and_parts_are_validated():
    same = BASE + '[[rewards]]\nname = "shapes"\n[[rewards]]\nname = "shapes"\ncolour_tolerance = 0.1\n'
    assert errors_of(same) == [
        "rewards[1].as: 'shapes' is already used by an earlier [[rewards]] table; give each table its own `as = \"...\"`"
    ]
    dotted = BASE + '[[rewards]]\nname = "shapes"\nas = "a.b"\n'
    assert errors_of(dotted)[0].startswith("rewards[0].as: must be a non-empty name without dots")
    bad_part = BASE + '[[rewards]]\nname = "shapes"\ncolour_tolerance = -1\n[[rewards]]\nname = "clipp"\n'
    errors = errors_of(bad_part)
    assert errors[0].startswith("rewards[0].colour_tolerance: Input should be greater than 0"), errors
    assert errors[1].startswith("rewards[1].name: unknown RewardModel 'clipp'. Did you mean 'clip'?"), errors
    assert errors_of("rewards = [1, 2]\n" + BASE) == [
        'rewards: must be one or more [[rewards]] tables, each with name = "..."'
    ]


def test_objective_weights_must_name_combined_dimensions_with_a_did_you_mean():
    errors = errors_of(
        TWO_REWARDS.replace('"clip.clip_score"', '"clip.clipscore"').replace('"world.text_alignment"', "text_alignment")
    )
    assert errors[0].startswith(
        "objective.weights.text_alignment: reward 'shapes + clip' has no such dimension. Did you mean 'world.text_alignment'?"
    ), errors
    assert errors[1].startswith(
        "objective.weights.clip.clipscore: reward 'shapes + clip' has no such dimension. Did you mean 'clip.clip_score'?"
    ), errors
    assert "It has: world.text_alignment, world.temporal_consistency" in errors[0]


def test_a_part_that_returns_other_dimensions_is_named():
    class Liar(vipkit.RewardModel):
        name = "liar"
        dimensions = ("a", "b")

        def score(self, videos, prompts):
            return {"a": videos.mean(dim=(1, 2, 3, 4))}

    with pytest.raises(VipkitError, match=r"reward 'liar' returned the dimensions \['a'\] but declares \['a', 'b'\]"):
        CombinedReward({"x": Liar(), "world": ShapesReward()}).score(sample_videos(1), ["a red square moving left"])


def test_the_cli_shows_table_names_in_errors_verbatim(tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "both.toml"
    recipe.write_text(TWO_REWARDS + '[reward]\nname = "shapes"\n')
    result = subprocess.run(
        [sys.executable, "-m", "vipkit", "validate", str(recipe)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert "reward: has both [reward] and [[rewards]]; use one [reward] table" in result.stderr, (
        result.stderr
    )  # not eaten as markup
