"""vipkit: smaller, faster text-to-video models by pruning + reward-guided preference distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vipkit.errors import VipkitError
from vipkit.family_kit import DenoiserFamily, FamilyConfig
from vipkit.hookspecs import hookimpl
from vipkit.interfaces import (
    Block,
    BlockImportance,
    CandidateVideos,
    Component,
    Config,
    DistillLoss,
    Generation,
    ImportanceScorer,
    LossOutput,
    Objective,
    PairBatch,
    PairCurator,
    PairSet,
    Plan,
    Pruner,
    RewardModel,
    Scores,
    VideoModel,
    mean_scores,
)
from vipkit.progress import track
from vipkit.transfer import to_device

__version__ = "0.1.0"

__all__ = [
    "Block",
    "BlockImportance",
    "CandidateVideos",
    "Component",
    "Config",
    "DenoiserFamily",
    "DistillLoss",
    "FamilyConfig",
    "Generation",
    "ImportanceScorer",
    "LossOutput",
    "Objective",
    "PairBatch",
    "PairCurator",
    "PairSet",
    "PassThrough",
    "Plan",
    "PrunableModule",
    "Pruner",
    "RewardModel",
    "Scores",
    "VideoModel",
    "VipkitError",
    "hookimpl",
    "load",
    "load_model",
    "mean_scores",
    "to_device",
    "track",
]


def __getattr__(name: str) -> Any:
    """The block-removal kit (``vipkit.prunable``) needs torch: it is imported on first use, not with vipkit."""
    if name in ("PassThrough", "PrunableModule"):
        from vipkit import prunable

        return getattr(prunable, name)
    raise AttributeError(f"module 'vipkit' has no attribute {name!r}")


def load_model(path: str | Path, **options: Any) -> VideoModel:
    """Load a compressed model written by vipkit (``RUN/model``) or exported by ``vipkit export`` as its family's
    VideoModel; zeroed blocks of an export are removed again, which keeps the speed-up. ``options`` go to the
    family's Config (e.g. ``device="cuda"``, or the SD-1.5 ``base`` a motion-adapter export goes on)."""
    from vipkit.export import export_manifest, load_export
    from vipkit.saved_model import load_saved_model

    manifest = export_manifest(Path(path))
    if manifest is not None:
        return load_export(Path(path), manifest, **options)
    return load_saved_model(path, **options)


def load(path: str | Path, **options: Any) -> Any:
    """Load a compressed model as a ready inference pipeline (a diffusers pipeline for AnimateDiff)."""
    return load_model(path, **options).pipeline()
