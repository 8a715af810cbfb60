"""A (pruned) VideoCrafter2 UNet in the official checkpoint's layout, for the official VideoCrafter code.

The file holds the *full* UNet under the official keys (``model.diffusion_model.*``), a removed unit's tensors
as zeros: every removable unit but an encoder/decoder pair is residual, so zeros compute exactly what the pruned
model does. The VAE and the text encoder are frozen by V.I.P., so they stay the released ``model.ckpt``'s: the
official code loads that checkpoint, then this UNet over it. ``python -m vipkit_videocrafter2.convert
model.ckpt OUT --unet FILE`` does the same for vipkit and removes the zeroed units again (the speed-up).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from vipkit_videocrafter2.checkpoint import UNET_PREFIX
from vipkit_videocrafter2.parts import ModelParts
from vipkit_videocrafter2.unet import build_unet

WEIGHTS = "model.safetensors"
UNET_CONFIG = "unet_config.json"


def export_official(parts: ModelParts, directory: Path, dtype: torch.dtype) -> str:
    """``model.safetensors`` (the UNet, official keys, zeros for removed units) and its ``unet_config.json``."""
    with torch.device("meta"):
        full = build_unet(parts.unet_config)
    state = parts.unet.zero_filled_state(full)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {UNET_PREFIX + key: tensor.to(dtype).contiguous() for key, tensor in state.items()}
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt"})
    (directory / UNET_CONFIG).write_text(json.dumps(parts.unet_config, indent=2) + "\n")
    return f"""With the official code ([VideoCrafter](https://github.com/AILab-CVC/VideoCrafter), from its repository root):

```python
from omegaconf import OmegaConf
from safetensors.torch import load_file
from scripts.evaluation.funcs import load_model_checkpoint
from utils.utils import instantiate_from_config

config = OmegaConf.load("configs/inference_t2v_512_v2.0.yaml")  # unet_config.params: THIS_FOLDER/{UNET_CONFIG}
model = load_model_checkpoint(instantiate_from_config(config.model), "checkpoints/base_512_v2/model.ckpt")
missing, unexpected = model.load_state_dict(load_file("THIS_FOLDER/{WEIGHTS}"), strict=False)
assert not unexpected and not any(key.startswith("{UNET_PREFIX}") for key in missing)
```

The released `model.ckpt` gives the VAE and the text encoder (V.I.P. leaves them frozen); this file replaces
every UNet tensor. The removed units are zero here: the official code computes them (same videos, the full
model's time). For vipkit, which skips them and keeps the speed-up, convert the pair:
`python -m vipkit_videocrafter2.convert model.ckpt OUT_DIR --tokenizer TOKENIZER_DIR --unet THIS_FOLDER/{WEIGHTS}`,
then `[model] base = "OUT_DIR"` in a recipe or bench matrix."""
