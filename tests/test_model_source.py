"""The one rule for model options (a local path or a hub id) and the errors that say how to provide a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipkit.errors import VipkitError
from vipkit.model_source import is_local_path, model_source


@pytest.mark.parametrize("value", ["/models/clip", "./clip", "../clip", "~/clip", "models/openai/clip", "models\\clip"])
def test_what_no_hub_id_looks_like_is_local(value: str) -> None:
    assert is_local_path(value)


@pytest.mark.parametrize("value", ["openai/clip-vit-base-patch32", "gpt2"])
def test_owner_name_that_does_not_exist_here_is_a_hub_id(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_local_path(value)
    source = model_source(value, "reward option `model`", "a CLIP model")
    assert (source.local, source.source) == (False, value)


def test_an_existing_relative_path_with_one_slash_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "weights" / "adapter").mkdir(parents=True)
    (tmp_path / "weights" / "notes.txt").write_text("not a model")
    monkeypatch.chdir(tmp_path)
    assert is_local_path("weights/adapter")
    source = model_source("weights/adapter", "motion_adapter", "an AnimateDiff MotionAdapter")
    assert (source.local, source.source) == (True, str(tmp_path / "weights" / "adapter"))
    with pytest.raises(VipkitError, match=r"motion_adapter = 'weights/notes.txt': .*notes.txt is not a directory"):
        model_source("weights/notes.txt", "motion_adapter", "an AnimateDiff MotionAdapter")


def test_an_offline_hub_id_fails_before_loading_with_the_download_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = model_source("nobody/no-model", "reward option `model`", "a CLIP model")
    assert not source.is_available()
    with pytest.raises(VipkitError) as refused:
        source.require_available("a CLIP model")
    assert str(refused.value) == (
        "reward option `model` = 'nobody/no-model' (a CLIP model): HF_HUB_OFFLINE is set, so the hub was not tried, and "
        "it is not in the Hugging Face cache. Download it where the hub is reachable with `hf download nobody/no-model "
        "--local-dir models/no-model` and set reward option `model` to 'models/no-model'."
    )


def test_an_online_fetch_failure_says_what_failed_and_how_to_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    source = model_source("nobody/no-model", "base", "a pipeline")
    assert source.is_available()  # online: only a request could tell, and none is made before loading
    message = str(
        source.load_error("a pipeline", OSError("We couldn't connect to\n'https://huggingface.co'."), "unused")
    )
    assert "could not be fetched from the Hugging Face hub (We couldn't connect to 'https://huggingface.co')" in message
    assert (
        "set HF_HUB_OFFLINE=1: then every missing model is listed at once" in message
        and "`hf download nobody/no-model" in message
    )


def test_a_local_folder_that_fails_to_load_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    source = model_source(str(tmp_path), "base", "a pipeline")
    message = str(
        source.load_error("a pipeline", OSError("no model_index.json"), "Point base at a folder holding a pipeline.")
    )
    assert (
        message
        == f"base = {str(tmp_path)!r}: could not load a pipeline from the directory {tmp_path}: no model_index.json. Point base at a folder holding a pipeline."
    )
