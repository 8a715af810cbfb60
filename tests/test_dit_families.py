"""The diffusion-transformer families (wan, cogvideox, ltx-video) on vipkit.dit_kit, on tiny presets built from configs.

Every family keeps the whole VideoModel contract (vipkit.testing.check_model); removals are exact (a removed block
passes the stream on unchanged, a removed branch equals its zero form); a pruned model exports to a plain diffusers
pipeline folder with fewer blocks that diffusers' own from_pretrained loads to the same videos; the real loading code
reads pipeline folders written here; the random presets are the released architectures (on the meta device).
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import pytest
import torch
from pydantic import ValidationError

import vipkit
from vipkit import VipkitError
from vipkit.dit_presets import byte_level_t5_tokenizer
from vipkit.engine import compress
from vipkit.export import export_model
from vipkit.plugins import load_plugins
from vipkit.recipe import parse_recipe
from vipkit.saved_model import save_model
from vipkit.testing import check_model

FAMILIES = ("wan", "cogvideox", "ltx-video")
PIPELINES = {"wan": "WanPipeline", "cogvideox": "CogVideoXPipeline", "ltx-video": "LTXPipeline"}
SMALL = {"num_inference_steps": 2}
PROMPT = "a red ball rolling left"
# Blocks of the tiny presets: name of the block list, parameters of one block, and of its branches.
TINY_BLOCKS = {
    "wan": (
        "blocks",
        3_440,
        {"attn1": ("self_attention", 1_120), "attn2": ("cross_attention", 1_120), "ffn": ("feed_forward", 1_072)},
    ),
    "cogvideox": ("transformer_blocks", 16_224, {"attn1": ("attention", 4_288), "ff": ("feed_forward", 8_352)}),
    "ltx-video": (
        "transformer_blocks",
        4_464,
        {"attn1": ("self_attention", 1_120), "attn2": ("cross_attention", 1_120), "ff": ("feed_forward", 2_128)},
    ),
}
TINY_PARAMS = {"wan": 18_896, "cogvideox": 67_552, "ltx-video": 24_728}


def family(name: str):
    return load_plugins().registry("models").get(name)


def tiny(name: str, **options):
    return family(name).from_options({"preset": "tiny", **SMALL, **options})


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    """Shared, never mutated: tests that remove blocks work on ``model.copy()``."""
    return tiny(request.param)


def inputs(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    latents = model.generate([PROMPT], [0]).latents
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([600])
    return model.add_noise(latents, noise, timesteps), timesteps, model.encode_prompts([PROMPT])


def frames(pipe, seed: int = 3, **settings) -> torch.Tensor:
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), output_type="pt", **settings).frames


def nudge(parameters) -> None:
    """Stand-in for training: every weight moves (seeded), so an export of the preset's weights cannot pass."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in parameters:
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.02)


# -- the contract and the blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_keeps_the_video_model_contract(name: str) -> None:
    check_model(name, SMALL)


def test_tiny_blocks_sizes_and_settings(model) -> None:
    block_list, block_params, branches = TINY_BLOCKS[model.name]
    blocks = model.blocks()
    assert model.num_parameters() == TINY_PARAMS[model.name]
    assert [b.name for b in blocks[: 1 + len(branches)]] == [f"{block_list}.0"] + [
        f"{block_list}.0.{attribute}" for attribute in branches
    ]
    assert len(model.blocks_of(["transformer_block"])) == 4
    assert {(b.name.rsplit(".", 1)[-1], b.kind, b.params) for b in blocks[1 : 1 + len(branches)]} == {
        (attribute, kind, params) for attribute, (kind, params) in branches.items()
    }
    assert all(b.params == block_params for b in model.blocks_of(["transformer_block"]))
    assert model.default_block_kinds == ("transformer_block",) and model.default_trainable == "all"
    settings = model.generation_settings
    assert (settings["height"], settings["width"], settings["max_sequence_length"]) == (32, 32, 64)
    assert settings["num_inference_steps"] == 2  # the option over the preset's 4


def test_a_removed_block_passes_the_stream_on_exactly(model) -> None:
    """The stream after a removed block's position is the stream before it, bit for bit (KD's features line up)."""
    student = model.copy()
    block_list = TINY_BLOCKS[model.name][0]
    student.remove_block(f"{block_list}.1")
    noisy, timesteps, conditioning = inputs(model)
    _, teacher_features = model.predict_noise(noisy, timesteps, conditioning, features=True)
    prediction, features = student.predict_noise(noisy, timesteps, conditioning, features=True)
    assert len(features) == len(teacher_features) == 4
    assert torch.equal(features[0], teacher_features[0])  # before the removed block, nothing changed
    assert torch.equal(features[1], features[0])  # the removed position hands its input on
    assert not torch.equal(features[2], teacher_features[2])
    assert prediction.shape == noisy.shape


def test_a_removed_branch_is_its_zero_form(model) -> None:
    """Removing an attention or feed-forward branch computes exactly what the block computes with that branch's
    weights all zero (what the diffusers export writes), and costs exactly the branch's parameters."""
    block_list, _, branches = TINY_BLOCKS[model.name]
    noisy, timesteps, conditioning = inputs(model)
    for attribute in branches:
        name = f"{block_list}.2.{attribute}"
        removed, zeroed = model.copy(), model.copy()
        removed.remove_block(name)
        with torch.no_grad():
            for p in zeroed.denoiser().get_submodule(name).parameters():
                p.zero_()
        assert removed.num_parameters() == model.num_parameters() - branches[attribute][1]
        assert torch.equal(
            removed.predict_noise(noisy, timesteps, conditioning), zeroed.predict_noise(noisy, timesteps, conditioning)
        ), attribute
    whole = model.copy()
    whole.remove_block(f"{block_list}.2.{next(iter(branches))}")
    whole.remove_block(f"{block_list}.2")  # a block whose branch is already gone goes too
    assert f"{block_list}.2" not in {b.name for b in whole.blocks()}
    whole.restore_block(f"{block_list}.2")
    assert f"{block_list}.2.{next(iter(branches))}" not in {b.name for b in whole.blocks()}


def test_training_forward_with_checkpointing_and_removed_blocks(model) -> None:
    """A removed block is called positionally under gradient checkpointing: its stand-in still answers right."""
    student = model.copy()
    block_list = TINY_BLOCKS[model.name][0]
    student.remove_block(f"{block_list}.0")
    noisy, timesteps, conditioning = inputs(model)
    expected = student.predict_noise(noisy, timesteps, conditioning)
    params = student.trainable_parameters("blocks")
    for p in params:
        p.requires_grad_(True)
    student.train_mode(True)
    student.set_gradient_checkpointing(True)
    try:
        prediction = student.predict_noise(noisy, timesteps, conditioning)
        prediction.pow(2).mean().backward()
    finally:
        student.set_gradient_checkpointing(False)
        student.train_mode(False)
    assert torch.allclose(prediction, expected, atol=1e-6)
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params if p.ndim > 1)
    for p in params:
        p.grad = None
        p.requires_grad_(False)


def test_flow_and_v_prediction_targets() -> None:
    wan, cog = tiny("wan"), tiny("cogvideox")
    latents, noise = torch.ones(1, 2, 3), torch.full((1, 2, 3), 3.0)
    for t, expected in ((0, 1.0), (250, 1.5), (1000, 3.0)):  # (1 - s) x + s n, s = t / 1000
        assert torch.allclose(wan.add_noise(latents, noise, torch.tensor([t])), torch.full_like(latents, expected))
    assert torch.equal(wan.training_target(latents, noise, torch.tensor([3])), noise - latents)
    scheduler = cog.pipeline().scheduler
    assert type(scheduler).__name__ == "CogVideoXDDIMScheduler" and scheduler.config.prediction_type == "v_prediction"
    t = torch.tensor([500])
    velocity = scheduler.get_velocity(latents, noise, t)
    assert torch.allclose(cog.training_target(latents, noise, t), velocity)
    assert torch.allclose(cog.add_noise(latents, noise, t), scheduler.add_noise(latents, noise, t))


# -- saving, exporting, loading ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_saved(tmp_path_factory, model) -> Path:
    """A trained-looking model with a whole block and a branch of another removed, saved as a run does."""
    student = model.copy()
    block_list, _, branches = TINY_BLOCKS[model.name]
    student.remove_block(f"{block_list}.1")
    student.remove_block(f"{block_list}.3.{list(branches)[-1]}")
    nudge(student.trainable_parameters("all"))
    folder = tmp_path_factory.mktemp(model.name) / "model"
    save_model(student, folder, {"trained_scope": "all", "base_models": []})
    return folder


def test_save_is_a_plain_diffusers_pipeline_with_fewer_blocks(pruned_saved: Path, model) -> None:
    block_list = TINY_BLOCKS[model.name][0]
    config = json.loads((pruned_saved / "transformer" / "config.json").read_text())
    assert config["num_layers"] == 3
    back = vipkit.load_model(pruned_saved)
    assert back.removed_blocks == [f"{block_list}.1", f"{block_list}.3.{list(TINY_BLOCKS[model.name][2])[-1]}"]
    assert [b.name for b in back.blocks_of(["transformer_block"])] == [f"{block_list}.{i}" for i in (0, 2, 3)]
    plain = getattr(diffusers, PIPELINES[model.name]).from_pretrained(pruned_saved)
    assert len(plain.transformer.get_submodule(block_list)) == 3
    settings = {k: back.generation_settings[k] for k in ("height", "width", "num_frames", "num_inference_steps")}
    assert (frames(plain, **settings) - frames(back.pipeline(), **settings)).abs().max() <= 1e-6


def test_diffusers_export_loads_in_plain_diffusers_to_the_same_videos(pruned_saved: Path, model, tmp_path) -> None:
    out = tmp_path / "export"
    record = export_model(pruned_saved, "diffusers", out)
    ours = vipkit.load_model(pruned_saved)
    plain = getattr(diffusers, PIPELINES[model.name]).from_pretrained(out)  # as any diffusers user loads it
    assert plain.transformer.config.num_layers == 3
    branch_params = TINY_BLOCKS[model.name][2][list(TINY_BLOCKS[model.name][2])[-1]][1]
    plain_params = sum(p.numel() for p in plain.transformer.parameters())
    assert plain_params == ours.num_parameters() + branch_params  # the zeroed branch is computed there
    settings = {k: ours.generation_settings[k] for k in ("height", "width", "num_frames", "num_inference_steps")}
    expected = frames(ours.pipeline(), **settings)
    assert (frames(plain, **settings) - expected).abs().max() <= 1e-6
    back = vipkit.load_model(out)  # vipkit removes the zeroed branch again: the pruned size
    assert back.removed_blocks == record["zeroed_blocks"] == ours.removed_blocks
    assert back.num_parameters() == ours.num_parameters()
    assert (frames(back.pipeline(), **settings) - expected).abs().max() <= 1e-6
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and PIPELINES[model.name] in card


def test_bfloat16_export_holds_bfloat16_tensors(pruned_saved: Path, tmp_path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "bf16"
    export_model(pruned_saved, "diffusers", out, dtype="bfloat16")
    state = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.bfloat16}
    assert vipkit.load_model(out).generation_settings["dtype"] == "bfloat16"


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_model_reloads_bit_identically(name: str, dtype: str, tmp_path: Path) -> None:
    """diffusers and transformers keep some layers in float32 when they load in float16; vipkit's models hold one
    dtype, so a reloaded half-precision model (a resumed run's) computes exactly what the saved one did."""
    model = tiny(name, dtype=dtype)
    model.remove_block(f"{TINY_BLOCKS[name][0]}.0")
    model.save(tmp_path / "model")
    back = family(name).load_saved(tmp_path / "model")
    for loaded in (model, back):
        tensors = [*loaded.denoiser().state_dict().values(), *loaded.pipeline().text_encoder.state_dict().values()]
        assert {t.dtype for t in tensors if t.is_floating_point()} == {getattr(torch, dtype)}
    assert back.removed_blocks == model.removed_blocks
    assert torch.equal(back.generate([PROMPT], [2]).videos, model.generate([PROMPT], [2]).videos)


@pytest.mark.parametrize("name", FAMILIES)
def test_loads_a_plain_pipeline_folder_and_removes_zeroed_blocks(name: str, tmp_path: Path) -> None:
    """The loading code for hub ids and local folders, on a folder written by the pipeline class itself."""
    preset = tiny(name)
    block_list, _, branches = TINY_BLOCKS[name]
    pipe = preset.pipeline()
    with torch.no_grad():
        for p in pipe.transformer.get_submodule(f"{block_list}.2").parameters():
            p.zero_()  # an export of the full architecture with a removed block: an exact identity
        for p in pipe.transformer.get_submodule(f"{block_list}.0.{next(iter(branches))}").parameters():
            p.zero_()
    pipe.save_pretrained(tmp_path / "pipe")
    settings = {k: preset.generation_settings[k] for k in ("height", "width", "num_frames", "max_sequence_length")}
    loaded = family(name).from_options({"base": str(tmp_path / "pipe"), **SMALL, **settings})
    assert loaded.removed_blocks == [f"{block_list}.0.{next(iter(branches))}", f"{block_list}.2"]
    assert loaded.generation_settings["guidance_scale"] == family(name).real_settings["guidance_scale"]
    preset_videos = preset.generate([PROMPT], [5]).videos
    assert (loaded.generate([PROMPT], [5]).videos - preset_videos).abs().max() <= 1e-5
    assert loaded.source_models() == []


def test_bad_options_and_sources_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="no such local directory"):
        family("wan").from_options({"base": str(tmp_path / "missing")})
    with pytest.raises(ValidationError, match="multiple of 8"):
        family("wan").from_options({"preset": "tiny", "height": 20})
    with pytest.raises(VipkitError, match="multiple of 16"):
        tiny("wan", height=40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VipkitError, match="hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        family("wan").from_options({})
    saved = tmp_path / "cog"
    tiny("cogvideox").save(saved)
    with pytest.raises(VipkitError, match="holds a 'cogvideox' model"):
        family("wan").from_options({"base": str(saved)})


def test_positional_text_embeddings_fix_the_prompt_length(tmp_path: Path) -> None:
    """CogVideoX-2b adds sin-cos positions for exactly max_text_seq_length text tokens: that is its prompt length, and
    another one is refused. (The tiny preset has rotary positions, as the 5B; this is the 2B's path.)"""
    from vipkit_cogvideox.presets import TINY_TRANSFORMER, preset_components

    components, _ = preset_components("tiny", 0, torch.device("cpu"))
    positional = {**TINY_TRANSFORMER, "use_rotary_positional_embeddings": False, "attention_head_dim": 8}
    components["transformer"] = diffusers.CogVideoXTransformer3DModel(**positional)
    diffusers.CogVideoXPipeline(**components).save_pretrained(tmp_path / "pipe")
    options = {"base": str(tmp_path / "pipe"), "height": 32, "width": 32, "num_frames": 9, **SMALL}
    model = family("cogvideox").from_options(options)
    assert model.generation_settings["max_sequence_length"] == 64  # not the real model's 226
    noisy, timesteps, conditioning = inputs(model)
    assert model.predict_noise(noisy, timesteps, conditioning).shape == noisy.shape
    with pytest.raises(VipkitError, match="exactly 64 text tokens"):
        family("cogvideox").from_options({**options, "max_sequence_length": 32})


# -- presets -------------------------------------------------------------------------------------------------


def test_byte_level_t5_tokenizer_round_trips_and_saves(tmp_path: Path) -> None:
    tokenizer = byte_level_t5_tokenizer()
    ids = tokenizer(["a red ball é", "hi"], padding="max_length", max_length=16, truncation=True).input_ids
    assert ids[1] == [74, 75, 1] + [0] * 13  # 'h', 'i', end of text, padding
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == ["a red ball é", "hi"]
    tokenizer.save_pretrained(tmp_path)
    assert type(tokenizer).from_pretrained(tmp_path)(["a red ball é"]).input_ids == [ids[0][:14]]


@pytest.mark.parametrize(
    ("module", "preset", "transformer", "layers", "text_encoder"),
    [
        ("vipkit_wan.presets", "random", 1_418_996_800, 30, 5_680_910_336),
        ("vipkit_wan.presets", "random-14b", 14_288_491_584, 40, 5_680_910_336),
        ("vipkit_cogvideox.presets", "random", 1_693_783_872, 30, 4_762_310_656),
        ("vipkit_cogvideox.presets", "random-5b", 5_570_283_072, 42, 4_762_310_656),
        ("vipkit_ltx", "random", 1_923_385_472, 28, 4_762_310_656),
    ],
)
def test_random_presets_are_the_released_architectures_on_the_meta_device(
    module: str, preset: str, transformer: int, layers: int, text_encoder: int
) -> None:
    import importlib

    components, settings = importlib.import_module(module).preset_components(preset, 0, torch.device("meta"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(components["transformer"]) == transformer
    assert components["transformer"].config.num_layers == layers
    assert count(components["text_encoder"]) == text_encoder
    assert settings["num_inference_steps"] == 50


# -- recipes and a whole run ---------------------------------------------------------------------------------

TINY_RUN = """
description = "tiny {name}: V.I.P. as recipes/wan_vip.toml and recipes/cogvideox_vip.toml run it"
seed = 0

[model]
name = "{name}"
preset = "tiny"
num_inference_steps = 2

[reward]
name = "clip"
preset = "tiny"

[prompts]
train = ["a red ball rolling left", "a blue square moving up"]
eval = ["a white star spinning"]

[schedule]
stages = 1
block_kinds = ["transformer_block"]

[scorer]
name = "reward-drop"

[pruner]
name = "block"
target_fraction = 0.25
target_kind = "transformer_block"

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
"""


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_family_compresses_end_to_end_and_exports(name: str, tmp_path: Path) -> None:
    text = TINY_RUN.format(name=name)
    results = compress(parse_recipe(text), text, tmp_path / "run", log=lambda message: None)
    teacher, (stage,) = results["teacher"], results["stages"]
    block_list, block_params, _ = TINY_BLOCKS[name]
    assert teacher["parameters"] == TINY_PARAMS[name]
    (removed,) = stage["removed_blocks"]  # 25 % of 4 blocks: one
    assert (
        removed.startswith(f"{block_list}.")
        and stage["distilled"]["parameters"] == teacher["parameters"] - block_params
    )
    assert stage["train"]["steps"] > 0 and stage["distilled"]["denoiser_flops"] < teacher["denoiser_flops"]
    export_model(tmp_path / "run", "diffusers", tmp_path / "export")
    plain = getattr(diffusers, PIPELINES[name]).from_pretrained(tmp_path / "export")
    assert plain.transformer.config.num_layers == 3


@pytest.mark.parametrize("recipe", ["wan_vip.toml", "cogvideox_vip.toml"])
def test_shipped_recipes_prune_transformer_blocks_by_parameter_fraction(recipe: str) -> None:
    from vipkit.recipe import load_recipe

    loaded = load_recipe(Path(__file__).parents[1] / "recipes" / recipe)
    assert loaded.schedule.block_kinds == ["transformer_block"]
    assert loaded.pruner.config.target_fraction == 0.25 and loaded.pruner.config.target_kind == "transformer_block"
    assert loaded.reward.name == "videoscore" and [loss.name for loss in loaded.losses] == ["redpo"]
