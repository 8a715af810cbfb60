"""A whole V.I.P. run of the tiny videocrafter2 preset through the engine: prune, curate, train, save, reload."""

from __future__ import annotations

import json
from pathlib import Path

import vipkit
from vipkit.engine import compress
from vipkit.recipe import parse_recipe

TINY_RECIPE = """
description = "tiny random VideoCrafter2, 1 stage"
seed = 0

[model]
name = "videocrafter2"
preset = "tiny"
height = 8
width = 8
num_frames = 4
num_inference_steps = 2

[reward]
name = "clip"
preset = "tiny"

[prompts]
train = ["a red ball rolling left", "a blue square moving up"]
eval = ["a white star spinning"]

[schedule]
stages = 1
block_kinds = ["encoder_decoder_pair", "middle"]

[scorer]
name = "param-count"

[pruner]
name = "block"
blocks_per_stage = 1

[curator]
name = "degraded-dimensions"
margin = -1.0   # random models: keep every pair so that the training step runs
tau = -1.0

[[losses]]
name = "redpo"
beta = 5000
beta_convention = "salesforce"
sft_weight = 1.0

[train]
epochs = 1
batch_size = 2
learning_rate = 1e-4
trainable = "temporal"
"""


def test_tiny_videocrafter2_compresses_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = compress(parse_recipe(TINY_RECIPE), TINY_RECIPE, out, log=lambda message: None)
    teacher, (stage,) = results["teacher"], results["stages"]
    assert teacher["parameters"] == 803_268
    assert len(stage["removed_blocks"]) == 1 and stage["removed_blocks"][0] in {
        "middle_block",
        "input_blocks.1+output_blocks.2",
        "input_blocks.3+output_blocks.0",
    }
    assert stage["pruned"]["parameters"] == stage["distilled"]["parameters"] < teacher["parameters"]
    assert stage["train"]["steps"] > 0
    assert stage["distilled"]["denoiser_flops"] < teacher["denoiser_flops"]
    saved = json.loads((out / "model" / "vipkit_model.json").read_text())
    assert saved["family"] == "videocrafter2" and saved["removed_blocks"] == stage["removed_blocks"]
    model = vipkit.load_model(str(out / "model"))
    assert model.num_parameters() == results["final"]["parameters"]
    assert model.removed_blocks == stage["removed_blocks"]
    videos = model.generate(["a red ball rolling left"], [0]).videos
    assert videos.shape == (1, 4, 3, 8, 8) and 0 <= videos.min() and videos.max() <= 1
