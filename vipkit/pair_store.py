"""Preference pairs on disk (safetensors + JSON), so a resumed stage trains on the same pairs.

The videos are stored as uint8 (a run's videos are on the 8-bit grid: ``vipkit.sharded.generate``), the
latents the training reads as generated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipkit.errors import VipkitError
from vipkit.interfaces import PairSet
from vipkit.media import from_uint8, to_uint8
from vipkit.weights import check_safetensors

_LATENTS = ("winner_latents", "loser_latents")
_VIDEOS = ("winner_videos", "loser_videos")
_TENSORS = (*_LATENTS, *_VIDEOS)
_META = ("prompts", "seeds", "target_dimensions")
_REBUILD = "delete that folder and run again to prune and curate the stage anew"


def save_pairs(pairs: PairSet, directory: Path) -> None:
    from safetensors.torch import save_file

    tensors = {name: getattr(pairs, name).contiguous() for name in _LATENTS}
    tensors |= {name: to_uint8(getattr(pairs, name)).contiguous() for name in _VIDEOS}
    save_file(tensors, str(directory / "pairs.safetensors"))
    meta: dict[str, Any] = {
        "prompts": pairs.prompts,
        "seeds": pairs.seeds,
        "target_dimensions": pairs.target_dimensions,
    }
    (directory / "pairs.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_pairs(directory: Path) -> PairSet:
    """The stored pairs; a damaged store raises ``VipkitError`` naming the file (it is rebuilt by deleting the folder)."""
    from safetensors.torch import load_file

    try:
        check_safetensors(directory / "pairs.safetensors")
        tensors = load_file(str(directory / "pairs.safetensors"))
        meta = json.loads((directory / "pairs.json").read_text(encoding="utf-8"))
        missing = [key for key in (*_TENSORS, *_META) if key not in (tensors if key in _TENSORS else meta)]
    except (OSError, ValueError, VipkitError) as exc:
        raise VipkitError(f"the stored preference pairs in {directory} cannot be read ({exc}); {_REBUILD}") from None
    if missing:
        raise VipkitError(f"the stored preference pairs in {directory} lack {', '.join(missing)}; {_REBUILD}")
    videos = {name: from_uint8(tensors[name]) for name in _VIDEOS}
    return PairSet(
        prompts=meta["prompts"],
        seeds=meta["seeds"],
        target_dimensions=meta["target_dimensions"],
        **{n: tensors[n] for n in _LATENTS},
        **videos,
    )
