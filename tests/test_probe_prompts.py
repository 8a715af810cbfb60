"""`[prompts] probe`: the importance scorer ranks blocks on its own prompts and seeds, not on the reported ones."""

import json
from pathlib import Path
from typing import ClassVar

import torch
from conftest import MICRO_RECIPE

import vipkit
from vipkit.engine import compress
from vipkit.media import eight_bit
from vipkit.plugins import load_plugins
from vipkit.recipe import parse_recipe
from vipkit_animatediff import AnimateDiff

PROBE = ["a green star spinning", "a black cat jumping"]
MICRO = Path(MICRO_RECIPE).read_text(encoding="utf-8")
EDITS = (  # the micro recipe, one stage without training, scored by the prompt-recording reward, with probe prompts
    ('name = "clip"\npreset = "tiny"', 'name = "prompt-log"'),
    ("videos_per_prompt = 1", f"probe = {json.dumps(PROBE)}\nvideos_per_prompt = 1"),
    ("stages = 2", "stages = 1"),
    ("epochs = 2", "epochs = 0"),
)
RECIPE = MICRO
for old, new in EDITS:
    assert old in RECIPE, old
    RECIPE = RECIPE.replace(old, new, 1)


class PromptLog(vipkit.RewardModel):
    """Mean brightness; records the prompts it scores."""

    name = "prompt-log"
    dimensions = ("brightness",)
    seen: ClassVar[list[str]] = []

    def score(self, videos, prompts):
        PromptLog.seen.extend(prompts)
        return {"brightness": videos.mean(dim=(1, 2, 3, 4))}


class PromptLogPlugin:
    __name__ = "prompt_log_plugin"

    @vipkit.hookimpl
    def register_rewards(self, register):
        register(PromptLog)


def brightness(model: AnimateDiff, seed: int) -> float:
    """The probe's objective computed by hand: the probe prompts with seeds recipe seed + 200,000 + i, the videos
    on the 8-bit grid a run keeps them on."""
    return float(eight_bit(model.generate(PROBE, [seed + 200_000 + i for i in range(len(PROBE))]).videos).mean())


def test_blocks_are_ranked_on_the_probe_prompts_and_seeds(tmp_path):
    plugins = load_plugins()
    plugins.add(PromptLogPlugin(), name="prompt_log_plugin")
    PromptLog.seen.clear()
    try:
        recipe = parse_recipe(RECIPE, plugins=plugins)
        results = compress(recipe, RECIPE, tmp_path / "run", log=lambda line: None)
    finally:
        plugins.remove("prompt_log_plugin")
    assert recipe.dump()["prompts"]["probe"] == PROBE
    importance = results["stages"][0]["importance"]
    assert PromptLog.seen.count(PROBE[0]) == 1 + len(importance)  # the baseline, then once without each block
    assert PromptLog.seen.count("a white star spinning") == 2  # only the reports: teacher and pruned (the untrained
    # "distilled" student makes the same videos: the score cache answers)
    model = AnimateDiff(recipe.model.config)  # the recipe's teacher, built afresh
    baseline = brightness(model, recipe.seed)
    for item in importance[:2]:
        model.remove_block(item["block"])
        torch.testing.assert_close(item["importance"], baseline - brightness(model, recipe.seed), rtol=0, atol=1e-6)
        model.restore_block(item["block"])


def test_without_probe_prompts_the_fingerprint_is_the_one_runs_had_before():
    recipe = parse_recipe(MICRO)
    assert "probe" not in recipe.dump()["prompts"] and recipe.prompts_probe == []
