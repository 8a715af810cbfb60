"""Every reward result is kept by (video, prompt, reward, config), so a run never scores a video twice.

A video's key hashes its bytes, dtype and shape with its prompt; a reward's key hashes its name,
validated config and the plugin (with its version) that provides it, so upgrading a reward plugin
rescores instead of mixing old and new scores. Scores live in memory and on disk, one small JSON file per video under
``cache/scores/<reward key>/`` in the run directory, so a resumed run reads the teacher's (and every
finished step's) scores instead of recomputing them. JSON keeps the exact value (Python prints floats
with ``repr``, which round-trips), so a cached score equals the fresh one bit for bit.

A score may be cached per video because the contract says a video's score does not depend on the
other videos in its batch (``vipkit.testing.check_reward`` checks it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vipkit.atomic import write_json
from vipkit.combined_reward import CombinedReward, require_declared_dimensions
from vipkit.interfaces import RewardModel, Scores

if TYPE_CHECKING:
    from torch import Tensor

KEY_FORMAT = 2
"""Changes whenever the keys below are computed differently, so old cache entries are never misread."""


def reward_identity(reward: RewardModel, provider: str) -> dict[str, object]:
    """Which reward, configured how, from which plugin version (what ``reward.json`` in its cache folder says)."""
    return {
        "format": KEY_FORMAT,
        "reward": reward.name,
        "config": reward.config.model_dump(mode="json"),
        "provider": provider,
    }


def reward_key(reward: RewardModel, provider: str = "") -> str:
    """A short hash of ``reward_identity``: the name of the reward's cache folder."""
    return hashlib.sha256(json.dumps(reward_identity(reward, provider), sort_keys=True).encode()).hexdigest()[:16]


def video_key(video: Tensor, prompt: str) -> str:
    """Which video, scored against which prompt: dtype, shape, every byte, and the prompt."""
    import torch

    digest = hashlib.sha256(f"{KEY_FORMAT}|{video.dtype}|{tuple(video.shape)}|".encode())
    digest.update(video.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    digest.update(prompt.encode())
    return digest.hexdigest()[:32]


class CachedReward(RewardModel):
    """Wraps a reward: videos it has seen (in this process or stored in ``directory``) are not scored again."""

    def __init__(self, reward: RewardModel, root: Path | None = None, provider: str = "") -> None:
        super().__init__(reward.config)
        self.reward = reward
        self.name = reward.name
        self.dimensions = tuple(reward.dimensions)
        self.provider = provider
        self.key = reward_key(reward, provider)
        self.directory = root / self.key if root is not None else None
        self.memory: dict[str, dict[str, Tensor]] = {}
        self.hits = 0  # videos answered from the cache
        self.misses = 0  # videos the wrapped reward scored

    def score(self, videos: Tensor, prompts: Sequence[str]) -> Scores:
        import torch

        if videos.shape[0] != len(prompts):
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts; score() needs one prompt per video")
        keys = [video_key(video, prompt) for video, prompt in zip(videos, prompts, strict=True)]
        missing: dict[str, int] = {}  # key -> first index, so a video repeated in the batch is scored once
        for index, key in enumerate(keys):
            if key not in self.memory and not self._load(key) and key not in missing:
                missing[key] = index
        if missing:
            indices = list(missing.values())
            fresh = require_declared_dimensions(
                self.reward, self.reward.score(videos[indices], [prompts[i] for i in indices])
            )
            for row, (key, index) in enumerate(missing.items()):
                self.memory[key] = {dim: fresh[dim][row].detach().cpu().clone() for dim in self.dimensions}
                self._store(key, prompts[index])
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return {dim: torch.stack([self.memory[key][dim] for key in keys]) for dim in self.dimensions}

    def _load(self, key: str) -> bool:
        import torch

        if self.directory is None or not (self.directory / f"{key}.json").exists():
            return False
        try:
            stored = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
            scores = {
                dim: torch.tensor(stored["scores"][dim], dtype=getattr(torch, stored["dtypes"][dim]))
                for dim in self.dimensions
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False  # a damaged entry (a torn write, an edit) is a miss: the video is scored again
        self.memory[key] = scores
        return True

    def _store(self, key: str, prompt: str) -> None:
        if self.directory is None:
            return
        if not self.directory.exists():  # every rank stores its share, so another may create it first
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json(self.directory / "reward.json", reward_identity(self, self.provider))
        scores = self.memory[key]
        write_json(
            self.directory / f"{key}.json",
            {
                "prompt": prompt,
                "scores": {dim: value.item() for dim, value in scores.items()},
                "dtypes": {dim: str(value.dtype).removeprefix("torch.") for dim, value in scores.items()},
            },
        )


def cache_summary(reward: RewardModel) -> str:
    """One line for the run log: how many videos each cached reward scored and how many the cache answered."""
    if isinstance(reward, CombinedReward):
        return "; ".join(cache_summary(part) for part in reward.parts.values())
    if not isinstance(reward, CachedReward):
        return f"{reward.name}: not cached"
    return f"{reward.name}: {reward.misses} videos scored, {reward.hits} answered from the score cache"
