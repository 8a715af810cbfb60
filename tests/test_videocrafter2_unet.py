"""The VideoCrafter2 UNet port against the official code's reference data (manifest and golden outputs)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vipkit.errors import VipkitError
from vipkit_videocrafter2 import build_unet
from vipkit_videocrafter2.attention import TemporalTransformer
from vipkit_videocrafter2.unet_config import VC2_UNET_CONFIG, parse_unet_config

REFERENCE = (
    Path(os.environ.get("VIPKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    / "reference"
    / "videocrafter2"
)
"""The reference data beside the checkout (``../shared``, as on CI); VIPKIT_SHARED points elsewhere."""
PREFIX = "model.diffusion_model."
GOLDENS = sorted(REFERENCE.glob("vc2_tiny_golden_*.safetensors"))  # held-out goldens dropped here are checked too


def test_the_reference_data_is_beside_the_checkout() -> None:
    assert (REFERENCE / "vc2_unet_manifest.json").is_file() and GOLDENS, (
        f"no VideoCrafter2 reference data at {REFERENCE}: put ../shared beside the checkout or set VIPKIT_SHARED"
    )


def _golden(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(path, "pt") as handle:
        config = json.loads(handle.metadata()["config"])
    return config, load_file(path)


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: p.stem)
def test_forward_matches_the_official_golden(path: Path) -> None:
    config, tensors = _golden(path)
    unet = build_unet(config)
    weights = {key[len(PREFIX) :]: value.float() for key, value in tensors.items() if key.startswith(PREFIX)}
    unet.load_state_dict(weights, strict=True)
    assert sum(p.numel() for p in unet.parameters()) == sum(w.numel() for w in weights.values())
    # intermediate.<module>_out = that module's output, intermediate.<module>_in[_subN] = its input
    # (spatially subsampled every N positions); hooks are placed from the names in the file
    seen: dict[str, torch.Tensor] = {}
    wanted = {}
    for key in tensors:
        if key.startswith("intermediate."):
            name = key.removeprefix("intermediate.")
            match = re.fullmatch(r"(.+)_(in|out)(?:_sub(\d+))?", name)
            assert match, f"unexpected intermediate {name}"
            wanted[key] = match.groups()

    def keep(key: str, use_input: bool):
        return lambda module, args, output: seen.__setitem__(key, args[0] if use_input else output)

    hooks = [
        unet.get_submodule(path).register_forward_hook(keep(key, direction == "in"))
        for key, (path, direction, _) in wanted.items()
    ]
    with torch.no_grad():
        y = unet(
            tensors["input.x"], tensors["input.timesteps"], context=tensors["input.context"], fps=tensors["input.fps"]
        )
    for hook in hooks:
        hook.remove()
    assert y.shape == tensors["output.y"].shape
    torch.testing.assert_close(y, tensors["output.y"], rtol=0, atol=1e-4)
    for key, (_, _, step) in wanted.items():
        assert key in seen, f"{key}: the module never ran"
        got = seen[key] if step is None else seen[key][:, :, :: int(step), :: int(step)]
        torch.testing.assert_close(got, tensors[key], rtol=0, atol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


def test_full_vc2_config_matches_the_official_manifest_key_for_key() -> None:
    manifest = json.loads((REFERENCE / "vc2_unet_manifest.json").read_text())
    assert manifest["unet_config"] == VC2_UNET_CONFIG
    with torch.device("meta"):
        unet = build_unet(VC2_UNET_CONFIG)
    ours = {PREFIX + key: list(value.shape) for key, value in unet.state_dict().items()}
    official = {entry["key"]: entry["shape"] for entry in manifest["keys"]}
    assert list(ours) == list(official)  # same keys in the same order
    assert ours == official
    assert sum(p.numel() for p in unet.parameters()) == manifest["total_params"] == 1_413_284_420
    assert len(ours) == 1484


def test_unknown_keys_are_named_and_training_only_keys_accepted() -> None:
    with pytest.raises(
        VipkitError, match=r"unknown keys: temporal_lenght, use_xformers\. Known keys: .*addition_attention"
    ):
        parse_unet_config({**VC2_UNET_CONFIG, "temporal_lenght": 16, "use_xformers": True})
    assert parse_unet_config({**VC2_UNET_CONFIG, "use_checkpoint": False}) == parse_unet_config(VC2_UNET_CONFIG)
    with pytest.raises(VipkitError, match="missing required keys: num_res_blocks"):
        parse_unet_config({k: v for k, v in VC2_UNET_CONFIG.items() if k != "num_res_blocks"})
    with pytest.raises(VipkitError, match="only dims = 2"):
        parse_unet_config({**VC2_UNET_CONFIG, "dims": 3})
    with pytest.raises(VipkitError, match="addition_attention needs num_head_channels"):
        parse_unet_config({**VC2_UNET_CONFIG, "num_head_channels": -1, "num_heads": 8})
    assert parse_unet_config(parse_unet_config(VC2_UNET_CONFIG).as_dict()) == parse_unet_config(VC2_UNET_CONFIG)


EVERY_SWITCH = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "attention_resolutions": [1, 2],
    "num_res_blocks": 1,
    "channel_mult": [1, 2],
    "num_heads": 4,
    "num_head_channels": 8,
    "context_dim": 16,
    "use_linear": False,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "conv_resample": False,
    "temporal_conv": True,
    "tempspatial_aware": True,
    "temporal_selfatt_only": False,
    "use_relative_position": True,
    "temporal_length": 4,
    "addition_attention": True,
    "use_image_attention": True,
    "temporal_transformer_depth": 2,
    "transformer_depth": 2,
    "fps_cond": True,
}


def test_every_switch_builds_the_official_key_layout_and_runs() -> None:
    torch.manual_seed(0)
    unet = build_unet(EVERY_SWITCH)
    keys = unet.state_dict().keys()
    assert "input_blocks.1.1.proj_in.weight" in keys and unet.input_blocks[1][1].proj_in.weight.dim() == 4  # Conv2d
    assert unet.input_blocks[1][2].proj_in.weight.shape == (32, 32, 1)  # Conv1d without use_linear
    assert "input_blocks.1.2.transformer_blocks.1.attn1.relative_position_k.embeddings_table" in keys
    assert unet.input_blocks[1][2].transformer_blocks[0].attn2.to_k.weight.shape[1] == 16  # cross-attention to text
    assert "input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip.weight" in keys
    assert unet.input_blocks[1][0].emb_layers[1].weight.shape[0] == 64  # scale and shift
    assert unet.input_blocks[1][0].temopral_conv.conv1[2].weight.shape[2:] == (3, 3, 3)  # spatially aware
    assert type(unet.input_blocks[2][0]).__name__ == "ResBlock" and "input_blocks.2.0.temopral_conv" not in str(keys)
    context = torch.randn(2, 77 + 4, 16)  # text tokens then image tokens
    with torch.no_grad():
        y = unet(torch.randn(2, 4, 4, 8, 8), torch.tensor([5, 700]), context=context, fps=8)
    assert y.shape == (2, 4, 4, 8, 8) and torch.isfinite(y).all()


def _temporal(**options) -> TemporalTransformer:
    torch.manual_seed(0)
    layer = TemporalTransformer(32, 4, 8, depth=1, context_dim=None, use_linear=True, self_only=True, **options)
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    return layer.eval()


def test_causal_temporal_attention_ignores_later_frames() -> None:
    layer = _temporal(causal_length=6, relative_length=None)
    block, mask = layer.transformer_blocks[0], layer._causal_mask(6, torch.device("cpu"))
    sequences = torch.randn(4, 6, 32)  # (B*H*W, T, C) as the layer feeds its blocks
    changed = sequences.clone()
    changed[:, 4:] += 1.0
    with torch.no_grad():
        before, after = block(sequences, mask=mask), block(changed, mask=mask)
        unmasked = block(changed)
    torch.testing.assert_close(after[:, :4], before[:, :4], rtol=0, atol=1e-6)
    assert (after[:, 4:] - before[:, 4:]).abs().max() > 0.1
    assert (unmasked[:, :4] - before[:, :4]).abs().max() > 0.1
    with pytest.raises(ValueError, match="temporal_length = 6 frames, got 5"):
        layer(torch.randn(1, 32, 5, 2, 2), None)


def test_relative_positions_with_zero_tables_are_plain_attention() -> None:
    relative, plain = (
        _temporal(causal_length=None, relative_length=3),
        _temporal(causal_length=None, relative_length=None),
    )
    state = {k: v for k, v in relative.state_dict().items() if "relative_position" not in k}
    plain.load_state_dict(state)
    x = torch.randn(2, 32, 5, 2, 2)
    with torch.no_grad():
        differs = (relative(x, None) - plain(x, None)).abs().max()
        for name, table in relative.named_parameters():
            if "relative_position" in name:
                table.zero_()
        torch.testing.assert_close(relative(x, None), plain(x, None), rtol=0, atol=1e-5)
    assert differs > 1e-2


def test_full_size_prunable_units_and_safe_pairs() -> None:
    from collections import defaultdict

    from vipkit_videocrafter2.blocks import list_blocks, safe_pairs

    with torch.device("meta"):
        unet = build_unet(VC2_UNET_CONFIG)
    assert safe_pairs(unet) == [(1, 10), (8, 3), (10, 1), (11, 0)]  # the reference's meta-device check
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for block in list_blocks(unet):
        totals[block.kind] += block.params
        counts[block.kind] += 1
    assert dict(counts) == {
        "temporal_attention": 17,  # 16 + init_attn
        "spatial_attention": 16,
        "temporal_conv": 22,
        "resblock": 8,  # input 1, 2, 5, 8, 10, 11 and both middle ResBlocks
        "middle": 1,
        "encoder_decoder_pair": 4,
    }
    assert totals["spatial_attention"] == 273_629_120 and totals["temporal_conv"] == 266_891_520
    assert totals["temporal_attention"] == 272_850_880 + 5_580_736  # blocks + init_attn
    assert totals["encoder_decoder_pair"] == 519_984_960 and totals["middle"] == 173_117_440


def test_bfloat16_runs_and_stays_close_to_float32() -> None:
    torch.manual_seed(0)
    from vipkit_videocrafter2.unet_config import TINY_UNET_CONFIG

    full = build_unet(TINY_UNET_CONFIG)
    half = build_unet(TINY_UNET_CONFIG).to(torch.bfloat16)
    half.load_state_dict(full.state_dict())
    x, context = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        expected = full(x, torch.tensor([5, 900]), context=context, fps=28)
        got = half(x.bfloat16(), torch.tensor([5, 900]), context=context.bfloat16(), fps=28)
    assert got.dtype == torch.bfloat16  # the input dtype is kept (GroupNorm32 computes in float32 inside)
    assert ((got.float() - expected).norm() / expected.norm()).item() < 0.05
