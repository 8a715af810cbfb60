"""Where a component's pretrained model comes from: a local directory (never the network) or a hub id.

Options such as ``model = "TIGER-Lab/VideoScore-v1.1"`` name a model the way people write them, and
``is_local_path`` is the one rule that tells the two apart. A directory is loaded with
``local_files_only``; a hub id from the Hugging Face cache, or downloaded where the hub is reachable.
Everything that goes wrong is a ``VipkitError`` that names the option and says how to provide the
model; for a hub id that is the exact ``hf download`` command and the value to set afterwards.
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

DOWNLOAD_FOLDER = "models"
"""Where the download commands in error messages put a hub model (relative to the current folder)."""


def is_local_path(value: str) -> bool:
    """Whether a model option names a local path rather than a hub id.

    An existing path is local (``weights/adapter`` next to you is that folder), and so is anything no hub
    id looks like: a start of ``/ . ~``, a backslash, more than one ``/``. ``owner/name`` or ``name`` that
    does not exist here is a hub id.
    """
    if value.startswith(("/", ".", "~")) or "\\" in value or value.count("/") > 1:
        return True
    return Path(value).expanduser().exists()


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read now, with huggingface_hub's true values).

    vipkit cannot tell that the hub is unreachable without asking it, and each failed try costs about 25 s
    of retries; with the variable set, a hub id that is not in the cache fails at once.
    """
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".")


@dataclass(frozen=True)
class ModelSource:
    """What to pass to ``from_pretrained``: a directory (``local``) or a hub id."""

    option: str  # the config key that named it, for messages, e.g. "reward option `model`"
    value: str  # as the user wrote it
    source: str  # a resolved directory or the hub id
    local: bool

    def is_available(self) -> bool:
        """True when loading can succeed without guessing: a directory, a cached hub id, or an online hub."""
        if self.local or not hub_offline():
            return True
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(self.source, "config.json"), str)

    def require_available(self, what: str) -> None:
        """Refuse, before anything loads, a hub id that ``HF_HUB_OFFLINE`` keeps out of reach."""
        if not self.is_available():
            raise self.fetch_error(what, None)

    def fetch_error(self, what: str, exc: BaseException | None) -> VipkitError:
        """Why a hub id could not be had, the command that downloads it, and the value to set afterwards."""
        if hub_offline():
            why = "HF_HUB_OFFLINE is set, so the hub was not tried, and it is not in the Hugging Face cache"
        else:
            detail = f" ({_one_line(exc)})" if exc is not None else ""
            why = (
                f"it could not be fetched from the Hugging Face hub{detail}; where the hub is unreachable, set "
                "HF_HUB_OFFLINE=1: then every missing model is listed at once, without ~25 s of retries each"
            )
        folder = f"{DOWNLOAD_FOLDER}/{self.source.rsplit('/', 1)[-1]}"
        return VipkitError(
            f"{self.option} = {self.value!r} ({what}): {why}. Download it where the hub is reachable with "
            f"`hf download {self.source} --local-dir {folder}` and set {self.option} to {folder!r}."
        )

    def load_error(self, what: str, exc: BaseException | None, how_to: str = "") -> VipkitError:
        """A one-paragraph error for a model that could not be loaded from this source.

        ``exc`` is the loader's failure (for a hub id: the fetch failed, see ``fetch_error``); ``None`` means the
        files loaded but are not ``what``, and ``how_to`` says why and what to use instead.
        """
        if not self.local and exc is not None:
            return self.fetch_error(what, exc)
        where = f"the directory {self.source}" if self.local else f"the hub's {self.source}"
        detail = f": {_one_line(exc)}" if exc is not None else ""
        return VipkitError(
            f"{self.option} = {self.value!r}: could not load {what} from {where}{detail}. {how_to}".rstrip()
        )


def model_source(model: str, option: str, expected: str) -> ModelSource:
    """Resolve ``model`` (a directory or a hub id); a local path that is not a directory is a user error."""
    path = Path(model).expanduser()
    if not is_local_path(model):
        return ModelSource(option, model, model, local=False)
    if not path.is_dir():
        raise VipkitError(
            f"{option} = {model!r}: {path.resolve()} is not a directory (relative paths start from the current "
            f"folder). Point it at a folder holding {expected}."
        )
    return ModelSource(option, model, str(path.resolve()), local=True)


def resolve_device(device: str) -> torch.device:
    """``'auto'`` = CUDA when available, else CPU; anything else is a torch device string."""
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
