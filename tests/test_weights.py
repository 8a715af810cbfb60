"""Weight files: truncated or altered safetensors are named, pickle-only folders are refused, never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vipkit.errors import VipkitError
from vipkit.pair_store import load_pairs
from vipkit.saved_model import load_saved_model, save_model
from vipkit.testing import tiny_model
from vipkit.weights import CorruptWeightsError, check_safetensors, check_weight_folder
from vipkit_animatediff import AnimateDiff
from vipkit_animatediff.persistence import PRUNED_UNET_WEIGHTS
from vipkit_animatediff.tiny import tiny_sd_components

UNET = Path("unet") / PRUNED_UNET_WEIGHTS  # the saved model below is pruned


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_whole_file_passes_and_every_kind_of_damage_is_named(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(100.0), "b": torch.ones(3, 4)}, str(path))
    check_safetensors(path)
    size = path.stat().st_size
    truncate(path, size - 1)
    with pytest.raises(
        CorruptWeightsError,
        match=rf"w.safetensors is truncated or corrupt: its header announces {size} bytes, the file has {size - 1}",
    ):
        check_safetensors(path)
    truncate(path, 5)
    with pytest.raises(CorruptWeightsError, match="only 5 bytes"):
        check_safetensors(path)
    path.write_bytes((40).to_bytes(8, "little") + b"{not json" + b" " * 31)
    with pytest.raises(CorruptWeightsError, match="header is not valid JSON"):
        check_safetensors(path)
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(CorruptWeightsError, match="header claims 1000000 bytes, the file has 10"):
        check_safetensors(path)


def test_pickle_only_folder_is_refused_not_loaded(tmp_path):
    adapter = tiny_sd_components()["motion_adapter"]
    adapter.save_pretrained(tmp_path / "adapter", safe_serialization=False)
    assert [p.name for p in (tmp_path / "adapter").iterdir() if p.suffix == ".bin"] == ["diffusion_pytorch_model.bin"]
    with pytest.raises(
        CorruptWeightsError, match="holds only pickle weights .*diffusion_pytorch_model.bin.*safetensors only"
    ):
        check_weight_folder(tmp_path / "adapter")
    (tmp_path / "sd").mkdir()
    with pytest.raises(VipkitError, match=r"motion_adapter = '.*adapter': .*holds only pickle weights"):
        AnimateDiff.from_options({"base": str(tmp_path / "sd"), "motion_adapter": str(tmp_path / "adapter")})


def test_pickle_only_clip_folder_is_refused(tmp_path):
    from vipkit_clip.reward import load_clip
    from vipkit_clip.tiny import tiny_clip

    clip, tokenizer = tiny_clip()
    clip.save_pretrained(tmp_path / "clip")  # transformers 5 writes safetensors only: make the legacy layout by hand
    (tmp_path / "clip" / "model.safetensors").unlink()
    torch.save(clip.state_dict(), tmp_path / "clip" / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path / "clip")
    with pytest.raises(
        VipkitError, match=r"reward option `model` = '.*clip': .*holds only pickle weights \(pytorch_model.bin\)"
    ):
        load_clip(str(tmp_path / "clip"), "cpu", "float32")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    model = tiny_model("animatediff", num_inference_steps=2)
    model.remove_block(model.blocks()[0].name)
    directory = tmp_path_factory.mktemp("saved") / "model"
    save_model(model, directory)
    return directory


def copy_of(saved: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "model"))


def test_saved_model_records_a_digest_per_file_and_reloads(saved, tmp_path):
    manifest = json.loads((saved / "vipkit_model.json").read_text())
    assert str(UNET) in manifest["files"] and len(manifest["files"]) >= 8
    assert load_saved_model(copy_of(saved, tmp_path)).removed_blocks == manifest["removed_blocks"]


def test_truncated_saved_model_is_named(saved, tmp_path):
    model = copy_of(saved, tmp_path)
    truncate(model / UNET, 1000)
    with pytest.raises(CorruptWeightsError, match=r"unet/vipkit_pruned_unet.safetensors is corrupt"):
        load_saved_model(model)
    # loaded as a recipe's `base`, the file is named too (its header announces more bytes than it has)
    with pytest.raises(VipkitError, match=r"base = '.*model': .*vipkit_pruned_unet.safetensors is truncated"):
        AnimateDiff.from_options({"base": str(model)})


def test_altered_bytes_of_the_same_size_are_caught_by_the_digest(saved, tmp_path):
    model = copy_of(saved, tmp_path)
    data = bytearray((model / UNET).read_bytes())
    data[-100] ^= 0xFF  # a weight, not the header: safetensors itself would load this silently
    (model / UNET).write_bytes(bytes(data))
    check_safetensors(model / UNET)
    with pytest.raises(CorruptWeightsError, match="sha256 differs"):
        load_saved_model(model)


def test_missing_file_is_named(saved, tmp_path):
    model = copy_of(saved, tmp_path)
    (model / "vae" / "config.json").unlink()
    with pytest.raises(CorruptWeightsError, match=r"vae/config.json is missing"):
        load_saved_model(model)


def test_damaged_pair_store_says_how_to_rebuild(tmp_path):
    save_file({"winner_latents": torch.ones(2, 3)}, str(tmp_path / "pairs.safetensors"))
    (tmp_path / "pairs.json").write_text(json.dumps({"prompts": ["a", "b"], "seeds": [0, 1], "target_dimensions": []}))
    with pytest.raises(VipkitError, match="lack loser_latents, winner_videos, loser_videos; delete that folder"):
        load_pairs(tmp_path)
    truncate(tmp_path / "pairs.safetensors", 20)
    with pytest.raises(VipkitError, match=r"cannot be read \(.*pairs.safetensors is truncated"):
        load_pairs(tmp_path)
