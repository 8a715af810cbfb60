"""What a saved model's manifest records of its making, for exports: which weights training changed, and from what.

An export format that holds only part of a model (AnimateDiff's motion adapter) is exact only when nothing
outside that part changed, so every model a run saves says which trainable scope its training changed
(``trained_scope``; None when nothing was trained). A teacher that is itself a vipkit model (a second
compression of a compressed model) hands its own record on: two different scopes give a combined one that
no partial format accepts, and a teacher without a record leaves the scope unknown (the key absent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipkit.interfaces import VideoModel
from vipkit.recipe import Recipe


def run_provenance(recipe: Recipe, teacher: VideoModel, trained: bool) -> dict[str, Any]:
    """The record of a model a run of ``recipe`` saves; ``trained``: whether any of its stages took a training step."""
    inherited = _teacher_record(recipe)
    record: dict[str, Any] = {"base_models": teacher.source_models() or list(inherited.get("base_models", []))}
    scopes = {recipe.train.trainable} if trained else set()
    if inherited.get("from_vipkit_model"):
        if "trained_scope" not in inherited:
            return record  # unknown: a teacher saved before vipkit recorded it
        scopes |= {inherited["trained_scope"]} - {None}
    record["trained_scope"] = "+".join(sorted(scopes)) if scopes else None
    return record


def _teacher_record(recipe: Recipe) -> dict[str, Any]:
    """The provenance of a teacher loaded from a vipkit model folder named by any of the model's options."""
    from vipkit.saved_model import MANIFEST

    for value in recipe.model.config.model_dump().values():
        if isinstance(value, str) and (Path(value).expanduser() / MANIFEST).is_file():
            try:
                manifest = json.loads((Path(value).expanduser() / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {"from_vipkit_model": True}
            return {"from_vipkit_model": True, **manifest.get("provenance", {})}
    return {}
