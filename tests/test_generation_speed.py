"""The generation speed settings compute the same videos and leave the model as it was (vipkit.generation_speed,
the animatediff family's ``fuse_projections``): each is compared with the eager, unfused video of the same tiny
model, prompt and seed."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from pydantic import ValidationError

from vipkit.errors import VipkitError
from vipkit.generation_speed import compiled_regions, find_regions
from vipkit_animatediff import AnimateDiff

TINY = {"preset": "tiny", "num_inference_steps": 2, "num_frames": 4, "generation_batch_size": 1}
VIDEO_TOLERANCE = 1e-4
"""Largest |Δ| of a [0, 1] frame value allowed (float32 on the CPU: a fused or NHWC product only reorders sums)."""
LATENTS_TOLERANCE = 1e-4
"""Largest ‖Δ‖ / ‖reference‖ of the final latents allowed."""


@pytest.fixture(scope="module")
def reference():
    return AnimateDiff(AnimateDiff.Config(**TINY)).generate(["a red fox in snow"], [3])


def sdpa_processor(layer: Attention) -> object:
    """The SDPA processor inside the batch chunking and kernel order that wrap it."""
    processor = layer.processor
    while hasattr(processor, "processor"):
        processor = processor.processor
    return processor


def unet_layout(model: AnimateDiff) -> tuple[list[str], list[str], bool]:
    """State-dict keys, SDPA processor classes, and whether every weight is contiguous."""
    unet = model.denoiser()
    processors = [type(sdpa_processor(m)).__name__ for m in unet.modules() if isinstance(m, Attention)]
    return list(unet.state_dict()), processors, all(p.is_contiguous() for p in unet.parameters())


@pytest.mark.parametrize(
    "options",
    [
        {"fuse_projections": True},
        {"generation_channels_last": True},
        {"fuse_projections": True, "generation_channels_last": True, "spatial_attention": "math"},
    ],
)
def test_speed_settings_generate_the_same_video_and_undo_themselves(reference, options) -> None:
    model = AnimateDiff(AnimateDiff.Config(**TINY, **options))
    before = unet_layout(model)
    generation = model.generate(["a red fox in snow"], [3])
    assert (generation.videos - reference.videos).abs().max() <= VIDEO_TOLERANCE
    assert (generation.latents - reference.latents).norm() <= LATENTS_TOLERANCE * reference.latents.norm()
    assert unet_layout(model) == before  # no fused layers, no NHWC weights left for training or saving
    assert set(before[1]) == {AttnProcessor2_0.__name__}
    assert not any(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in model.denoiser().modules())


def test_fused_projections_skip_layers_whose_projections_are_not_plain_linear() -> None:
    """A LoRA-wrapped projection must not be fused: the fused weights would silently drop the adapter."""
    from vipkit_animatediff.attention import fused_projections

    model = AnimateDiff(AnimateDiff.Config(**TINY))
    layers = [m for m in model.denoiser().modules() if isinstance(m, Attention)]
    wrapped = layers[0]
    wrapped.to_q = torch.nn.Sequential(wrapped.to_q)  # stands for any wrapper of the Linear
    with fused_projections(model.denoiser(), "auto", "math"):
        assert not hasattr(wrapped, "to_qkv") and type(sdpa_processor(wrapped)) is AttnProcessor2_0
        assert all(layer.fused_projections for layer in layers[1:])
        assert {type(sdpa_processor(layer)) for layer in layers[1:]} == {FusedAttnProcessor2_0}
    assert not any(layer.fused_projections for layer in layers)


def test_compiled_regions_run_one_program_per_class_and_are_eager_again_after() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    outer = torch.nn.Sequential(ResnetBlock2D(in_channels=8, temb_channels=None, groups=4), torch.nn.SiLU())
    blocks = torch.nn.ModuleList([outer, ResnetBlock2D(in_channels=8, temb_channels=None, groups=4)])
    assert find_regions([blocks], {"ResnetBlock2D"}) == [outer[0], blocks[1]]
    x = torch.randn(2, 8, 8, 8)
    eager = [block(x, None) if isinstance(block, ResnetBlock2D) else block[1](block[0](x, None)) for block in blocks]
    from torch._dynamo.utils import counters

    counters.clear()
    with compiled_regions([blocks], {"ResnetBlock2D"}, "default"):
        compiled = [blocks[0][1](blocks[0][0](x, None)), blocks[1](x, None)]
    assert counters["stats"]["unique_graphs"] == 1  # two instances of one shape: one program
    for got, want in zip(compiled, eager, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    assert all("forward" not in module.__dict__ for module in blocks.modules())


def test_generation_compile_is_checked() -> None:
    with pytest.raises(ValidationError):
        AnimateDiff.Config(**TINY, generation_compile="fastest")

    class NoRegions(AnimateDiff):
        compile_regions = ("NoSuchBlock",)

    with pytest.raises(VipkitError, match="generation_compile = 'default'.*set the model's generation_compile = 'off'"):
        NoRegions(NoRegions.Config(**TINY, generation_compile="default"))
