"""The networks VBench's model-based dimensions use, loaded through transformers (and torchvision for RAFT).

VBench loads DINO ViT-B/16 from torch.hub, CLIP from OpenAI's ``clip`` package and RAFT from its own copy
of the code; the same weights exist as transformers checkpoints (``facebook/dino-vitb16``,
``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``) and as torchvision's
``Raft_Large_Weights.C_T_V1`` (RAFT trained on FlyingChairs + FlyingThings, VBench's ``raft-things``).
Frames are preprocessed as VBench does: 8-bit levels, resized as float (no rounding), DINO without a
crop, CLIP with a centre crop.

Weights: the transformers networks load with ``use_safetensors=True`` (a ``pytorch_model.bin`` beside is never
opened; a local folder without safetensors is refused). The aesthetic head and RAFT are released only as ``.pth``
pickles: ``vipkit.weights.load_official_state`` reads such a file once with ``torch.load(weights_only=True)``
(tensors only, no code can run) and keeps ``NAME.pth.safetensors`` beside it for every later load; a
``.safetensors`` file can be given directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from vipkit import VipkitError
from vipkit.model_source import ModelSource
from vipkit.weights import check_weight_folder, load_official_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class FrameEncoder:
    """One feature vector per frame, with VBench's preprocessing for that network."""

    model: Any  # transformers ViTModel (DINO) or CLIPVisionModelWithProjection
    kind: Literal["dino", "clip"]
    device: torch.device
    dtype: torch.dtype

    @property
    def size(self) -> int:
        return int(self.model.config.image_size)

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """8-bit levels ``(N, 3, H, W)`` → normalised pixels: short side to ``size`` (DINO bilinear, whole
        frame; CLIP bicubic, then a centre square), both without antialiasing like torchvision's Resize."""
        height, width = frames.shape[-2:]
        short, long = min(height, width), max(height, width)
        resized = (
            (self.size, int(self.size * long / short))
            if height <= width
            else (int(self.size * long / short), self.size)
        )
        mode = "bilinear" if self.kind == "dino" else "bicubic"
        if resized != (height, width):
            frames = F.interpolate(frames, size=resized, mode=mode, antialias=False, align_corners=False)
        if self.kind == "clip":
            top, left = (resized[0] - self.size) // 2, (resized[1] - self.size) // 2
            frames = frames[..., top : top + self.size, left : left + self.size]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.kind == "dino" else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        mean_t = torch.tensor(mean, device=frames.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=frames.device).view(1, 3, 1, 1)
        return (frames / 255 - mean_t) / std_t

    def __call__(self, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Features ``(N, D)`` float32 of 8-bit-level frames ``(N, 3, H, W)``: DINO's CLS token, CLIP's image embedding."""
        chunks = []
        for start in range(0, frames.shape[0], batch_size):
            pixels = self.pixels(frames[start : start + batch_size].to(self.device)).to(self.dtype)
            with torch.inference_mode():
                if self.kind == "dino":
                    out = self.model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]
                else:
                    out = self.model(pixel_values=pixels).image_embeds
            chunks.append(out.float())
        return torch.cat(chunks)


def load_encoder(
    source: ModelSource | None, kind: Literal["dino", "clip"], device: torch.device, dtype: torch.dtype, tiny_seed: int
) -> FrameEncoder:
    """Load DINO (``ViTModel``) or a CLIP vision tower with projection; ``source=None`` builds the tiny preset."""
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        ViTConfig,
        ViTModel,
    )

    if source is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tiny_seed)
            small = dict(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
            )
            model = (
                ViTModel(ViTConfig(**small), add_pooling_layer=False)
                if kind == "dino"
                else (CLIPVisionModelWithProjection(CLIPVisionConfig(**small, projection_dim=16)))
            )
    else:
        expected = (
            "a DINO ViT (ViTModel)" if kind == "dino" else "a CLIP model (CLIPModel or CLIPVisionModelWithProjection)"
        )
        try:
            if source.local:
                check_weight_folder(Path(source.source))  # pickle-only: refused; a truncated file named
            if kind == "dino":
                model, info = ViTModel.from_pretrained(
                    source.source,
                    local_files_only=source.local,
                    add_pooling_layer=False,
                    output_loading_info=True,
                    use_safetensors=True,
                )
            else:
                model, info = CLIPVisionModelWithProjection.from_pretrained(
                    source.source,
                    config=_clip_vision_config(source),
                    local_files_only=source.local,
                    output_loading_info=True,
                    use_safetensors=True,
                )
        except (OSError, ValueError, RuntimeError, VipkitError) as exc:  # RuntimeError: mismatched shapes
            raise source.load_error(expected, exc, f"Point {source.option} at a folder holding {expected}.") from None
        if info["missing_keys"]:  # transformers would initialise them at random
            raise source.load_error(
                expected, None, f"Its weights lack {sorted(info['missing_keys'])[:3]}; it is not such a model."
            )
    return FrameEncoder(model.to(device=device, dtype=dtype).eval().requires_grad_(False), kind, device, dtype)


def _clip_vision_config(source: ModelSource) -> Any:
    """The vision tower's config; from a full CLIP checkpoint it takes the projection width from the parent
    (the vision sub-config lacks it, and the default 512 would silently re-initialise a ViT-L/14 projection)."""
    from transformers import AutoConfig, CLIPConfig

    config = AutoConfig.from_pretrained(source.source, local_files_only=source.local)
    if isinstance(config, CLIPConfig):
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        return vision
    return config


def load_linear_head(path: str, option: str, in_features: int, device: torch.device) -> torch.nn.Linear:
    """The LAION aesthetic predictor: ``Linear(768, 1)`` from the official ``.pth`` state dict (converted once to
    safetensors, see the module's docstring) or a safetensors file."""
    try:
        head = torch.nn.Linear(in_features, 1)
        head.load_state_dict(load_official_state(path))
    except Exception as exc:  # OSError, a damaged file, a refused object, other keys or shapes: the option's to fix
        raise VipkitError(
            f"{option} = {path!r}: not a Linear({in_features}, 1) state dict ({_one_line(exc)})."
        ) from None
    return head.to(device).eval().requires_grad_(False)


def load_raft(path: str, option: str, device: torch.device) -> Any:
    """torchvision's RAFT-large with the weights at ``path`` (torchvision's ``raft_large_C_T_V1`` ``.pth``, converted
    once to safetensors, see the module's docstring; or a safetensors file)."""
    from torchvision.models.optical_flow import raft_large

    model = raft_large(weights=None, progress=False)
    try:
        model.load_state_dict(load_official_state(path))
    except Exception as exc:  # OSError, a damaged file, a refused object, other keys or shapes: the option's to fix
        raise VipkitError(f"{option} = {path!r}: not torchvision RAFT-large weights ({_one_line(exc)}).") from None
    return model.to(device).eval().requires_grad_(False)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def raft_flow_magnitudes(raft: Any, video: torch.Tensor) -> list[float]:
    """Top-5 % flow magnitude of each consecutive frame pair of one video ``(F, 3, H, W)`` in 8-bit levels.

    Frames are padded like RAFT's ``InputPadder`` (to multiples of 8, replicate, split evenly) and RAFT runs
    20 refinement iterations, as VBench does; the magnitudes are taken over the padded field, as there.
    """
    from vipkit_vbench.measures import top_flow_magnitude

    height, width = video.shape[-2:]
    pad_h, pad_w = (-height) % 8, (-width) % 8
    padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    frames = F.pad(video.float() / 127.5 - 1.0, padding, mode="replicate")
    with torch.inference_mode():
        flow = raft(frames[:-1], frames[1:], num_flow_updates=20)[-1]
    return top_flow_magnitude(flow).tolist()
