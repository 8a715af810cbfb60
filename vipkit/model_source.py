"""Where a component's pretrained model comes from: a local directory (never the network) or a hub id.

Rewards name their models by an option such as ``model = "TIGER-Lab/VideoScore-v1.1"``. A directory is
loaded with ``local_files_only``; a hub id is loaded from the Hugging Face cache, or downloaded where the
hub is reachable. Everything that goes wrong is a ``VipkitError`` that names the option and says how to
provide the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    import torch


DEVICE_PATTERN = r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$"
"""What a ``device`` option accepts: ``auto`` (see ``resolve_device``) or a torch device string."""


@dataclass(frozen=True)
class ModelSource:
    """What to pass to ``from_pretrained``: a directory (``local``) or a hub id."""

    option: str  # the config key that named it, for messages, e.g. "reward option `model`"
    value: str  # as the user wrote it
    source: str  # a resolved directory or the hub id
    local: bool

    def is_available(self) -> bool:
        """True when loading can succeed without guessing: a directory, a cached hub id, or an online hub."""
        if self.local:
            return True
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True", "ON", "on"):
            return True
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(self.source, "config.json"), str)

    def load_error(self, what: str, exc: BaseException | None, how_to: str) -> VipkitError:
        """A one-paragraph error for a model that could not be loaded from this source."""
        where = f"the directory {self.source}" if self.local else "the Hugging Face hub (unreachable or not cached)"
        detail = f": {' '.join(str(exc).split()).rstrip('.')}" if exc is not None else ""
        return VipkitError(f"{self.option} = {self.value!r}: could not load {what} from {where}{detail}. {how_to}")


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local directory."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def model_source(model: str, option: str, expected: str) -> ModelSource:
    """Resolve ``model`` (a directory or a hub id); a path that is not a directory is a user error."""
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(option, model, str(path.resolve()), local=True)
    if _looks_like_path(model) or path.exists():
        raise VipkitError(
            f"{option} = {model!r}: {path.resolve()} is not a directory. Point it at a folder holding {expected}."
        )
    return ModelSource(option, model, model, local=False)


def resolve_device(device: str) -> torch.device:
    """``'auto'`` = CUDA when available, else CPU; anything else is a torch device string."""
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
