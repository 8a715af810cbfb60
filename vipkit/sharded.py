"""Generation and reward scoring split by video over the ranks, gathered back in order on every rank.

Video ``i`` depends only on its prompt and seed (``VideoModel.generate``'s contract) and is scored
on its own (``RewardModel``'s), so splitting the list changes no result beyond float rounding of
batch sizes; with one process it is a plain call. Generated videos come back on the 8-bit grid
(``vipkit.media.eight_bit``), as a run stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vipkit import distributed
from vipkit.faults import fault_point
from vipkit.interfaces import Generation, RewardModel, Scores, VideoModel
from vipkit.media import eight_bit

if TYPE_CHECKING:
    from torch import Tensor


def generate(model: VideoModel, prompts: Sequence[str], seeds: Sequence[int]) -> Generation:
    """``model.generate`` over all ranks: each renders its share of the videos, rounded to 8 bits."""
    import torch

    def mine(indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        fault_point("generate")
        made = model.generate([prompts[i] for i in indices], [seeds[i] for i in indices])
        return list(zip(eight_bit(made.videos), made.latents, strict=True))

    items = distributed.map_sharded(mine, len(prompts))
    return Generation(videos=torch.stack([v for v, _ in items]), latents=torch.stack([lat for _, lat in items]))


def score(reward: RewardModel, videos: Tensor, prompts: Sequence[str]) -> Scores:
    """``reward.score`` over all ranks: each scores its share of the videos."""
    import torch

    def mine(indices: list[int]) -> list[dict[str, Tensor]]:
        fault_point("score")
        scores = reward.score(videos[indices], [prompts[i] for i in indices])
        return [{dim: values[j] for dim, values in scores.items()} for j in range(len(indices))]

    items = distributed.map_sharded(mine, len(prompts))
    return {dim: torch.stack([item[dim] for item in items]) for dim in items[0]}
