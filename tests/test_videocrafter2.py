"""The videocrafter2 model family on its tiny random preset (official checkpoint layout, no download)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import vipkit
from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.saved_model import save_model
from vipkit.testing import check_model
from vipkit_videocrafter2 import VideoCrafter2
from vipkit_videocrafter2.checkpoint import UNET_PREFIX
from vipkit_videocrafter2.loading import RANDOM_SIZES, REAL_SETTINGS, preset_parts
from vipkit_videocrafter2.schedule import Schedule, ddim_sample, ddim_timesteps
from vipkit_videocrafter2.text_encoder import OPEN_CLIP_PREFIX
from vipkit_videocrafter2.tiny import official_checkpoint
from vipkit_videocrafter2.vae import LDM_VAE_PREFIX

TINY_PARAMS = 803_268  # the tiny UNet (golden A's structure)
PAIR = "input_blocks.1+output_blocks.2"
SPATIAL = "input_blocks.1.1"
TEMPORAL_CONV = "output_blocks.3.0.temopral_conv"
PROMPTS = ["a red square moving left", "a blue circle moving up"]
SMALL = {"height": 8, "width": 8, "num_frames": 4, "num_inference_steps": 2}


def tiny(**options: object) -> VideoCrafter2:
    return VideoCrafter2.from_options({"preset": "tiny", **SMALL, **options})


@pytest.fixture(scope="module")
def model() -> VideoCrafter2:
    """Shared, never mutated: tests that remove blocks work on ``model.copy()``."""
    return tiny()


@pytest.fixture(scope="module")
def inputs(model: VideoCrafter2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    noisy = torch.randn((2, 4, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    return noisy, torch.tensor([10, 900]), model.encode_prompts(PROMPTS)


def test_registered_sizes_and_units(model: VideoCrafter2) -> None:
    assert load_plugins().registry("models").get("videocrafter2") is VideoCrafter2
    assert model.num_parameters() == TINY_PARAMS
    blocks = model.blocks()
    assert Counter(b.kind for b in blocks) == {
        "temporal_attention": 8,  # 7 in blocks + init_attn
        "temporal_conv": 8,
        "spatial_attention": 7,
        "resblock": 4,  # input 1 and 3, both middle ResBlocks; decoder ResBlocks change width
        "encoder_decoder_pair": 2,
        "middle": 1,
    }
    sizes = {b.name: b.params for b in blocks}
    assert sizes["init_attn.0"] == 87_264  # 8 heads x 8 = 64 wide (the model is 32), Conv1d projections
    assert sizes[SPATIAL] == sizes["input_blocks.1.2"] == 23_200
    assert sizes[TEMPORAL_CONV] == 12_672
    assert sizes["input_blocks.1.0"] == 35_424
    assert sizes[PAIR] == 81_824 + 93_184
    assert [b.name for b in blocks if b.kind == "encoder_decoder_pair"] == [PAIR, "input_blocks.3+output_blocks.0"]


def _zeroed(model: VideoCrafter2, module_path: str) -> VideoCrafter2:
    """A copy where the last layer of a residual branch is zero: the branch adds nothing."""
    clone = model.copy()
    for parameter in clone.unet.get_submodule(module_path).parameters():
        parameter.data.zero_()
    return clone


@pytest.mark.parametrize(
    ("block", "branch_end"), [(SPATIAL, f"{SPATIAL}.proj_out"), (TEMPORAL_CONV, f"{TEMPORAL_CONV}.conv4")]
)
def test_removal_is_exactly_the_identity(model: VideoCrafter2, inputs, block: str, branch_end: str) -> None:
    student = model.copy()
    student.remove_block(block)
    expected = _zeroed(model, branch_end).predict_noise(*inputs)
    torch.testing.assert_close(student.predict_noise(*inputs), expected, rtol=0, atol=1e-5)
    assert (expected - model.predict_noise(*inputs)).abs().max() > 1e-3


def test_remove_and_restore_pairs_and_nested_units(model: VideoCrafter2, inputs) -> None:
    student = model.copy()
    before = student.predict_noise(*inputs)
    student.remove_block(SPATIAL)  # inside the pair's encoder block
    student.remove_block(PAIR)
    assert student.num_parameters() == TINY_PARAMS - 81_824 - 93_184
    assert model.num_parameters() == TINY_PARAMS  # the copy is independent
    assert not any(b.name.startswith(("input_blocks.1.", "output_blocks.2.")) for b in student.blocks())
    pruned = student.predict_noise(*inputs)
    assert pruned.shape == before.shape and (pruned - before).abs().max() > 1e-3
    student.remove_block("middle_block")
    assert student.removed_blocks == [SPATIAL, PAIR, "middle_block"]
    student.restore_block(SPATIAL)  # goes back inside the still-removed input block
    student.restore_block("middle_block")
    student.restore_block(PAIR)
    assert student.removed_blocks == [] and student.num_parameters() == TINY_PARAMS
    assert [b.name for b in student.blocks()] == [b.name for b in model.blocks()]
    assert torch.equal(student.predict_noise(*inputs), before)


def test_keeps_the_video_model_contract() -> None:
    """Everything a family owes the engine, checked by the plugin-author kit (blocks, removal, generation, training, saving)."""
    check_model("videocrafter2", {"num_inference_steps": 2})


def test_predict_noise_features_survive_pruning(model: VideoCrafter2, inputs) -> None:
    noisy, timesteps, conditioning = inputs
    assert conditioning.shape == (2, 77, 32) and not torch.equal(conditioning[0], conditioning[1])
    prediction, features = model.predict_noise(noisy, timesteps, conditioning, features=True)
    assert torch.equal(prediction, model.predict_noise(noisy, timesteps, conditioning))
    shapes = [(8, 32, 2, 2), (8, 32, 4, 4), (8, 32, 4, 4)]  # middle, end of level 1 (upsampled), end of level 0
    assert [tuple(f.shape) for f in features] == shapes
    student = model.copy()
    student.remove_block(PAIR)
    student.remove_block("middle_block")
    assert [tuple(f.shape) for f in student.predict_noise(*inputs, features=True)[1]] == shapes
    assert not any(module._forward_hooks for module in model.unet.modules())


def test_training_forward_is_differentiable_and_scopes(model: VideoCrafter2, inputs) -> None:
    student = model.copy()
    student.train_mode(True)
    assert student.unet.training and not model.unet.training
    student.predict_noise(*inputs).pow(2).mean().backward()
    temporal = student.trainable_parameters("temporal")
    assert sum(p.numel() for p in temporal) == 87_264 + 7 * 23_200 + 8 * 12_672
    assert all(p.grad is not None for p in temporal)
    assert sum(p.numel() for p in student.trainable_parameters("all")) == TINY_PARAMS
    with pytest.raises(VipkitError, match=r"'motion' for videocrafter2; valid scopes: 'temporal' \(.*\); 'all'"):
        student.trainable_parameters("motion")


def test_trainer_hooks_checkpointing_and_a_replaced_denoiser(model: VideoCrafter2, inputs) -> None:
    student = model.copy()  # eval mode: no dropout, so two backward passes are comparable

    def gradients() -> list[torch.Tensor]:
        student.denoiser().zero_grad(set_to_none=True)
        student.predict_noise(*inputs).pow(2).mean().backward()
        return [p.grad.clone() for p in student.trainable_parameters("all")]

    plain = gradients()
    student.set_gradient_checkpointing(True)
    recomputed = gradients()
    student.set_gradient_checkpointing(False)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed, strict=True))
    assert max(float(g.abs().max()) for g in plain) > 1e-4

    calls: list[int] = []
    hook = student.denoiser().register_forward_hook(lambda module, args, output: calls.append(1))
    wrapper = torch.nn.Sequential()  # stands for a DDP wrapper: it must be what predict_noise calls
    wrapper.forward = lambda *args, **kwargs: student.denoiser()(*args, **kwargs) * 2  # type: ignore[method-assign]
    student.use_denoiser(wrapper)
    doubled = student.predict_noise(*inputs).detach()
    student.use_denoiser(student.denoiser())
    hook.remove()
    assert calls == [1] and torch.allclose(doubled, 2 * student.predict_noise(*inputs).detach(), atol=1e-6)


def test_add_noise_uses_the_official_scaled_schedule(model: VideoCrafter2) -> None:
    latents, noise = torch.ones((3, 4, 1, 1, 1)), torch.full((3, 4, 1, 1, 1), 2.0)
    timesteps = torch.tensor([0, 200, 999])
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)[timesteps]
    assert alpha_bar[2].item() == pytest.approx(0.0046601, rel=1e-4)  # SD-1.x scaled-linear value
    scale = torch.tensor([1.0, 1 - 0.3 * 200 / 399, 0.7], dtype=torch.float64)  # use_scale: 1 -> 0.7 over 400 steps
    expected = (
        (alpha_bar.sqrt() * scale + (1 - alpha_bar).sqrt() * 2.0).float().view(3, 1, 1, 1, 1).expand(3, 4, 1, 1, 1)
    )
    torch.testing.assert_close(model.add_noise(latents, noise, timesteps), expected, rtol=1e-6, atol=1e-6)
    assert model.training_target(latents, noise, timesteps) is noise and model.num_train_timesteps == 1000


def test_ddim_with_the_true_noise_lands_on_the_official_last_step() -> None:
    schedule, generator = Schedule.official(), torch.Generator().manual_seed(3)
    assert ddim_timesteps(50).tolist() == list(range(1, 1000, 20))
    x0, eps = torch.randn((1, 4, 2, 3, 3), generator=generator), torch.randn((1, 4, 2, 3, 3), generator=generator)
    start = schedule.add_noise(x0, eps, torch.tensor([981]))
    calls = []
    result = ddim_sample(lambda x, t: calls.append(int(t[0])) or eps, start, schedule, 50, 0.0, step_noise=torch.randn)
    assert calls == list(range(981, 0, -20))
    a0 = schedule.alphas_cumprod[0]  # after the last step (t = 1) the official sampler uses alphas_cumprod[0]
    torch.testing.assert_close(result, a0.sqrt() * x0 + (1 - a0).sqrt() * eps, rtol=1e-4, atol=1e-4)


def test_generate_is_seeded_per_video_and_batch_invariant(model: VideoCrafter2) -> None:
    both = model.generate(PROMPTS, [3, 4])
    assert both.videos.shape == (2, 4, 3, 8, 8) and both.latents.shape == (2, 4, 4, 4, 4)
    assert 0.0 <= both.videos.min() and both.videos.max() <= 1.0
    # batch size changes float summation order only; guidance 12 amplifies it to ~1e-4 of latents of size ~10
    alone = tiny(generation_batch_size=1).generate(PROMPTS, [3, 4])
    torch.testing.assert_close(alone.latents, both.latents, rtol=1e-3, atol=2e-3)
    again = model.generate(PROMPTS[1:], [4])
    torch.testing.assert_close(again.latents[0], both.latents[1], rtol=1e-3, atol=2e-3)
    assert (model.generate(PROMPTS[:1], [5]).latents[0] - both.latents[0]).abs().max() > 1e-2
    with pytest.raises(VipkitError, match="one seed per prompt"):
        model.generate(PROMPTS, [1])


def test_save_and_load_rebuild_the_pruned_model_bit_identically(model: VideoCrafter2, inputs, tmp_path: Path) -> None:
    student = model.copy()
    for name in (TEMPORAL_CONV, PAIR, "init_attn.0"):
        student.remove_block(name)
    save_model(student, tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / "videocrafter2.json").read_text())
    assert manifest["removed_blocks"] == [TEMPORAL_CONV, PAIR, "init_attn.0"]
    assert {p.suffix for p in (tmp_path / "model").rglob("*") if p.is_file()} <= {".json", ".safetensors", ".txt"}
    loaded = vipkit.load(str(tmp_path / "model"))  # the model is its own inference pipeline
    assert isinstance(loaded, VideoCrafter2) and loaded.removed_blocks == student.removed_blocks
    assert loaded.num_parameters() == student.num_parameters() == TINY_PARAMS - 12_672 - 175_008 - 87_264
    assert loaded.generation_settings == student.generation_settings
    assert torch.equal(loaded.predict_noise(*inputs), student.predict_noise(*inputs))
    assert torch.equal(loaded.encode_prompts(PROMPTS), model.encode_prompts(PROMPTS))
    with pytest.raises(VipkitError, match="removed before this model was saved"):
        loaded.restore_block(PAIR)
    from_base = VideoCrafter2.from_options({"base": str(tmp_path / "model"), "fps": 8})
    assert from_base.generation_settings == {**student.generation_settings, "fps": 8}


def test_config_and_sources_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="multiple of 8"):
        VideoCrafter2.Config(height=300)
    with pytest.raises(ValidationError):
        VideoCrafter2.Config(unknown=1)
    assert VideoCrafter2.Config(preset="random").preset == "random"
    with pytest.raises(ValidationError, match=r"preset\n.*'tiny' or 'random'"):
        VideoCrafter2.Config(preset="full")
    with pytest.raises(VipkitError, match="model.base is not set"):
        VideoCrafter2.from_options({})
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(VipkitError, match=r"not a converted VideoCrafter2 folder.*convert it first"):
        VideoCrafter2.from_options({"base": str(tmp_path / "model.ckpt")})


def test_bfloat16_model_generates_and_predicts(inputs) -> None:
    half = tiny(dtype="bfloat16", num_inference_steps=1)
    assert next(half.unet.parameters()).dtype == torch.bfloat16
    generation = half.generate(PROMPTS[:1], [0])
    assert generation.videos.dtype == torch.float32 and torch.isfinite(generation.videos).all()
    prediction = half.predict_noise(*inputs)
    assert prediction.dtype == torch.float32 and prediction.shape == inputs[0].shape  # answered in the latents' dtype


def test_random_preset_is_the_released_architecture_on_the_meta_device() -> None:
    """The random checkpoint has the official model.ckpt's sizes and converts like it, without allocating anything."""
    meta = torch.device("meta")
    state = official_checkpoint(RANDOM_SIZES, device=meta)
    parts_of_state = (UNET_PREFIX, OPEN_CLIP_PREFIX, LDM_VAE_PREFIX)
    assert {prefix: sum(v.numel() for k, v in state.items() if k.startswith(prefix)) for prefix in parts_of_state} == {
        UNET_PREFIX: 1_413_284_420,  # the official inference_t2v_512_v2.0 UNet's manifest
        OPEN_CLIP_PREFIX: 354_032_641,  # OpenCLIP ViT-H-14's text tower (354.03 M), logit scale included
        LDM_VAE_PREFIX: 83_653_863,  # the SD VAE
    }
    parts = preset_parts(RANDOM_SIZES, REAL_SETTINGS, 0, meta)
    assert sum(p.numel() for p in parts.unet.module.parameters()) == 1_413_284_420
    text = (
        parts.text_encoder.config
    )  # read out at the penultimate of 24 blocks: the last and the projection are dropped
    assert (text.num_hidden_layers, text.num_attention_heads, text.hidden_size, text.vocab_size) == (
        23,
        16,
        1024,
        49408,
    )
    assert (
        sum(p.numel() for p in parts.text_encoder.parameters()) == 354_032_641 - 12_596_224 - 1024 * 1024 - 1
    )  # less a block
    assert sum(p.numel() for p in parts.vae.parameters()) == 83_653_863 and parts.vae.config.scaling_factor == 0.18215
    assert parts.default_settings == {"height": 320, "width": 512, "num_frames": 16, "num_inference_steps": 50}
    assert {
        t.device for t in [*parts.unet.module.parameters(), *parts.text_encoder.parameters(), *parts.vae.parameters()]
    } == {meta}
