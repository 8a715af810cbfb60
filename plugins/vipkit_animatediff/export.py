"""A (pruned) AnimateDiff model in the folders the diffusers world loads: a MotionAdapter, or a whole pipeline.

Both hold the *full* architecture: a removed block's tensors are written as zeros, which computes exactly what
the pruned model does (every AnimateDiff block is residual: ``vipkit.prunable``), so plain diffusers gives the
same videos at the full model's cost. vipkit removes the zeroed blocks again when it loads such a folder
(``loading.load_parts``), which keeps the speed-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import MotionAdapter, UNetMotionModel
from safetensors.torch import save_file
from transformers.utils import logging as transformers_logging

from vipkit import VipkitError
from vipkit_animatediff.names import MOTION_MODULE, TEMPORAL_BLOCK
from vipkit_animatediff.parts import ModelParts

MOTION_ADAPTER = "motion-adapter"
DIFFUSERS = "diffusers"
WEIGHTS = "diffusion_pytorch_model.safetensors"


def _full_unet(parts: ModelParts) -> UNetMotionModel:
    """The unpruned architecture of the model's UNet, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return UNetMotionModel.from_config(parts.unet.module.config)


def full_unet_state(
    parts: ModelParts, dtype: torch.dtype, full: UNetMotionModel | None = None
) -> dict[str, torch.Tensor]:
    """The UNetMotionModel's whole state dict, zeros where blocks were removed, in ``dtype`` (``full``: the unpruned
    architecture when the caller has built it already)."""
    state = parts.unet.zero_filled_state(full if full is not None else _full_unet(parts))
    return {key: tensor.to(dtype).contiguous() for key, tensor in state.items()}


def export_motion_adapter(
    parts: ModelParts,
    directory: Path,
    dtype: torch.dtype,
    settings: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> str:
    """The motion modules as a ``MotionAdapter`` folder (config.json + safetensors), removed ones zero."""
    full = _full_unet(parts)
    full_kinds = {block.name: block.kind for block in parts.unet.list_blocks(full)}
    kinds = [name for name in parts.unet.removed if full_kinds[name] not in (MOTION_MODULE, TEMPORAL_BLOCK)]
    if kinds:
        raise VipkitError(
            f"this model cannot be a motion adapter: besides motion modules it lost {', '.join(kinds)} of the SD-1.5 "
            f"UNet, which an adapter does not hold; export --format {DIFFUSERS} instead (the whole pipeline)"
        )
    if "trained_scope" not in provenance:
        raise VipkitError(
            "this model cannot be checked for a motion adapter: its folder does not record what training changed "
            f"(a model written before vipkit recorded it), so the SD-1.5 weights may differ from any base; export "
            f"--format {DIFFUSERS} instead (the whole pipeline)"
        )
    if provenance["trained_scope"] not in (None, "motion"):
        raise VipkitError(
            f"this model cannot be a motion adapter: its training changed the {provenance['trained_scope']!r} scope "
            f"(train.trainable), not only the motion modules, so an adapter on the original SD-1.5 weights would "
            f"compute a different model; export --format {DIFFUSERS} instead (the whole pipeline)"
        )
    state = full_unet_state(parts, dtype, full)
    config = parts.unet.module.config
    mid = getattr(parts.unet.module.mid_block, "motion_modules", None)
    with torch.device("meta"):
        adapter = MotionAdapter(
            block_out_channels=tuple(config.block_out_channels),
            motion_layers_per_block=config.layers_per_block,
            motion_transformer_layers_per_block=config.temporal_transformer_layers_per_block,
            motion_mid_block_layers_per_block=len(mid) if mid is not None else 1,
            motion_transformer_layers_per_mid_block=config.temporal_transformer_layers_per_mid_block,
            motion_num_attention_heads=config.motion_num_attention_heads,
            motion_norm_num_groups=config.norm_num_groups,  # what UNetMotionModel gives its motion modules
            motion_max_seq_length=config.motion_max_seq_length,
            use_motion_mid_block=config.use_motion_mid_block,
        )
    adapter_state = {key: value for key, value in state.items() if key in adapter.state_dict()}
    adapter.load_state_dict(adapter_state, strict=True, assign=True)  # strict: every adapter tensor found
    directory.mkdir(parents=True, exist_ok=True)
    adapter.save_config(directory)
    save_file(adapter_state, directory / WEIGHTS, metadata={"format": "pt"})
    return f"""```python
import torch
from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

adapter = MotionAdapter.from_pretrained("THIS_FOLDER", torch_dtype=torch.{str(dtype).removeprefix("torch.")})
pipe = AnimateDiffPipeline.from_pretrained("{_sd_base(provenance)}", motion_adapter=adapter, torch_dtype=adapter.dtype)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear", clip_sample=False,
                                           timestep_spacing="linspace", steps_offset=1)
video = pipe("a prompt", {_call_settings(settings)}).frames[0]
```

The removed motion modules are zero in this adapter: plain diffusers computes them (same videos, the full
model's time). vipkit skips them and keeps the speed-up: `[model] motion_adapter = "THIS_FOLDER"` in a recipe or
bench matrix, or `vipkit.load_model("THIS_FOLDER")`, loads it on the SD-1.5 base of its `base` option."""


def export_pipeline(
    parts: ModelParts, pipeline: Any, directory: Path, dtype: torch.dtype, settings: Mapping[str, Any]
) -> str:
    """The whole ``AnimateDiffPipeline`` folder, the UNet with zeros for removed blocks."""
    directory.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()
    _save_diffusers_model(parts.vae, directory / "vae", dtype)
    text_state = {key: value.to(dtype) for key, value in parts.text_encoder.state_dict().items()}
    parts.text_encoder.save_pretrained(directory / "text_encoder", state_dict=text_state)
    parts.tokenizer.save_pretrained(directory / "tokenizer")
    parts.scheduler.save_pretrained(directory / "scheduler")
    (directory / "unet").mkdir()
    parts.unet.module.save_config(directory / "unet")
    save_file(full_unet_state(parts, dtype), directory / "unet" / WEIGHTS, metadata={"format": "pt"})
    pipeline.save_config(directory)  # model_index.json
    return f"""```python
import torch
from diffusers import AnimateDiffPipeline

pipe = AnimateDiffPipeline.from_pretrained("THIS_FOLDER", torch_dtype=torch.{str(dtype).removeprefix("torch.")})
video = pipe("a prompt", {_call_settings(settings)}).frames[0]
```

The removed blocks are zero in this folder: plain diffusers computes them (same videos, the full model's time).
vipkit skips them and keeps the speed-up: `[model] base = "THIS_FOLDER"` in a recipe or bench matrix, or
`vipkit.load("THIS_FOLDER")`."""


def _save_diffusers_model(model: Any, directory: Path, dtype: torch.dtype) -> None:
    """A diffusers model's folder in ``dtype`` without casting the model itself (it is shared)."""
    directory.mkdir(parents=True)
    model.save_config(directory)
    state = {key: value.to(dtype).contiguous() for key, value in model.state_dict().items()}
    save_file(state, directory / WEIGHTS, metadata={"format": "pt"})


def _sd_base(provenance: Mapping[str, Any]) -> str:
    from vipkit.model_source import is_local_path

    hub = [source for source in provenance.get("base_models", []) if not is_local_path(source)]
    base = next((source for source in hub if "animatediff" not in source.lower()), None)
    return base or "stable-diffusion-v1-5/stable-diffusion-v1-5"


def _call_settings(settings: Mapping[str, Any]) -> str:
    keys = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale")
    return ", ".join(f"{key}={settings[key]!r}" for key in keys if key in settings)
