"""Loading never unpickles, never leaves its folder, never writes where it ran (issue 17, items 4, 6, 7).

Real files throughout: tiny models of both families saved and exported as vipkit does, real ``torch.save`` pickles
beside their safetensors, a real malicious pickle, real stored pairs. ``torch.load`` is watched: the libraries'
loaders call it for a ``.bin``, so "never unpickled" is "never called".
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import vipkit
from vipkit.errors import VipkitError
from vipkit.export import EXPORT_MANIFEST, export_model
from vipkit.pair_store import DIGEST, load_pairs, save_pairs
from vipkit.plugins import load_plugins
from vipkit.saved_model import MANIFEST, load_saved_model, save_model
from vipkit.testing import tiny_model
from vipkit.weights import converted_copy, file_sha256

FAMILIES = ("animatediff", "videocrafter2")


@pytest.fixture
def unpickled(monkeypatch) -> list[str]:
    """Every file ``torch.load`` is asked to read (transformers and diffusers read a ``.bin`` through it)."""
    calls: list[str] = []
    real = torch.load

    def watched(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", watched)
    return calls


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A pruned tiny model of each family, saved by ``save_model`` (a run's ``model/``)."""
    folders = {}
    for family in FAMILIES:
        model = tiny_model(family, num_inference_steps=2)
        model.remove_block(model.blocks()[0].name)
        model.generate(["a red ball"], [0])  # as in a run: a used tokenizer saves its padding state
        folders[family] = tmp_path_factory.mktemp(family) / "model"
        save_model(model, folders[family])
    return folders


def copy_of(folder: Path, to: Path) -> Path:
    return Path(shutil.copytree(folder, to))


def family_cls(name: str):
    return load_plugins().registry("models").get(name)


def pickle_beside(folder: Path, relative: str) -> Path:
    """A real pickle of real weights (the folder's own VAE state, so a loader would find it plausible)."""
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_file(vae), path)
    return path


# -- item 4: pickle files in vipkit's folders are refused, whoever loads them -------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("pickle_name", "instead_of"),
    [
        ("vae/diffusion_pytorch_model.bin", None),
        ("vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors"),  # diffusers would load it
        ("text_encoder/pytorch_model.bin", None),
        ("x.ckpt", None),
    ],
)
def test_a_pickle_beside_or_instead_of_a_saved_models_safetensors_is_refused_and_never_opened(
    saved, tmp_path, unpickled, family, pickle_name, instead_of
):
    model = copy_of(saved[family], tmp_path / "model")
    pickle_beside(model, pickle_name)
    if instead_of:
        (model / instead_of).unlink()
    expected = rf"holds a pickle file \({pickle_name}\), which vipkit never writes .* nothing was loaded"
    with pytest.raises(VipkitError, match=expected):
        load_saved_model(model)  # vipkit.load_model / export / a resumed run
    with pytest.raises(VipkitError, match=expected):
        family_cls(family).from_options({"base": str(model)})  # a recipe's `base`: no vipkit_model.json check
    manifest = json.loads((model / MANIFEST).read_text())  # listed in the manifest with its digest: refused too
    manifest["files"][pickle_name] = file_sha256(model / pickle_name)
    (model / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(VipkitError, match=expected):
        load_saved_model(model)
    del manifest["files"]  # a manifest from before the digests
    (model / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(VipkitError, match=expected):
        load_saved_model(model)
    assert unpickled == []


@pytest.mark.parametrize(
    "listed",
    ["../../etc/hostname", "../outside.json", "/etc/hostname", "vae/../../outside.json", "vae/link.json"],
)
def test_a_manifest_naming_a_file_outside_its_folder_is_refused_before_anything_is_opened(
    saved, tmp_path, monkeypatch, unpickled, listed
):
    model = copy_of(saved["animatediff"], tmp_path / "model")
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (model / "vae" / "link.json").symlink_to(outside)  # resolves out of the folder
    manifest = json.loads((model / MANIFEST).read_text())
    manifest["files"] = {listed: "0" * 64, **manifest["files"]}
    (model / MANIFEST).write_text(json.dumps(manifest))
    hashed: list[Path] = []
    monkeypatch.setattr("vipkit.weights.file_sha256", lambda path: hashed.append(path) or "")
    with pytest.raises(
        VipkitError,
        match=rf"vipkit_model.json lists {listed!r}, which is not a file inside .*refused the folder before opening",
    ):
        load_saved_model(model)
    assert hashed == [] and unpickled == []


@pytest.fixture(scope="module")
def exported(saved, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "diffusers"
    export_model(saved["animatediff"], "diffusers", out)
    return out


def test_an_export_manifest_naming_a_file_outside_is_refused_and_a_pickle_in_an_export_too(
    exported, tmp_path, monkeypatch, unpickled
):
    export = copy_of(exported, tmp_path / "export")
    original = (export / EXPORT_MANIFEST).read_text()
    for listed in ("../../etc/hostname", "/etc/hostname"):
        manifest = json.loads(original)
        manifest["files"][listed] = "0" * 64
        (export / EXPORT_MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(VipkitError, match=rf"vipkit_export.json lists {listed!r}, which is not a file inside"):
            vipkit.load_model(export)
        with pytest.raises(VipkitError, match=rf"vipkit_export.json lists {listed!r}"):  # as a recipe's base too
            family_cls("animatediff").from_options({"base": str(export)})
    (export / EXPORT_MANIFEST).write_text(original)
    pickle_beside(export, "unet/diffusion_pytorch_model.bin")
    with pytest.raises(VipkitError, match=r"holds a pickle file \(unet/diffusion_pytorch_model.bin\)"):
        vipkit.load_model(export)
    assert unpickled == []


def test_downloaded_folders_load_their_safetensors_and_never_open_the_pickle_beside(exported, tmp_path, unpickled):
    """The hub layout often has pytorch_model.bin beside model.safetensors: loaded with use_safetensors=True."""
    from vipkit.model_source import model_source
    from vipkit_clip.reward import load_clip
    from vipkit_clip.tiny import tiny_clip
    from vipkit_vbench.models import load_encoder
    from vipkit_videoscore.reward import load_videoscore
    from vipkit_videoscore.tiny import tiny_videoscore

    def with_a_different_pickle(model, tokenizer, folder: Path, name: str = "pytorch_model.bin") -> None:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        torch.save({key: torch.zeros_like(value) for key, value in model.state_dict().items()}, folder / name)

    clip, tokenizer = tiny_clip()
    with_a_different_pickle(clip, tokenizer, tmp_path / "clip")
    loaded = load_clip(str(tmp_path / "clip"), "cpu", "float32")
    assert torch.equal(loaded.model.text_projection.weight, clip.text_projection.weight)  # the safetensors weights

    network, tokenizer = tiny_videoscore()
    with_a_different_pickle(network, tokenizer, tmp_path / "videoscore")
    load_videoscore(str(tmp_path / "videoscore"), "cpu", "float32")

    encoder = load_encoder(None, "dino", torch.device("cpu"), torch.float32, tiny_seed=1).model
    with_a_different_pickle(encoder, None, tmp_path / "dino")
    source = model_source(str(tmp_path / "dino"), "reward option `subject_model`", "a DINO ViT")
    loaded = load_encoder(source, "dino", torch.device("cpu"), torch.float32, tiny_seed=0).model
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), encoder.state_dict().values(), strict=True)
    )

    pipeline = copy_of(exported, tmp_path / "pipeline")  # an exported diffusers pipeline as a recipe's base
    (pipeline / EXPORT_MANIFEST).unlink()  # as plain diffusers users keep it
    pickle_beside(pipeline, "vae/diffusion_pytorch_model.bin")
    pickle_beside(pipeline, "text_encoder/pytorch_model.bin")
    family_cls("animatediff").from_options({"base": str(pipeline)})
    assert unpickled == []


def test_a_pickle_only_dino_folder_is_refused(tmp_path, unpickled):
    from vipkit.model_source import model_source
    from vipkit_vbench.models import load_encoder

    encoder = load_encoder(None, "dino", torch.device("cpu"), torch.float32, tiny_seed=1).model
    encoder.save_pretrained(tmp_path / "dino")
    (tmp_path / "dino" / "model.safetensors").unlink()
    torch.save(encoder.state_dict(), tmp_path / "dino" / "pytorch_model.bin")
    source = model_source(str(tmp_path / "dino"), "reward option `subject_model`", "a DINO ViT")
    with pytest.raises(VipkitError, match=r"subject_model` = .*holds only pickle weights \(pytorch_model.bin\)"):
        load_encoder(source, "dino", torch.device("cpu"), torch.float32, tiny_seed=0)
    assert unpickled == []


class Payload:
    """What an attacker's pickle does when it is unpickled without restriction."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_official_pickles_are_read_once_restricted_then_from_their_safetensors_copy(tmp_path, unpickled):
    from vipkit_vbench.models import load_linear_head

    head = torch.nn.Linear(16, 1)
    official = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(head.state_dict(), official)
    first = load_linear_head(str(official), "reward option `aesthetic_head`", 16, torch.device("cpu"))
    assert unpickled == [str(official)]  # once, with weights_only=True
    copy = converted_copy(official)
    assert copy.name == "sa_0_4_vit_l_14_linear.pth.safetensors"
    with safe_open(copy, framework="pt") as f:
        assert f.metadata()["source_sha256"] == file_sha256(official)
    again = load_linear_head(str(official), "reward option `aesthetic_head`", 16, torch.device("cpu"))
    assert unpickled == [str(official)]  # the copy was read, not the pickle
    assert torch.equal(first.weight, again.weight) and torch.equal(again.weight, head.weight)
    direct = load_linear_head(str(copy), "reward option `aesthetic_head`", 16, torch.device("cpu"))
    assert torch.equal(direct.bias, head.bias)

    changed = torch.nn.Linear(16, 1)  # a new official file: read (restricted) and copied again
    torch.save(changed.state_dict(), official)
    reloaded = load_linear_head(str(official), "reward option `aesthetic_head`", 16, torch.device("cpu"))
    assert torch.equal(reloaded.weight, changed.weight) and len(unpickled) == 2

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"weight": Payload(marker)}, evil)
    with pytest.raises(VipkitError, match=r"aesthetic_head` = '.*evil.pth': not a Linear\(16, 1\) state dict"):
        load_linear_head(str(evil), "reward option `aesthetic_head`", 16, torch.device("cpu"))
    assert not marker.exists() and not converted_copy(evil).exists()


def test_where_no_copy_can_be_written_every_load_reads_the_official_pickle_restricted(tmp_path, monkeypatch, unpickled):
    from vipkit_vbench.models import load_linear_head

    official = tmp_path / "head.pth"
    torch.save(torch.nn.Linear(16, 1).state_dict(), official)

    def read_only(*args):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr("vipkit.weights.os.replace", read_only)
    for _ in range(2):
        load_linear_head(str(official), "reward option `aesthetic_head`", 16, torch.device("cpu"))
    assert unpickled == [str(official)] * 2 and sorted(p.name for p in tmp_path.iterdir()) == ["head.pth"]


# -- item 6: saved configs carry no machine path; the same model saves to the same bytes -------------------------


def tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_model_loaded_from_two_places_saves_to_the_same_bytes_without_their_paths(saved, tmp_path, family):
    first = copy_of(saved[family], tmp_path / "place-A" / "model")
    second = copy_of(saved[family], tmp_path / "place-B" / "model")
    save_model(load_saved_model(first), tmp_path / "out-A")
    save_model(load_saved_model(second), tmp_path / "out-B")
    assert tree(tmp_path / "out-A") == tree(tmp_path / "out-B")
    save_model(load_saved_model(tmp_path / "out-A"), tmp_path / "out-C")  # a run re-run: the same bytes again
    assert tree(tmp_path / "out-C") == tree(tmp_path / "out-A")
    if (
        family == "animatediff"
    ):  # VideoCrafter2's tokenizer gains its pad token "!" as an added token on the first reload
        assert tree(tmp_path / "out-A") == tree(saved[family])
    for path in (tmp_path / "out-A").rglob("*.json"):
        assert str(tmp_path) not in path.read_text() and "name_or_path" not in path.read_text(), path


def test_exports_of_one_model_from_two_places_are_the_same_bytes_without_their_paths(saved, tmp_path):
    for place in ("A", "B"):
        model = copy_of(saved["animatediff"], tmp_path / f"place-{place}" / "model")
        export_model(model, "diffusers", tmp_path / f"export-{place}")
    # README.md and vipkit_export.json name the export's folder and its source on purpose (how to load it)
    skip = ("README.md", EXPORT_MANIFEST)
    assert tree(tmp_path / "export-A", skip) == tree(tmp_path / "export-B", skip)
    for path in (tmp_path / "export-A").rglob("*.json"):
        if path.name != EXPORT_MANIFEST:
            assert str(tmp_path) not in path.read_text() and "name_or_path" not in path.read_text(), path


def test_a_folder_loaded_as_a_recipe_base_saves_without_its_path(saved, tmp_path):
    model = copy_of(saved["videocrafter2"], tmp_path / "somewhere" / "model")
    loaded = family_cls("videocrafter2").from_options({"base": str(model)})
    loaded.save(tmp_path / "out")  # the family's own writer, as vipkit_videocrafter2.convert uses it
    for path in (tmp_path / "out").rglob("*.json"):
        assert str(tmp_path) not in path.read_text(), path


# -- item 7: stored pairs are checked against their digest -------------------------------------------------------


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    generator = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (2, 3, 4, 3, 16, 16), generator=generator).float() / 255
    latents = torch.randn(2, 3, 4, 4, 8, 8, generator=generator)
    pairs = vipkit.PairSet(["a", "b", "c"], [1, 2, 3], latents[0], latents[1], videos[0], videos[1], ["x"])
    folder = tmp_path / "stage-001.pairs"
    folder.mkdir()
    save_pairs(pairs, folder)
    return folder


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_stored_pairs_is_found_by_their_digest(pairs_dir):
    assert json.loads((pairs_dir / DIGEST).read_text()) == {
        "pairs.safetensors": file_sha256(pairs_dir / "pairs.safetensors"),
        "pairs.json": file_sha256(pairs_dir / "pairs.json"),
    }
    load_pairs(pairs_dir)
    flip_byte(pairs_dir / "pairs.safetensors", -10)  # a video byte: same size, a header that still checks out
    with pytest.raises(
        VipkitError,
        match=r"stage-001.pairs are damaged: .*pairs.safetensors no longer matches the sha256 recorded in digest.json "
        r"when the pairs were stored; delete that folder and run again",
    ):
        load_pairs(pairs_dir)


def test_edited_pair_prompts_and_a_damaged_digest_are_named(pairs_dir):
    text = (pairs_dir / "pairs.json").read_text()
    (pairs_dir / "pairs.json").write_text(text.replace('"a"', '"z"'))
    with pytest.raises(VipkitError, match=r"pairs.json no longer matches the sha256 .*delete that folder"):
        load_pairs(pairs_dir)
    (pairs_dir / DIGEST).write_text("{not json")
    with pytest.raises(VipkitError, match=r"cannot be checked: .*digest.json is damaged .*delete that folder"):
        load_pairs(pairs_dir)


def test_pairs_stored_before_digests_still_load(pairs_dir):
    (pairs_dir / DIGEST).unlink()
    assert load_pairs(pairs_dir).prompts == ["a", "b", "c"]
    os.truncate(pairs_dir / "pairs.safetensors", 100)  # and their header check still names a truncated file
    with pytest.raises(VipkitError, match=r"cannot be read .*truncated.*delete that folder"):
        load_pairs(pairs_dir)
