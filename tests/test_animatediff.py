"""The animatediff model family on tiny random components built from configs (no download)."""

from __future__ import annotations

import functools
import json
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from diffusers import AnimateDiffPipeline, MotionAdapter, UNetMotionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from pydantic import ValidationError
from torch.nn.attention import SDPBackend, sdpa_kernel

from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.testing import check_model
from vipkit_animatediff import AnimateDiff, attention
from vipkit_animatediff.attention import BatchChunkedAttention, choose_attention_kernels
from vipkit_animatediff.blocks import list_blocks
from vipkit_animatediff.sd15 import SD15_SIZES, random_parts
from vipkit_animatediff.tiny import sd_components, tiny_sd_components, write_hub_folders

TINY_PARAMS = 1_228_388  # UNetMotionModel of the tiny preset
TINY_MOTION_PARAMS = 435_424  # its motion modules = the tiny MotionAdapter
MID_MOTION = "mid_block.motion_modules.0"
PROMPTS = ["a red square moving left", "a blue circle moving up"]
SMALL = {"height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 2}  # 8x cheaper than the preset's size


def tiny(**options: object) -> AnimateDiff:
    return AnimateDiff.from_options({"preset": "tiny", **SMALL, **options})


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model() -> AnimateDiff:
    """Shared, never mutated: tests that remove blocks work on ``model.copy()``."""
    return tiny()


@pytest.fixture(scope="module")
def inputs(model: AnimateDiff) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn((2, 4, 4, 8, 8), generator=generator)
    return noisy, torch.tensor([10, 900]), model.encode_prompts(PROMPTS)


def test_keeps_the_video_model_contract() -> None:
    """Everything a family owes the engine, checked by the plugin-author kit (blocks, removal, generation, training, saving)."""
    check_model("animatediff", {"height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 2})


def test_registered_as_a_model_family() -> None:
    assert load_plugins().registry("models").get("animatediff") is AnimateDiff


def test_tiny_sizes_blocks_and_settings(model: AnimateDiff) -> None:
    blocks = model.blocks()
    assert model.num_parameters() == TINY_PARAMS
    assert Counter(b.kind for b in blocks) == {
        "motion_module": 7,
        "temporal_transformer_block": 7,
        "spatial_transformer_block": 4,
    }
    sizes = {b.name: b.params for b in blocks}
    assert sizes["down_blocks.0.motion_modules.0"] == 23_200
    assert sizes[MID_MOTION] == 91_456
    assert sizes[f"{MID_MOTION}.transformer_blocks.0"] == 83_008
    assert sizes["down_blocks.0.attentions.0.transformer_blocks.0"] == 21_024
    assert sum(b.params for b in blocks if b.kind == "motion_module") == TINY_MOTION_PARAMS
    assert [b.name for b in blocks[:3]] == [
        "down_blocks.0.attentions.0.transformer_blocks.0",
        "down_blocks.0.motion_modules.0",
        "down_blocks.0.motion_modules.0.transformer_blocks.0",
    ]
    assert {**model.generation_settings, **SMALL} == model.generation_settings
    assert AnimateDiff.from_options({"preset": "tiny"}).generation_settings == {
        "height": 32,
        "width": 32,
        "num_frames": 8,
        "num_inference_steps": 10,
        "guidance_scale": 7.5,
        "negative_prompt": "",
        "dtype": "float32",
    }


def test_preset_seed_fixes_the_weights(model: AnimateDiff) -> None:
    same, other = tiny().pipeline().unet.state_dict(), tiny(preset_seed=1).pipeline().unet.state_dict()
    reference = model.pipeline().unet.state_dict()
    assert all(torch.equal(reference[key], same[key]) for key in reference)
    assert not torch.equal(reference["conv_in.weight"], other["conv_in.weight"])


def test_remove_block_removes_exactly_its_parameters(model: AnimateDiff, inputs) -> None:
    student = model.copy()
    before = student.predict_noise(*inputs)
    student.remove_block(MID_MOTION)
    assert student.num_parameters() == TINY_PARAMS - 91_456
    assert model.num_parameters() == TINY_PARAMS  # the copy is independent
    names = [b.name for b in student.blocks()]
    assert len(names) == 16 and MID_MOTION not in names and f"{MID_MOTION}.transformer_blocks.0" not in names
    student.remove_block("up_blocks.1.attentions.1.transformer_blocks.0")
    assert student.num_parameters() == TINY_PARAMS - 91_456 - 21_024
    assert student.removed_blocks == [MID_MOTION, "up_blocks.1.attentions.1.transformer_blocks.0"]
    after = student.predict_noise(*inputs)
    assert after.shape == before.shape
    assert (after - before).abs().max() > 1e-3


def test_remove_then_restore_is_bit_identical(model: AnimateDiff, inputs) -> None:
    student = model.copy()
    prediction = student.predict_noise(*inputs)
    video = student.generate(PROMPTS[:1], [7]).videos
    inner = "up_blocks.0.motion_modules.1.transformer_blocks.0"
    for name in (inner, "up_blocks.0.motion_modules.1", "down_blocks.0.attentions.0.transformer_blocks.0"):
        student.remove_block(name)
    student.restore_block(inner)  # goes back inside its still-removed motion module
    student.restore_block("up_blocks.0.motion_modules.1")
    student.restore_block("down_blocks.0.attentions.0.transformer_blocks.0")
    assert student.removed_blocks == []
    assert student.num_parameters() == TINY_PARAMS
    assert [b.name for b in student.blocks()] == [b.name for b in model.blocks()]
    assert torch.equal(student.predict_noise(*inputs), prediction)
    assert torch.equal(student.generate(PROMPTS[:1], [7]).videos, video)


def test_without_any_motion_module_the_pipeline_still_generates(model: AnimateDiff) -> None:
    student = model.copy()
    for block in [b for b in student.blocks() if b.kind == "motion_module"]:
        student.remove_block(block.name)
    assert student.num_parameters() == TINY_PARAMS - TINY_MOTION_PARAMS == 792_964  # the plain 2D UNet
    assert student.trainable_parameters("motion") == []
    assert Counter(b.kind for b in student.blocks()) == {"spatial_transformer_block": 4}
    generation = student.generate(PROMPTS, [0, 1])
    assert generation.videos.shape == (2, 4, 3, 16, 16)
    assert generation.latents.shape == (2, 4, 4, 8, 8)
    assert torch.isfinite(generation.videos).all()
    assert not torch.allclose(generation.videos, model.generate(PROMPTS, [0, 1]).videos, atol=1e-3)


def test_bad_block_names_raise(model: AnimateDiff) -> None:
    student = model.copy()
    with pytest.raises(VipkitError, match=r"'mid_block\.nope': it is not a prunable block.*down_blocks\.0\.motion_"):
        student.remove_block("mid_block.nope")
    student.remove_block(MID_MOTION)
    with pytest.raises(VipkitError, match="already removed"):
        student.remove_block(MID_MOTION)
    with pytest.raises(VipkitError, match=r"not removed\. Removed blocks: mid_block\.motion_modules\.0"):
        student.restore_block("down_blocks.0.motion_modules.0")


def test_predict_noise_shapes_and_features(model: AnimateDiff, inputs) -> None:
    noisy, timesteps, conditioning = inputs
    assert conditioning.shape == (2, 77, 32) and not conditioning.requires_grad
    # a batch of 2 and a batch of 1 may run the text encoder's matmuls with different blockings: the sums round
    # differently in the last float32 bits (~1e-7 here); the prompt's encoding must agree, not its rounding
    torch.testing.assert_close(conditioning[0], model.encode_prompts(PROMPTS[:1])[0], rtol=1e-5, atol=1e-5)
    assert not torch.equal(conditioning[0], conditioning[1])
    prediction, features = model.predict_noise(noisy, timesteps, conditioning, features=True)
    assert prediction.shape == noisy.shape and prediction.dtype == torch.float32
    shapes = [(8, 32, 4, 4), (8, 64, 4, 4), (8, 64, 4, 4), (8, 64, 8, 8), (8, 32, 8, 8)]  # down 0, 1, mid, up 0, 1
    assert [tuple(f.shape) for f in features] == shapes
    assert torch.equal(prediction, model.predict_noise(noisy, timesteps, conditioning))
    assert not any(module._forward_hooks for module in model.pipeline().unet.modules())  # hooks removed


def test_predict_noise_is_differentiable_in_train_mode(model: AnimateDiff, inputs) -> None:
    student = model.copy()
    student.train_mode(True)
    assert student.pipeline().unet.training and not model.pipeline().unet.training
    noisy, timesteps, conditioning = inputs
    loss = student.predict_noise(noisy, timesteps, conditioning).pow(2).mean()
    loss.backward()
    motion = student.trainable_parameters("motion")
    assert all(p.grad is not None for p in motion)
    student.train_mode(False)
    assert not student.pipeline().unet.training


def attention_kernels(model: AnimateDiff) -> Counter:
    """How many spatial (False) and motion-module (True) attention layers run which kernel order.

    Every motion-module layer is batch-chunked; the kernel is its chunker's processor's.
    """
    kernels = Counter()
    for name, layer in model.pipeline().unet.named_modules():
        if isinstance(layer, Attention):
            temporal = "motion_modules" in name
            assert isinstance(layer.processor, BatchChunkedAttention) == temporal, name
            processor = layer.processor.processor if temporal else layer.processor
            kernels[temporal, getattr(processor, "kernel", type(processor).__name__)] += 1
    return kernels


def test_attention_kernel_per_kind_of_layer_overrides_the_callers_choice(model: AnimateDiff, inputs) -> None:
    """Each kind of attention layer runs its own kernel order, even where the caller allowed only a kernel
    this CPU lacks (memory-efficient attention); the prediction is the one PyTorch's own choice gives."""
    noisy, timesteps, conditioning = inputs
    chosen = tiny(spatial_attention="math", temporal_attention="flash")
    assert attention_kernels(model) == {(False, "AttnProcessor2_0"): 8, (True, "AttnProcessor2_0"): 14}
    assert attention_kernels(chosen) == {(False, "math"): 8, (True, "flash"): 14}
    assert attention_kernels(chosen.copy()) == attention_kernels(chosen)
    expected = model.predict_noise(noisy, timesteps, conditioning)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        with pytest.raises(RuntimeError, match="No viable backend"):
            model.predict_noise(noisy, timesteps, conditioning)
        prediction = chosen.predict_noise(noisy, timesteps, conditioning)
    torch.testing.assert_close(prediction, expected, rtol=1e-4, atol=1e-5)
    only_temporal = chosen.copy()
    choose_attention_kernels(only_temporal.denoiser(), "auto", "math")
    assert attention_kernels(only_temporal) == {(False, "AttnProcessor2_0"): 8, (True, "math"): 14}
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]), pytest.raises(RuntimeError, match="No viable backend"):
        only_temporal.predict_noise(noisy, timesteps, conditioning)  # the spatial layers follow the caller again


def temporal_attention_batches(model: AnimateDiff, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch of every attention call the motion modules of ``model`` make from now on (fills as they run)."""
    temporal = {id(layer) for name, layer in model.denoiser().named_modules() if "motion_modules" in name}
    batches: list[int] = []
    run = AttnProcessor2_0.__call__

    @functools.wraps(run)  # keeps the signature diffusers filters the call's keywords by
    def recorded(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if id(attn) in temporal:
            batches.append(hidden_states.shape[0])
        return run(self, attn, hidden_states, *args, **kwargs)

    monkeypatch.setattr(AttnProcessor2_0, "__call__", recorded)
    return batches


@pytest.mark.parametrize("kernel", ["auto", "math"])
def test_temporal_attention_past_the_batch_limit_runs_in_chunks(
    model: AnimateDiff, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the limit lowered to 7 sequences, generation (2 videos x 2 for guidance x 8x8 and 4x4 latent
    pixels: 256 and 64 sequences) splits every motion-module attention call and gives the same videos."""
    subject = model if kernel == "auto" else tiny(temporal_attention=kernel)
    batches = temporal_attention_batches(subject, monkeypatch)
    whole = subject.generate(PROMPTS, [3, 4])
    assert set(batches) == {256, 64}
    batches.clear()
    monkeypatch.setattr(attention, "MAX_ATTENTION_BATCH", 7)
    chunked = subject.generate(PROMPTS, [3, 4])
    assert set(batches) == {7, 4, 1}  # 256 = 36 x 7 + 4, 64 = 9 x 7 + 1
    torch.testing.assert_close(chunked.latents, whole.latents, rtol=0, atol=1e-6)  # exact on CPU when measured
    torch.testing.assert_close(chunked.videos, whole.videos, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("channels", "training_limit"), [(320, 32_768), (640, 16_384), (1280, 10_922)])
def test_attention_batch_limits_of_the_real_motion_modules(channels: int, training_limit: int) -> None:
    """SD-1.5's motion modules (8 heads, 16 frames): 65,535 sequences per call, and with gradients on the most
    flash attention's backward took on an H200 (32,768 of head size 40 passed, 32,769 failed; 10,922 of 160
    passed, 13,107 failed)."""
    layer = Attention(query_dim=channels, heads=8, dim_head=channels // 8)
    with torch.no_grad():
        assert attention.max_attention_batch(layer, 16) == 65_535
    assert attention.max_attention_batch(layer, 16) == training_limit


def test_chunked_temporal_attention_trains_like_the_whole_batch(
    model: AnimateDiff, inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradients flow through the chunks (with gradient checkpointing too) and equal the unchunked ones up to
    the order weight gradients are summed in (3e-9 apart, of gradients up to 0.03, when measured)."""
    results = []
    for limit in (attention.MAX_ATTENTION_BATCH, 7):
        monkeypatch.setattr(attention, "MAX_ATTENTION_BATCH", limit)
        student = model.copy()
        student.train_mode(True)
        student.set_gradient_checkpointing(limit == 7)
        batches = temporal_attention_batches(student, monkeypatch)
        prediction = student.predict_noise(*inputs)
        prediction.pow(2).mean().backward()
        results.append((prediction.detach(), [p.grad for p in student.trainable_parameters("motion")], max(batches)))
    (whole, whole_grads, whole_batch), (chunked, chunked_grads, chunk_batch) = results
    assert (whole_batch, chunk_batch) == (128, 7)  # 2 videos x 8x8 latent pixels
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)  # exact when measured
    assert all(grad is not None for grad in chunked_grads)
    for grad, expected in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_add_noise_and_target_follow_the_linear_schedule(model: AnimateDiff) -> None:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((2, 4, 4, 8, 8), generator=generator)
    noise = torch.randn((2, 4, 4, 8, 8), generator=generator)
    timesteps = torch.tensor([0, 999])
    alpha_bar = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), 0)[timesteps]
    assert alpha_bar[1].item() == pytest.approx(0.0015790, rel=1e-4)
    scale = alpha_bar.sqrt().float().view(2, 1, 1, 1, 1)
    sigma = (1 - alpha_bar).sqrt().float().view(2, 1, 1, 1, 1)
    expected = scale * latents + sigma * noise
    torch.testing.assert_close(model.add_noise(latents, noise, timesteps), expected, rtol=1e-5, atol=1e-6)
    assert model.training_target(latents, noise, timesteps) is noise
    assert model.num_train_timesteps == 1000


def test_trainable_scopes(model: AnimateDiff) -> None:
    assert sum(p.numel() for p in model.trainable_parameters("motion")) == TINY_MOTION_PARAMS
    assert sum(p.numel() for p in model.trainable_parameters("all")) == TINY_PARAMS
    with pytest.raises(
        VipkitError,
        match=r"'spatial' for animatediff; valid scopes: 'motion' \(the motion modules still present\); 'all'",
    ):
        model.trainable_parameters("spatial")


def test_generate_is_batch_invariant_and_deterministic(model: AnimateDiff) -> None:
    both = model.generate(PROMPTS, [3, 4])
    assert both.videos.shape == (2, 4, 3, 16, 16) and both.videos.dtype == torch.float32
    assert 0.0 <= both.videos.min() and both.videos.max() <= 1.0
    assert both.latents.shape == (2, 4, 4, 8, 8)
    for index in range(2):  # batch size changes float summation order only
        alone = model.generate(PROMPTS[index : index + 1], [3 + index])
        torch.testing.assert_close(alone.videos[0], both.videos[index], rtol=0, atol=1e-5)
        torch.testing.assert_close(alone.latents[0], both.latents[index], rtol=1e-4, atol=1e-4)
    again = model.generate(PROMPTS, [3, 4])
    assert torch.equal(again.videos, both.videos) and torch.equal(again.latents, both.latents)
    chunked = tiny(generation_batch_size=1).generate(PROMPTS, [3, 4])
    torch.testing.assert_close(chunked.videos, both.videos, rtol=0, atol=1e-5)
    other_seed = model.generate(PROMPTS[:1], [5])
    assert (other_seed.videos[0] - both.videos[0]).abs().max() > 1e-2
    with pytest.raises(VipkitError, match="one seed per prompt"):
        model.generate(PROMPTS, [1])
    with pytest.raises(VipkitError, match="got 0 prompts"):
        model.generate([], [])


def test_copy_shares_frozen_parts_only(model: AnimateDiff) -> None:
    student = model.copy()
    assert student.pipeline().vae is model.pipeline().vae
    assert student.pipeline().text_encoder is model.pipeline().text_encoder
    assert student.pipeline().unet is not model.pipeline().unet
    assert student.generation_settings == model.generation_settings


def test_save_and_load_saved_are_bit_identical(model: AnimateDiff, tmp_path: Path) -> None:
    student = model.copy()
    student.remove_block("up_blocks.1.motion_modules.0.transformer_blocks.0")
    student.remove_block(MID_MOTION)
    student.save(tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / "animatediff.json").read_text())
    assert manifest["removed_blocks"] == student.removed_blocks
    suffixes = {path.suffix for path in (tmp_path / "model").rglob("*") if path.is_file()}
    assert suffixes == {".json", ".safetensors"}  # no pickle anywhere

    loaded = AnimateDiff.load_saved(tmp_path / "model")
    assert loaded.removed_blocks == student.removed_blocks
    assert loaded.num_parameters() == TINY_PARAMS - 91_456 - 21_024
    assert loaded.generation_settings == student.generation_settings
    saved_state, loaded_state = student.pipeline().unet.state_dict(), loaded.pipeline().unet.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    assert all(torch.equal(saved_state[key], loaded_state[key]) for key in saved_state)
    original, reloaded = student.generate(PROMPTS, [0, 1]), loaded.generate(PROMPTS, [0, 1])
    assert torch.equal(original.videos, reloaded.videos) and torch.equal(original.latents, reloaded.latents)
    with pytest.raises(VipkitError, match="removed before this model was saved"):
        loaded.restore_block(MID_MOTION)

    # `base` may name a saved model too; explicit options win over the saved settings
    from_base = AnimateDiff.from_options({"base": str(tmp_path / "model"), "num_frames": 2})
    assert from_base.removed_blocks == student.removed_blocks
    assert from_base.generation_settings == {**student.generation_settings, "num_frames": 2}


def test_unpruned_save_is_a_plain_diffusers_pipeline(model: AnimateDiff, tmp_path: Path) -> None:
    model.save(tmp_path / "model")
    pipe = AnimateDiffPipeline.from_pretrained(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(PROMPTS[0], **SMALL, generator=torch.Generator().manual_seed(0), output_type="pt").frames
    torch.testing.assert_close(frames, model.generate(PROMPTS[:1], [0]).videos, rtol=0, atol=1e-6)


def test_plain_diffusers_refuses_a_pruned_folder_instead_of_loading_it_wrong(
    model: AnimateDiff, tmp_path: Path
) -> None:
    """diffusers would rebuild the removed motion module with random weights and run a different model without
    an error: the pruned folder has no model_index.json and its UNet weights under a name diffusers does not load."""
    student = model.copy()
    student.remove_block(MID_MOTION)
    student.save(tmp_path / "model")
    assert not (tmp_path / "model" / "model_index.json").exists()
    with pytest.raises(OSError, match="model_index.json"):
        AnimateDiffPipeline.from_pretrained(tmp_path / "model")
    with pytest.raises(OSError, match="diffusion_pytorch_model"):
        UNetMotionModel.from_pretrained(tmp_path / "model" / "unet")
    reloaded = AnimateDiff.load_saved(tmp_path / "model")  # vipkit reads it, removal included
    assert reloaded.removed_blocks == [MID_MOTION] and reloaded.num_parameters() == TINY_PARAMS - 91_456


def test_v_prediction_schedule_gives_velocity_targets(model: AnimateDiff, tmp_path: Path) -> None:
    model.save(tmp_path / "model")
    config_path = tmp_path / "model" / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "prediction_type": "v_prediction"}))
    v_model = AnimateDiff.load_saved(tmp_path / "model")
    latents, noise, timesteps = torch.ones((1, 4, 2, 2, 2)), torch.full((1, 4, 2, 2, 2), 2.0), torch.tensor([999])
    alpha_bar = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64), 0)[999]
    expected = alpha_bar.sqrt() * 2.0 - (1 - alpha_bar).sqrt() * 1.0  # v = sqrt(a) * noise - sqrt(1 - a) * x0
    target = v_model.training_target(latents, noise, timesteps)
    torch.testing.assert_close(target, torch.full_like(latents, float(expected)), rtol=1e-5, atol=1e-6)


def test_loads_sd15_pipeline_and_motion_adapter_from_local_dirs(model: AnimateDiff, tmp_path: Path) -> None:
    options = write_hub_folders(tmp_path)
    real_defaults = AnimateDiff.from_options(options)
    settings = real_defaults.generation_settings
    assert [settings[key] for key in SMALL] == [512, 512, 16, 25]
    assert real_defaults.num_parameters() == TINY_PARAMS
    loaded = AnimateDiff.from_options({**options, **SMALL})
    assert torch.equal(loaded.generate(PROMPTS[:1], [2]).videos, model.generate(PROMPTS[:1], [2]).videos)


@contextmanager
def library_warnings() -> Iterator[list[str]]:
    """The warnings diffusers and transformers log while the block runs (their loggers do not propagate)."""
    logged: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield logged
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def test_loading_saving_and_reloading_warn_about_nothing(tmp_path: Path) -> None:
    """vipkit's own calls once made diffusers warn on every load: `torch_dtype` (FutureWarning), and a cast with
    `to()` (AnimateDiffPipeline's, and the reloaded float32 VAE's). In bfloat16, where casts would show, none does."""
    options = {**write_hub_folders(tmp_path), **SMALL, "dtype": "bfloat16"}
    with warnings.catch_warnings(), library_warnings() as logged:
        warnings.simplefilter("error", FutureWarning)
        loaded = AnimateDiff.from_options(options)
        loaded.save(tmp_path / "model")
        reloaded = AnimateDiff.load_saved(tmp_path / "model")
        reloaded.copy()
    assert logged == []
    assert {p.dtype for part in (reloaded.denoiser(), reloaded.pipeline().vae) for p in part.parameters()} == {
        torch.bfloat16
    }


def test_missing_paths_and_unreachable_hub_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"base\n.*'/no/such/sd15': no such local directory"):
        AnimateDiff.from_options({"base": "/no/such/sd15"})
    with pytest.raises(ValidationError, match=r"motion_adapter\n.*'./missing': no such local directory"):
        AnimateDiff.from_options({"motion_adapter": "./missing"})

    def hub_tried(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was tried although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(MotionAdapter, "from_pretrained", hub_tried)  # HF_HUB_OFFLINE=1 (conftest): never reached
    with pytest.raises(VipkitError) as both:  # both sources reported at once
        AnimateDiff.from_options({"base": "nobody/no-sd", "motion_adapter": "nobody/no-adapter"})
    assert re.search(
        r"motion_adapter = 'nobody/no-adapter' \(an AnimateDiff MotionAdapter\): HF_HUB_OFFLINE is set, so the hub was "
        r"not tried.* `hf download nobody/no-adapter --local-dir models/no-adapter` and set motion_adapter to "
        r"'models/no-adapter'\. base = 'nobody/no-sd' .*`hf download nobody/no-sd --local-dir models/no-sd`",
        str(both.value),
    ), both.value
    monkeypatch.undo()
    tiny_sd_components()["motion_adapter"].save_pretrained(tmp_path / "a")
    with pytest.raises(
        VipkitError,
        match=r"base = '.*a': could not load a Stable Diffusion 1.5 diffusers pipeline "
        r"from the directory .*\. Point base at a folder holding a Stable Diffusion 1.5",
    ) as local:
        AnimateDiff.from_options({"base": str(tmp_path / "a"), "motion_adapter": str(tmp_path / "a")})
    assert "download" not in str(local.value)  # a folder is not sent to the hub, and neither is its user


def test_an_existing_relative_path_with_one_slash_is_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``weights/adapter`` is written like a hub id ``owner/name``, but it exists here: it is that folder."""
    write_hub_folders(tmp_path / "weights")
    monkeypatch.chdir(tmp_path)
    loaded = AnimateDiff.from_options({"base": "weights/sd15", "motion_adapter": "weights/adapter", **SMALL})
    assert loaded.num_parameters() == TINY_PARAMS


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="multiple of 8"):
        AnimateDiff.Config(height=30)
    with pytest.raises(ValidationError):
        AnimateDiff.Config(device="gpu")
    with pytest.raises(ValidationError):
        AnimateDiff.Config(generation_batch_size=0)
    with pytest.raises(ValidationError):
        AnimateDiff.Config(unknown=1)
    with pytest.raises(ValidationError, match="spatial_attention"):
        AnimateDiff.Config(spatial_attention="fa3")
    assert AnimateDiff.Config(preset="random").preset == "random"
    with pytest.raises(ValidationError, match=r"preset\n.*'tiny' or 'random'"):
        AnimateDiff.Config(preset="full")


def test_random_preset_is_the_real_sd15_architecture_on_the_meta_device() -> None:
    """Published sizes: SD-1.5's UNet, VAE and CLIP ViT-L/14 text model, and the v1-5-2 motion adapter."""
    meta = torch.device("meta")
    sd = sd_components(SD15_SIZES, device=meta)
    parts = random_parts(0, meta)
    assert count(sd["unet"]) == 859_520_964
    assert count(sd["motion_adapter"]) == 453_209_280
    assert count(parts.text_encoder) == 123_060_480
    assert count(parts.vae) == 83_653_863 and parts.vae.config.scaling_factor == 0.18215
    text, tokenizer = parts.text_encoder.config, parts.tokenizer  # the byte-level tokenizer's ids, in a real-size table
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (512, 513, 513)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (512, 513, 513)
    assert parts.default_settings == {"height": 512, "width": 512, "num_frames": 16, "num_inference_steps": 25}
    unet = parts.unet.module
    assert isinstance(unet, UNetMotionModel) and unet.device == meta
    blocks = list_blocks(unet)
    assert count(unet) == 1_312_730_244  # = the 2D UNet + the adapter
    assert Counter(b.kind for b in blocks) == {
        "motion_module": 21,
        "temporal_transformer_block": 21,
        "spatial_transformer_block": 16,
    }
    motion_sizes = Counter(b.params for b in blocks if b.kind == "motion_module")
    assert motion_sizes == {2_259_520: 5, 9_024_640: 5, 36_071_680: 11}
    assert sum(b.params for b in blocks if b.kind == "motion_module") == count(sd["motion_adapter"])
