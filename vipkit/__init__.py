"""vipkit: smaller, faster text-to-video models by pruning + reward-guided preference distillation."""

from __future__ import annotations

from typing import Any

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
from vipkit.transfer import to_device

__version__ = "0.1.0"

__all__ = [
    "Block",
    "BlockImportance",
    "CandidateVideos",
    "Component",
    "Config",
    "DistillLoss",
    "Generation",
    "ImportanceScorer",
    "LossOutput",
    "Objective",
    "PairBatch",
    "PairCurator",
    "PairSet",
    "Plan",
    "Pruner",
    "RewardModel",
    "Scores",
    "VideoModel",
    "hookimpl",
    "load",
    "load_model",
    "mean_scores",
    "to_device",
]


def load_model(path: str) -> VideoModel:
    """Load a compressed model written by vipkit (``RUN/model``) as its family's VideoModel."""
    from vipkit.saved_model import load_saved_model

    return load_saved_model(path)


def load(path: str) -> Any:
    """Load a compressed model as a ready inference pipeline (a diffusers pipeline for AnimateDiff)."""
    return load_model(path).pipeline()
