"""Where a VideoCrafter2 model's parts come from: the tiny preset or a converted / saved folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vipkit.errors import VipkitError
from vipkit_videocrafter2.checkpoint import parts_from_checkpoint
from vipkit_videocrafter2.parts import ModelParts
from vipkit_videocrafter2.persistence import MANIFEST, is_saved_model, load_saved_parts
from vipkit_videocrafter2.tiny import TEXT_HEAD_WIDTH, TINY_SETTINGS, tiny_checkpoint, tiny_tokenizer
from vipkit_videocrafter2.unet_config import TINY_UNET_CONFIG

if TYPE_CHECKING:
    from vipkit_videocrafter2.family import VideoCrafter2

REAL_SETTINGS = {"height": 320, "width": 512, "num_frames": 16, "num_inference_steps": 50}
"""Generation defaults of the released VideoCrafter2 (``scripts/run_text2video.sh``)."""


def load_parts(config: VideoCrafter2.Config) -> ModelParts:
    """The parts the config asks for: ``preset`` wins, else the folder ``base`` names."""
    if config.preset == "tiny":
        return parts_from_checkpoint(
            tiny_checkpoint(config.preset_seed), TINY_UNET_CONFIG, tiny_tokenizer(), TINY_SETTINGS, TEXT_HEAD_WIDTH
        )
    if config.base is None:
        raise VipkitError(
            "model.base is not set: point it at a folder written by "
            "`python -m vipkit_videocrafter2.convert model.ckpt OUT_DIR --tokenizer TOKENIZER_DIR`, "
            "or set preset = 'tiny' for a random test model"
        )
    if not is_saved_model(config.base):
        path = Path(config.base).expanduser()
        hint = (
            f"convert it first: python -m vipkit_videocrafter2.convert {config.base} OUT_DIR --tokenizer TOKENIZER_DIR"
            if path.is_file()
            else "convert the official model.ckpt with `python -m vipkit_videocrafter2.convert` and point base at its output"
        )
        raise VipkitError(f"base = {config.base!r} is not a converted VideoCrafter2 folder (no {MANIFEST}); {hint}")
    try:
        return load_saved_parts(Path(config.base).expanduser())
    except Exception as exc:  # a damaged or partial folder
        raise VipkitError(f"could not load base = {config.base!r}: {type(exc).__name__}: {exc}") from exc
