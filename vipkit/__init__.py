"""vipkit: smaller, faster text-to-video models by pruning + reward-guided preference distillation."""

from __future__ import annotations

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


def load_model(path: str) -> VideoModel:
    """Load a compressed model written by vipkit (``RUN/model``) as its family's VideoModel."""
    from vipkit.saved_model import load_saved_model

    return load_saved_model(path)


def load(path: str) -> Any:
    """Load a compressed model as a ready inference pipeline (a diffusers pipeline for AnimateDiff)."""
    return load_model(path).pipeline()
