"""VBench's per-video formulas as pure tensor functions (github.com/Vchitect/VBench, ``vbench/*.py``).

VBench reads 8-bit video files, so every measure here first rounds frames in [0, 1] to the 256 levels
a saved video has (``levels``). Each function takes a batch and returns one number per video.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def levels(frames: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] → the float values 0..255 of the same frames written as 8-bit video."""
    return (frames.float().clamp(0, 1) * 255).round()


def temporal_flickering(videos: torch.Tensor) -> torch.Tensor:
    """``(255 - mean_i MAE(frame_i, frame_i+1)) / 255`` on 8-bit frames (``temporal_flickering.py``).

    ``videos`` is ``(B, F, C, H, W)`` in [0, 1]; a static video scores 1.0, and so does a single frame
    (VBench has no pair to compare there and would report NaN).
    """
    if videos.shape[1] < 2:
        return torch.ones(videos.shape[0])
    frames = levels(videos)
    mae = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))  # (B, F - 1)
    return ((255.0 - mae.mean(dim=1)) / 255.0).cpu()


def feature_consistency(features: torch.Tensor) -> torch.Tensor:
    """Subject / background consistency from per-frame features ``(B, F, D)``.

    For every frame after the first: the mean of its cosine similarity (floored at 0) to the previous
    frame and to the first frame; the video's score is the mean over those frames
    (``subject_consistency.py``, ``background_consistency.py``). A single frame scores 1.0.
    """
    if features.shape[1] < 2:
        return torch.ones(features.shape[0])
    unit = F.normalize(features.float(), dim=-1)
    to_previous = (unit[:, 1:] * unit[:, :-1]).sum(-1).clamp(min=0)
    to_first = (unit[:, 1:] * unit[:, :1]).sum(-1).clamp(min=0)
    return ((to_previous + to_first) / 2).mean(dim=1).cpu()


def top_flow_magnitude(flow: torch.Tensor) -> torch.Tensor:
    """Mean of the largest 5 % of optical-flow magnitudes, per flow field ``(N, 2, H, W)`` → ``(N,)``."""
    magnitude = flow.float().norm(dim=1).flatten(1)
    count = int(magnitude.shape[1] * 0.05)
    return magnitude.topk(count, dim=1).values.mean(dim=1)


def is_dynamic(pair_magnitudes: list[float], height: int, width: int, num_frames: int) -> bool:
    """VBench's dynamic-degree rule (``dynamic_degree.py``): a video moves when enough frame pairs have
    large flow. A pair counts when its top-5 % flow magnitude exceeds ``6 * min(H, W) / 256`` px; the video
    moves once ``round(4 * num_frames / 16)`` pairs count (Python's round, as VBench uses)."""
    threshold = 6.0 * min(height, width) / 256.0
    needed = round(4 * (num_frames / 16.0))
    counted = 0
    for magnitude in pair_magnitudes:
        counted += magnitude > threshold
        if counted >= needed:
            return True
    return False
