"""A compressed model on disk: the family's own files plus ``vipkit_model.json`` naming the family.

The manifest records the sha256 of every file, so a truncated or altered checkpoint is refused with
the file's name before the family's loader reads it. Its file list names files inside the folder only, the
folder holds no pickle file (vipkit never writes one), and no config in it records where the model was
loaded from (``scrub_source_paths``): the same model saves to the same bytes wherever it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipkit.atomic import staged_directory, write_json
from vipkit.errors import VipkitError
from vipkit.interfaces import VideoModel
from vipkit.plugins import load_plugins
from vipkit.weights import (
    check_manifest_files,
    check_weight_folder,
    file_digests,
    refuse_pickle_files,
    scrub_source_paths,
    verify_digests,
)

MANIFEST = "vipkit_model.json"


def save_model(model: VideoModel, directory: Path, provenance: dict[str, Any] | None = None) -> None:
    """Write ``model`` to ``directory`` atomically; the manifest is written last. ``provenance``: what the run knows of
    the model's making, for exports (``trained_scope``: the trainable scope its training changed, None when nothing
    was trained; ``base_models``: the hub ids it was compressed from)."""
    from vipkit import __version__

    with staged_directory(directory) as staging:
        model.save(staging)
        scrub_source_paths(staging)  # a family's library may record the folder its parts were loaded from
        write_json(
            staging / MANIFEST,
            {
                "family": model.name,
                "vipkit_version": __version__,
                "removed_blocks": model.removed_blocks,
                **({"resized_layers": model.resized_layers} if model.resized_layers else {}),  # width pruning's shapes
                "parameters": model.num_parameters(),
                "files": file_digests(staging),
                **({"provenance": provenance} if provenance is not None else {}),
            },
        )


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VipkitError(f"{directory} is not a vipkit model folder: {MANIFEST} is missing") from None
    except (OSError, ValueError) as exc:
        raise VipkitError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise VipkitError(f"{path} is corrupt: it holds a JSON {type(manifest).__name__}, not an object")
    return manifest


def verify_saved_model(directory: Path) -> dict:
    """The manifest, once its file list is checked to stay inside the folder (before any file is opened), the
    folder holds no pickle file, and every file it lists matches its digest (older manifests without a file
    list: every safetensors header checked)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if "files" not in manifest:
        check_weight_folder(directory, refuse_any_pickle=True)
        return manifest
    files = check_manifest_files(directory, manifest["files"], MANIFEST)  # before any file is opened
    refuse_pickle_files(directory)
    verify_digests(directory, files, MANIFEST)
    return manifest


def load_saved_model(directory: str | Path, **options: Any) -> VideoModel:
    """Rebuild a model written by ``save_model`` with its family's ``load_saved``, after verifying its files;
    ``options`` (e.g. ``device="cuda"``) go to the family's Config."""
    directory = Path(directory)
    family = verify_saved_model(directory).get("family")
    cls = load_plugins().registry("models").get(str(family))
    return cls.load_saved(directory, **options) if options else cls.load_saved(directory)
