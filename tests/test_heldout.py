"""Held-out evaluation: `[prompts] heldout` scored after every prune and distillation, never ranked or curated on;
`[heldout_reward]` scored on those videos only; a resume renders none of them again."""

import json
from pathlib import Path

import pytest
import torch
from conftest import MICRO_RECIPE
from test_probe_prompts import PromptLog, PromptLogPlugin  # mean brightness; records the prompts it scores

from vipkit import sharded, training
from vipkit.engine import compress
from vipkit.interfaces import mean_scores
from vipkit.media import eight_bit
from vipkit.pair_store import load_pairs
from vipkit.plugins import load_plugins
from vipkit.recipe import RecipeError, load_recipe, parse_recipe
from vipkit.report import heldout_table, results_table
from vipkit.rundir import RunDirectory
from vipkit.saved_model import load_saved_model
from vipkit.seeds import video_seeds
from vipkit_animatediff import AnimateDiff

HELDOUT = ["a yellow moon rising", "a purple kite drifting", "an orange leaf falling"]
MICRO = Path(MICRO_RECIPE).read_text(encoding="utf-8")
WITH_HELDOUT = (
    MICRO.replace("videos_per_prompt = 1", f"heldout = {json.dumps(HELDOUT)}\nvideos_per_prompt = 1", 1)
    + '\n[heldout_reward]\nname = "prompt-log"\n'
)


@pytest.fixture
def plugins():
    registered = load_plugins()
    registered.add(PromptLogPlugin(), name="prompt_log_plugin")
    PromptLog.seen.clear()
    yield registered
    registered.remove("prompt_log_plugin")


class Interrupted(Exception):
    """Stands for a killed process: raised at stage 2's first training step."""


def heldout_renders(monkeypatch) -> list[tuple[str, ...]]:
    """The removed blocks of every model state whose held-out videos are rendered from now on."""
    rendered: list[tuple[str, ...]] = []
    generate = sharded.generate

    def spy(model, prompts, seeds):
        if set(prompts) & set(HELDOUT):
            assert list(prompts) == HELDOUT
            rendered.append(tuple(sorted(model.removed_blocks)))
        return generate(model, prompts, seeds)

    monkeypatch.setattr(sharded, "generate", spy)
    return rendered


def direct_scores(model, recipe, plugins) -> dict:
    """What a held-out entry must hold, computed by hand: the held-out prompts with seeds recipe seed + 300,000 + i,
    on the 8-bit grid, scored by the recipe's reward built afresh, and the brightness of the same videos."""
    videos = eight_bit(model.generate(HELDOUT, video_seeds(recipe.seed, "heldout", len(HELDOUT))).videos)
    scores = recipe.reward.build(plugins).score(videos, HELDOUT)
    return {"scores": mean_scores(scores), "reward": {"brightness": float(videos.mean())}}


def test_heldout_scores_every_model_state_and_a_resume_renders_none_again(tmp_path, monkeypatch, plugins):
    recipe = parse_recipe(WITH_HELDOUT, plugins=plugins)
    run = RunDirectory(tmp_path / "run")
    step = training.fault_point

    def killed_in_stage_2(name):
        if name == "train_step" and (run.stage_dir(1) / "stage.json").exists():
            raise Interrupted
        step(name)

    monkeypatch.setattr(training, "fault_point", killed_in_stage_2)
    first = heldout_renders(monkeypatch)
    with pytest.raises(Interrupted):
        compress(recipe, WITH_HELDOUT, run.root, log=lambda line: None)
    monkeypatch.setattr(training, "fault_point", step)
    removed_1 = json.loads((run.stage_dir(1) / "stage.json").read_text())["removed_blocks"]
    removed_2 = json.loads((run.pairs_dir(2) / "prune.json").read_text())["removed_blocks"]
    stage_1, stage_2 = tuple(sorted(removed_1)), tuple(sorted(removed_1 + removed_2))
    assert first == [(), stage_1, stage_1, stage_2]  # teacher, stage 1 pruned and distilled, stage 2 pruned

    resumed = heldout_renders(monkeypatch)
    results = compress(recipe, WITH_HELDOUT, run.root, log=lambda line: None)
    assert resumed == [stage_2]  # only stage 2's distilled student: the teacher's come from its cache, the rest stored
    assert results["heldout_prompts"] == len(HELDOUT)

    # every entry equals a direct score of the same model state's held-out videos
    def model_state(start, removed):
        """The model loaded from ``start`` (the teacher when None) with ``removed`` blocks taken out."""
        model = AnimateDiff(recipe.model.config) if start is None else load_saved_model(run.stage_dir(start) / "model")
        for block in removed:
            model.remove_block(block)
        return model

    stages = results["stages"]
    states = {
        "teacher": (results["teacher"], (None, [])),
        "stage 1 pruned": (stages[0]["pruned"], (None, removed_1)),
        "stage 1 distilled": (stages[0]["distilled"], (1, [])),
        "stage 2 pruned": (stages[1]["pruned"], (1, removed_2)),
        "stage 2 distilled": (stages[1]["distilled"], (2, [])),
    }
    for label, (entry, state) in states.items():
        expected = direct_scores(model_state(*state), recipe, plugins)
        for part in ("scores", "reward"):
            torch.testing.assert_close(entry["heldout"][part], expected[part], rtol=0, atol=1e-6, msg=label)
        objective = sum(expected["scores"].values()) / len(expected["scores"])
        assert entry["heldout"]["objective"] == pytest.approx(objective, abs=1e-6)
    assert results["final"]["heldout"] == results["stages"][1]["distilled"]["heldout"]

    # the held-out reward saw the held-out prompts only; no pair holds a held-out prompt or seed
    assert set(PromptLog.seen) == set(HELDOUT)
    heldout_seeds = set(video_seeds(recipe.seed, "heldout", len(HELDOUT)))
    for stage in (1, 2):
        pairs = load_pairs(run.pairs_dir(stage))
        assert not set(pairs.prompts) & set(HELDOUT) and not set(pairs.seeds) & heldout_seeds

    # ranking and pairs are those of the same recipe without held-out prompts
    plain = compress(parse_recipe(MICRO), MICRO, tmp_path / "plain", log=lambda line: None)
    for with_heldout, without in zip(results["stages"], plain["stages"], strict=True):
        assert with_heldout["importance"] == without["importance"]
        assert with_heldout["removed_blocks"] == without["removed_blocks"]
        assert "heldout" not in without["pruned"] and "heldout" not in without["distilled"]
    plain_run = RunDirectory(tmp_path / "plain")
    for stage in (1, 2):
        ours, theirs = load_pairs(run.pairs_dir(stage)), load_pairs(plain_run.pairs_dir(stage))
        assert (ours.prompts, ours.seeds) == (theirs.prompts, theirs.seeds)
        assert torch.equal(ours.loser_videos, theirs.loser_videos)
    assert "heldout_prompts" not in plain and "heldout" not in plain["final"]
    assert "Held-out" not in (tmp_path / "plain" / "report.md").read_text()

    # the report: a second table, the same model states, with the teacher's share and the held-out reward (marked *)
    header, rows = heldout_table(results)
    assert header == [
        "model",
        "clip_score",
        "frame_consistency",
        "objective",
        "% of teacher's objective",
        "brightness*",
    ]
    assert [row[0] for row in rows] == [
        "teacher",
        "stage 1 pruned",
        "stage 1 distilled",
        "stage 2 pruned",
        "stage 2 distilled",
    ]
    assert rows[0][header.index("% of teacher's objective")] == "100.0"
    main_header, main_rows = results_table(results)  # also what `vipkit compress` prints and the model card shows
    assert main_header[-2:] == ["held-out objective", "% of teacher's held-out"]
    assert [row[-2:] for row in main_rows] == [row[3:5] for row in rows]
    assert results_table(plain)[0][-1] == "objective"
    report = (run.root / "report.md").read_text()
    assert f"## Held-out prompts ({len(HELDOUT)} videos)" in report and "| " + " | ".join(rows[-1]) + " |" in report


def recipe_errors(text: str, plugins=None) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, plugins=plugins)
    return caught.value.errors


def test_heldout_prompts_may_not_be_trained_probed_or_evaluated_on(tmp_path):
    text = MICRO.replace(
        "videos_per_prompt = 1",
        'probe = ["a green star spinning"]\n'
        'heldout = ["  a white star spinning ", "a red ball rolling left", "a green star spinning", "a new prompt"]\n'
        "videos_per_prompt = 1",
    )
    assert recipe_errors(text) == [
        "prompts.heldout: 'a white star spinning' is also among the evaluation prompts",
        "prompts.heldout: 'a red ball rolling left' is also among the training and evaluation prompts",
        "prompts.heldout: 'a green star spinning' is also among the probe prompts; held-out prompts must be ones the "
        "run never trains, probes or evaluates on",
    ]
    (tmp_path / "heldout.txt").write_text("# held out\na blue square moving up\n", encoding="utf-8")
    text = MICRO.replace("videos_per_prompt = 1", 'heldout_file = "heldout.txt"\nvideos_per_prompt = 1')
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, base_dir=tmp_path)
    assert caught.value.errors[0].startswith(
        "prompts.heldout_file: 'a blue square moving up' is also among the training"
    )


def test_heldout_reward_tables(plugins):
    assert recipe_errors(MICRO + '\n[heldout_reward]\nname = "clip"\npreset = "tiny"\n') == [
        "heldout_reward: scored on the held-out prompts only, and the recipe has none: set [prompts] heldout or heldout_file"
    ]
    both = WITH_HELDOUT + '\n[[heldout_rewards]]\nname = "clip"\npreset = "tiny"\n'
    assert recipe_errors(both, plugins)[0].startswith(
        "heldout_reward: has both [heldout_reward] and [[heldout_rewards]]"
    )
    assert recipe_errors(WITH_HELDOUT.replace('"prompt-log"', '"promt-log"'), plugins)[0].startswith(
        "heldout_reward.name: "
    )
    combined = WITH_HELDOUT.replace("[heldout_reward]", '[[heldout_rewards]]\nas = "light"') + (
        '\n[[heldout_rewards]]\nname = "clip"\npreset = "tiny"\n'
    )
    recipe = parse_recipe(combined, plugins=plugins)
    assert recipe.heldout_reward.dimensions(plugins) == (
        "light.brightness",
        "clip.clip_score",
        "clip.frame_consistency",
    )
    assert recipe.dump()["heldout_reward"]["combine"][0] == {"as": "light", "name": "prompt-log"}
    assert recipe.dump()["prompts"]["heldout"] == HELDOUT


def test_without_heldout_prompts_the_fingerprint_is_the_one_runs_had_before():
    recipe = parse_recipe(MICRO)
    assert recipe.prompts_heldout == [] and recipe.heldout_reward is None
    assert "heldout" not in recipe.dump()["prompts"] and "heldout_reward" not in recipe.dump()


def test_heldout_seeds_are_a_role_of_their_own():
    assert video_seeds(7, "heldout", 2) == [300_007, 300_008]
    roles = [set(video_seeds(0, role, 100_000)) for role in ("eval", "train", "probe", "heldout")]
    assert sum(map(len, roles)) == len(set.union(*roles))


@pytest.mark.parametrize("name", ["shapes_vip.toml", "shapes_vip_fast.toml"])
def test_shapes_recipes_hold_out_64_prompts(name):
    """The shapes recipes' held-out file (opt-in, commented out so the README command stays short) validates with them:
    none of its prompts is used otherwise."""
    overrides = ['prompts.heldout_file="prompts/shapes_heldout.txt"']
    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / name, overrides=overrides)
    assert len(recipe.prompts_heldout) >= 64 and len(set(recipe.prompts_heldout)) == len(recipe.prompts_heldout)
