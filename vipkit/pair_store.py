"""Preference pairs on disk (safetensors + JSON), so a resumed stage trains on the same pairs.

The videos are stored as uint8 (a run's videos are on the 8-bit grid: ``vipkit.sharded.generate``), the
latents the training reads as generated. ``digest.json``, written last, records the sha256 of both files;
reusing the pairs checks them against it, so an altered byte is found even where the size is unchanged
(a pair folder from before the digest gets its safetensors header checked only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipkit.atomic import write_json
from vipkit.errors import VipkitError
from vipkit.interfaces import PairSet
from vipkit.media import from_uint8, to_uint8
from vipkit.stopping import reraise_if_stopping
from vipkit.weights import check_safetensors, file_sha256

_LATENTS = ("winner_latents", "loser_latents")
_VIDEOS = ("winner_videos", "loser_videos")
_TENSORS = (*_LATENTS, *_VIDEOS)
_META = ("prompts", "seeds", "target_dimensions")
_REBUILD = "delete that folder and run again to prune and curate the stage anew"
DIGEST = "digest.json"
_FILES = ("pairs.safetensors", "pairs.json")


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
    write_json(directory / DIGEST, {name: file_sha256(directory / name) for name in _FILES})  # last, atomically


def verify_pairs(directory: Path) -> None:
    """Check both files against ``digest.json``; a store without one (written before it) is left to the header check.
    A mismatch raises ``VipkitError`` naming the file and saying to delete the folder."""
    path = directory / DIGEST
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or not all(isinstance(recorded.get(name), str) for name in _FILES):
            raise ValueError("it does not hold a sha256 for pairs.safetensors and pairs.json")
    except (OSError, ValueError) as exc:
        raise VipkitError(
            f"the stored preference pairs in {directory} cannot be checked: {path} is damaged ({exc}); {_REBUILD}"
        ) from None
    for name in _FILES:
        try:
            actual = file_sha256(directory / name)
        except OSError as exc:
            raise VipkitError(
                f"the stored preference pairs in {directory} cannot be read ({directory / name}: {exc}); {_REBUILD}"
            ) from None
        if actual != recorded[name]:
            raise VipkitError(
                f"the stored preference pairs in {directory} are damaged: {directory / name} no longer matches the "
                f"sha256 recorded in {DIGEST} when the pairs were stored; {_REBUILD}"
            )


def load_pairs(directory: Path) -> PairSet:
    """The stored pairs; a damaged store raises ``VipkitError`` naming the file (it is rebuilt by deleting the folder)."""
    from safetensors.torch import load_file

    verify_pairs(directory)
    try:
        check_safetensors(directory / "pairs.safetensors")
        tensors = load_file(str(directory / "pairs.safetensors"))
        meta = json.loads((directory / "pairs.json").read_text(encoding="utf-8"))
        missing = [key for key in (*_TENSORS, *_META) if key not in (tensors if key in _TENSORS else meta)]
    except (OSError, ValueError, VipkitError) as exc:
        reraise_if_stopping(exc)  # a Ctrl-C or SIGTERM inside safetensors comes out as a ValueError
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
