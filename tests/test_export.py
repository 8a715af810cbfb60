"""Exports: a pruned model as the full architecture with zeros, loaded by the plain libraries to the same outputs.

Real tiny models of both families, real diffusers / safetensors files; the plain loaders are the libraries'
own (``AnimateDiffPipeline.from_pretrained``, ``MotionAdapter.from_pretrained``, a strict ``load_state_dict``
of the official UNet keys).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AnimateDiffPipeline, MotionAdapter
from safetensors.torch import load_file
from torch import nn

import vipkit
from vipkit import VipkitError
from vipkit.export import EXPORT_MANIFEST, export_model, find_model
from vipkit.interfaces import Block
from vipkit.plugins import load_plugins
from vipkit.prunable import PrunableModule
from vipkit.saved_model import save_model

CALL = dict(prompt="a red ball rolling left", num_frames=8, height=32, width=32, num_inference_steps=3)


def family(name: str):
    return load_plugins().registry("models").get(name)


def nudge(parameters) -> None:
    """Stand-in for training: every given weight moves (seeded), so an export of untrained weights cannot pass."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in parameters:
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.02)


def frames(pipe, seed: int = 3) -> torch.Tensor:
    return pipe(generator=torch.Generator().manual_seed(seed), output_type="pt", **CALL).frames


# -- the kit: zeros for removed residual blocks ------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Residual(8) for _ in range(3))
        self.head = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def toy_blocks(module: nn.Module) -> list[Block]:
    return [
        Block(f"blocks.{i}", "residual" if i < 2 else "other", sum(p.numel() for p in b.parameters()))
        for i, b in enumerate(module.blocks)
        if isinstance(b, Residual)
    ]


def test_zero_filled_state_is_the_pruned_model_and_loads_back_pruned():
    torch.manual_seed(0)
    pruned = PrunableModule(Toy(), toy_blocks, zero_identity_kinds={"residual"})
    pruned.remove("blocks.1")
    state = pruned.zero_filled_state(Toy().to("meta"))
    assert set(state) == set(Toy().state_dict())
    assert all(not state[k].any() for k in state if k.startswith("blocks.1."))
    full = Toy()
    full.load_state_dict(state, strict=True)
    x = torch.randn(5, 8)
    assert torch.equal(full(x), pruned.module(x))  # a zero residual branch adds exactly nothing
    reloaded = PrunableModule(full, toy_blocks, zero_identity_kinds={"residual"})
    assert reloaded.remove_zeroed() == ["blocks.1"]
    assert reloaded.num_parameters() == pruned.num_parameters() and torch.equal(reloaded.module(x), full(x))
    # a kind that is not residual has no zero form: refused, and never removed when it happens to be zero
    other = PrunableModule(Toy(), toy_blocks, zero_identity_kinds={"residual"})
    other.remove("blocks.2")
    with pytest.raises(VipkitError, match=r"blocks\.2 have no zero form \(blocks of kind other"):
        other.zero_filled_state(Toy().to("meta"))
    zeroed = Toy()
    with torch.no_grad():
        for p in zeroed.blocks[2].parameters():
            p.zero_()
    assert PrunableModule(zeroed, toy_blocks, zero_identity_kinds={"residual"}).remove_zeroed() == []


# -- AnimateDiff -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_and_adapter(tmp_path_factory):
    """The tiny preset's SD-1.5 pipeline and motion adapter as plain diffusers folders."""
    from vipkit_animatediff.tiny import write_hub_folders

    folders = write_hub_folders(tmp_path_factory.mktemp("sd"))
    return Path(folders["base"]), Path(folders["motion_adapter"])


@pytest.fixture(scope="module")
def motion_pruned(sd_and_adapter, tmp_path_factory):
    """A model from those folders with a motion module and a temporal block inside another removed, motion
    modules 'trained', saved as a run saves it."""
    sd, adapter = sd_and_adapter
    cls = family("animatediff")
    model = cls(cls.Config(base=str(sd), motion_adapter=str(adapter)))
    assert model.removed_blocks == []  # a real adapter has no all-zero block
    model.remove_block("down_blocks.1.motion_modules.0")
    model.remove_block("up_blocks.0.motion_modules.1.transformer_blocks.0")
    nudge(model.trainable_parameters("motion"))
    folder = tmp_path_factory.mktemp("model") / "model"
    save_model(model, folder, {"trained_scope": "motion", "base_models": []})
    return folder


def test_diffusers_export_loads_in_plain_diffusers_to_the_same_videos(motion_pruned, tmp_path):
    out = tmp_path / "export"
    record = export_model(motion_pruned, "diffusers", out)
    assert record["zeroed_blocks"] == [
        "down_blocks.1.motion_modules.0",
        "up_blocks.0.motion_modules.1.transformer_blocks.0",
    ]
    ours = vipkit.load(motion_pruned)
    plain = AnimateDiffPipeline.from_pretrained(out)  # the folder as any diffusers user loads it
    assert type(plain.unet).__name__ == "UNetMotionModel"
    full = sum(p.numel() for p in plain.unet.parameters())
    assert full > sum(p.numel() for p in ours.unet.parameters())  # the full architecture, zeros included
    expected = frames(ours)
    assert (frames(plain) - expected).abs().max() <= 1e-6
    # vipkit removes the zeroed blocks again: the pruned size (the speed-up) and the same videos
    back = vipkit.load_model(out)
    assert back.removed_blocks == record["zeroed_blocks"]
    assert back.num_parameters() == vipkit.load_model(motion_pruned).num_parameters()
    assert (frames(back.pipeline()) - expected).abs().max() <= 1e-6
    manifest = json.loads((out / EXPORT_MANIFEST).read_text())
    assert manifest["format"] == "diffusers"
    assert manifest["generation_settings"] == vipkit.load_model(motion_pruned).generation_settings
    assert back.generation_settings == manifest["generation_settings"]  # vipkit generates as the model did


def test_motion_adapter_export_plugs_into_the_sd_base(motion_pruned, sd_and_adapter, tmp_path):
    sd, _ = sd_and_adapter
    out = tmp_path / "adapter"
    export_model(motion_pruned, "motion-adapter", out, dtype="float32")
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md", EXPORT_MANIFEST} <= {
        p.name for p in out.iterdir()
    }
    ours = vipkit.load(motion_pruned)
    plain = AnimateDiffPipeline.from_pretrained(sd, motion_adapter=MotionAdapter.from_pretrained(out))
    plain.scheduler = type(ours.scheduler).from_config(ours.scheduler.config)  # the DDIM settings the card shows
    expected = frames(ours)
    assert (frames(plain) - expected).abs().max() <= 1e-6
    back = vipkit.load_model(out, base=str(sd))
    assert back.removed_blocks == [
        "down_blocks.1.motion_modules.0",
        "up_blocks.0.motion_modules.1.transformer_blocks.0",
    ]
    assert (frames(back.pipeline()) - expected).abs().max() <= 1e-6


def test_motion_adapter_refuses_a_model_it_cannot_hold(sd_and_adapter, tmp_path):
    sd, adapter = sd_and_adapter
    cls = family("animatediff")
    model = cls(cls.Config(base=str(sd), motion_adapter=str(adapter)))
    model.remove_block("down_blocks.1.motion_modules.0")
    cases = {
        "all": ({"trained_scope": "all"}, "its training changed the 'all' scope"),
        "unknown": (None, "does not record what training changed"),
    }
    for name, (provenance, message) in cases.items():
        save_model(model, tmp_path / name, provenance)
        with pytest.raises(VipkitError, match=message):
            export_model(tmp_path / name, "motion-adapter", tmp_path / f"{name}-out")
        assert not (tmp_path / f"{name}-out").exists()  # nothing half-written
    spatial = next(b.name for b in model.blocks() if b.kind == "spatial_transformer_block")
    model.remove_block(spatial)
    save_model(model, tmp_path / "spatial", {"trained_scope": None})
    with pytest.raises(VipkitError, match=f"lost {spatial} of the SD-1.5 UNet"):
        export_model(tmp_path / "spatial", "motion-adapter", tmp_path / "spatial-out")
    export_model(tmp_path / "spatial", "diffusers", tmp_path / "spatial-out")  # the whole pipeline holds it


# -- VideoCrafter2 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vc2_pruned(tmp_path_factory):
    cls = family("videocrafter2")
    model = cls(cls.Config(preset="tiny"))
    for kind in ("temporal_conv", "resblock", "spatial_attention", "middle"):
        model.remove_block(model.blocks_of([kind])[0].name)
    nudge(model.trainable_parameters("all"))
    folder = tmp_path_factory.mktemp("vc2") / "model"
    save_model(model, folder, {"trained_scope": "all", "base_models": []})
    return model, folder


def test_official_export_is_the_official_unet_and_converts_back_pruned(vc2_pruned, tmp_path):
    from vipkit_videocrafter2.checkpoint import UNET_PREFIX
    from vipkit_videocrafter2.convert import convert
    from vipkit_videocrafter2.tiny import TINY_SETTINGS, TINY_SIZES, tiny_checkpoint, tiny_tokenizer
    from vipkit_videocrafter2.unet import build_unet

    model, folder = vc2_pruned
    out = tmp_path / "official"
    export_model(folder, "official", out)
    unet = load_file(out / "model.safetensors")
    assert unet and all(key.startswith(UNET_PREFIX) for key in unet)
    config = json.loads((out / "unet_config.json").read_text())
    # the official UNet class takes every key strictly (the port keeps the official names)
    full = build_unet(config)
    full.load_state_dict({key.removeprefix(UNET_PREFIX): value for key, value in unet.items()}, strict=True)
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([10, 500])
    context = torch.randn(2, 77, config["context_dim"])
    reference = model.unet(x, t, context=context, fps=8)
    # equal up to float32 rounding: the zero branch leaves values exact, but the sum takes the branch's memory
    # layout, and later kernels round a differently laid-out input differently (about 1e-6 here)
    assert torch.allclose(full(x, t, context=context, fps=8), reference, rtol=1e-5, atol=1e-5)
    # vipkit: the released checkpoint with this UNet over it, converted: the zeroed units removed, exact
    released = {k: v for k, v in tiny_checkpoint(0).items() if not k.startswith(UNET_PREFIX)}
    torch.save({"state_dict": released | unet}, tmp_path / "model.ckpt")
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    convert(
        tmp_path / "model.ckpt",
        tmp_path / "converted",
        tmp_path / "tokenizer",
        unet_config=config,
        settings=TINY_SETTINGS,
        text_head_width=TINY_SIZES.text_head_width,
        unet=out / "model.safetensors",
    )
    cls = family("videocrafter2")
    back = cls(cls.Config(base=str(tmp_path / "converted")))
    assert back.num_parameters() == model.num_parameters()
    assert torch.equal(back.generate(["a cat"], [1]).videos, model.generate(["a cat"], [1]).videos)
    with pytest.raises(VipkitError, match="holds only a UNet in the official layout"):
        vipkit.load_model(out)


def test_official_export_refuses_an_encoder_decoder_pair(tmp_path):
    cls = family("videocrafter2")
    model = cls(cls.Config(preset="tiny"))
    model.remove_block(model.blocks_of(["encoder_decoder_pair"])[0].name)
    save_model(model, tmp_path / "model", {"trained_scope": None})
    with pytest.raises(VipkitError, match="have no zero form .*encoder_decoder_pair"):
        export_model(tmp_path / "model", "official", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_a_file_that_is_not_an_exported_unet(tmp_path):
    from safetensors.torch import save_file

    from vipkit_videocrafter2.convert import read_unet

    save_file({"first_stage_model.x": torch.zeros(1)}, tmp_path / "vae.safetensors")
    with pytest.raises(VipkitError, match="lack the 'model.diffusion_model.' prefix"):
        read_unet(tmp_path / "vae.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(VipkitError, match="not a readable safetensors file"):
        read_unet(tmp_path / "junk.safetensors")


# -- what export accepts -------------------------------------------------------------------------------------


def test_export_finds_the_model_and_refuses_what_it_cannot_write(motion_pruned, tmp_path):
    assert find_model(motion_pruned).model == motion_pruned
    with pytest.raises(VipkitError, match="neither a vipkit run folder nor a model folder"):
        find_model(tmp_path)
    unfinished = tmp_path / "run"
    (unfinished / "stages" / "stage-001" / "model").mkdir(parents=True)
    shutil.copytree(motion_pruned, unfinished / "stages" / "stage-001" / "model", dirs_exist_ok=True)
    (unfinished / "resolved.json").write_text("{}")
    with pytest.raises(VipkitError, match=r"a run that has not finished .*stages/stage-001/model"):
        find_model(unfinished)
    assert find_model(unfinished / "stages" / "stage-001").stage == 1
    with pytest.raises(VipkitError, match="--format 'onnx' is not a format of animatediff models; choose one of"):
        export_model(motion_pruned, "onnx", tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(VipkitError, match="exists and is not empty"):
        export_model(motion_pruned, "diffusers", tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    for inside in (motion_pruned, motion_pruned.parent):  # --overwrite never replaces what is being exported
        with pytest.raises(VipkitError, match="would replace the model being exported"):
            export_model(motion_pruned, "diffusers", inside, overwrite=True)
    assert find_model(motion_pruned).model == motion_pruned
    with pytest.raises(VipkitError, match="--dtype 'float64' is not one of"):
        export_model(motion_pruned, "diffusers", tmp_path / "y", dtype="float64")


def test_bfloat16_export_holds_bfloat16_tensors(motion_pruned, tmp_path):
    export_model(motion_pruned, "diffusers", tmp_path / "bf16", dtype="bfloat16")
    for path in Path(tmp_path / "bf16").rglob("*.safetensors"):
        assert {t.dtype for t in load_file(path).values()} == {torch.bfloat16}, path
