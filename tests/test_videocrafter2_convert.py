"""Converting the official VideoCrafter2 checkpoint: text tower, VAE, safe reading, the convert command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from vipkit.errors import VipkitError
from vipkit_videocrafter2 import VideoCrafter2
from vipkit_videocrafter2.checkpoint import read_official_checkpoint, unet_from_state
from vipkit_videocrafter2.convert import main
from vipkit_videocrafter2.text_encoder import OPEN_CLIP_PREFIX, text_encoder_from_open_clip
from vipkit_videocrafter2.tiny import TEXT_HEAD_WIDTH, ldm_vae_state, tiny_checkpoint, tiny_tokenizer
from vipkit_videocrafter2.unet_config import TINY_UNET_CONFIG
from vipkit_videocrafter2.vae import vae_from_ldm

PROMPTS = ["a red square moving left", "a blue circle moving up"]


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return tiny_checkpoint(seed=1)


def _open_clip_penultimate(state: dict[str, torch.Tensor], tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenCLIP's text forward written out: every resblock but the last, then ln_final (layer="penultimate")."""
    p = {key[len(OPEN_CLIP_PREFIX) :]: value for key, value in state.items() if key.startswith(OPEN_CLIP_PREFIX)}
    x = p["token_embedding.weight"][tokens] + p["positional_embedding"]
    width, length = x.shape[-1], x.shape[1]
    causal = torch.full((length, length), float("-inf")).triu(1)
    blocks = len({key.split(".")[2] for key in p if key.startswith("transformer.resblocks.")})
    for index in range(blocks - 1):
        b = {
            key.split(".", 3)[3]: value for key, value in p.items() if key.startswith(f"transformer.resblocks.{index}.")
        }
        h = F.layer_norm(x, (width,), b["ln_1.weight"], b["ln_1.bias"])
        q, k, v = (h @ b["attn.in_proj_weight"].T + b["attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / (width // heads) ** 0.5 + causal).softmax(-1)
        attended = (weights @ v).transpose(1, 2).flatten(2)
        x = x + attended @ b["attn.out_proj.weight"].T + b["attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), b["ln_2.weight"], b["ln_2.bias"])
        h = F.gelu(h @ b["mlp.c_fc.weight"].T + b["mlp.c_fc.bias"])
        x = x + h @ b["mlp.c_proj.weight"].T + b["mlp.c_proj.bias"]
    return F.layer_norm(x, (width,), p["ln_final.weight"], p["ln_final.bias"])


def test_text_tower_conversion_matches_the_open_clip_forward(state) -> None:
    encoder = text_encoder_from_open_clip(state, TEXT_HEAD_WIDTH)
    tokenizer = tiny_tokenizer()
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert (
        tokens[0, 0] == 512 and (tokens[0] == 0).sum() > 40
    )  # <|startoftext|>, then padding with token 0 as open_clip
    assert encoder.config.num_hidden_layers == 2  # the third (last) block is not needed for the penultimate output
    with torch.no_grad():
        ours = encoder(tokens).last_hidden_state
    expected = _open_clip_penultimate(state, tokens, heads=32 // TEXT_HEAD_WIDTH)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert ours.std() > 0.5


def test_vae_conversion_round_trips_through_diffusers_converter() -> None:
    torch.manual_seed(2)
    original = AutoencoderKL(
        block_out_channels=(32, 64),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    ldm = ldm_vae_state(original)
    assert "first_stage_model.decoder.up.1.block.2.conv1.weight" in ldm  # LDM numbers decoder levels bottom-up
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].dim() == 4
    converted = vae_from_ldm(ldm)
    assert list(converted.config.block_out_channels) == [32, 64] and converted.config.layers_per_block == 2
    assert converted.config.scaling_factor == 0.18215
    ours, reference = converted.state_dict(), original.state_dict()
    assert ours.keys() == reference.keys() and all(torch.equal(ours[key], reference[key]) for key in ours)


def test_reads_lightning_deepspeed_and_bare_layouts(state, tmp_path: Path) -> None:
    torch.save({"state_dict": state, "global_step": 3, "epoch": 1}, tmp_path / "pl.ckpt")
    torch.save({"module": OrderedDict(("_forward_module." + k, v) for k, v in state.items())}, tmp_path / "ds.ckpt")
    torch.save(state, tmp_path / "bare.ckpt")
    for name in ("pl.ckpt", "ds.ckpt", "bare.ckpt"):
        read = read_official_checkpoint(tmp_path / name)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state), name


class Payload:
    """Anything that is not a tensor or a plain container: unpickling it could run code."""


def test_refuses_pickled_objects_and_names_bad_input(state, tmp_path: Path) -> None:
    torch.save({"state_dict": state, "callback": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(VipkitError, match="refused to read .*could run code"):
        read_official_checkpoint(tmp_path / "evil.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(VipkitError, match="cannot read checkpoint"):
        read_official_checkpoint(tmp_path / "broken.ckpt")
    with pytest.raises(VipkitError, match="does not exist"):
        read_official_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(VipkitError, match=r"does not fit the UNet config: \d+ missing keys .*unet_config.params"):
        unet_from_state(state, {**TINY_UNET_CONFIG, "num_res_blocks": 2})


def _convert(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vipkit_videocrafter2.convert", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_convert_command_writes_a_folder_the_family_loads(state, tmp_path: Path) -> None:
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "unet.json").write_text(json.dumps(TINY_UNET_CONFIG))
    out = tmp_path / "converted"
    result = _convert(
        str(tmp_path / "model.ckpt"), str(out), "--tokenizer", str(tmp_path / "tokenizer"),
        "--unet-config", str(tmp_path / "unet.json"), "--text-head-width", str(TEXT_HEAD_WIDTH),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.suffix for p in out.rglob("*") if p.is_file()} <= {".json", ".safetensors", ".txt"}  # no pickle
    converted = VideoCrafter2.from_options({"base": str(out), "height": 8, "width": 8, "num_frames": 2})
    assert converted.generation_settings["num_inference_steps"] == 50  # the released model's defaults
    preset = VideoCrafter2.from_options({"preset": "tiny", "preset_seed": 1})
    ours, reference = converted.unet.state_dict(), preset.unet.state_dict()
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)
    assert torch.equal(converted.encode_prompts(PROMPTS), preset.encode_prompts(PROMPTS))


def test_convert_errors_exit_2_with_one_line(state, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    assert main([str(tmp_path / "model.ckpt"), str(tmp_path / "x"), "--tokenizer", str(tmp_path / "nowhere")]) == 2
    assert "is not a CLIP tokenizer folder" in capsys.readouterr().err and not (tmp_path / "x").exists()
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    assert main([str(tmp_path / "model.ckpt"), str(tmp_path / "x"), "--tokenizer", str(tmp_path / "tokenizer")]) == 2
    assert "does not fit the UNet config" in capsys.readouterr().err  # the default is the full VC2 config
