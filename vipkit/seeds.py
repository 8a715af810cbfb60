"""Every seed a run or a bench uses, derived from the one ``seed`` of its recipe or matrix.

Video ``i`` of a role gets ``seed + offset + i``: a small integer, so a user can re-render one video by
hand with its seed (``model.generate([prompt], [seed])``). The offsets keep the roles disjoint for up
to 100,000 videos each, and validation caps ``seed`` at ``MAX_SEED`` so every derived seed stays far
from int64. The offsets are part of every stored result (and of the shapes-world tables): changing one
changes every run's videos. Training randomness (shuffles, noise, timesteps) is hashed from its parts
instead (``derive_seed``), so no two of those seeds collide however many there are.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Role = Literal["eval", "train", "probe", "heldout"]

MAX_SEED = 2**32 - 1
_OFFSETS: dict[Role, int] = {
    "eval": 0,  # evaluation videos (reports, importance scoring without probe prompts) and bench videos
    "train": 100_000,  # the training prompts' videos (each prompt videos_per_prompt times)
    "probe": 200_000,  # the probe prompts' videos, ranked by the importance scorer
    "heldout": 300_000,  # the held-out prompts' videos: scored after every prune and distillation, never used
}


def video_seeds(seed: int, role: Role, count: int) -> list[int]:
    """The seeds of a role's ``count`` videos, in order."""
    return [seed + _OFFSETS[role] + i for i in range(count)]


def stage_seed(seed: int, stage: int) -> int:
    """The training seed of stage ``stage`` (1-based); ``derive_seed`` hashes it further for each use."""
    return seed * 1_000 + stage


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of numbers and words (stable across runs, processes and machines)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1
