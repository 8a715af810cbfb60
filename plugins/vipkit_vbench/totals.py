"""VBench's leaderboard totals: per-dimension min-max normalisation, weights, Quality / Semantic / Total.

The numbers are VBench's own (``scripts/constant.py``, ``scripts/cal_final_score.py``): each dimension is
normalised with ``(score - min) / (max - min)`` and weighted (dynamic degree 0.5, all others 1); the
Quality Score is the weighted mean over the seven quality dimensions, the Semantic Score over the nine
semantic ones, and the Total Score is ``(4 * quality + semantic) / 5``.

The leaderboard needs all 16 dimensions. ``quality_score`` and ``semantic_score`` also accept a subset
and then average over the dimensions given (the weights renormalised): vipkit computes five of the seven
quality dimensions, so its ``quality_score`` is this partial mean, not a leaderboard number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

Value = TypeVar("Value")  # float, or a tensor of per-video scores

QUALITY_DIMENSIONS = (
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "aesthetic_quality",
    "imaging_quality",
    "dynamic_degree",
)
SEMANTIC_DIMENSIONS = (
    "object_class",
    "multiple_objects",
    "human_action",
    "color",
    "spatial_relationship",
    "scene",
    "appearance_style",
    "temporal_style",
    "overall_consistency",
)
NORMALIZATION = {
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "object_class": (0.0, 1.0),
    "multiple_objects": (0.0, 1.0),
    "human_action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial_relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0.0, 0.364),
    "overall_consistency": (0.0, 0.364),
}
"""dimension -> (min, max) used to normalise it."""
WEIGHTS = {dimension: 0.5 if dimension == "dynamic_degree" else 1.0 for dimension in NORMALIZATION}
QUALITY_WEIGHT = 4.0
SEMANTIC_WEIGHT = 1.0


def normalized(dimension: str, value: Value) -> Value:
    """``(value - min) / (max - min)`` with the dimension's VBench bounds."""
    low, high = NORMALIZATION[dimension]
    return (value - low) / (high - low)  # type: ignore[operator]


def _weighted_mean(scores: Mapping[str, Value], group: tuple[str, ...]) -> Value:
    present = [dimension for dimension in group if dimension in scores]
    if not present:
        raise ValueError(f"no score for any of {', '.join(group)}")
    total = sum(WEIGHTS[d] * normalized(d, scores[d]) for d in present)  # type: ignore[operator]
    return total / sum(WEIGHTS[d] for d in present)  # type: ignore[operator]


def quality_score(scores: Mapping[str, Value]) -> Value:
    """Weighted mean of the normalised quality dimensions present in ``scores``."""
    return _weighted_mean(scores, QUALITY_DIMENSIONS)


def semantic_score(scores: Mapping[str, Value]) -> Value:
    """Weighted mean of the normalised semantic dimensions present in ``scores``."""
    return _weighted_mean(scores, SEMANTIC_DIMENSIONS)


def total_score(quality: Value, semantic: Value) -> Value:
    """VBench's Total Score: ``(4 * quality + 1 * semantic) / 5``."""
    return (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)  # type: ignore[operator]
