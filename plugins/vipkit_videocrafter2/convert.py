"""Convert the official VideoCrafter2 ``model.ckpt`` into a safetensors folder the family loads.

    python -m vipkit_videocrafter2.convert model.ckpt OUT_DIR --tokenizer TOKENIZER_DIR [--unet EXPORT/model.safetensors]

``TOKENIZER_DIR`` is any CLIP BPE tokenizer folder (vocab.json + merges.txt, e.g. the ``tokenizer``
folder of ``stabilityai/stable-diffusion-2-1``, which is OpenCLIP ViT-H-14's); padding is set to
token 0 as ``open_clip.tokenize`` does. The checkpoint is read with ``weights_only=True``: nothing in
it can run code. ``--unet`` puts a UNet exported by ``vipkit export --format official`` in place of the
checkpoint's (VAE and text encoder stay the checkpoint's); the units it holds as zeros are removed again, so
the converted model keeps the compressed one's speed. Then ``[model] base = "OUT_DIR"`` in a recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vipkit import VipkitError
from vipkit_videocrafter2.checkpoint import (
    UNET_PREFIX,
    parts_from_checkpoint,
    read_official_checkpoint,
)
from vipkit_videocrafter2.loading import REAL_SETTINGS
from vipkit_videocrafter2.persistence import save_parts
from vipkit_videocrafter2.text_encoder import OPEN_CLIP_HEAD_WIDTH
from vipkit_videocrafter2.unet_config import VC2_UNET_CONFIG


def load_tokenizer(directory: str | Path) -> Any:
    """A CLIP tokenizer from ``directory`` that pads with token 0 (``!``), like ``open_clip.tokenize``."""
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(Path(directory).expanduser()))
    except Exception as exc:
        raise VipkitError(
            f"--tokenizer {str(directory)!r} is not a CLIP tokenizer folder (vocab.json + merges.txt): {exc}"
        ) from None
    tokenizer.pad_token = "!"
    return tokenizer


def convert(
    checkpoint: str | Path,
    out: str | Path,
    tokenizer_dir: str | Path,
    unet_config: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    text_head_width: int = OPEN_CLIP_HEAD_WIDTH,
    unet: str | Path | None = None,
) -> None:
    """Read ``checkpoint`` safely and write UNet, text encoder, tokenizer and VAE as safetensors to ``out``;
    ``unet``: an exported UNet (official keys, safetensors) replacing the checkpoint's."""
    tokenizer = load_tokenizer(tokenizer_dir)
    state = read_official_checkpoint(checkpoint)
    if unet is not None:
        state = {key: value for key, value in state.items() if not key.startswith(UNET_PREFIX)} | read_unet(unet)
    parts = parts_from_checkpoint(
        state, unet_config or VC2_UNET_CONFIG, tokenizer, settings or REAL_SETTINGS, text_head_width
    )
    save_parts(Path(out).expanduser(), parts, parts.default_settings)


def read_unet(path: str | Path) -> dict[str, Any]:
    """The tensors of an exported UNet file: safetensors, every key under the official UNet prefix."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise VipkitError(
            f"--unet {str(path)!r} does not exist; give the model.safetensors of `vipkit export --format official`"
        )
    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise VipkitError(f"--unet {str(path)!r} is not a readable safetensors file: {exc}") from None
    stray = [key for key in weights if not key.startswith(UNET_PREFIX)]
    if stray or not weights:
        raise VipkitError(
            f"--unet {str(path)!r} is not an exported VideoCrafter2 UNet: "
            + (f"{len(stray)} keys lack the {UNET_PREFIX!r} prefix (e.g. {stray[0]!r})" if stray else "it is empty")
        )
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vipkit_videocrafter2.convert", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="the official model.ckpt (PyTorch Lightning or DeepSpeed)")
    parser.add_argument("out", help="folder to write (then `[model] base = OUT` in a recipe)")
    parser.add_argument("--tokenizer", required=True, help="CLIP tokenizer folder (vocab.json + merges.txt)")
    parser.add_argument(
        "--unet-config",
        help="JSON file with the `model.params.unet_config.params` table (default: inference_t2v_512_v2.0.yaml's)",
    )
    parser.add_argument(
        "--unet", help="a UNet exported by `vipkit export --format official` (model.safetensors) to use instead"
    )
    parser.add_argument(
        "--text-head-width", type=int, default=OPEN_CLIP_HEAD_WIDTH, help="OpenCLIP text head width (default 64)"
    )
    args = parser.parse_args(argv)
    try:
        unet_config = json.loads(Path(args.unet_config).read_text()) if args.unet_config else None
        convert(
            args.checkpoint, args.out, args.tokenizer, unet_config, text_head_width=args.text_head_width, unet=args.unet
        )
    except (VipkitError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
