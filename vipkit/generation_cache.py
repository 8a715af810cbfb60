"""Teacher videos never change during a run: generate each (prompt, seed, settings) once, keep it on disk.

Videos are stored as uint8 (they are on the 8-bit grid already, ``vipkit.sharded.generate``), latents as
generated: a read-back entry equals the generated one bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vipkit import distributed, sharded
from vipkit.errors import VipkitError
from vipkit.interfaces import Generation, VideoModel
from vipkit.media import from_uint8, to_uint8
from vipkit.weights import check_safetensors

FORMAT = 2  # 2: videos stored as uint8 (1: float32); entries of another format are generated again


def cache_key(model_identity: dict[str, Any], settings: dict[str, Any], prompt: str, seed: int) -> str:
    blob = json.dumps(
        {"model": model_identity, "settings": settings, "prompt": prompt, "seed": seed, "format": FORMAT},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _whole(path: Path) -> bool:
    """A cache entry counts only if it is complete; a damaged one is simply generated again."""
    try:
        check_safetensors(path)
    except (OSError, VipkitError):
        return False
    return True


class GenerationCache:
    """Per-video safetensors files keyed by model, settings, prompt and seed."""

    def __init__(self, root: Path, model_identity: dict[str, Any]) -> None:
        self.root = root
        self.model_identity = model_identity

    def generate(self, model: VideoModel, prompts: Sequence[str], seeds: Sequence[int]) -> Generation:
        """Videos for every (prompt, seed): cached ones are read, the rest generated (split over ranks) and stored."""
        import torch
        from safetensors.torch import load_file, save_file

        keys = [
            cache_key(self.model_identity, model.generation_settings, p, s) for p, s in zip(prompts, seeds, strict=True)
        ]
        items: list[dict[str, torch.Tensor] | None] = [None] * len(keys)
        missing = []
        for i, key in enumerate(keys):
            path = self.root / f"{key}.safetensors"
            if _whole(path):
                items[i] = load_file(str(path))
            else:
                missing.append(i)
        if missing:
            fresh = sharded.generate(model, [prompts[i] for i in missing], [seeds[i] for i in missing])
            for j, i in enumerate(missing):
                items[i] = {"videos": to_uint8(fresh.videos[j]).contiguous(), "latents": fresh.latents[j].contiguous()}
                if distributed.is_main():
                    path = self.root / f"{keys[i]}.safetensors"
                    tmp = path.with_name(f".{path.name}.tmp")
                    save_file(items[i], str(tmp))
                    os.replace(tmp, path)
            distributed.barrier()  # every rank sees the same files on its next look
        return Generation(
            videos=from_uint8(torch.stack([item["videos"] for item in items])),
            latents=torch.stack([item["latents"] for item in items]),
        )
